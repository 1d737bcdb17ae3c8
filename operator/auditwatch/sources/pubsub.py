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

Every detection reading the subscription tails that spool (sources/spooler.py), so what was
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

import os
import time
from pathlib import Path
from typing import Any

import orjson

from auditwatch.audit.gke import audit_event, is_gke_entry
from auditwatch.sources.spool import event_key
from auditwatch.sources.spooler import Spooler, SpoolError

PULL_SECONDS = 20.0  # a pull waits this long for messages before it is asked again
REACK_SECONDS = 600  # the longest ack deadline Pub/Sub allows: older ack IDs are not acknowledged again
ACK_BATCH = 1000  # ack IDs per Acknowledge call (the request may have at most 512 KiB)
LINE_BYTES = 8 << 20  # a pulled batch is spooled in lines of about this size at most


class Puller(Spooler):
    """Pulls one subscription into its spool while a detection reads it (module docstring)."""

    name = "pubsub"

    def __init__(self, project: str, subscription: str, spool_dir: Path, max_messages: int = 1000) -> None:
        self.path = f"projects/{project}/subscriptions/{subscription}"
        super().__init__(f"pubsub:{self.path}", spool_dir / project / subscription)
        self.max_messages = max_messages
        self.pulls = self.messages = self.duplicates = self.redelivered = self.dropped = 0
        self.last_dropped = ""
        self.lag_seconds = 0
        self._client: Any = None
        self._reack: list[str] = []  # ack IDs to acknowledge again before the first pull
        self._started = time.time()

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

    def _remember(self, line: dict[str, Any]) -> None:
        """The keys of a spooled line, and its ack IDs if spooled in the last REACK_SECONDS (a kill may have
        come between spooling and acknowledging)."""
        pulled = line.get("pulled") or {}
        for key in pulled.get("keys", ()):
            self._recent.seen(key)
        if self._started - float(pulled.get("at", 0)) < REACK_SECONDS:
            self._reack += pulled.get("ackIds", ())

    async def _fetch_once(self) -> None:
        self._client = self._client or _client()
        if self._reack:
            await self._acknowledge(self._client, self._reack)
            self._reack = []
        await self._pull_once(self._client)

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
        await self._spool(lines, kept)
        self.lag_seconds = max(0, round(now - oldest))

    async def _acknowledge(self, client: Any, ack_ids: list[str]) -> None:
        for i in range(0, len(ack_ids), ACK_BATCH):
            await client.acknowledge(subscription=self.path, ack_ids=ack_ids[i : i + ACK_BATCH])

    async def _reset(self) -> None:
        """Close the client's channel (a failure or the end): the next pull makes a new one."""
        client, self._client = self._client, None
        if client is not None:
            await client.transport.close()

    def _explain(self, exc: Exception) -> str:
        return super()._explain(exc) if isinstance(exc, SpoolError) else refusal(self.path, exc)


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
        return value, event_key(value) if audit_id else ""
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
