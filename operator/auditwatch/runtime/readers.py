"""One reader per source, however many detections read it.

Detections that read the same file (or webhook path) share one tail: each chunk is read once,
prefiltered once against the union of their prefilters and each line JSON-decoded at most once
(``engine.evaluate.Decoded``), then handed to every detection reading it. Each detection keeps its
own seq space, so its findings' checkpoints and its saved position stay exact:

- A detection subscribes with its saved position (none: the live file's start). The first one starts
  the shared tail there. A later one reads on its own (a private tail from its position) until it
  reaches a line the shared tail has not handed out yet, then takes the shared chunks from that line
  on: from then on its seq is the shared seq plus a fixed difference (both count the same bytes).
  So a detection added later catches up without the others reading anything twice.
- Its position for a seq is found through the private tail before the join, through the shared tail
  after; the shared tail forgets only what no subscriber may still resume from.
- Leaving (a spec change, a deletion) closes one subscription; the tail stops with the last one.

The shared chunks are evaluated for every member at once in the tail's worker process (engine/worker.py)
and each member is handed its own matches; a member that joined while its chunk was being evaluated,
and the private tails that catch up, evaluate on the event loop (as everything does with
``--no-evaluation-worker``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

from auditwatch.api.models import EventHubSource, SourceKind, SourceStatus
from auditwatch.api.models import Source as SourceSpec
from auditwatch.api.settings import Settings
from auditwatch.engine.evaluate import Decoded
from auditwatch.engine.prefilter import MAX_LITERALS, Prefilter, derive
from auditwatch.engine.worker import Evaluated, Recipe, Worker
from auditwatch.sources import Chunk, Position, Tail
from auditwatch.sources.azureblob import BlobPosition, BlobTail, Container
from auditwatch.sources.cloudwatch import CloudWatchPosition, CloudWatchTail, LogGroup, Timing
from auditwatch.sources.eventhub import HubReader
from auditwatch.sources.file import FilePosition, FileTail
from auditwatch.sources.paths import under_root
from auditwatch.sources.pubsub import Puller
from auditwatch.sources.webhook import WebhookServer

QUEUE_CHUNKS = 8  # chunks (up to 1 MiB each) waiting per subscriber before the shared tail waits for it

OpenTail = Callable[[Any], Tail]  # a tail from a position of its kind (None: where a new read starts)


@dataclass(frozen=True)
class Delivery:
    """Whole lines for one subscriber: ``seq`` in its own seq space; ``decoded`` shared with the others,
    ``evaluated`` by the worker for this subscriber (None: evaluate ``data`` here)."""

    data: bytes
    seq: int
    origin: str
    decoded: Decoded | None = None
    evaluated: Evaluated | None = None


class Readers:
    """The shared tails of one operator, by source, and the upstreams they read (one each, however many
    detections read it: a log group's call budget, a subscription's or hub's spool, a container's calls)."""

    def __init__(self, settings: Settings, webhooks: WebhookServer | None = None) -> None:
        self.settings, self.webhooks = settings, webhooks
        self.shared: dict[tuple[str, ...], SharedTail] = {}
        self.log_groups: dict[tuple[str, str], LogGroup] = {}  # one call budget per log group
        self.pullers: dict[tuple[str, str], Puller] = {}  # one puller (and spool) per Pub/Sub subscription
        self.containers: dict[tuple[str, str], Container] = {}  # Azure storage containers, their calls counted
        self.hubs: dict[tuple[str, str, str], HubReader] = {}  # one reader (and spool) per event hub and group

    def subscribe(self, spec: SourceSpec, saved: SourceStatus | None, recipe: Recipe | None) -> Subscription:
        """Read ``spec`` from the position ``saved`` records (none: where a new detection starts), for the
        evaluator ``recipe`` makes (none: every line, not evaluated)."""
        key, open_tail, start = OPENERS[spec.kind](self, spec, saved)
        shared = self.shared.get(key)
        if shared is None or shared.broken:
            worker = self.settings.evaluation_worker
            shared = self.shared[key] = SharedTail(open_tail, lambda: self._drop(key, shared), worker)
        return shared.subscribe(start, recipe)

    def _drop(self, key: tuple[str, ...], shared: SharedTail | None) -> None:
        if self.shared.get(key) is shared:
            del self.shared[key]

    def log_group(self, region: str, name: str) -> LogGroup:
        return _one(self.log_groups, (region, name),
                    lambda: LogGroup(region, name, self.settings.cloudwatch_calls_per_second))  # fmt: skip

    def puller(self, project: str, subscription: str, max_messages: int) -> Puller:
        spool = Path(self.settings.pubsub_spool)
        return _one(self.pullers, (project, subscription), lambda: Puller(project, subscription, spool, max_messages))

    def container(self, account_url: str, name: str) -> Container:
        return _one(self.containers, (account_url, name), lambda: Container(account_url, name))

    def hub_reader(self, hub: EventHubSource) -> HubReader:
        s = self.settings
        instance = s.shard if s.sharded else None  # a StatefulSet's pod: a static member of the group
        return _one(self.hubs, (hub.namespace, hub.hub, hub.consumerGroup),
                    lambda: HubReader(hub.namespace, hub.hub, hub.consumerGroup, Path(s.eventhub_spool), instance,
                                      hub.maxRecords, hub.start))  # fmt: skip


K = TypeVar("K")
V = TypeVar("V")


def _one(table: dict[K, V], key: K, make: Callable[[], V]) -> V:
    """The one ``V`` of ``key`` in ``table``, made on first use."""
    value = table.get(key)
    if value is None:
        value = table[key] = make()
    return value


# Each opener gives the shared tail's key, how to open a tail of the source (from a position of its kind,
# None: where a new read starts), and where this subscriber starts.
Opener = Callable[[Readers, SourceSpec, SourceStatus | None], tuple[tuple[str, ...], OpenTail, Position | None]]


def _open_file(readers: Readers, spec: SourceSpec, saved: SourceStatus | None) -> tuple[Any, OpenTail, Any]:
    assert spec.file is not None
    s = readers.settings
    path, max_line = under_root(s.host_root, spec.file.path), spec.file.maxLineBytes
    allow = tuple(under_root(s.host_root, d) for d in s.allow_paths)
    start = FilePosition.saved(saved.file, saved.seq) if saved else None
    return ("file", path, str(max_line)), lambda at: FileTail(path, max_line, at, s.poll_seconds, allow), start


def _open_webhook(readers: Readers, spec: SourceSpec, saved: SourceStatus | None) -> tuple[Any, OpenTail, Any]:
    webhooks, hook = readers.webhooks, spec.webhook
    assert hook is not None and webhooks is not None  # validate() refuses a webhook source with the server off
    start = FilePosition.saved(saved.webhook, saved.seq) if saved else None
    return ("webhook", hook.path), lambda at: webhooks.subscribe(hook.path, at, readers.settings.poll_seconds), start


def _open_cloudwatch(readers: Readers, spec: SourceSpec, saved: SourceStatus | None) -> tuple[Any, OpenTail, Any]:
    cw = spec.cloudwatch
    assert cw is not None
    group, timing = readers.log_group(cw.region, cw.logGroup), Timing.of(cw)
    start = (CloudWatchPosition.saved(saved.cloudwatch, saved.seq) if saved else None) or CloudWatchPosition.starting(
        cw, round(time.time() * 1000)
    )
    key = ("cloudwatch", cw.region, cw.logGroup, cw.logStreamPrefix, repr(timing))
    return key, lambda at: CloudWatchTail(group, cw.logStreamPrefix, timing, at), start


def _open_pubsub(readers: Readers, spec: SourceSpec, saved: SourceStatus | None) -> tuple[Any, OpenTail, Any]:
    ps = spec.pubsub
    assert ps is not None
    puller = readers.puller(ps.project, ps.subscription, ps.maxMessages)
    start = FilePosition.saved(saved.pubsub, saved.seq) if saved else None
    key = ("pubsub", ps.project, ps.subscription)
    return key, lambda at: puller.subscribe(at, readers.settings.poll_seconds), start


def _open_azure_blob(readers: Readers, spec: SourceSpec, saved: SourceStatus | None) -> tuple[Any, OpenTail, Any]:
    az = spec.azureBlob
    assert az is not None
    container = readers.container(az.accountUrl, az.container)
    start = BlobPosition.saved(saved.azureBlob, saved.seq) if saved else None
    key = ("azureBlob", az.accountUrl, az.container, az.prefix, az.pollInterval, az.settleDelay, az.start)
    return key, lambda at: BlobTail(container, az, at), start


def _open_eventhub(readers: Readers, spec: SourceSpec, saved: SourceStatus | None) -> tuple[Any, OpenTail, Any]:
    eh = spec.eventHub
    assert eh is not None
    hub = readers.hub_reader(eh)
    start = FilePosition.saved(saved.eventHub, saved.seq) if saved else None
    key = ("eventHub", eh.namespace, eh.hub, eh.consumerGroup)
    return key, lambda at: hub.subscribe(at, readers.settings.poll_seconds), start


OPENERS: dict[SourceKind, Opener] = {
    "file": _open_file,
    "webhook": _open_webhook,
    "cloudwatch": _open_cloudwatch,
    "pubsub": _open_pubsub,
    "azureBlob": _open_azure_blob,
    "eventHub": _open_eventhub,
}


class SharedTail:
    """One tail of one source and the subscribers it hands chunks to."""

    def __init__(self, open_tail: OpenTail, on_empty: Callable[[], None], worker: bool = True) -> None:
        self.open_tail, self.on_empty, self.use_worker = open_tail, on_empty, worker
        self.tail: Tail | None = None
        self.members: list[Subscription] = []  # joined: take the shared chunks
        self.subscribers: list[Subscription] = []  # all, catching up or joined
        self.union: Prefilter | None = None
        self.broken = False
        self._task: asyncio.Task[None] | None = None

    def subscribe(self, start: Position | None, recipe: Recipe | None) -> Subscription:
        sub = Subscription(self, start, recipe)
        self.subscribers.append(sub)
        if self.tail is None:  # the first: the tail starts where it resumes, at shared seq 0
            self.tail = self.open_tail(None if start is None else _with_seq(start, 0))
            self.join(sub, 0, start.seq if start else 0)
            self._task = asyncio.create_task(self._run())
        return sub

    def join(self, sub: Subscription, shared_seq: int, delta: int) -> None:
        sub.joined_at, sub.delta, sub.resume = shared_seq, delta, shared_seq
        sub.long_lines_base = self.tail.long_lines if self.tail else 0
        self.members.append(sub)
        self._union()

    def leave(self, sub: Subscription) -> None:
        for group in (self.members, self.subscribers):
            if sub in group:
                group.remove(sub)
        self._union()
        if not self.subscribers:
            if self._task is not None:
                self._task.cancel()
            self.on_empty()

    def forget(self) -> None:
        """Let the tail drop what no member may resume from."""
        if self.tail is not None and self.members:
            self.tail.forget(min(m.resume for m in self.members))

    def _union(self) -> None:
        """A prefilter admitting what any member's admits (None when one admits everything)."""
        filters = [m.prefilter for m in self.members]
        if len(filters) == 1 or not filters or None in filters:
            self.union = filters[0] if filters else None
            return
        literals = sorted({lit for f in filters if f is not None for lit in f.literals}, key=len, reverse=True)
        self.union = Prefilter(tuple(literals)) if len(literals) <= MAX_LITERALS else None

    async def _run(self) -> None:
        assert self.tail is not None
        worker = Worker() if self.use_worker else None
        # The worker starts beside the tail's first read: the tail opens its file at once, so that a new
        # detection's start (the live file's start) is fixed before a rotation can move it.
        starting = asyncio.ensure_future(worker.start() if worker is not None else asyncio.sleep(0))
        try:
            async for chunk in self.tail.chunks():
                decoded, evaluated = None, {}
                recipes = {m.key: m.recipe for m in self.members if m.recipe is not None}
                if worker is None:
                    decoded = Decoded(chunk.data, self.union)
                elif recipes:
                    await starting
                    evaluated = await worker.evaluate(chunk.data, chunk.origin, self.union, recipes)
                for sub in list(self.members):  # who joined during the evaluation evaluates the chunk itself
                    delivery = Delivery(chunk.data, chunk.seq, chunk.origin, decoded, evaluated.get(sub.key))
                    await sub.queue.put(delivery)
        except Exception as exc:  # every subscriber's reader raises it, and restarts from its checkpoint
            self.broken = True
            for sub in self.subscribers:
                sub.failure = exc
                sub.drain()
                sub.queue.put_nowait(None)
        finally:
            starting.cancel()
            await asyncio.gather(starting, return_exceptions=True)
            if worker is not None:
                await worker.close()


class Subscription:
    """One detection's reading of a shared source: chunks, positions and errors in its own seq space."""

    def __init__(self, shared: SharedTail, start: Position | None, recipe: Recipe | None) -> None:
        self.shared, self.start, self.recipe = shared, start, recipe
        self.key = next(_keys)  # the worker's name for this subscriber
        self.prefilter = derive(recipe.plan) if recipe else None
        self.queue: asyncio.Queue[Delivery | None] = asyncio.Queue(QUEUE_CHUNKS)
        self.private: Tail | None = None  # the tail that catches up, until the join
        self.joined_at: int | None = None  # shared seq of the first byte taken from the shared tail
        self.delta = 0  # own seq - shared seq, from the join on
        self.resume = 0  # shared seq this subscriber may still resume from
        self.long_lines_base = 0
        self.failure: Exception | None = None

    @property
    def _active(self) -> Tail | None:
        return self.shared.tail if self.joined_at is not None else self.private

    @property
    def ready(self) -> bool:
        return bool(self._active and self._active.ready)

    @property
    def error(self) -> str:
        return self._active.error if self._active else ""

    @property
    def details(self) -> dict[str, Any]:
        """The source's SourceStatus fields besides its position (lag, API calls...)."""
        return self._active.details() if self._active else {}

    @property
    def long_lines(self) -> int:
        tail = self.shared.tail if self.joined_at is not None else None
        shared = tail.long_lines - self.long_lines_base if tail is not None else 0
        return (self.private.long_lines if self.private else 0) + shared

    async def chunks(self) -> AsyncIterator[Delivery]:
        try:
            if self.joined_at is None:
                async for delivery in self._catch_up():
                    yield delivery
            async for delivery in self._shared_chunks():
                yield delivery
        finally:
            self.close()

    async def _catch_up(self) -> AsyncIterator[Delivery]:
        """Read privately from the saved position until a line the shared tail has not handed out."""
        private = self.private = self.shared.open_tail(self.start)
        private.idle_chunks = True  # a chance to join when it reaches the end of the file
        chunks = cast(AsyncGenerator[Chunk, None], private.chunks())
        try:
            async for chunk in chunks:
                if chunk.data:
                    yield Delivery(chunk.data, chunk.seq, chunk.origin)
                if self.failure is not None:
                    raise self.failure
                tail = self.shared.tail
                at = private.at
                shared_seq = None if tail is None or at is None else tail.seq_at(at)
                if at is not None and shared_seq is not None:
                    self.shared.join(self, shared_seq, at.seq - shared_seq)
                    return
        finally:
            await chunks.aclose()

    async def _shared_chunks(self) -> AsyncIterator[Delivery]:
        assert self.joined_at is not None
        while True:
            item = await self.queue.get()
            if item is None:
                assert self.failure is not None
                raise self.failure
            if item.seq + len(item.data) <= self.joined_at:
                continue  # read by this subscriber before it joined
            if item.seq < self.joined_at:  # the join is a line start inside this chunk: evaluated here
                item = Delivery(item.data[self.joined_at - item.seq :], self.joined_at, item.origin)
            yield dataclasses.replace(item, seq=item.seq + self.delta)

    def _shared_from(self, seq: int) -> bool:
        """Whether own ``seq`` was read from the shared tail (at or after the join), not the private one."""
        return self.joined_at is not None and seq >= self.joined_at + self.delta and self.shared.tail is not None

    def forget(self, seq: int) -> None:
        """No position before own ``seq`` will be asked for again: the tails may forget what is before it."""
        if self._shared_from(seq):
            self.resume = seq - self.delta
            self.shared.forget()
        elif self.private is not None:
            self.private.forget(seq)

    def position(self, seq: int) -> Position | None:
        """The position to resume from at own ``seq``, if it is still known."""
        if self._shared_from(seq):
            assert self.shared.tail is not None  # _shared_from says so
            position = self.shared.tail.position(seq - self.delta)
            return None if position is None else _with_seq(position, position.seq + self.delta)
        return self.private.position(seq) if self.private is not None else None

    def close(self) -> None:
        self.shared.leave(self)
        self.drain()  # unblocks a shared tail waiting to put into this queue

    def drain(self) -> None:
        with contextlib.suppress(asyncio.QueueEmpty):
            while True:
                self.queue.get_nowait()


_keys = itertools.count()


def _with_seq(position: Position, seq: int) -> Position:
    """``position`` given another seq (positions are dataclasses)."""
    return cast(Position, dataclasses.replace(cast(Any, position), seq=seq))
