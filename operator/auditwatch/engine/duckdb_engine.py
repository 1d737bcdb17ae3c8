"""The SQL executor on DuckDB, embedded: a plan's query (engine/sql.py) over audit-log files, in-process.

DuckDB reads the lines itself (plain or gzip, any number of files, in parallel) and spills to
``temp_directory`` past ``memory_limit``, so a hunt larger than memory runs in bounded memory. The
functions SQL lacks are Python functions registered on the connection, each the streaming engine's
own code; DuckDB calls them only for lines past the prefilter and events past the filters before them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from sqlglot import exp

from auditwatch.engine.evaluate import Evaluator
from auditwatch.engine.pipeline import OutputRow, Pipeline
from auditwatch.engine.sql import compile_plan, group_rows
from auditwatch.engine.sql_functions import python_functions
from auditwatch.ir.plan import Plan

LINES = "lines"
MAX_LINE = 64 << 20  # bytes in a line at most (a file source's maxLineBytes may be up to this)


class DuckDB:
    """One DuckDB connection with the limits of a hunt: memory, threads, where to spill."""

    def __init__(
        self, memory_limit: str = "4GB", threads: int | None = None, temp_directory: str | None = None
    ) -> None:
        import duckdb  # here: 0.2 s of start-up that only a hunt pays

        self.con = duckdb.connect(config={"memory_limit": memory_limit, "preserve_insertion_order": True})
        if threads:
            self.con.execute(f"SET threads = {int(threads)}")
        if temp_directory:
            self.con.execute("SET temp_directory = ?", [temp_directory])
        self._registered: set[str] = set()

    def rows(self, plan: Plan, files: Sequence[str], geoip_db: str | None = None) -> Iterator[OutputRow]:
        """The plan's rows over ``files`` (JSON lines, plain or gzip), as the streaming engine gives them."""
        compiled = compile_plan(plan, exp.to_table(LINES))
        self._register(compiled.functions, geoip_db)
        if not compiled.aggregate:  # rows are events: the lines with one that passes, as scan reads them
            evaluator = Evaluator(plan, use_prefilter=False, geoip_db=geoip_db)
            for path in files:  # one file at a time: its lines in order
                self._lines([path], ordinal=True)
                found = self.con.execute(compiled.query.sql("duckdb")).fetchall()
                chunk = b"".join(line.encode() + b"\n" for _, _, line in found)
                yield from (evaluator.pipeline.output(r) for _, _, r in evaluator.records(chunk, origin=path))
            return
        self._lines(files, ordinal=False)
        found = self.con.execute(compiled.query.sql("duckdb")).fetchall()
        yield from group_rows(plan, Pipeline(plan, geoip_db), found)

    def _lines(self, files: Sequence[str], ordinal: bool) -> None:
        """The view of raw lines: each whole line of each file as text (NUL, which no JSON line has, as
        the delimiter; no quoting), with the file it came from."""
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
        self.con.execute(
            f"CREATE OR REPLACE VIEW {LINES} AS SELECT filename AS source, {order} AS ordinal, line FROM raw"
        )

    def _register(self, names: set[str], geoip_db: str | None) -> None:
        for name, (function, args, returns) in sorted(python_functions(names, geoip_db, []).items()):
            if name in self._registered:  # a function of another database (iplocation) is registered anew
                self.con.remove_function(name)
            register: Any = self.con.create_function
            register(name, function, args, returns, null_handling="special")
            self._registered.add(name)
