"""GKE audit events from Pub/Sub (Cloud Logging -> Log Router sink -> topic -> subscription), each counted once.

Pub/Sub delivers a message at least once: again when its acknowledgement is lost or late, and a sink
may publish an entry twice. A ``Puller`` per subscription (however many detections read it) loops:

1. pulls a batch (unary Pull, up to ``maxMessages``);
2. drops the messages already spooled, known by LogEntry ``insertId`` and ``timestamp`` (an audit Event
   published as it is: ``auditID`` and ``stage``) within the last 200,000 (``Recent``, rebuilt from the
   spool at start);
3. appends the rest to the subscription's spool, ``<spool>/<project>/<subscription>/audit.log``, as one
   line: an audit ``EventList`` of their Events (GKE's entries mapped by audit/gke.py) that also keeps the
   batch's ack IDs, fsynced;
4. acknowledges the batch.

Every detection reading the subscription tails that spool (``PubSubFeed``, a ``FileTail``), so what was
acknowledged is counted exactly once across restarts, as a file's lines are (findings/aggregate.py).
A message is acknowledged only once it is spooled, never before: killed before step 3, the message is
delivered again. Killed between 3 and 4, the restarted puller acknowledges again the ack IDs of what it
spooled in the last ``REACK_SECONDS`` before it pulls: within the subscription's ack deadline they are
still valid, so the messages are not delivered again, to it or to another replica sharing the
subscription; past the deadline they may be, and the window of step 2 drops them when they come back
to this replica. Replicas share the subscription (Pub/Sub spreads the messages over their pulls): each
spools and counts its part as a shard, and the parts sum to the whole.

Why unary Pull and not StreamingPull: a message is held only from its pull to its spooling (milliseconds),
so the streaming client's lease extension has nothing to extend, and one pull at a time is the flow
control (a batch is spooled before the next is asked for). And the Pub/Sub emulator, against which this
is tested, never delivers again what it had sent to a streaming pull whose client was killed
(NoSuchMethodError on the stream's reset, in its log), which would hide the case that matters most.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson

from auditwatch.audit.gke import audit_event, is_gke_entry
from auditwatch.sources import Chunk
from auditwatch.sources.file import FilePosition, FileTail
from auditwatch.sources.spool import Recent, Spool, newest_lines

PULL_SECONDS = 20.0  # a pull waits this long for messages before it is asked again
REACK_SECONDS = 600  # the longest ack deadline Pub/Sub allows: older ack IDs are not acknowledged again
ACK_BATCH = 1000  # ack IDs per Acknowledge call (the request may have at most 512 KiB)
LINE_BYTES = 8 << 20  # a pulled batch is spooled in lines of about this size at most
MAX_LINE = 64 << 20  # a line of one message (Pub/Sub's limit: 10 MB) is under it
log = logging.getLogger(__name__)


class PubSubFeed(FileTail):
    """One detection's reading of a subscription: a tail of its spool; not ready while pulling fails."""

    def __init__(self, puller: Puller, start: FilePosition | None, poll_seconds: float) -> None:
        super().__init__(str(puller.spool.file), MAX_LINE, start, poll_seconds, origin=puller.origin)
        self.puller = puller

    @property  # type: ignore[override]
    def ready(self) -> bool:
        return self._ready and self.puller.ready

    @ready.setter
    def ready(self, value: bool) -> None:
        self._ready = value

    @property  # type: ignore[override]
    def error(self) -> str:
        return self.puller.error or self._error

    @error.setter
    def error(self, value: str) -> None:
        self._error = value

    def details(self) -> dict[str, Any]:
        return {**super().details(), **self.puller.details()}

    async def chunks(self) -> AsyncIterator[Chunk]:
        try:
            async for chunk in super().chunks():
                yield chunk
        finally:
            self.puller.unsubscribe()


class Puller:
    """Pulls one subscription into its spool while a detection reads it (module docstring)."""

    def __init__(self, project: str, subscription: str, spool_dir: Path, max_messages: int = 1000) -> None:
        self.path = f"projects/{project}/subscriptions/{subscription}"
        self.origin = f"pubsub:{self.path}"  # Splunk's ``source`` of the events
        self.max_messages = max_messages
        self.spool = Spool(spool_dir / project / subscription)
        self.readers = 0
        self.ready, self.error = False, ""
        self.pulls = self.messages = self.duplicates = self.redelivered = self.dropped = 0
        self.last_dropped = ""
        self.lag_seconds = 0
        self._recent = Recent()
        self._task: asyncio.Task[None] | None = None

    def subscribe(self, start: FilePosition | None, poll_seconds: float) -> PubSubFeed:
        """A detection's tail of the spool from ``start`` (a saved position) or the spool's start; the
        first one starts the pulling."""
        self.readers += 1
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())
        return PubSubFeed(self, start, poll_seconds)

    def unsubscribe(self) -> None:
        """The last reader gone, pulling stops: messages wait in the subscription."""
        self.readers -= 1
        if self.readers <= 0 and self._task is not None:
            self._task.cancel()
            self._task = None

    def details(self) -> dict[str, Any]:
        """The PubSubStatus fields of the pulling."""
        return {
            "messages": self.messages,
            "duplicates": self.duplicates,
            "redelivered": self.redelivered,
            "dropped": self.dropped,
            "lastDropped": self.last_dropped,
            "pulls": self.pulls,
            "lagSeconds": self.lag_seconds,
        }

    async def _run(self) -> None:
        client = None
        reack = self._remember_spooled(time.time())
        failures = 0
        while True:
            try:
                client = client or _client()
                if reack:
                    await self._acknowledge(client, reack)
                    reack = []
                await self._pull_once(client)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a failed call or spool write: nothing was acknowledged, it comes again
                self.ready, self.error = False, self._explain(exc)
                failures += 1
                log.warning("pubsub %s: %s", self.path, self.error)
                await asyncio.sleep(min(60.0, 0.5 * 2**failures))
                continue
            self.ready, self.error, failures = True, "", 0

    async def _pull_once(self, client: Any) -> None:
        from google.api_core.exceptions import DeadlineExceeded

        self.pulls += 1
        try:
            answer = await client.pull(
                subscription=self.path, max_messages=self.max_messages, timeout=PULL_SECONDS, retry=None
            )
        except DeadlineExceeded:
            return  # nothing to pull for now
        received = list(answer.received_messages)
        if not received:
            return
        await self._keep(received, time.time())
        await self._acknowledge(client, [r.ack_id for r in received])

    async def _keep(self, received: list[Any], now: float) -> None:
        """Spool the batch's new events (lines of up to LINE_BYTES, each with its ack IDs); count the rest."""
        lines: list[bytes] = []
        kept: list[str] = []  # the keys of the events spooled
        batch: list[tuple[dict[str, Any], str, str]] = []  # (event, key, ack ID)
        size, oldest = 0, now
        for r in received:
            self.messages += 1
            self.redelivered += r.delivery_attempt > 1
            oldest = min(oldest, r.message.publish_time.timestamp())
            try:
                event, key = event_of(bytes(r.message.data))
            except ValueError as exc:
                self.dropped += 1
                self.last_dropped = f"message {r.message.message_id}: {exc}"[:256]
                continue
            key = key or f"message:{r.message.message_id}"
            if self._recent.seen(key):
                self.duplicates += 1
                continue
            if batch and size + len(r.message.data) > LINE_BYTES:
                lines.append(_line(batch, now))
                batch, size = [], 0
            batch.append((event, key, r.ack_id))
            kept.append(key)
            size += len(r.message.data)
        if batch:
            lines.append(_line(batch, now))
        if lines:
            try:
                await asyncio.to_thread(self.spool.append, b"".join(lines))
            except BaseException:
                self._recent.forget(kept)
                raise  # not kept: when it comes again, it is new
        self.lag_seconds = max(0, round(now - oldest))

    async def _acknowledge(self, client: Any, ack_ids: list[str]) -> None:
        for i in range(0, len(ack_ids), ACK_BATCH):
            await client.acknowledge(subscription=self.path, ack_ids=ack_ids[i : i + ACK_BATCH])

    def _remember_spooled(self, now: float) -> list[str]:
        """Rebuild the repeat window from the spool; the ack IDs of what was spooled in the last
        REACK_SECONDS, to acknowledge again (a kill may have come between spooling and acknowledging)."""
        reack: list[str] = []
        for line in newest_lines(self.spool.file.parent):
            try:
                pulled = orjson.loads(line).get("pulled") or {}
            except (orjson.JSONDecodeError, AttributeError):
                continue
            for key in pulled.get("keys", ()):
                self._recent.seen(key)
            if now - float(pulled.get("at", 0)) < REACK_SECONDS:
                reack += pulled.get("ackIds", ())
        return reack

    def _explain(self, exc: Exception) -> str:
        if isinstance(exc, OSError):  # Google's errors are not OSErrors: the spool's write failed
            return f"the spool {self.spool.file} cannot be written: {exc}"
        return refusal(self.path, exc)


def _line(batch: list[tuple[dict[str, Any], str, str]], now: float) -> bytes:
    """A spool line: an audit EventList of the events, with what the puller needs to know them again by."""
    pulled = {"at": now, "keys": [key for _, key, _ in batch], "ackIds": [ack for _, _, ack in batch]}
    return orjson.dumps({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": [e for e, _, _ in batch],
                         "pulled": pulled}) + b"\n"  # fmt: skip


def event_of(data: bytes) -> tuple[dict[str, Any], str]:
    """The audit Event a message carries and the key it is known again by ('' if none); ValueError for a
    message that is neither a GKE audit log entry nor an audit Event."""
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if is_gke_entry(value):
        insert_id = value.get("insertId")
        return audit_event(value), f"entry:{insert_id}@{value.get('timestamp', '')}" if insert_id else ""
    if isinstance(value, dict) and value.get("kind") == "Event" and "audit.k8s.io" in str(value.get("apiVersion")):
        audit_id = value.get("auditID")
        return value, f"event:{audit_id}@{value.get('stage', '')}" if audit_id else ""
    raise ValueError("neither a GKE audit log entry (protoPayload of type AuditLog) nor an audit Event")


def refusal(path: str, exc: Exception) -> str:
    """What a failed Pub/Sub call on subscription ``path`` means, and what to do about it."""
    from google.api_core import exceptions as gapi
    from google.auth.exceptions import DefaultCredentialsError

    where = f"subscription {path}"
    if isinstance(exc, gapi.NotFound):
        return (
            f"{where} does not exist: create it on the topic the cluster's log sink writes to (README, On "
            f"GKE: gcloud pubsub subscriptions create ...)"
        )
    if isinstance(exc, gapi.PermissionDenied):
        return (
            f"PermissionDenied: the operator's Google identity may not pull from {where} (grant it "
            f"roles/pubsub.subscriber on the subscription; with Workload Identity, is the Kubernetes "
            f"ServiceAccount bound to it?): {exc.message}"
        )
    if isinstance(exc, gapi.Unauthenticated | DefaultCredentialsError):
        return f"Google refused or found no credentials for {where} (Workload Identity?): {exc}"
    return f"{where}: {type(exc).__name__}: {exc}"


def _client() -> Any:
    """A Pub/Sub subscriber client on the event loop: credentials from Application Default Credentials
    (Workload Identity on GKE); ``PUBSUB_EMULATOR_HOST``: the emulator, without credentials."""
    import grpc  # imported when a Pub/Sub source is first read: the other sources never pay for it
    from google.pubsub_v1.services.subscriber import SubscriberAsyncClient
    from google.pubsub_v1.services.subscriber.transports import SubscriberGrpcAsyncIOTransport

    if host := os.environ.get("PUBSUB_EMULATOR_HOST"):
        channel = grpc.aio.insecure_channel(host)
        return SubscriberAsyncClient(transport=SubscriberGrpcAsyncIOTransport(channel=channel))
    return SubscriberAsyncClient()
