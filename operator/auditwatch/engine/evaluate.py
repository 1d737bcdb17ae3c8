"""Chunks of audit-log text -> matched records: prefilter, decode, flatten, per-event commands.

The one path every source takes (``scan``, the file tail, the webhook), so counters mean the same
everywhere. A malformed line is counted, sampled for the error report, and skipped.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import orjson

from auditwatch.audit.chunks import backing
from auditwatch.audit.decode import MalformedLine, Record, decode_line, epoch_seconds, flattener
from auditwatch.engine.candidates import count_lines
from auditwatch.engine.pipeline import Pipeline
from auditwatch.engine.prefilter import derive
from auditwatch.spl.syntax import Query

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
        query: Query,
        use_prefilter: bool = True,
        extra_fields: frozenset[str] = frozenset(),
        geoip_db: str | None = None,
    ) -> None:
        self.pipeline = Pipeline(query, geoip_db)
        self.prefilter = derive(query) if use_prefilter else None
        fields = None if self.pipeline.fields is None else frozenset(self.pipeline.fields) | extra_fields
        self._flatten = flattener(fields)
        self.counters = Counters()

    def records(self, chunk: bytes | memoryview, origin: str = "") -> Iterator[tuple[int, int, Record]]:
        """(line start, line end, record) for each matched record in ``chunk`` (whole lines), counting.

        A memoryview chunk must start at offset 0 of its bytearray, as ``iter_chunks`` gives them.
        """
        c = self.counters
        buf = backing(chunk)
        first_line = c.lines + 1
        lines = count_lines(chunk) + (0 if not chunk or chunk[-1] == 10 else 1)
        c.lines += lines
        c.skipped += lines
        spans = self.prefilter.spans(chunk) if self.prefilter else _all_lines(buf, len(chunk))
        view = memoryview(buf)
        flatten, pipeline = self._flatten, self.pipeline
        for start, end in spans:
            line = view[start:end]  # no copy: orjson parses the buffer in place
            c.skipped -= 1
            try:
                events = decode_line(line)
            except MalformedLine as exc:
                if not bytes(line).strip():
                    continue  # a blank line is no event, and nothing wrong
                c.malformed += 1
                if len(c.samples) < MAX_SAMPLES:
                    number = first_line + buf.count(b"\n", 0, start)
                    c.samples.append((origin, number, str(exc)))
                continue
            for event in events:
                c.events += 1
                record = flatten(event)
                if pipeline.metadata:
                    _add_metadata(record, event, origin, pipeline.metadata)
                if pipeline.needs_raw:
                    raw = bytes(line) if len(events) == 1 else orjson.dumps(event)
                    record["_raw"] = [raw.decode("utf-8", "replace")]
                out = pipeline.event(record)
                if out is not None:
                    c.matched += 1
                    yield start, end, out


def _all_lines(buf: bytes | bytearray, size: int) -> Iterator[tuple[int, int]]:
    start = 0
    while start < size:
        end = buf.find(b"\n", start, size)
        end = size if end < 0 else end
        yield start, end
        start = end + 1


def _add_metadata(record: Record, event: dict[str, object], origin: str, wanted: set[str]) -> None:
    """Splunk's ``_time`` (epoch seconds of the request) and ``source`` (where the event was read)."""
    if "_time" in wanted:
        stamp = event.get("requestReceivedTimestamp") or event.get("stageTimestamp")
        seconds = epoch_seconds(stamp) if isinstance(stamp, str) else None
        if seconds is not None:
            record["_time"] = [f"{seconds:.6f}"]
    if "source" in wanted and origin:
        record["source"] = [origin]
