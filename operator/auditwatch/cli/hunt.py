"""``auditwatch hunt``: one detection over archived audit logs on a SQL engine."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson

from auditwatch.cli.common import EXIT_USAGE, add_geoip_option, detection_plan, reading


def register(sub: Any) -> None:
    p = sub.add_parser(
        "hunt",
        help="run one detection over archived audit logs on a SQL engine (DuckDB, embedded)",
        description="Run an AuditDetection over audit-log archives on DuckDB, in-process: the detection's plan "
        "is compiled to SQL; DuckDB reads JSON lines (plain or gzip) itself, in parallel, spilling to disk past "
        "--memory-limit; other inputs scan reads (JSON documents, CloudWatch exports, oc adm node-logs output, "
        "cloudwatch://) are decoded first. The rows equal `auditwatch scan`'s. Rows go to stdout; a summary "
        "to stderr. Exit 0 on success, 2 for an invalid detection or unreadable input.",
    )
    p.add_argument("--detection", "-d", required=True, metavar="FILE", help="AuditDetection manifest (YAML/JSON)")
    p.add_argument(
        "--engine",
        choices=("duckdb", "spark"),
        default="duckdb",
        help="duckdb: in-process, nothing to start (default); spark: distributed, local[*] unless --spark-master",
    )
    p.add_argument(
        "--spark-master",
        default="local[*]",
        metavar="URL",
        help="where Spark runs: local[N], spark://HOST:7077, yarn, k8s://... (default local[*])",
    )
    p.add_argument("--output", "-o", choices=("jsonl", "table"), default="jsonl", help="row format (jsonl)")
    p.add_argument(
        "--memory-limit",
        default="4GB",
        metavar="SIZE",
        help="DuckDB's memory limit; past it, it spills to a temporary directory (4GB)",
    )
    p.add_argument("--threads", type=int, metavar="N", help="DuckDB's threads (default: one per core)")
    p.add_argument("--print-sql", action="store_true", help="print the query the engine runs and exit")
    add_geoip_option(p)
    p.add_argument("logs", nargs="*", metavar="LOG", help="files, directories, globs (quoted), - for stdin")
    p.set_defaults(func=hunt_command)


def hunt_command(args: argparse.Namespace) -> int:
    try:
        import sqlglot  # noqa: F401

        __import__("pyspark" if args.engine == "spark" else "duckdb")
    except ImportError as exc:
        extra = "spark" if args.engine == "spark" else "hunt"
        print(f"auditwatch hunt: needs {exc.name}: pip install 'auditwatch[{extra}]'", file=sys.stderr)
        return EXIT_USAGE
    from auditwatch.engine.pipeline import OutputRow
    from auditwatch.offline.hunt import hunt
    from auditwatch.offline.scan import format_table

    plan = detection_plan(args.detection)
    if args.print_sql:
        from auditwatch.engine.sql import render

        print(render(plan, args.engine))
        return 0
    if not args.logs:
        print("auditwatch hunt: give at least one LOG (or --print-sql)", file=sys.stderr)
        return EXIT_USAGE
    collected: list[OutputRow] = []
    out = sys.stdout.buffer
    emit = collected.append if args.output == "table" else (lambda row: out.write(orjson.dumps(row) + b"\n"))
    with reading(args.detection):
        result = hunt(
            plan, args.logs, emit, args.geoip_db, args.engine, args.memory_limit, args.threads, args.spark_master
        )
    if args.output == "table":
        sys.stdout.write(format_table(collected))
    out.flush()
    took = f"{result.seconds:.2f} s ({args.engine})"
    print(f"auditwatch hunt: {result.rows:,} rows from {result.files:,} files in {took}", file=sys.stderr)
    return 0
