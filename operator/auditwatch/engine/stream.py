"""Rows as events arrive, for the operator: what a scheduled Splunk search would find, continuously.

``stats count BY ...`` with per-row commands that only rename or filter on BY values needs no state:
each event adds rows with count 1. Any other stats (``values``, ``min(_time)``, ``dc``) or a filter
on an aggregate (``where count > 5``) runs over time windows of ``spec.window`` (ESCU's scheduled
searches look at the last 60 minutes), tumbling and aligned to the epoch, assigned by the event's
``requestReceivedTimestamp``. A row comes out the first time it passes the whole search within its
window, and again whenever it changes, with what it adds to its finding: the events the row gained
since it last came out. The last two windows are kept, so events up to one window late
still count.

Exactly-once across restarts holds here too: ``hold_seq`` tells the runtime not to checkpoint past the
first line of the oldest window kept, so a restart rebuilds the windows from the log, and the
findings' checkpoints keep rows already counted from counting again.
"""

from __future__ import annotations

from auditwatch.audit.decode import Record, epoch_seconds
from auditwatch.engine.pipeline import Key, OutputRow, Pipeline, Table

TIME_FIELD = "requestReceivedTimestamp"
KEPT_WINDOWS = 2


class RowStream:
    def __init__(self, pipeline: Pipeline, window_seconds: float) -> None:
        self.pipeline = pipeline
        self.window = window_seconds
        self.stateless = pipeline.count_only and pipeline.row_local
        self.tables: dict[int, Table] = {}
        self.emitted: dict[tuple[int, Key], int] = {}
        self.first_seq: dict[int, dict[str, int]] = {}  # window -> source -> first line start

    def add(
        self, record: Record, source: str = "", line_start: int = 0, now: float = 0.0
    ) -> list[tuple[OutputRow, int]]:
        """(row, events it adds to its finding) for each row this event adds or changes."""
        pipeline = self.pipeline
        if pipeline.aggregate is None:
            return [(pipeline.output(record), 1)]
        if self.stateless:
            return [(row, 1) for row in pipeline.event_rows(record)]
        index = int(_epoch(record, now) // self.window)
        table = self.tables.get(index)
        if table is None:
            table = self.tables[index] = Table(pipeline)
            self._evict(index)
        self.first_seq.setdefault(index, {}).setdefault(source, line_start)
        table.add(record)
        out = []
        for key in pipeline.group_keys(record):
            row = table.row(key)
            if row is None:
                continue
            total = table.events[key]
            added = total - self.emitted.get((index, key), 0)
            self.emitted[(index, key)] = total
            out.append((row, added))
        return out

    def hold_seq(self, source: str) -> int | None:
        """The earliest line of ``source`` the kept windows need, if any."""
        seqs = [s[source] for s in self.first_seq.values() if source in s]
        return min(seqs) if seqs else None

    def _evict(self, newest: int) -> None:
        for index in [i for i in self.tables if i <= newest - KEPT_WINDOWS]:
            del self.tables[index]
            self.first_seq.pop(index, None)
        self.emitted = {k: v for k, v in self.emitted.items() if k[0] in self.tables}


def _epoch(record: Record, default: float) -> float:
    values = record.get(TIME_FIELD)
    seconds = epoch_seconds(values[0]) if values else None
    return default if seconds is None else seconds
