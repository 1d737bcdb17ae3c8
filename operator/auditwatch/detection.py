"""One AuditDetection at run time: sources -> evaluator -> aggregator -> writer, plus its status.

``DetectionRuntime.run`` is what the kopf daemon of a detection runs. It compiles ``spec.search``
(an invalid one sets ``Ready=False`` with the error and waits for the next generation), tails each
source from the checkpointed position, turns matched events into rows and rows into findings, and
about once a second writes due findings, then the detection's status with positions that never run
ahead of what the findings include. A new generation restarts the pipeline from those positions.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from auditwatch.api.models import AuditDetectionSpec
from auditwatch.engine.evaluate import Counters, Evaluator
from auditwatch.engine.stream import TIME_FIELD, RowStream
from auditwatch.findings.aggregate import Aggregator, parse_duration
from auditwatch.findings.writer import PostEvent, Writer
from auditwatch.kube import ApiException, Kube
from auditwatch.lint import lint
from auditwatch.sources import Source
from auditwatch.sources.file import FileTail, Position
from auditwatch.sources.webhook import WebhookServer
from auditwatch.spl import SPLError, compile_search
from auditwatch.spl.plan import IpLocation, Plan

FLUSH_SECONDS = 0.25
STATUS_SECONDS = 1.0
EXPIRE_SECONDS = 60.0


class InvalidDetection(ValueError):
    """A detection that cannot run; ``reason`` is the condition reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def compile_detection(
    spec: AuditDetectionSpec, webhooks: WebhookServer | None = None, geoip_db: str | None = None
) -> tuple[Plan, str]:
    """The plan of a detection and its lint warnings, or InvalidDetection naming what is wrong."""
    try:
        plan = compile_search(spec.search, spec.macros, geoip_db)
    except SPLError as exc:
        raise InvalidDetection("InvalidSearch", f"spec.search: {exc}") from None
    if any(isinstance(c, IpLocation) for c in plan.commands) and not os.path.isfile(geoip_db or ""):
        raise InvalidDetection("InvalidSearch", f"spec.search: iplocation: cannot read the MaxMind database {geoip_db}")
    problems = lint(plan, spec.finding.groupBy)
    errors = [f for f in problems if f.level == "error"]
    if errors:
        raise InvalidDetection("LintError", "; ".join(f"spec.search: {e}" for e in errors))
    for source in spec.sources:
        if source.cloudwatch is not None:
            raise InvalidDetection(
                "UnsupportedSource", f"spec.sources[{source.name}]: cloudwatch sources are not implemented yet"
            )
        if source.webhook is not None and webhooks is None:
            raise InvalidDetection(
                "UnsupportedSource",
                f"spec.sources[{source.name}]: the operator runs without its webhook server (auditwatch run "
                "--webhook-listen)",
            )
    return plan, "; ".join(str(f) for f in problems)


@dataclass
class _Segment:
    seq: int
    length: int
    file: str
    inode: int
    offset: int


class DetectionRuntime:
    def __init__(
        self,
        kube: Kube,
        body: Mapping[str, Any],
        post_event: PostEvent,
        logger: logging.Logger | logging.LoggerAdapter[Any],
        parse_spec: Callable[[Mapping[str, Any]], AuditDetectionSpec],
        webhooks: WebhookServer | None = None,
        geoip_db: str | None = None,
    ) -> None:
        self.webhooks = webhooks
        self.geoip_db = geoip_db
        self.kube = kube
        self.body = body  # kopf's live view: reflects the latest spec and generation
        self.post_event = post_event
        self.logger = logger
        self.parse_spec = parse_spec
        meta = body["metadata"]
        self.name, self.namespace = meta["name"], meta["namespace"]
        status = dict(body.get("status") or {})
        self.positions: dict[str, Position] = {
            s["name"]: Position(s.get("file", ""), s.get("inode", 0), s.get("offset", 0), s.get("seq", 0))
            for s in status.get("sources", [])
            if s.get("inode")
        }
        saved = status.get("counters") or {}
        self.counters = Counters(**{k: saved.get(k, 0) for k in ("lines", "skipped", "events", "malformed", "matched")})
        self.rows = int(saved.get("rows", 0))
        self.long_lines_base = int(saved.get("longLines", 0))
        self._conditions: dict[str, dict[str, Any]] = {c["type"]: c for c in status.get("conditions", [])}
        self._written: dict[str, Any] = {}
        self.lint_warnings = ""

    @property
    def generation(self) -> int:
        return int(self.body["metadata"].get("generation", 0))

    def ref(self) -> dict[str, Any]:
        meta = self.body["metadata"]
        return {"apiVersion": self.body["apiVersion"], "kind": self.body["kind"],
                "metadata": {"name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"]}}  # fmt: skip

    async def run(self, stopped: Any) -> None:
        """Run until ``stopped`` (kopf's DaemonStopped flag) is set."""
        while not stopped:
            generation = self.generation
            try:
                spec = self.parse_spec(self.body)
                plan, self.lint_warnings = compile_detection(spec, self.webhooks, self.geoip_db)
            except InvalidDetection as exc:
                await self._invalid(exc, generation)
                while not stopped and self.generation == generation:
                    await asyncio.sleep(0.5)
                continue
            await self._run_generation(spec, plan, generation, stopped)

    async def _invalid(self, exc: InvalidDetection, generation: int) -> None:
        self.logger.warning("detection %s/%s: %s", self.namespace, self.name, exc)
        self.post_event(self.ref(), "Warning", exc.reason, str(exc))
        await self._write_status({
            "observedGeneration": generation,
            "conditions": [
                _condition("Ready", "False", exc.reason, str(exc), generation),
                _condition("SourcesReady", "Unknown", "NotStarted", "the detection is not running", generation),
            ],
        })  # fmt: skip

    async def _run_generation(self, spec: AuditDetectionSpec, plan: Plan, generation: int, stopped: Any) -> None:
        finding = spec.finding
        aggregator = Aggregator(self.name, finding.groupBy, finding.message, finding.maxFindings)
        for item in await self.kube.list_findings(self.namespace, self.name):
            aggregator.load(
                item["metadata"]["name"],
                item.get("spec", {}),
                item.get("status", {}),
                item["metadata"]["uid"],
            )
        writer = Writer(self.kube, self.ref(), finding.model_dump(), self.post_event, self.logger)
        evaluator = Evaluator(plan, extra_fields=frozenset([TIME_FIELD]))
        evaluator.counters = self.counters
        stream = RowStream(evaluator.pipeline, parse_duration(spec.window))
        tails: dict[str, Source] = {}
        for s in spec.sources:
            if s.file is not None:
                tails[s.name] = FileTail(s.file.path, s.file.maxLineBytes, self.positions.get(s.name))
            elif s.webhook is not None and self.webhooks is not None:
                tails[s.name] = self.webhooks.subscribe(s.webhook.path)
        segments: dict[str, deque[_Segment]] = {name: deque() for name in tails}
        read_seq = {name: self.positions[name].seq if name in self.positions else 0 for name in tails}
        readers = [
            asyncio.create_task(self._read(name, tail, evaluator, stream, aggregator, segments[name], read_seq))
            for name, tail in tails.items()
        ]
        self.logger.info("detection %s/%s running generation %d on %d source(s)", self.namespace, self.name,
                         generation, len(tails))  # fmt: skip
        ttl = parse_duration(finding.ttl)
        last_status = last_expire = 0.0
        try:
            while not stopped and self.generation == generation:
                await asyncio.sleep(FLUSH_SECONDS)
                for task in readers:
                    if task.done() and task.exception():
                        raise task.exception()  # type: ignore[misc]
                now = time.monotonic()
                await writer.flush(aggregator, now)
                if now - last_expire >= EXPIRE_SECONDS:
                    last_expire = now
                    await writer.expire(aggregator, ttl)
                if now - last_status >= STATUS_SECONDS:
                    last_status = now
                    await self._status(generation, tails, segments, read_seq, aggregator, stream)
        finally:
            for task in readers:
                task.cancel()
            await asyncio.gather(*readers, return_exceptions=True)
            await writer.flush(aggregator, float("inf"))  # persist what was counted before handing over
            await self._status(generation, tails, segments, read_seq, aggregator, stream)
            self.long_lines_base += sum(t.long_lines for t in tails.values())

    async def _read(self, name: str, tail: Source, evaluator: Evaluator, stream: RowStream, aggregator: Aggregator,
                    segments: deque[_Segment], read_seq: dict[str, int]) -> None:  # fmt: skip
        async for chunk in tail.chunks():
            wall = datetime.now(UTC)
            now = wall.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            for start, end, record in evaluator.records(chunk.data, origin=chunk.file):
                seen = record.get(TIME_FIELD, [now])[0]
                for row, events in stream.add(record, name, chunk.seq + start, wall.timestamp()):
                    self.rows += 1
                    aggregator.add(row, name, chunk.seq + start, chunk.seq + end, seen, events)
            segments.append(_Segment(chunk.seq, len(chunk.data), chunk.file, chunk.inode, chunk.offset))
            read_seq[name] = chunk.seq + len(chunk.data)
            _prune(segments, _resume(aggregator, stream, name, read_seq[name]))
            await asyncio.sleep(0)

    async def _status(self, generation: int, tails: dict[str, Source], segments: dict[str, deque[_Segment]],
                      read_seq: dict[str, int], aggregator: Aggregator, stream: RowStream) -> None:  # fmt: skip
        sources = []
        for name, tail in tails.items():
            resume = _position(segments[name], _resume(aggregator, stream, name, read_seq[name]))
            if resume is not None and isinstance(tail, FileTail):  # a webhook has nothing to read again
                self.positions[name] = resume
            pos = self.positions.get(name) or resume
            sources.append({
                "name": name, "file": pos.file if pos else "", "inode": pos.inode if pos else 0,
                "offset": pos.offset if pos else 0, "seq": pos.seq if pos else 0,
                "lagBytes": tail.lag_bytes, "lastError": tail.error[:1024],
            })  # fmt: skip
        ready = all(t.ready for t in tails.values())
        errors = "; ".join(f"{n}: {t.error}" for n, t in tails.items() if t.error)
        c = self.counters
        status = {
            "observedGeneration": generation,
            "conditions": [
                _condition("Ready", "True", "Running", "evaluating audit events", generation),
                _condition("LintClean", "False" if self.lint_warnings else "True",
                           "LintWarnings" if self.lint_warnings else "Clean",
                           self.lint_warnings or "auditwatch lint has nothing to say", generation),
                _condition("SourcesReady", "True" if ready else "False", "Reading" if ready else "SourceUnavailable",
                           errors or "all sources are being read", generation),
            ],
            "sources": sources,
            "counters": {
                "lines": c.lines, "skipped": c.skipped, "events": c.events, "malformed": c.malformed,
                "longLines": self.long_lines_base + sum(t.long_lines for t in tails.values()),
                "matched": c.matched, "rows": self.rows, "findings": len(aggregator.findings),
                "findingsDropped": aggregator.dropped,
            },
        }  # fmt: skip
        await self._write_status(status)

    async def _write_status(self, status: dict[str, Any]) -> None:
        """PATCH the status when it changed; a condition keeps its lastTransitionTime until its status changes."""
        for cond in status.get("conditions", []):
            before = self._conditions.get(cond["type"])
            if before is not None and before["status"] == cond["status"]:
                cond["lastTransitionTime"] = before["lastTransitionTime"]
        if status == self._written:
            return
        try:
            await self.kube.patch_detection_status(self.namespace, self.name, status)
        except ApiException as exc:
            # The checkpoint stays where it was: safe, the lines after it are read again on a restart.
            self.logger.warning("status of %s/%s not written: %s %s", self.namespace, self.name, exc.status, exc.reason)
            return
        self._written = status
        self._conditions = {c["type"]: c for c in status.get("conditions", [])}


def _resume(aggregator: Aggregator, stream: RowStream, source: str, read_seq: int) -> int:
    """Where a restart must read ``source`` from: no unwritten finding, no window being filled, is lost."""
    hold = stream.hold_seq(source)
    resume = aggregator.resume_seq(source, read_seq)
    return resume if hold is None else min(resume, hold)


def _position(segments: deque[_Segment], seq: int) -> Position | None:
    """The file position of ``seq``, from the chunks read."""
    for seg in reversed(segments):
        if seg.seq <= seq <= seg.seq + seg.length:
            return Position(seg.file, seg.inode, seg.offset + seq - seg.seq, seq)
    return None


def _prune(segments: deque[_Segment], keep_from: int) -> None:
    while len(segments) > 1 and segments[0].seq + segments[0].length < keep_from:
        segments.popleft()


def _condition(kind: str, status: str, reason: str, message: str, generation: int) -> dict[str, Any]:
    return {
        "type": kind, "status": status, "reason": reason, "message": message[:4096],
        "lastTransitionTime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), "observedGeneration": generation,
    }  # fmt: skip
