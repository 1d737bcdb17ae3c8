"""Chunks of audit-log text -> matched records: prefilter, decode, flatten, per-event commands.

The one path every source takes (``scan``, the file tail, the webhook), so counters mean the same
everywhere. A malformed line is counted, sampled for the error report, and skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any

import orjson

from auditwatch.audit.chunks import backing
from auditwatch.audit.decode import MalformedLine, Record, decode_line, flattener, splunk_time
from auditwatch.engine.candidates import count_lines
from auditwatch.engine.pipeline import Pipeline
from auditwatch.engine.prefilter import Prefilter, derive
from auditwatch.ir.plan import Plan, step_fields

MAX_SAMPLES = 5


@dataclass
class Counters:
    lines: int = 0  # lines read, blank ones included
    skipped: int = 0  # lines the prefilter proved irrelevant, never parsed
    events: int = 0  # audit events decoded from the lines that were parsed
    malformed: int = 0  # parsed lines that were not an Event or EventList
    matched: int = 0  # events that passed the per-event commands
    # The first malformed lines, for the error report: (origin, line number in the origin, problem).
    samples: list[tuple[str, int, str]] = field(default_factory=list)

    def add(self, other: Counters, line_offset: int = 0) -> None:
        """Add the counters of a reader that started ``line_offset`` lines into the same origin."""
        for name in ("lines", "skipped", "events", "malformed", "matched"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        room = MAX_SAMPLES - len(self.samples)
        self.samples += [(o, n + line_offset, m) for o, n, m in other.samples[: max(room, 0)]]


class Evaluator:
    """One reader's state: the pipeline, its prefilter and the counters. Not shared between threads."""

    def __init__(
        self,
        plan: Plan,
        use_prefilter: bool = True,
        extra_fields: frozenset[str] = frozenset(),
        geoip_db: str | None = None,
    ) -> None:
        self.pipeline = Pipeline(plan, geoip_db)
        self.prefilter = derive(plan) if use_prefilter else None
        read = self.pipeline.needs.fields
        named = frozenset(set().union(*map(step_fields, plan.steps)) | extra_fields)
        # Rows that are whole events (read None): each event tested on the fields the steps name, and only
        # one that passes flattened whole (a Sigma or Falco rule keeps few of the events it tests).
        self._flatten = flattener(named if read is None else read | extra_fields)
        self._whole = flattener(None, named) if read is None else None
        self.counters = Counters()

    def records(
        self, chunk: bytes | memoryview, origin: str = "", decoded: Decoded | None = None
    ) -> Iterator[tuple[int, int, Record]]:
        """(line start, line end, record) for each matched record in ``chunk`` (whole lines), counting.

        ``decoded``: the chunk as other evaluators reading the same source decode it (each line parsed
        once for all of them). A memoryview chunk must start at offset 0 of its bytearray, as
        ``iter_chunks`` gives them.
        """
        c = self.counters
        if decoded is None:
            decoded = Decoded(chunk, self.prefilter)
        first_line = c.lines + 1
        c.lines += decoded.lines
        c.skipped += decoded.lines
        flatten, whole, pipeline, needs = self._flatten, self._whole, self.pipeline, self.pipeline.needs
        for start, end in decoded.candidates(self.prefilter):
            c.skipped -= 1
            try:
                events = decoded.events(start, end)
            except MalformedLine as exc:
                if not decoded.text(start, end).strip():
                    continue  # a blank line is no event, and nothing wrong
                c.malformed += 1
                if len(c.samples) < MAX_SAMPLES:
                    number = first_line + decoded.buf.count(b"\n", 0, start)
                    c.samples.append((origin, number, str(exc)))
                continue
            for event in events:
                c.events += 1
                raw = None
                if needs.raw:
                    raw = (decoded.text(start, end) if len(events) == 1 else orjson.dumps(event)).decode(
                        "utf-8", "replace"
                    )
                out = pipeline.event(self._record(flatten, event, origin, raw))
                if out is not None and whole is not None:  # it passes: its row is the whole event
                    out = pipeline.event(self._record(whole, event, origin, raw))
                if out is not None:
                    c.matched += 1
                    yield start, end, out

    def _record(
        self, flatten: Callable[[dict[str, Any]], Record], event: dict[str, Any], origin: str, raw: str | None
    ) -> Record:
        """An event's fields (those ``flatten`` reads), with the metadata and raw text the plan reads."""
        record = flatten(event)
        if metadata := self.pipeline.needs.metadata:
            add_metadata(record, event, origin, metadata)
        if raw is not None:
            record["_raw"] = [raw]
        return record


class Decoded:
    """One chunk's lines, prefiltered and JSON-decoded at most once for every evaluator that reads it.

    ``union`` is a prefilter admitting every line any of those evaluators' prefilters admit (None:
    every line). An evaluator's own prefilter then runs over the union's candidate lines only, joined
    into one buffer: a prefilter decides line by line, so that gives the lines it gives on the chunk.
    The decoded events are shared: evaluators flatten them and must not change them.
    """

    def __init__(self, chunk: bytes | memoryview, union: Prefilter | None) -> None:
        self.buf = backing(chunk)
        self.view = memoryview(self.buf)
        self.lines = count_lines(chunk) + (0 if not chunk or chunk[-1] == 10 else 1)
        self.union = union
        self._chunk = chunk
        self._spans = union.spans(chunk) if union else list(_all_lines(self.buf, len(chunk)))
        self._joined: tuple[bytes, dict[int, int]] | None = None
        self._events: dict[int, list[dict[str, Any]] | MalformedLine] = {}

    def candidates(self, prefilter: Prefilter | None) -> list[tuple[int, int]]:
        """The spans of the lines ``prefilter`` admits (all when None), in order."""
        if prefilter is self.union or (prefilter and self.union and prefilter.literals == self.union.literals):
            return self._spans
        if prefilter is None:
            return list(_all_lines(self.buf, len(self._chunk)))
        if self.union is None:
            return prefilter.spans(self._chunk)
        if self._joined is None:
            parts, starts, at = [], {}, 0
            for i, (start, end) in enumerate(self._spans):
                parts.append(self.view[start:end])
                starts[at] = i
                at += end - start + 1
            self._joined = (b"\n".join(parts), starts)
        joined, starts = self._joined
        return [self._spans[starts[start]] for start, _ in prefilter.spans(joined)]

    def events(self, start: int, end: int) -> list[dict[str, Any]]:
        """The audit events of the line at ``start`` (raises MalformedLine), decoded on first use."""
        got = self._events.get(start)
        if got is None:
            try:
                got = decode_line(self.view[start:end])  # no copy: orjson parses the buffer in place
            except MalformedLine as exc:
                got = exc
            self._events[start] = got
        if isinstance(got, MalformedLine):
            raise got
        return got

    def text(self, start: int, end: int) -> bytes:
        return bytes(self.view[start:end])


def _all_lines(buf: bytes | bytearray, size: int) -> Iterator[tuple[int, int]]:
    start = 0
    while start < size:
        end = buf.find(b"\n", start, size)
        end = size if end < 0 else end
        yield start, end
        start = end + 1


def add_metadata(record: Record, event: dict[str, object], origin: str, wanted: AbstractSet[str]) -> None:
    """Splunk's ``_time`` (epoch seconds of the request) and ``source`` (where the event was read)."""
    if "_time" in wanted and (seconds := splunk_time(event)) is not None:
        record["_time"] = [seconds]
    if "source" in wanted and origin:
        record["source"] = [origin]
