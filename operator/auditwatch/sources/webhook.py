"""The audit webhook source: kube-apiserver's webhook backend POSTs ``EventList`` batches to us.

Only the API server may feed it: requests must come with a client certificate the configured CA
signed (mTLS) or the configured bearer token (compared in constant time); anything else gets 401
(no or wrong credentials) or 403 (a certificate whose name is not allowed), is counted, and nothing
is kept. Answers that help the API server's batch backend: 400 with the reason for a body that is
not an audit ``EventList``, 413 over the size limit, 408 for a body that does not arrive in time,
429 with ``Retry-After`` when too many requests are under way, 503 when the spool cannot be
written. kube-apiserver retries a batch it thinks failed, so events seen before (by ``auditID`` and
``stage``, within a bounded window that is rebuilt from the spool at start) are dropped and counted.

Nothing acknowledged is lost: a batch is answered 200 only once it is appended (and fsynced) to the
path's spool, ``<spool>/<path>/audit.log``, one line per batch, rotated by size like kube-apiserver's
own log. Each detection reading the path tails that spool with ``FileTail``, so a webhook source
has file positions and the same exactly-once counting across restarts as a file source (see
findings/aggregate.py). While the operator is down, kube-apiserver keeps a failed batch and retries
it (10 s, then backing off, for about a minute and a half) before dropping it.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import ssl
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from auditwatch.api.settings import Settings
from auditwatch.errors import AuditwatchError
from auditwatch.sources import Chunk
from auditwatch.sources.file import FilePosition, FileTail
from auditwatch.sources.spool import Recent, Spool, newest_lines

# kube-apiserver's batches stay under --audit-webhook-truncate-max-batch-size (10 MB by default).
MAX_BATCH_BYTES = 64 << 20
BODY_SECONDS = 30.0  # a body slower than this is answered 408
MAX_REQUESTS = 32  # requests under way at once; more are answered 429
IDLE_SECONDS = 15.0  # a kept-alive connection with no request for this long is closed
RELOAD_SECONDS = 10.0  # how often the certificate, key and token files are checked for changes
log = logging.getLogger(__name__)


class WebhookFeed(FileTail):
    """One detection's reading of a webhook path: a tail of the path's spool, named ``webhook:<path>``."""

    def __init__(self, server: WebhookServer, path: str, start: FilePosition | None, poll_seconds: float) -> None:
        super().__init__(
            str(server.spool_file(path)), MAX_BATCH_BYTES + 1, start, poll_seconds, origin=f"webhook:{path}"
        )
        self.server, self.webhook_path = server, path

    async def chunks(self) -> AsyncIterator[Chunk]:
        try:
            async for chunk in super().chunks():
                yield chunk
        finally:
            self.server.unsubscribe(self.webhook_path)


class BadBatch(AuditwatchError, ValueError):
    """A body that is not an audit EventList; the message says why."""


class WebhookServer:
    """``POST <path>`` with an audit.k8s.io EventList body; 200 once the batch is in the path's spool."""

    def __init__(self, host: str, port: int, settings: Settings) -> None:
        self.host, self.port = host, port
        self.settings = settings
        self.max_batch_bytes = MAX_BATCH_BYTES
        self.body_seconds = BODY_SECONDS
        self.max_requests = MAX_REQUESTS
        self.spool_dir = Path(settings.webhook_spool)
        self.readers: Counter[str] = Counter()  # webhook path -> detections reading it
        self._spools: dict[str, Spool] = {}
        self.listening = False
        self._started_at = 0.0
        self.answers: Counter[int] = Counter()  # HTTP status -> requests answered with it
        self.repeats = 0  # events dropped as already received
        self._seen = Recent()  # (auditID, stage) of the events spooled last
        self.under_way = 0
        self._runner: web.AppRunner | None = None
        self._reloader: asyncio.Task[None] | None = None
        self._ssl: ssl.SSLContext | None = None
        self._token = b""
        self._stamps: dict[str, float] = {}

    @property
    def scheme(self) -> str:
        return "https" if self.settings.webhook_tls_cert else "http"

    def spool_file(self, path: str) -> Path:
        """The live spool file of a webhook path (``/audit`` -> ``<spool>/audit/audit.log``)."""
        return self.spool_dir / (path.strip("/").replace("/", "_") or "_root") / "audit.log"

    def subscribe(self, path: str, start: FilePosition | None = None, poll_seconds: float = 0.1) -> WebhookFeed:
        """A detection's tail of ``path``'s spool, from ``start`` (a saved position) or the spool's start."""
        self.readers[path] += 1
        return WebhookFeed(self, path, start, poll_seconds)

    def unsubscribe(self, path: str) -> None:
        self.readers[path] -= 1

    async def start(self) -> None:
        s = self.settings
        if s.webhook_tls_cert and s.webhook_tls_key:
            self._ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self._ssl.minimum_version = ssl.TLSVersion.TLSv1_2
            if s.webhook_client_ca:
                self._ssl.load_verify_locations(s.webhook_client_ca)
                self._ssl.verify_mode = ssl.CERT_OPTIONAL  # no certificate: answered 401, not a failed handshake
        self.reload()
        self._remember_spooled()
        self._started_at = time.monotonic()
        app = web.Application(client_max_size=self.max_batch_bytes)
        app.router.add_post("/{path:.*}", self._receive)
        # Idle connections close after 15 s (kube-apiserver sends a batch at least every second while busy).
        self._runner = web.AppRunner(app, access_log=None, keepalive_timeout=IDLE_SECONDS)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port, ssl_context=self._ssl).start()
        self._reloader = asyncio.create_task(self._keep_reloading())
        self.listening = True

    async def stop(self) -> None:
        if self._reloader is not None:
            self._reloader.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
        for spool in self._spools.values():
            spool.close()
        self.listening = False

    def reload(self) -> None:
        """Load the serving certificate and the token again when their files changed (a renewed Secret).
        A new CA needs a restart: an SSL context cannot forget the CAs it was given."""
        s = self.settings
        files = [f for f in (s.webhook_tls_cert, s.webhook_tls_key, s.webhook_token_file) if f]
        stamps = {f: os.stat(f).st_mtime for f in files}
        if stamps == self._stamps:
            return
        if self._ssl is not None and s.webhook_tls_cert and s.webhook_tls_key:
            self._ssl.load_cert_chain(s.webhook_tls_cert, s.webhook_tls_key)
        if s.webhook_token_file:
            with open(s.webhook_token_file, "rb") as f:
                self._token = f.read().strip()
        if self._stamps:
            log.info("audit webhook: certificate or token reloaded")
        self._stamps = stamps

    async def _keep_reloading(self) -> None:
        while True:
            await asyncio.sleep(RELOAD_SECONDS)
            try:
                self.reload()
            except (OSError, ssl.SSLError) as exc:  # keep serving with what was loaded
                log.warning("audit webhook: reloading the certificate or token failed: %s", exc)

    def _refusal(self, request: web.Request) -> int:
        """401 or 403 for a request not from the API server, 0 for one that is."""
        s = self.settings
        if s.webhook_insecure:
            return 0
        peer = request.transport.get_extra_info("peercert") if request.transport and s.webhook_client_ca else None
        if peer:  # verified against the CA during the handshake
            names = {v for rdn in peer.get("subject", ()) for k, v in rdn if k == "commonName"}
            names |= {v for k, v in peer.get("subjectAltName", ()) if k == "DNS"}
            return 403 if s.webhook_client_names and not names & set(s.webhook_client_names) else 0
        bearer = request.headers.get("Authorization", "")
        if self._token and bearer.startswith("Bearer ") and hmac.compare_digest(bearer[7:].encode(), self._token):
            return 0
        return 401

    def _answer(self, status: int, text: str = "", retry: bool = False) -> web.Response:
        self.answers[status] += 1
        headers = {"Retry-After": "1"} if retry else None
        return web.Response(status=status, text=text + "\n" if text else "", headers=headers)

    async def _receive(self, request: web.Request) -> web.Response:
        if refusal := self._refusal(request):
            return self._answer(refusal, "unauthorized" if refusal == 401 else "forbidden")
        if self.readers[request.path] <= 0:
            if time.monotonic() - self._started_at < self.settings.webhook_startup_seconds:
                # A replica restarting: its detections subscribe in a moment. A 404 would make kube-apiserver
                # drop the batch; a 503 makes it send the batch again.
                return self._answer(503, f"no detection reads audit batches at {request.path} yet", retry=True)
            return self._answer(404, f"no detection reads audit batches at {request.path}")
        if self.under_way >= self.max_requests:
            return self._answer(429, "too many requests under way", retry=True)
        self.under_way += 1
        try:
            return await self._keep(request)
        finally:
            self.under_way -= 1

    async def _keep(self, request: web.Request) -> web.Response:
        try:
            body = await asyncio.wait_for(request.read(), self.body_seconds)
        except TimeoutError:
            return self._answer(408, f"the body did not arrive within {self.body_seconds:g} s")
        except web.HTTPRequestEntityTooLarge:
            return self._answer(413, f"a batch may have at most {self.max_batch_bytes} bytes")
        try:
            items = _event_list(body)
        except BadBatch as exc:
            return self._answer(400, f"not an audit EventList: {exc}")
        fresh = [item for item in items if not self._seen_before(item)]
        if fresh:
            data = body if len(fresh) == len(items) else orjson.dumps({"kind": "EventList", "items": fresh})
            try:
                if request.path not in self._spools:
                    self._spools[request.path] = Spool(self.spool_file(request.path).parent)
                await asyncio.to_thread(self._spools[request.path].append, data.replace(b"\n", b" ") + b"\n")
            except OSError as exc:  # a full disk: the API server keeps the batch and tries again
                log.warning("audit webhook: spool of %s not written: %s", request.path, exc)
                self._forget(fresh)
                return self._answer(503, "cannot keep the batch now: retry later", retry=True)
        self.repeats += len(items) - len(fresh)
        return self._answer(200)

    def _seen_before(self, item: Any) -> bool:
        """Whether an event was received before; a new one is remembered."""
        key = _key(item)
        return key is not None and self._seen.seen(key)  # no key: the evaluator counts it as malformed

    def _forget(self, items: list[Any]) -> None:
        self._seen.forget(key for item in items if (key := _key(item)) is not None)

    def _remember_spooled(self) -> None:
        """Rebuild the repeat window from the newest spool files, so a batch retried across an operator
        restart is still known."""
        lines: list[bytes] = []
        for directory in self.spool_dir.glob("*/"):
            lines += newest_lines(directory)
        for line in lines[-self._seen.size :]:
            try:
                for item in _event_list(line):
                    self._seen_before(item)
            except BadBatch:
                continue


def _key(item: Any) -> tuple[str, str] | None:
    audit_id = item.get("auditID") if isinstance(item, dict) else None
    return (audit_id, str(item.get("stage"))) if isinstance(audit_id, str) else None


def _event_list(body: bytes) -> list[Any]:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadBatch(f"invalid JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("kind") != "EventList":
        raise BadBatch("expected an object with kind EventList")
    items = doc.get("items")
    if not isinstance(items, list):
        raise BadBatch("items: expected a list of audit events")
    return items
