"""Chunks of audit-log text -> matched records: prefilter, decode, flatten, per-event commands.

The one path every source takes (``scan``, the file tail, the webhook), so counters mean the same
everywhere. A malformed line is counted, sampled for the error report, and skipped.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import orjson

from auditwatch.audit.decode import MalformedLine, Record, decode_line, flatten
from auditwatch.engine.pipeline import Pipeline
from auditwatch.engine.prefilter import Prefilter, derive
from auditwatch.spl.plan import Plan

MAX_SAMPLES = 5


@dataclass
class Counters:
    lines: int = 0  # lines read, blank ones included
    skipped: int = 0  # lines the prefilter proved irrelevant, never parsed
    events: int = 0  # audit events decoded from the lines that were parsed
    malformed: int = 0  # parsed lines that were not an Event or EventList
    matched: int = 0  # events that passed the per-event commands
    samples: list[str] = field(default_factory=list)  # the first malformed lines, for the error report

    def add(self, other: Counters) -> None:
        for name in ("lines", "skipped", "events", "malformed", "matched"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


class Evaluator:
    def __init__(self, plan: Plan, use_prefilter: bool = True) -> None:
        self.pipeline = Pipeline(plan)
        self.prefilter: Prefilter | None = derive(plan) if use_prefilter else None
        self.counters = Counters()

    def records(self, chunk: bytes, origin: str = "") -> Iterator[Record]:
        """The matched records in ``chunk`` (whole lines), counting as it goes."""
        c = self.counters
        first_line = c.lines + 1
        lines = chunk.count(b"\n") + (0 if chunk.endswith(b"\n") or not chunk else 1)
        c.lines += lines
        c.skipped += lines
        spans = self.prefilter.spans(chunk) if self.prefilter else _all_lines(chunk)
        for start, end in spans:
            line = chunk[start:end]
            c.skipped -= 1
            if not line.strip():
                continue
            try:
                events = decode_line(line)
            except MalformedLine as exc:
                c.malformed += 1
                if len(c.samples) < MAX_SAMPLES:
                    number = first_line + chunk.count(b"\n", 0, start)
                    c.samples.append(f"{origin}:{number}: {exc}")
                continue
            for event in events:
                c.events += 1
                record = flatten(event)
                if self.pipeline.needs_raw:
                    raw = line if len(events) == 1 else orjson.dumps(event)
                    record["_raw"] = [raw.decode("utf-8", "replace")]
                out = self.pipeline.event(record)
                if out is not None:
                    c.matched += 1
                    yield out


def _all_lines(chunk: bytes) -> Iterator[tuple[int, int]]:
    start = 0
    while start < len(chunk):
        end = chunk.find(b"\n", start)
        end = len(chunk) if end < 0 else end
        yield start, end
        start = end + 1
