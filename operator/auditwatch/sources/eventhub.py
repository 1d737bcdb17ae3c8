"""AKS audit events from Event Hubs (diagnostic setting -> event hub), read through its Kafka endpoint,
each counted once, the hub's partitions shared by the replicas.

A ``HubReader`` per event hub and consumer group (however many detections read it) is a member of
that Kafka consumer group; the group's coordinator spreads the hub's partitions over the replicas, and
each replica spools and counts its partitions' events as a shard. It loops (sources/spooler.py):

1. fetches a batch of records (Event Hubs events) from its partitions;
2. drops the audit Events already spooled, known by ``auditID`` and ``stage`` within the last 200,000
   (a diagnostic setting with both kube-audit and kube-audit-admin sends the admin events twice);
3. appends the rest to the spool ``<spool>/<namespace>/<hub>/<group>/audit.log`` as audit ``EventList``
   lines that also keep, per partition, the offset after the last record they hold; fsynced;
4. commits those offsets to the consumer group.

Why counts are exact: nothing is committed before it is spooled (killed before step 3, the records are
fetched again from the committed offsets). Killed between 3 and 4, the committed offsets are behind
the spool: when a partition is assigned, the reader starts it at the offset its own spool reached if
that is past the committed one (and commits it), so nothing is fetched twice. The replicas are static
members of the group (``group.instance.id``: the pod's stable name), so a restarted pod gets its
partitions back without a rebalance. What remains: a pod killed between 3 and 4 that does not come
back within the session timeout hands its partitions to another replica from the committed offsets,
and that batch is counted by both (at most one batch, only for a kill in that gap of milliseconds).

A receive that stalls (Falco's AKS plugin stopped receiving after an Event Hubs timeout until its pod
was restarted) is noticed: every WATCH_SECONDS the reader asks for the partitions' end offsets (itself
bounded in time); records waiting while none came for STALL_SECONDS, it closes its consumer, says so in
the source's readiness and starts a new one.

Why the Kafka endpoint and not the AMQP SDK (azure-eventhub): the consumer group is the partition
balancing and the checkpoint store in one (no blob container, no Blob Data Contributor role), the
protocol is the one a real Apache Kafka broker speaks, against which this is tested, and aiokafka runs on
the operator's event loop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition, errors
from aiokafka.abc import AbstractTokenProvider
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.helpers import create_ssl_context

from auditwatch.audit.azure import hub_events
from auditwatch.sources.spool import event_key
from auditwatch.sources.spooler import Spooler, SpoolError

log = logging.getLogger(__name__)

FETCH_MS = 1000  # a fetch waits this long for records before the loop goes round
WATCH_SECONDS = 30.0  # the partitions' end offsets are asked for this often
STALL_SECONDS = 120.0  # records waiting and none received this long: the receive stalled
CALL_SECONDS = 30.0  # a call to the service answers within this or has failed
# A static member (a StatefulSet's pod) keeps its partitions this long while it is away: a restarted pod
# gets them back without a rebalance.
STATIC_SESSION_MS = 60_000
LINE_BYTES = 8 << 20  # a batch is spooled in lines of about this size at most
DOMAIN = ".servicebus.windows.net"
KAFKA_PORT = 9093
SASL_SSL = "sasl_ssl://"


class _ConnectErrors(logging.Handler):
    """Why aiokafka could not connect to each endpoint: it logs the cause (a refused SASL login, a TLS
    failure) and raises only "Unable to bootstrap", so the refusal is told from what it logged."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.last: dict[str, str] = {}

    def emit(self, record: logging.LogRecord) -> None:
        if str(record.msg).startswith('Unable connect to "') and len(record.args or ()) == 3:
            host, port, error = record.args  # type: ignore[misc]
            self.last[f"{host}:{port}"] = str(error)


CONNECT_ERRORS = _ConnectErrors()
logging.getLogger("aiokafka").addHandler(CONNECT_ERRORS)


class Stalled(Exception):
    """Records wait in the reader's partitions and none came: the consumer is replaced."""


class UnknownHub(Exception):
    """The namespace has no event hub of that name (or shows none to this identity)."""


class HubReader(Spooler):
    """Reads one event hub as a member of a consumer group into its spool (module docstring)."""

    name = "eventhub"

    def __init__(
        self,
        namespace: str,
        hub: str,
        group: str,
        spool_dir: Path,
        instance: str | None = None,
        max_records: int = 500,
        start: str = "latest",
    ) -> None:
        self.host = host_of(namespace)
        self.hub, self.group, self.instance = hub, group, instance
        super().__init__(f"eventhub:{self.host}/{hub}", spool_dir / namespace / hub / group)
        self.max_records, self.start = max_records, start
        self.records = self.events = self.duplicates = self.dropped = self.fetches = self.stalls = 0
        self.last_dropped = ""
        self.lag_records = self.lag_seconds = 0
        self.partitions: dict[int, int] = {}  # the offset spooled up to, per partition of this replica
        self._spooled: dict[int, int] = {}  # per partition, the offset this spool holds records up to
        self._uncommitted: dict[int, int] = {}  # offsets spooled (or sought after an assignment), not committed
        self._consumer: Any = None
        self._stopping: set[asyncio.Task[None]] = set()  # consumers being stopped
        self.failed: Exception | None = None  # raised in the rebalance listener, where aiokafka only logs it
        self._received_at = self._watched_at = 0.0

    def details(self) -> dict[str, Any]:
        """The EventHubStatus fields of the reading."""
        return {
            "records": self.records,
            "events": self.events,
            "duplicates": self.duplicates,
            "dropped": self.dropped,
            "lastDropped": self.last_dropped,
            "fetches": self.fetches,
            "stalls": self.stalls,
            "partitions": {str(p): o for p, o in sorted(self.partitions.items())},
            "lagRecords": self.lag_records,
            "lagSeconds": self.lag_seconds,
        }

    def _remember(self, line: dict[str, Any]) -> None:
        consumed = line.get("consumed") or {}
        for key in consumed.get("keys", ()):
            self._recent.seen(key)
        for partition, offset in (consumed.get("offsets") or {}).items():
            self._spooled[int(partition)] = max(int(offset), self._spooled.get(int(partition), 0))

    async def _fetch_once(self) -> None:
        if self._consumer is None:
            self._consumer = await self._open()
            self._received_at = self._watched_at = time.monotonic()
        consumer = self._consumer
        if self.failed is not None:
            failed, self.failed = self.failed, None
            raise failed
        batch = await consumer.getmany(timeout_ms=FETCH_MS, max_records=self.max_records)
        self.fetches += 1
        if batch:
            self._received_at = time.monotonic()
            self._uncommitted.update(await self._keep(batch, time.time()))
        await self._commit_spooled(consumer)
        if time.monotonic() - self._watched_at >= WATCH_SECONDS:
            await self._watch()

    async def _commit_spooled(self, consumer: Any, partitions: set[int] | None = None) -> None:
        """Commit the offsets spooled and not committed yet (of ``partitions``; None: all)."""
        pending = {p: o for p, o in self._uncommitted.items() if partitions is None or p in partitions}
        if pending:
            await asyncio.wait_for(consumer.commit(self._offsets(pending)), CALL_SECONDS)
            for p, o in pending.items():
                if self._uncommitted.get(p) == o:
                    del self._uncommitted[p]

    async def _keep(self, batch: dict[Any, list[Any]], now: float) -> dict[int, int]:
        """Spool the batch's new events (lines of up to LINE_BYTES, each with its partitions' offsets after
        it); count the rest. The offsets after the batch, per partition."""
        lines: list[bytes] = []
        kept: list[str] = []
        items: list[dict[str, Any]] = []
        keys: list[str] = []
        offsets: dict[int, int] = {}
        flushed: dict[int, int] = {}  # the offsets in the last line made
        size, oldest = 0, now
        for tp, records in batch.items():
            for record in records:
                self.records += 1
                oldest = min(oldest, record.timestamp / 1000)
                for event, why in hub_events(record.value or b""):
                    if event is None:
                        self.dropped += 1
                        self.last_dropped = f"partition {tp.partition} offset {record.offset}: {why}"[:256]
                        continue
                    self.events += 1
                    key = event_key(event)
                    if self._recent.seen(key):
                        self.duplicates += 1
                        continue
                    items.append(event)
                    keys.append(key)
                size += len(record.value or b"")
                offsets[tp.partition] = record.offset + 1
                if size > LINE_BYTES:
                    lines.append(_line(items, keys, offsets, now))
                    kept, items, keys, size, flushed = kept + keys, [], [], 0, dict(offsets)
        if items or offsets != flushed:  # records of nothing new still move the offsets on: a line of no items
            lines.append(_line(items, keys, offsets, now))
            kept += keys
        await self._spool(lines, kept)
        self._spooled.update(offsets)
        self.partitions.update(offsets)
        self.lag_seconds = max(0, round(now - oldest))
        return offsets

    async def _watch(self) -> None:
        """The records waiting in this replica's partitions; Stalled if some wait and none came for long."""
        consumer = self._consumer
        self._watched_at = time.monotonic()
        assigned = sorted(consumer.assignment())
        if not assigned:
            self.lag_records = 0
            return
        ends = await asyncio.wait_for(consumer.end_offsets(assigned), CALL_SECONDS)
        lag = 0
        for tp in assigned:
            lag += max(0, ends[tp] - await consumer.position(tp))
        self.lag_records = lag
        if not lag:
            self._received_at = time.monotonic()
        elif time.monotonic() - self._received_at > STALL_SECONDS:
            self.stalls += 1
            raise Stalled(
                f"the receive stalled: {lag} records wait in partitions "
                f"{','.join(str(tp.partition) for tp in assigned)} and none came for "
                f"{STALL_SECONDS:.0f} s; reconnecting"
            )

    async def _open(self) -> Any:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=endpoint(self.host),
            group_id=self.group,
            group_instance_id=self.instance,
            client_id="auditwatch",
            enable_auto_commit=False,
            auto_offset_reset=self.start,
            max_poll_records=self.max_records,
            request_timeout_ms=int(CALL_SECONDS * 1000),
            session_timeout_ms=STATIC_SESSION_MS if self.instance else 10_000,
            **credentials(self.host),
        )
        try:
            await asyncio.wait_for(consumer.start(), CALL_SECONDS)
            if self.hub not in await asyncio.wait_for(consumer.topics(), CALL_SECONDS):
                raise UnknownHub(self.hub)
            CONNECT_ERRORS.last.pop(endpoint(self.host), None)  # connected: an older cause is no longer it
        except BaseException:
            await consumer.stop()
            raise
        consumer.subscribe([self.hub], listener=_Rebalance(self, consumer))
        return consumer

    async def assigned(self, consumer: Any, partitions: list[Any]) -> None:
        """Partitions given to this replica: each starts where its spool reached if that is past the
        committed offset (killed between spooling and committing), and that offset is committed."""
        for tp in partitions:
            committed = await consumer.committed(tp)
            spooled = self._spooled.get(tp.partition)
            if spooled is not None and (committed is None or spooled > committed):
                consumer.seek(tp, spooled)
                self._uncommitted[tp.partition] = spooled
            self.partitions[tp.partition] = max(spooled or 0, committed or 0)

    async def revoked(self, consumer: Any, partitions: list[Any]) -> None:
        """Partitions taken from this replica (a rebalance): what it spooled of them is committed first, so
        that the replica given them starts after it."""
        taken = {tp.partition for tp in partitions}
        try:
            await self._commit_spooled(consumer, taken)
        except Exception as exc:  # the replica given them reads that batch again: counted twice, not lost
            log.warning("%s: committing partitions %s before handing them over failed: %s", self.origin, taken, exc)
        for p in taken:
            self.partitions.pop(p, None)
            self._uncommitted.pop(p, None)

    def _offsets(self, offsets: dict[int, int]) -> dict[Any, int]:
        return {TopicPartition(self.hub, p): o for p, o in offsets.items()}

    async def _reset(self) -> None:
        """Commit what was spooled (stopped or cancelled between spooling and committing: the replica given
        these partitions next starts after it), then stop the consumer."""
        consumer, self._consumer = self._consumer, None
        if consumer is not None and self._uncommitted:
            try:
                await self._commit_spooled(consumer)
            except Exception as exc:  # a failed broker: the next assignment seeks past the spool anyway
                log.info("%s: offsets %s not committed before stopping: %s", self.origin, self._uncommitted, exc)
        self._uncommitted = {}  # the next assignment finds them again from the spool
        if consumer is not None:  # stopped in the background: a broker that answers nothing may hold it long
            stopping = asyncio.create_task(consumer.stop())
            self._stopping.add(stopping)
            stopping.add_done_callback(self._stopping.discard)
            await asyncio.wait({stopping}, timeout=CALL_SECONDS)

    def _explain(self, exc: Exception) -> str:
        if isinstance(exc, SpoolError | Stalled):
            return f"{self.origin}: {exc}"
        return refusal(self.host, self.hub, self.group, exc, endpoint(self.host))


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """Tells the reader which partitions it was given and which were taken."""

    def __init__(self, reader: HubReader, consumer: Any) -> None:
        self.reader, self.consumer = reader, consumer

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self.reader.revoked(self.consumer, list(revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        try:
            await self.reader.assigned(self.consumer, list(assigned))
        except Exception as exc:  # aiokafka only logs a listener's failure: the reader's next fetch raises it
            self.reader.failed = exc


async def retained(namespace: str, hub: str, since_ms: int, until_ms: int) -> AsyncGenerator[list[bytes]]:
    """The bodies of a hub's events enqueued in ``[since_ms, until_ms)``, batch by batch, read from every
    partition without a consumer group: nothing is committed, no consumer's offsets move (``scan``)."""
    host = host_of(namespace)
    security = {"bootstrap_servers": endpoint(host), "request_timeout_ms": int(CALL_SECONDS * 1000)} | credentials(host)
    consumer = AIOKafkaConsumer(group_id=None, enable_auto_commit=False, **security)
    admin = AIOKafkaAdminClient(**security)  # the hub's partitions: a consumer without a group knows none
    try:
        await asyncio.wait_for(consumer.start(), CALL_SECONDS)
        await asyncio.wait_for(admin.start(), CALL_SECONDS)
        [described] = await asyncio.wait_for(admin.describe_topics([hub]), CALL_SECONDS)
        partitions = [p["partition"] for p in described.get("partitions") or ()]
        if described.get("error_code") or not partitions:
            raise UnknownHub(hub)
        tps = [TopicPartition(hub, p) for p in sorted(partitions)]
        consumer.assign(tps)
        starts = await consumer.offsets_for_times({tp: since_ms for tp in tps})
        ends = await consumer.end_offsets(tps)
        for tp in tps:
            found = starts.get(tp)
            consumer.seek(tp, found.offset if found is not None else ends[tp])
        while left := [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            batch = await consumer.getmany(*left, timeout_ms=FETCH_MS, max_records=1000)
            bodies = [r.value or b"" for records in batch.values() for r in records
                      if r.timestamp < until_ms and r.offset < ends[TopicPartition(r.topic, r.partition)]]  # fmt: skip
            for tp, records in batch.items():  # past until: that partition is done
                if records and records[-1].timestamp >= until_ms:
                    ends[tp] = min(ends[tp], records[-1].offset)
            if bodies:
                yield bodies
    except (TimeoutError, errors.KafkaError, UnknownHub) as exc:
        raise HubError(refusal(host, hub, "", exc, endpoint(host))) from None
    finally:
        await admin.close()
        await consumer.stop()


class HubError(Exception):
    """An event hub that cannot be read, and why."""


def _line(items: list[dict[str, Any]], keys: list[str], offsets: dict[int, int], now: float) -> bytes:
    """A spool line: an audit EventList, with the keys of its events and its partitions' offsets after it."""
    consumed = {"at": now, "keys": keys, "offsets": {str(p): o for p, o in offsets.items()}}
    return orjson.dumps({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": items,
                         "consumed": consumed}) + b"\n"  # fmt: skip


def endpoint(host: str) -> str:
    """The Kafka endpoint: the namespace's, or ``EVENTHUB_KAFKA_BROKER``'s, a Kafka broker standing in for
    every namespace: ``HOST:PORT`` (plaintext) or ``sasl_ssl://HOST:PORT`` (TLS and SASL, as Event Hubs)."""
    return os.environ.get("EVENTHUB_KAFKA_BROKER", "").removeprefix(SASL_SSL) or f"{host}:{KAFKA_PORT}"


def host_of(namespace: str) -> str:
    """An Event Hubs namespace's host name: ``NAME`` is ``NAME.servicebus.windows.net``; a host name (another
    Azure cloud's) stays as it is."""
    return namespace if "." in namespace else namespace + DOMAIN


def credentials(host: str) -> dict[str, Any]:
    """The consumer's security settings: none for a plaintext ``EVENTHUB_KAFKA_BROKER``; else TLS and SASL
    PLAIN with ``EVENTHUB_CONNECTION_STRING``, or an Entra ID token (Workload Identity on AKS) by OAUTHBEARER."""
    if (stand_in := os.environ.get("EVENTHUB_KAFKA_BROKER")) and not stand_in.startswith(SASL_SSL):
        return {"security_protocol": "PLAINTEXT"}
    tls = {"security_protocol": "SASL_SSL", "ssl_context": create_ssl_context()}
    if secret := os.environ.get("EVENTHUB_CONNECTION_STRING"):
        return tls | {"sasl_mechanism": "PLAIN", "sasl_plain_username": "$ConnectionString",
                      "sasl_plain_password": secret}  # fmt: skip
    return tls | {"sasl_mechanism": "OAUTHBEARER", "sasl_oauth_token_provider": _EntraToken(host)}


class _EntraToken(AbstractTokenProvider):  # type: ignore[misc]
    """An Entra ID access token for the namespace, from azure-identity's default chain (Workload Identity)."""

    def __init__(self, host: str) -> None:
        self._scope = f"https://{host}/.default"
        self._credential: Any = None

    async def token(self) -> str:
        from azure.identity.aio import DefaultAzureCredential

        self._credential = self._credential or DefaultAzureCredential()
        return (await self._credential.get_token(self._scope)).token

    def extensions(self) -> dict[str, str]:
        return {}


def refusal(host: str, hub: str, group: str, exc: Exception, endpoint: str) -> str:
    """What a failed Kafka call on an event hub (read by consumer ``group``, if any) means, and what to do."""
    where = f"event hub {hub} in {host}" + (f" (consumer group {group})" if group else "")
    if isinstance(exc, errors.TopicAuthorizationFailedError | errors.GroupAuthorizationFailedError):
        return (
            f"{where}: the operator's identity may not read it (assign it the Azure Event Hubs Data Receiver "
            f"role on the event hub; with Workload Identity, is the ServiceAccount federated?): {exc}"
        )
    if isinstance(exc, UnknownHub | errors.UnknownTopicOrPartitionError):
        return (
            f"{where} does not exist, or this identity sees no hub of that name: create it and stream the "
            f"cluster's kube-audit to it (README, On AKS)"
        )
    cause = CONNECT_ERRORS.last.get(endpoint, "")
    if isinstance(exc, errors.KafkaConnectionError) and "Authentication" in cause:
        return (
            f"{where}: Event Hubs refused the credentials ({cause}): is EVENTHUB_CONNECTION_STRING's key right, "
            f"or the Workload Identity federated and granted Azure Event Hubs Data Receiver?"
        )
    if isinstance(exc, errors.KafkaConnectionError) and cause:
        return f"{where}: the Kafka endpoint {endpoint} refused the connection: {cause}"
    if isinstance(exc, errors.KafkaConnectionError | asyncio.TimeoutError):
        return f"{where}: the Kafka endpoint {endpoint} does not answer: {type(exc).__name__}: {exc}"
    return f"{where}: {type(exc).__name__}: {exc}"
