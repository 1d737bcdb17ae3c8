"""The audit webhook source: kube-apiserver's webhook backend POSTs ``EventList`` batches to us.

Only the API server may feed it: requests must come with a client certificate the configured CA
signed (mTLS) or the configured bearer token (compared in constant time); anything else gets 401
(no or wrong credentials) or 403 (a certificate whose name is not allowed), is counted, and nothing
is queued. Answers that help the API server's batch backend: 400 with the reason for a body that is
not an audit ``EventList``, 413 over the size limit, 408 for a body that does not arrive in time,
and 503/429 with ``Retry-After`` when a subscriber's queue is full or too many requests are under
way. kube-apiserver retries a batch it thinks failed, so events seen before (by ``auditID`` and
``stage``, within a bounded window) are dropped and counted as repeats.

One HTTP server serves every detection with a ``webhook`` source; a batch POSTed to a path goes to
each detection subscribed to that path, as one chunk (one JSON line). There is nothing to read
again after a restart, so a webhook source's position is only its receive sequence, ``seq``: the
receiving time in nanoseconds (or one past the last batch), so it still only grows across restarts,
which is what the findings' checkpoints need (findings/aggregate.py).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import ssl
import time
from collections import Counter, OrderedDict, defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from auditwatch.settings import Settings
from auditwatch.sources import Chunk

# kube-apiserver's batches stay under --audit-webhook-truncate-max-batch-size (10 MB by default).
MAX_BATCH_BYTES = 64 << 20
BODY_SECONDS = 30.0  # a body slower than this is answered 408
MAX_REQUESTS = 32  # requests under way at once; more are answered 429
DEDUP_WINDOW = 200_000  # (auditID, stage) pairs remembered to drop repeated events
RELOAD_SECONDS = 10.0  # how often the certificate, key and token files are checked for changes
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WebhookPosition:
    origin: str  # webhook:<path>, shown where a file source shows its file
    seq: int

    def status(self) -> dict[str, Any]:
        return {"file": self.origin, "seq": self.seq}


class WebhookFeed:
    """One detection's subscription to a webhook path; the same shape as FileTail for the runtime."""

    def __init__(self, path: str, server: WebhookServer) -> None:
        self.path = path
        self.origin = f"webhook:{path}"
        self.server = server
        self.queue: asyncio.Queue[Chunk] = asyncio.Queue(server.queue_batches)
        self.ready = server.listening
        self.error = "" if server.listening else "the webhook server is not listening"
        self.long_lines = 0
        self.lag_bytes = 0

    async def chunks(self) -> AsyncIterator[Chunk]:
        try:
            while True:
                chunk = await self.queue.get()
                self.lag_bytes -= len(chunk.data)
                yield chunk
        finally:
            self.server.unsubscribe(self)

    def checkpoint(self, seq: int) -> WebhookPosition:
        """Batches are not read again: the position only records how far the counts go."""
        return WebhookPosition(self.origin, seq)


class BadBatch(ValueError):
    """A body that is not an audit EventList; the message says why."""


class WebhookServer:
    """``POST <path>`` with an audit.k8s.io EventList body; 200 once every subscriber has it queued."""

    def __init__(self, host: str, port: int, settings: Settings) -> None:
        self.host, self.port = host, port
        self.settings = settings
        self.queue_batches = settings.webhook_queue_batches
        self.max_batch_bytes = MAX_BATCH_BYTES
        self.feeds: dict[str, list[WebhookFeed]] = defaultdict(list)
        self.listening = False
        self.answers: Counter[int] = Counter()  # HTTP status -> requests answered with it
        self.repeats = 0  # events dropped as already received
        self._seen: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._under_way = 0
        self._runner: web.AppRunner | None = None
        self._reloader: asyncio.Task[None] | None = None
        self._seq = 0
        self._ssl: ssl.SSLContext | None = None
        self._token = b""
        self._stamps: dict[str, float] = {}

    @property
    def scheme(self) -> str:
        return "https" if self.settings.webhook_tls_cert else "http"

    def subscribe(self, path: str) -> WebhookFeed:
        feed = WebhookFeed(path, self)
        self.feeds[path].append(feed)
        return feed

    def unsubscribe(self, feed: WebhookFeed) -> None:
        if feed in self.feeds.get(feed.path, []):
            self.feeds[feed.path].remove(feed)

    async def start(self) -> None:
        s = self.settings
        if s.webhook_tls_cert and s.webhook_tls_key:
            self._ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self._ssl.minimum_version = ssl.TLSVersion.TLSv1_2
            if s.webhook_client_ca:
                self._ssl.load_verify_locations(s.webhook_client_ca)
                self._ssl.verify_mode = ssl.CERT_OPTIONAL  # no certificate: answered 401, not a failed handshake
        self.reload()
        app = web.Application(client_max_size=self.max_batch_bytes)
        app.router.add_post("/{path:.*}", self._receive)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port, ssl_context=self._ssl).start()
        self._reloader = asyncio.create_task(self._keep_reloading())
        self.listening = True

    async def stop(self) -> None:
        if self._reloader is not None:
            self._reloader.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
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
        feeds = self.feeds.get(request.path, [])
        if not feeds:
            return self._answer(404, f"no detection reads audit batches at {request.path}")
        if self._under_way >= MAX_REQUESTS:
            return self._answer(429, "too many requests under way", retry=True)
        self._under_way += 1
        try:
            return await self._queue(request, feeds)
        finally:
            self._under_way -= 1

    async def _queue(self, request: web.Request, feeds: list[WebhookFeed]) -> web.Response:
        try:
            body = await asyncio.wait_for(request.read(), BODY_SECONDS)
        except TimeoutError:
            return self._answer(408, f"the body did not arrive within {BODY_SECONDS:.0f} s")
        except web.HTTPRequestEntityTooLarge:
            return self._answer(413, f"a batch may have at most {self.max_batch_bytes} bytes")
        try:
            items = _event_list(body)
        except BadBatch as exc:
            return self._answer(400, f"not an audit EventList: {exc}")
        if any(f.queue.full() for f in feeds):
            return self._answer(503, "busy: retry later", retry=True)
        fresh = self._fresh(items)
        self.repeats += len(items) - len(fresh)
        if fresh:
            data = body if len(fresh) == len(items) else orjson.dumps({"kind": "EventList", "items": fresh})
            self._seq = max(self._seq + len(data) + 1, time.time_ns())
            chunk = Chunk(data.replace(b"\n", b" ") + b"\n", self._seq, feeds[0].origin)
            for feed in feeds:
                feed.queue.put_nowait(chunk)
                feed.lag_bytes += len(chunk.data)
        return self._answer(200)

    def _fresh(self, items: list[Any]) -> list[Any]:
        """The events not received before; they are remembered (the oldest forgotten past the window)."""
        fresh = []
        for item in items:
            audit_id = item.get("auditID") if isinstance(item, dict) else None
            if not isinstance(audit_id, str):
                fresh.append(item)  # nothing to know it again by: the evaluator counts it as malformed
                continue
            key = (audit_id, str(item.get("stage")))
            if key not in self._seen:
                self._seen[key] = None
                fresh.append(item)
        while len(self._seen) > DEDUP_WINDOW:
            self._seen.popitem(last=False)
        return fresh


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
