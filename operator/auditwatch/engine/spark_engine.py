"""The SQL executor on Spark, for a history past one machine: a plan's query (engine/sql.py) in Spark SQL.

Spark reads the lines (``spark.read.text``: plain or gzip, split across executors), tests the
prefilter's literals on the raw line, and decodes the lines left with ``aw_decode``, a Python function
that is the streaming decoder itself (Spark's JSON paths cannot reach into arrays as Splunk's field
names do), one row per event; everything after (filters, fillnull, rename, the groups and aggregates)
is Spark SQL. ``local[*]`` by default; ``master`` names a cluster (``spark://``, ``yarn``, ``k8s://``),
and under ``spark-submit`` the session the job was given is used.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from sqlglot import exp

from auditwatch.engine.pipeline import OutputRow, Pipeline
from auditwatch.engine.sql import compile_plan, event_rows, group_rows
from auditwatch.engine.sql_functions import python_functions
from auditwatch.ir.plan import Plan

LINES = "auditwatch_lines"


class Spark:
    def __init__(self, master: str = "local[*]", config: dict[str, str] | None = None) -> None:
        from pyspark.sql import SparkSession  # here: a JVM starts, which only a Spark hunt needs

        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # local workers: this interpreter, auditwatch in it
        if master.startswith("sc://"):  # Spark Connect: the server has its own settings
            self.session = SparkSession.builder.remote(master).getOrCreate()
            return
        builder = SparkSession.builder.appName("auditwatch-hunt").master(master)
        settings = {
            "spark.ui.enabled": "false",
            "spark.sql.ansi.enabled": "false",  # an index past an array's end is NULL, as in DuckDB
            "spark.sql.session.timeZone": "UTC",
            **(config or {}),
        }
        for key, value in settings.items():
            builder = builder.config(key, value)
        self.session = builder.getOrCreate()
        self.session.sparkContext.setLogLevel("ERROR")

    def rows(
        self,
        plan: Plan,
        files: Sequence[str],
        geoip_db: str | None = None,
        names: Mapping[str, str] | None = None,
    ) -> Iterator[OutputRow]:
        """The plan's rows over ``files`` (JSON lines, plain or gzip), as the streaming engine gives them;
        ``names``: what a file is called in ``source`` when not its path (a download, a decoded copy)."""
        from pyspark.sql import functions

        compiled = compile_plan(plan, exp.to_table(LINES), decode=True)
        for name, (function, _, returns) in python_functions(compiled.functions, geoip_db, compiled.decoded).items():
            self.session.udf.register(name, function, _spark_type(returns))
        lines: Any = self.session.read.text(list(files))
        f = functions
        source = f.regexp_replace(f.input_file_name(), "^file://", "")
        renamed = [f.lit(text) for path, name in (names or {}).items() if path != name for text in (path, name)]
        if renamed:
            source = f.coalesce(f.element_at(f.create_map(*renamed), source), source)
        # A line's place: its partition, then its place in it; a file's splits are partitions in their order.
        ordinal = f.monotonically_increasing_id() if plan.aggregate is None else f.lit(0)
        columns = (source.alias("source"), ordinal.alias("ordinal"), f.col("value").alias("line"))
        lines.select(*columns).createOrReplaceTempView(LINES)
        found = self.session.sql(compiled.query.sql("spark")).collect()
        if plan.aggregate is None:  # the lines with an event that passes, by file (in the order given) and place
            named = [(names or {}).get(path, path) for path in files]
            rank = {name: i for i, name in enumerate(dict.fromkeys(named))}
            ordered = sorted(found, key=lambda row: (rank.get(row[0], len(rank)), row[0], row[1]))
            yield from event_rows(plan, geoip_db, ((row[0], row[2]) for row in ordered))
            return
        yield from group_rows(plan, Pipeline(plan, geoip_db), (tuple(row) for row in found))

    def stop(self) -> None:
        self.session.stop()


def _spark_type(sql_type: str) -> str:
    """A function's return type in Spark's words (``VARCHAR[]`` -> ``array<string>``)."""
    spark = sql_type.lower().replace("varchar", "string")
    while spark.endswith("[]"):
        spark = f"array<{spark[:-2]}>"
    return spark
