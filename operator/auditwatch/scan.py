"""``auditwatch scan``: run one detection over audit-log files, offline, streaming."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TextIO

from auditwatch.audit.chunks import iter_chunks, open_log
from auditwatch.engine.evaluate import Counters, Evaluator
from auditwatch.engine.pipeline import OutputRow, Table
from auditwatch.spl.plan import Plan

PROGRESS_MIN_BYTES = 32 << 20


@dataclass
class ScanResult:
    counters: Counters
    rows: int
    seconds: float


def scan(
    plan: Plan,
    paths: Iterable[str],
    emit: Callable[[OutputRow], None],
    use_prefilter: bool = True,
    progress: TextIO | None = None,
) -> ScanResult:
    """Evaluate ``plan`` over ``paths`` in order and ``emit`` each result row.

    Without ``stats`` every matched event is a row, emitted as it is read; with ``stats`` the rows
    are emitted, sorted, at the end. Memory is bounded by the stats table, not by the input.
    """
    started = time.perf_counter()
    evaluator = Evaluator(plan, use_prefilter)
    table = Table(evaluator.pipeline) if plan.stats else None
    rows = 0
    for path in paths:
        bar = _Progress(path, progress)
        with open_log(path) as stream:
            for chunk in iter_chunks(stream):
                for record in evaluator.records(chunk, origin=path):
                    if table is not None:
                        table.add(record)
                    else:
                        emit(evaluator.pipeline.output(record))
                        rows += 1
                bar.update(stream)
        bar.done()
    if table is not None:
        for row in table.rows():
            emit(row)
            rows += 1
    return ScanResult(evaluator.counters, rows, time.perf_counter() - started)


class _Progress:
    """A one-line progress bar on a terminal, for inputs large enough to need one."""

    def __init__(self, path: str, out: TextIO | None) -> None:
        self.path, self.total, self.out = path, 0, out
        if out is not None and path != "-":
            try:
                with open(path, "rb") as f:
                    self.total = f.seek(0, 2)
            except OSError:
                self.total = 0
        if self.total < PROGRESS_MIN_BYTES:
            self.out = None
        self.last = 0.0

    def update(self, stream: object) -> None:
        now = time.monotonic()
        if self.out is None or now - self.last < 0.2:
            return
        self.last = now
        raw = getattr(stream, "fileobj", None) or stream  # gzip: position in the compressed file
        done = raw.tell() if hasattr(raw, "tell") else 0
        pct = min(100, 100 * done // max(self.total, 1))
        self.out.write(f"\r{self.path}: [{'#' * (pct // 4):<25}] {pct:3d}%")
        self.out.flush()

    def done(self) -> None:
        if self.out is not None:
            self.out.write("\r" + " " * (len(self.path) + 36) + "\r")
            self.out.flush()


def format_table(rows: list[OutputRow]) -> str:
    """Aligned columns for people; multivalue cells joined with ', '."""
    if not rows:
        return "(no rows)\n"
    columns = list(dict.fromkeys(k for r in rows for k in r))
    cells = [[_cell(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(lines) + "\n"


def _cell(value: object) -> str:
    return ", ".join(value) if isinstance(value, list) else str(value)


def summary(result: ScanResult) -> str:
    c = result.counters
    rate = c.lines / result.seconds if result.seconds > 0 else 0.0
    text = (
        f"auditwatch scan: {c.lines:,} lines read ({c.skipped:,} skipped unparsed by the prefilter), "
        f"{c.events:,} events decoded, {c.matched:,} matched, {c.malformed:,} malformed lines skipped; "
        f"{result.rows:,} rows in {result.seconds:.2f} s ({rate:,.0f} lines/s)"
    )
    for sample in c.samples:
        text += f"\n  malformed: {sample}"
    if c.malformed > len(c.samples):
        text += f"\n  ... and {c.malformed - len(c.samples):,} more malformed lines"
    return text


def stderr_progress() -> TextIO | None:
    return sys.stderr if sys.stderr.isatty() else None
