"""One AuditDetection at run time: a Generation per spec generation, and the detection's status.

``DetectionRuntime.run`` is what the kopf daemon of a detection runs. It validates the spec (the
verdict `auditwatch lint` gives, rules/validate.py): a detection that cannot run gets ``Ready=False`` with
the reason and waits for the next generation. Otherwise a ``Generation`` reads each source from the
checkpointed position, and about once a second the runtime writes due findings, then the
detection's status with positions that never run ahead of what the findings include. A new
generation starts from those positions; counters carry over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import ValidationError

from auditwatch.api.models import (
    DEFAULT_SHARD,
    AuditDetectionStatus,
    CounterStatus,
    ShardStatus,
    SourceStatus,
    WriteStatus,
)
from auditwatch.engine.evaluate import Counters
from auditwatch.findings.retire import reclaim_detection, retired_shards
from auditwatch.kube.client import ApiException
from auditwatch.rules.validate import Verdict, validate
from auditwatch.runtime import status
from auditwatch.runtime.generation import Generation, Tally
from auditwatch.runtime.retire import retire_gone_shards
from auditwatch.runtime.services import Logger, Services
from auditwatch.runtime.shards import unread


class DetectionRuntime:
    def __init__(self, services: Services, body: Mapping[str, Any], logger: Logger) -> None:
        self.services = services
        self.kube = services.kube()
        self.body = body  # kopf's live view: reflects the latest spec and generation
        self.logger = logger
        self.settings = settings = services.settings
        meta = body["metadata"]
        self.name, self.namespace = meta["name"], meta["namespace"]
        self.shard = settings.shard
        saved = _saved_status(body.get("status"), logger)
        # A shard back under its name after it was retired resumes from its retired part (findings/retire.py).
        back = saved.retired.shards.get(self.shard) if saved.retired else None
        mine = saved.shards.get(self.shard) or back or ShardStatus()
        self.positions: dict[str, SourceStatus] = {s.name: s for s in mine.sources}
        c = mine.counters
        # What this shard counted, carried across generations: the evaluator's counters are shared with
        # each generation's evaluator; the others are those of the generations that ended.
        self.counters = Counters(c.lines, c.skipped, c.events, c.malformed, c.matched)
        self.ended = Tally(c.rows, c.longLines, c.eventsPosted, c.eventsFolded)  # conflicts: since start
        self.status = status.StatusWriter(self.kube, self.namespace, self.name, saved, logger)

    @property
    def generation(self) -> int:
        return int(self.body["metadata"].get("generation", 0))

    def ref(self) -> dict[str, Any]:
        meta = self.body["metadata"]
        return {
            "apiVersion": self.body["apiVersion"],
            "kind": self.body["kind"],
            "metadata": {
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta["uid"],
                "labels": dict(meta.get("labels") or {}),
            },
        }

    async def run(self, stopped: Any) -> None:
        """Run until ``stopped`` (kopf's DaemonStopped flag) is set."""
        try:
            await self._run(stopped)
        finally:
            self.services.metrics.forget(self.namespace, self.name)

    async def _run(self, stopped: Any) -> None:
        while not stopped:
            number = self.generation
            verdict = validate(self.body.get("spec") or {}, self.settings, self.namespace)
            if not verdict.ready:
                await self._refuse(verdict, number)
                while not stopped and self.generation == number:
                    await asyncio.sleep(0.5)
                continue
            await self._run_generation(verdict, number, stopped)

    async def _refuse(self, verdict: Verdict, number: int) -> None:
        self.logger.warning("detection %s/%s: %s", self.namespace, self.name, verdict.message)
        await self.kube.post_event(self.ref(), "Warning", verdict.reason, verdict.message)
        await self.status.write(status.refused(verdict, number))

    async def _run_generation(self, verdict: Verdict, number: int, stopped: Any) -> None:
        assert verdict.spec is not None and verdict.plan is not None
        s = self.settings
        gen = Generation(
            verdict.spec, verdict.plan, self.ref(), self.positions, self.counters, self.kube, self.services, self.logger
        )
        await gen.start()
        self.logger.info(
            "detection %s/%s running generation %d on %d source(s)", self.namespace, self.name, number, len(gen.sources)
        )
        last_status = last_expire = 0.0
        # The status write and the TTL deletions wait for the write budget in the background, one of each
        # at a time: awaited here, they held up the flushes, and so new findings, behind a backlog of counts.
        chores: dict[str, asyncio.Task[Any]] = {}
        try:
            while not stopped and self.generation == number:
                await asyncio.sleep(s.flush_seconds)
                gen.check()
                now = time.monotonic()
                gen.writer.flush(gen.aggregator, now)
                if gen.report is not None:
                    gen.report.sync(gen.aggregator, now)
                if now - last_expire >= s.expire_seconds and _idle(chores, "expire", self.logger):
                    last_expire = now
                    chores["expire"] = asyncio.create_task(gen.writer.expire(gen.aggregator, gen.ttl))
                if now - last_status >= s.status_seconds and _idle(chores, "status", self.logger):
                    last_status = now
                    chores["status"] = asyncio.create_task(self._report(verdict, number, gen))
                    if self.services.leases is not None and _idle(chores, "retire", self.logger):
                        chores["retire"] = asyncio.create_task(
                            retire_gone_shards(
                                self.kube,
                                dict(self.body),
                                self.services.leases,
                                s.retire_shards_seconds,
                                gen.aggregator,
                                self.logger,
                            )
                        )
        finally:
            await asyncio.gather(*chores.values(), return_exceptions=True)
            await gen.stop()
            await gen.writer.drain(gen.aggregator)  # persist what was counted before handing over
            if gen.report is not None:
                await gen.report.settle()
            await self._report(verdict, number, gen)
            self.ended += gen.tally()

    async def _report(self, verdict: Verdict, number: int, gen: Generation) -> None:
        sources = []
        for name, source in gen.sources.items():
            kind, position = gen.kinds[name], gen.resume_position(name)
            if position is not None:
                self.positions[name] = SourceStatus.model_validate(
                    {"name": name, "seq": position.seq, kind: position.status()}
                )
            where = (self.positions.get(name) or SourceStatus(name=name)).model_dump(exclude_unset=True)
            where[kind] = {**(where.get(kind) or {}), **source.details}  # its position, lag, calls...
            sources.append(SourceStatus.model_validate({**where, "lastError": source.error[:1024]}))
        c, tally = self.counters, self.ended + gen.tally()
        counters = CounterStatus(
            lines=c.lines,
            skipped=c.skipped,
            events=c.events,
            malformed=c.malformed,
            matched=c.matched,
            longLines=tally.long_lines,
            rows=tally.rows,
            findings=len(gen.aggregator.findings),
            findingsDropped=gen.aggregator.dropped,
            eventsPosted=tally.events_posted,
            eventsFolded=tally.events_folded,
        )
        pending, waited = gen.aggregator.behind()
        budget = self.kube.budget
        writes = WriteStatus(
            pendingFindings=pending,
            oldestPendingSeconds=int(waited),
            waitingWrites=budget.waiting,
            throttled=budget.throttled,
            conflicts=tally.conflicts,
        )
        mine = ShardStatus(sources=sources, counters=counters, writes=writes)
        shards = {**self._other_shards(), self.shard: mine}
        problems = unread(shards, self.services.leases)
        ready = all(source.ready for source in gen.sources.values()) and not problems
        errors = "; ".join(problems)
        retired = retired_shards(self.body.get("status") or {})
        total = _sum(p.counters for p in shards.values()).plus(retired.counters)
        also = None
        if (back := reclaim_detection(retired, self.shard)) is not None:  # this shard's, taken back
            total, also = total.plus(back[0].counters, -1), {"retired": back[1]}
        # Each replica writes its own part (a merge patch: the others' stay as they are).
        reported = status.running(verdict, number, ready, errors, total, {self.shard: mine})
        self.services.metrics.report(self.namespace, self.name, mine)
        await self.status.write(reported, also)

    def _other_shards(self) -> dict[str, ShardStatus]:
        """The other shards' parts, as kopf's live view of the detection shows them."""
        raw = (self.body.get("status") or {}).get("shards") or {}
        parts = {}
        for shard, part in raw.items():
            if shard != self.shard:
                with contextlib.suppress(ValidationError):  # written by another version: not summed
                    parts[shard] = ShardStatus.model_validate(part)
        return parts


def _idle(chores: dict[str, asyncio.Task[Any]], name: str, logger: Logger) -> bool:
    """Whether chore ``name`` is not under way. An API error of its last run is logged (the next run tries
    again: each chore starts from what is in the cluster); anything else is raised."""
    task = chores.get(name)
    if task is None:
        return True
    if not task.done():
        return False
    if isinstance(exc := task.exception(), ApiException):
        logger.warning("%s: %s %s; trying again", name, exc.status, exc.reason)
    elif exc is not None:
        raise exc
    return True


def _sum(parts: Iterable[CounterStatus]) -> CounterStatus:
    total = CounterStatus()
    for part in parts:
        total = total.plus(part)
    return total


def _saved_status(saved: Any, logger: logging.Logger | logging.LoggerAdapter[Any]) -> AuditDetectionStatus:
    """The status the detection has in the cluster; an unreadable one is ignored (read from the start).
    One written before shards existed (its sources at the top) is the default shard's."""
    saved = dict(saved or {})
    if "sources" in saved and "shards" not in saved:
        saved["shards"] = {DEFAULT_SHARD: {k: saved.pop(k) for k in ("sources", "counters", "writes") if k in saved}}
    try:
        return AuditDetectionStatus.model_validate(saved)
    except ValidationError as exc:
        logger.warning("ignoring the detection's saved status: %s", exc)
        return AuditDetectionStatus()
