"""The SQL executor on DuckDB, embedded: a plan's query (engine/sql.py) over audit-log files, in-process.

DuckDB reads the lines itself (plain or gzip, any number of files, in parallel) and spills to
``temp_directory`` past ``memory_limit``, so a hunt larger than memory runs in bounded memory. The
functions SQL lacks are Python functions registered on the connection, each the streaming engine's
own code; DuckDB calls them only for lines past the prefilter and events past the filters before them.

Where the plan's prefilter has a literal (engine/prefilter.py), its native search runs first, over each
file, writing the candidate lines to a scratch file that DuckDB reads instead: it reads 2 GB/s on one
core, where DuckDB's ILIKE reads about 0.5 GB/s on two. When the literal is common (more than
``SELECTIVE`` of the first ``PROBE`` bytes are candidates) the pass stops and DuckDB reads the files,
testing the literal itself.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from sqlglot import exp

from auditwatch.audit.chunks import iter_chunks, open_log
from auditwatch.engine.pipeline import OutputRow, Pipeline
from auditwatch.engine.prefilter import Prefilter, derive
from auditwatch.engine.sql import compile_plan, event_rows, group_rows
from auditwatch.engine.sql_functions import python_functions
from auditwatch.ir.plan import Plan

LINES = "lines"
MAX_LINE = 64 << 20  # bytes in a line at most (a file source's maxLineBytes may be up to this)
SELECTIVE = 0.25  # the prefilter's pass goes on while it keeps at most this share of what it reads
PROBE = 16 << 20  # bytes read before the share is judged


class DuckDB:
    """One DuckDB connection with the limits of a hunt: memory, threads, where to spill."""

    def __init__(
        self,
        memory_limit: str = "4GB",
        threads: int | None = None,
        temp_directory: str | None = None,
        scratch: str | None = None,
    ) -> None:
        import duckdb  # here: 0.2 s of start-up that only a hunt pays

        self.con = duckdb.connect(config={"memory_limit": memory_limit, "preserve_insertion_order": True})
        if threads:
            self.con.execute(f"SET threads = {int(threads)}")
        if temp_directory:
            self.con.execute("SET temp_directory = ?", [temp_directory])
        self._registered: set[str] = set()
        self.scratch = scratch  # where the prefilter's pass writes (None: the system's temporary directory)

    def rows(
        self,
        plan: Plan,
        files: Sequence[str],
        geoip_db: str | None = None,
        names: Mapping[str, str] | None = None,
    ) -> Iterator[OutputRow]:
        """The plan's rows over ``files`` (JSON lines, plain or gzip), as the streaming engine gives them;
        ``names``: what a file is called in ``source`` when not its path (a download, a decoded copy)."""
        names = {path: (names or {}).get(path, path) for path in files}
        with tempfile.TemporaryDirectory(prefix="auditwatch-candidates-", dir=self.scratch) as scratch:
            prefilter = derive(plan)
            picked = candidates(prefilter, files, scratch) if prefilter is not None else None
            if picked is not None:
                names = {target: names[path] for path, target in zip(files, picked, strict=True)}
                files = picked
            yield from self._rows(plan, files, geoip_db, names)

    def _rows(
        self, plan: Plan, files: Sequence[str], geoip_db: str | None, names: dict[str, str]
    ) -> Iterator[OutputRow]:
        compiled = compile_plan(plan, exp.to_table(LINES))
        self._register(compiled.functions, geoip_db)
        if not compiled.aggregate:  # rows are events: the lines with one that passes, as scan reads them
            for path in files:  # one file at a time: its lines in order
                self._lines([path], ordinal=True, names=names)
                found = self.con.execute(compiled.query.sql("duckdb")).fetchall()
                yield from event_rows(plan, geoip_db, ((names[path], line) for _, _, line in found))
            return
        self._lines(files, ordinal=False, names=names)
        found = self.con.execute(compiled.query.sql("duckdb")).fetchall()
        yield from group_rows(plan, Pipeline(plan, geoip_db), found)

    def _lines(self, files: Sequence[str], ordinal: bool, names: dict[str, str]) -> None:
        """The view of raw lines: each whole line of each file as text (NUL, which no JSON line has, as
        the delimiter; no quoting), with the name of the file it came from."""
        self.con.execute("DROP VIEW IF EXISTS raw")
        read = self.con.read_csv(
            list(files),
            header=False,
            sep="\0",
            quotechar="",
            escapechar="",
            columns={"line": "VARCHAR"},
            filename=True,
            max_line_size=MAX_LINE,
            buffer_size=2 * MAX_LINE,
            auto_detect=False,
        )
        read.create_view("raw")
        order = "row_number() OVER ()" if ordinal else "0"
        renamed = {path: name for path, name in names.items() if path != name}
        source = "filename"
        if renamed:  # a join with the names, in a table of their own
            self.con.execute("CREATE OR REPLACE TEMP TABLE aw_names (file VARCHAR, name VARCHAR)")
            self.con.executemany("INSERT INTO aw_names VALUES (?, ?)", list(renamed.items()))
            source = "coalesce((SELECT name FROM aw_names WHERE file = filename), filename)"
        self.con.execute(
            f"CREATE OR REPLACE VIEW {LINES} AS SELECT {source} AS source, {order} AS ordinal, line FROM raw"
        )

    def _register(self, names: set[str], geoip_db: str | None) -> None:
        for name, (function, args, returns) in sorted(python_functions(names, geoip_db, []).items()):
            if name in self._registered:  # a function of another database (iplocation) is registered anew
                self.con.remove_function(name)
            register: Any = self.con.create_function
            register(name, function, args, returns, null_handling="special")
            self._registered.add(name)


def candidates(prefilter: Prefilter, files: Sequence[str], scratch: str) -> list[str] | None:
    """Each file's candidate lines, in order, in a file of its own in ``scratch`` (the same number of
    files, in the same order); None when the literal is too common for the pass to pay."""
    picked, read, kept = [], 0, 0
    for number, path in enumerate(files):
        target = os.path.join(scratch, f"{number:06d}.jsonl")
        with open_log(path) as stream, open(target, "wb") as out:
            for chunk in iter_chunks(stream):
                spans = prefilter.spans(chunk)
                if spans:
                    out.write(b"\n".join(chunk[start:end] for start, end in spans) + b"\n")
                read += len(chunk)
                kept += sum(end - start + 1 for start, end in spans)
                if read >= PROBE and kept > SELECTIVE * read:
                    return None
        picked.append(target)
    return picked
