"""``auditwatch scan``: run one detection over audit-log files, offline, streaming.

A large plain file under a ``stats`` search is read by several processes, one byte range each (cut
at line boundaries): this process reads the first, forked children the others, each with its own
stats table, merged at the end. Threads would not do: decoding and evaluating the candidate lines
holds the GIL, and is half of a scan's time.
"""

from __future__ import annotations

import functools
import gzip
import itertools
import marshal
import os
import sys
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import astuple, dataclass, field
from typing import Any, TextIO, TypeVar, cast

from auditwatch.engine.evaluate import Counters, Evaluator
from auditwatch.engine.pipeline import Key, OutputRow, Pipeline, Table
from auditwatch.ir.plan import Plan
from auditwatch.offline.inputs import chunks, splittable

PROGRESS_MIN_BYTES = 32 << 20
PARALLEL_MIN_BYTES = 16 << 20


@dataclass
class ScanResult:
    counters: Counters
    rows: int
    seconds: float
    broken: list[str] = field(default_factory=list)  # compressed inputs that end early: scanned up to there


T = TypeVar("T")
# What one reader hands back: its counters (as a tuple), stats table state and encoded rows by group;
# plain containers only, so a forked reader can send it with marshal (three times faster than pickle).
Part = tuple[tuple[Any, ...], tuple[dict[Key, list[Any]], dict[Key, int]], dict[Key, Any]]


def scan(
    plan: Plan,
    paths: Iterable[str],
    emit: Callable[[T], object],
    encode: Callable[[OutputRow], T],
    use_prefilter: bool = True,
    progress: TextIO | None = None,
    jobs: int | None = None,
    geoip_db: str | None = None,
    notes: TextIO | None = None,
) -> ScanResult:
    """Evaluate ``plan`` over ``paths`` in order and ``emit`` each result row, as ``encode`` makes it.
    What an input turned out to be (a document, a log group) is said on ``notes``.

    Without ``stats`` every matched event is a row, emitted as it is read; with ``stats`` the rows
    are emitted, sorted, at the end. Memory is bounded by the stats table, not by the input.
    Rows are encoded by the reader that made them, so a parallel scan encodes in parallel too.
    """
    started = time.perf_counter()
    jobs = jobs or min(os.cpu_count() or 1, 4)
    counters = Counters()
    table = Table(Pipeline(plan, geoip_db)) if plan.aggregate else None
    encoded: dict[Key, T | None] = {}  # each group's encoded row (None: the per-row commands drop it)
    merged: set[Key] = set()  # groups that several readers saw: their rows are made again, merged
    rows = 0
    broken: list[str] = []
    children: list[tuple[int, int]] = []
    try:
        for path in paths:
            ranges = _ranges(path, jobs) if table is not None else [(0, None)]
            bar = _Progress(path, progress)
            read = functools.partial(_read, plan, use_prefilter, geoip_db, encode, path)
            forked = [_fork(functools.partial(read, a, n)) for a, n in ranges[1:]]
            children += forked
            try:
                parts = [read(*ranges[0], emit=emit, bar=bar, notes=notes), *map(_join, forked)]
            except (EOFError, zlib.error, gzip.BadGzipFile) as exc:  # only a compressed file is read whole here
                bar.done()
                broken.append(path)
                if notes is not None:
                    notes.write(
                        f"auditwatch: {path}: compressed input ends early or is corrupt ({exc}): its "
                        "stats are left out; the other inputs are scanned\n"
                    )
                continue
            bar.done()
            line_offset = 0
            for counter_fields, state, part_rows in parts:
                part_counters = Counters(*counter_fields)
                counters.add(part_counters, line_offset)
                line_offset += part_counters.lines
                if table is not None:
                    table.merge(state)
                    merged |= encoded.keys() & part_rows.keys()
                    encoded.update(part_rows)
                else:
                    rows += part_counters.matched
        if table is not None:
            encoded.update(_encoded_rows(table, merged, encode))
            for key in sorted(encoded):
                if (value := encoded[key]) is not None:
                    emit(value)
                    rows += 1
    finally:
        _reap(children)
    return ScanResult(counters, rows, time.perf_counter() - started, broken)


def _read(
    plan: Plan,
    use_prefilter: bool,
    geoip_db: str | None,
    encode: Callable[[OutputRow], T],
    path: str,
    start: int,
    length: int | None,
    emit: Callable[[T], object] | None = None,
    bar: _Progress | None = None,
    notes: TextIO | None = None,
) -> Part:
    """Read one byte range of one log: its counters, stats table state and encoded rows by group
    (without stats, rows go to ``emit`` as they are read)."""
    reader = Evaluator(plan, use_prefilter, geoip_db=geoip_db)
    table = Table(reader.pipeline) if plan.aggregate else None
    done = 0
    for chunk in chunks(path, start, length, notes):
        for _, _, record in reader.records(chunk, origin=path):
            if table is not None:
                table.add(record)
            elif emit is not None:
                emit(encode(reader.pipeline.output(record)))
        done += len(chunk)
        if bar is not None:
            bar.update(done)
    counters = astuple(reader.counters)
    if table is None:
        return counters, ({}, {}), {}
    return counters, table.state(), _encoded_rows(table, table.groups, encode)


def _encoded_rows(table: Table, keys: Iterable[Key], encode: Callable[[OutputRow], T]) -> dict[Key, T | None]:
    """The rows of these groups, encoded; None for a row the per-row commands drop."""
    return {k: None if (row := table.row(k)) is None else encode(row) for k in keys}


def _fork(work: Callable[[], Part]) -> tuple[int, int]:
    """Run ``work`` in a forked child; returns (pid, read end of the pipe its result comes on).

    The result comes marshalled after a ``+``; an exception pickled after a ``!``.
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: whatever happens, it ends here
        status = 1
        try:
            os.close(read_fd)
            try:
                payload, status = b"+" + marshal.dumps(work()), 0
            except BaseException as exc:  # handed to the parent, which raises it
                import pickle  # here: only failures need it, and importing it costs every scan 3 ms

                payload = b"!" + pickle.dumps(exc)
            with os.fdopen(write_fd, "wb") as pipe:
                pipe.write(payload)
        finally:
            os._exit(status)
    os.close(write_fd)
    return pid, read_fd


def _join(child: tuple[int, int]) -> Part:
    """The result of a forked child; its exception is raised here."""
    pid, read_fd = child
    with os.fdopen(read_fd, "rb", closefd=False) as pipe:
        data = pipe.read()
    if data[:1] == b"+":
        return cast(Part, marshal.loads(data[1:]))
    if data[:1] == b"!":
        import pickle

        raise pickle.loads(data[1:])
    raise RuntimeError(f"scan worker {pid} died without a result")


def _reap(children: list[tuple[int, int]]) -> None:
    """Close the children's pipes and wait for them to exit. Done last: a child's exit (unmapping a
    large address space) takes longer than merging and writing the rows. A child whose result was
    never read stops on its closed pipe."""
    for pid, read_fd in children:
        os.close(read_fd)
        os.waitpid(pid, 0)


def _ranges(path: str, jobs: int) -> list[tuple[int, int | None]]:
    """(start, length) byte ranges of a plain file, cut after a newline; one range for anything else."""
    try:
        if jobs < 2 or not splittable(path):
            return [(0, None)]
        with open(path, "rb") as f:
            size = f.seek(0, 2)
            if size < PARALLEL_MIN_BYTES:
                return [(0, None)]
            cuts = [0]
            for k in range(1, jobs):
                f.seek(size * k // jobs)
                f.readline()
                cuts.append(max(f.tell(), cuts[-1]))
            cuts.append(size)
    except OSError:
        return [(0, None)]
    return [(a, b - a) for a, b in itertools.pairwise(cuts) if b > a]


class _Progress:
    """A one-line progress bar on a terminal, for inputs large enough to need one."""

    def __init__(self, path: str, out: TextIO | None) -> None:
        self.path, self.total, self.out = path, 0, out
        if out is not None and path != "-":
            try:
                self.total = os.path.getsize(path)
            except OSError:
                self.total = 0
        if self.total < PROGRESS_MIN_BYTES:
            self.out = None
        self.last = 0.0

    def update(self, done: int) -> None:
        now = time.monotonic()
        if self.out is None or now - self.last < 0.2:
            return
        self.last = now
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
    for origin, line, problem in c.samples:
        text += f"\n  malformed: {origin}:{line}: {problem}"
    if c.malformed > len(c.samples):
        text += f"\n  ... and {c.malformed - len(c.samples):,} more malformed lines"
    return text


def stderr_progress() -> TextIO | None:
    return sys.stderr if sys.stderr.isatty() else None
