"""One generation of a detection's spec at run time: sources -> evaluator -> row stream -> findings.

A ``Generation`` holds what lives as long as the spec does: a subscription to each source's shared
reader (runtime/readers.py) and a task reading it, the evaluator,
the row stream (windows), the aggregator (findings in memory) and the writer. ``resume_position``
says where each source would have to be read again from after a restart: never past a line whose
contribution is not yet written to its finding, nor past the first line of a window still kept.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import astuple, dataclass
from datetime import UTC, datetime
from typing import Any

from auditwatch.api.models import AuditDetectionSpec, SourceStatus
from auditwatch.audit.decode import Record
from auditwatch.engine.evaluate import Counters
from auditwatch.engine.pipeline import EngineError
from auditwatch.engine.stream import TIME_FIELD, RowStream
from auditwatch.engine.worker import Recipe
from auditwatch.findings.aggregate import Aggregator, left_over
from auditwatch.findings.report import ReportMirror
from auditwatch.findings.writer import Writer
from auditwatch.ir.plan import Plan
from auditwatch.ir.planner import recorded_fields
from auditwatch.kube.client import Kube
from auditwatch.runtime.readers import Delivery, Subscription
from auditwatch.runtime.services import Logger, Services
from auditwatch.sources import Position
from auditwatch.times import parse_duration

# Evaluation hands the event loop back at least this often: a 1 MiB chunk evaluated at once held up
# the writes and watches for hundreds of ms with the whole pack (bench/operator_bench.py, loop lag).
SLICE_SECONDS = 0.002


class Generation:
    def __init__(
        self,
        spec: AuditDetectionSpec,
        plan: Plan,
        detection: dict[str, Any],
        saved: dict[str, SourceStatus],
        counters: Counters,
        kube: Kube,
        services: Services,
        logger: Logger,
    ) -> None:
        finding, settings = spec.finding, services.settings
        self.kube = kube
        self.name, self.namespace = detection["metadata"]["name"], detection["metadata"]["namespace"]
        self.aggregator = Aggregator(
            self.name,
            finding.groupBy,
            finding.message,
            finding.maxFindings,
            recorded_fields(plan, finding.groupBy),
            settings.shard,
        )
        self.writer = Writer(
            kube,
            detection,
            finding,
            logger,
            settings.finding_write_seconds,
            settings.finding_event_seconds,
            services.notifier,
        )
        self.report = (
            ReportMirror(kube, detection, finding, logger, settings.report_seconds) if settings.reports else None
        )
        self.ttl = parse_duration(finding.ttl)
        self.recipe = Recipe(plan, frozenset([TIME_FIELD]), settings.geoip_db)
        self.evaluator = self.recipe.evaluator()  # for what the source's worker did not evaluate
        self.evaluator.counters = counters  # the detection's, carried across generations
        self.stream = RowStream(self.evaluator.pipeline, parse_duration(spec.window))
        self._source_specs, self._saved, self._readers = spec.sources, saved, services.readers
        self.kinds = {s.name: s.kind for s in spec.sources}
        self.sources: dict[str, Subscription] = {}
        self.read_seq = {s.name: saved[s.name].seq if s.name in saved else 0 for s in spec.sources}
        self.peers = services.peers
        self.rows = 0
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Adopt the findings that exist in the cluster, then open and read every source (a webhook
        subscription is only made once nothing can fail before its reader runs)."""
        uid = self.writer.detection["metadata"].get("uid", "")
        for item in await self.kube.list_findings(self.namespace, self.name):
            if left_over(item, uid):  # its writer deletes it if this detection makes one of that name
                self.writer.logger.info("finding %s is a deleted detection's, not adopted", item["metadata"]["name"])
                continue
            self.aggregator.load(item)
        if self.peers is not None:
            self.peers.follow(self.namespace, self.name, self.aggregator)
        self.writer.resume_alerts(self.aggregator)
        self.sources = {
            s.name: self._readers.subscribe(s, self._saved.get(s.name), self.recipe) for s in self._source_specs
        }
        self._tasks = [asyncio.create_task(self._read(name, src)) for name, src in self.sources.items()]

    def check(self) -> None:
        """Raise what made a reader fail."""
        for task in self._tasks:
            if task.done() and (exc := task.exception()) is not None:
                raise exc

    async def stop(self) -> None:
        if self.peers is not None:
            self.peers.forget(self.namespace, self.name, self.aggregator)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for source in self.sources.values():
            source.close()

    async def _read(self, name: str, source: Subscription) -> None:
        stream, aggregator = self.stream, self.aggregator
        async for chunk in source.chunks():
            wall = datetime.now(UTC)
            now = wall.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            held = time.perf_counter()
            for start, end, record in self._records(chunk):
                seen = record.get(TIME_FIELD, [now])[0]
                for row, events in stream.add(record, name, chunk.seq + start, wall.timestamp()):
                    self.rows += 1
                    aggregator.add(row, name, chunk.seq + start, chunk.seq + end, seen, events)
                if time.perf_counter() - held > SLICE_SECONDS:  # mid-chunk: read_seq stays at its start
                    await asyncio.sleep(0)
                    held = time.perf_counter()
            self.read_seq[name] = chunk.seq + len(chunk.data)
            source.forget(self._resume_seq(name))  # the source may forget what is before it
            await asyncio.sleep(0)

    def _records(self, chunk: Delivery) -> Iterable[tuple[int, int, Record]]:
        """The chunk's matched records, as the source's worker evaluated them or evaluated here."""
        done, counters = chunk.evaluated, self.evaluator.counters
        if done is None:
            return self.evaluator.records(chunk.data, chunk.origin, chunk.decoded)
        if done.error:
            raise EngineError(done.error)
        counters.add(done.counters, line_offset=counters.lines)
        return done.records

    def _resume_seq(self, name: str) -> int:
        """Where a restart must read ``name`` from: no unwritten finding, no window being filled, is lost."""
        resume = self.aggregator.resume_seq(name, self.read_seq[name])
        hold = self.stream.hold_seq(name)
        return resume if hold is None else min(resume, hold)

    def resume_position(self, name: str) -> Position | None:
        return self.sources[name].position(self._resume_seq(name))

    def tally(self) -> Tally:
        """What this generation counted besides the evaluator's counters."""
        w = self.writer
        return Tally(
            self.rows, sum(s.long_lines for s in self.sources.values()), w.events_posted, w.events_folded, w.conflicts
        )


@dataclass(frozen=True)
class Tally:
    """Counts a detection carries across generations (each generation starts its own at zero)."""

    rows: int = 0
    long_lines: int = 0
    events_posted: int = 0
    events_folded: int = 0
    conflicts: int = 0  # since the operator started, as the budget's throttled count

    def __add__(self, other: Tally) -> Tally:
        return Tally(*(a + b for a, b in zip(astuple(self), astuple(other), strict=True)))
