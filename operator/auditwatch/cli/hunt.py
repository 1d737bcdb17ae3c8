"""``auditwatch hunt``: one detection over archived audit logs on a SQL engine."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import orjson

from auditwatch.cli.common import EXIT_USAGE, UsageError, add_geoip_option, detection_plan, reading
from auditwatch.times import point_in_time


def register(sub: Any) -> None:
    p = sub.add_parser(
        "hunt",
        help="run one detection over archived audit logs on a SQL engine (DuckDB, embedded)",
        description="Run an AuditDetection over audit-log archives on DuckDB, in-process (or Spark): the "
        "detection's plan is compiled to SQL; DuckDB reads JSON lines (plain or gzip) itself, in parallel, "
        "spilling to disk past --memory-limit; other inputs scan reads (JSON documents, CloudWatch exports and "
        "subscription payloads, oc adm node-logs output, cloudwatch://) are decoded first. s3://BUCKET/PREFIX "
        "reads the objects under a prefix (Firehose's YYYY/MM/DD/HH/ layout, export tasks, rotated logs), "
        "one GET each, into a temporary directory; with --since/--until, those under hours outside the range "
        "are never read. AWS credentials and endpoint come from the standard chain (AWS_PROFILE, "
        "AWS_ENDPOINT_URL...). The rows equal `auditwatch scan`'s. Rows go to stdout; a summary to stderr. "
        "Exit 0 on success, 2 for an invalid detection or option, or an unreadable input.",
    )
    p.add_argument("--detection", "-d", required=True, metavar="FILE", help="AuditDetection manifest (YAML/JSON)")
    p.add_argument(
        "--engine",
        choices=("duckdb", "spark", "trino"),
        default="duckdb",
        help="duckdb: in-process, nothing to start (default); spark: distributed, local[*] unless --spark-master; "
        "trino: a Trino server (or, with --print-sql, Athena) over a table of the archive's lines (--table)",
    )
    p.add_argument(
        "--spark-master",
        default="local[*]",
        metavar="URL",
        help="where Spark runs: local[N], spark://HOST:7077, yarn, k8s://..., or a Spark Connect server "
        "sc://HOST:15002 (default local[*])",
    )
    p.add_argument("--trino-url", metavar="URL", help="the Trino server: http[s]://[USER@]HOST:PORT")
    p.add_argument(
        "--table",
        default="audit_lines",
        metavar="NAME",
        help="trino: the table (catalog.schema.name) whose column `line` holds the archive's lines (audit_lines)",
    )
    p.add_argument(
        "--source-column",
        default="$path",
        metavar="NAME",
        help="trino: the column naming each line's file, Splunk's `source` ($path: Hive's and Athena's own)",
    )
    p.add_argument("--output", "-o", choices=("jsonl", "table"), default="jsonl", help="row format (jsonl)")
    p.add_argument(
        "--memory-limit",
        default="4GB",
        metavar="SIZE",
        help="DuckDB's memory limit; past it, it spills to a temporary directory (4GB)",
    )
    p.add_argument("--threads", type=int, metavar="N", help="DuckDB's threads (default: one per core)")
    p.add_argument(
        "--since",
        metavar="TIME",
        help="only events at or after TIME: RFC 3339 (2026-11-01T00:00:00Z) or how long ago (30d, 12h); "
        "s3:// objects under hour paths (Firehose's YYYY/MM/DD/HH/) before it are never read",
    )
    p.add_argument("--until", metavar="TIME", help="only events before TIME (as --since; default: no end)")
    p.add_argument(
        "--findings",
        metavar="NAMESPACE",
        help="also write the rows as DetectionFindings in NAMESPACE (kubeconfig or in-cluster credentials), "
        "labelled auditwatch.io/hunt with the range; hunting the same range again writes the same objects",
    )
    p.add_argument("--print-sql", action="store_true", help="print the query the engine runs and exit")
    add_geoip_option(p)
    p.add_argument(
        "logs",
        nargs="*",
        metavar="LOG",
        help="files, directories, globs (quoted), - for stdin, cloudwatch://REGION/GROUP, "
        "pubsub://PROJECT/SUBSCRIPTION?drain=true, azblob://ACCOUNT/CONTAINER/PREFIX, eventhub://NAMESPACE/HUB, "
        "s3://BUCKET/PREFIX",
    )
    p.set_defaults(func=hunt_command)


def _when(option: str, value: str | None) -> float | None:
    """A time option in epoch seconds; a usage error naming the option when it is none."""
    if value is None:
        return None
    try:
        return point_in_time(value, round(time.time() * 1000)) / 1000
    except ValueError as exc:
        raise UsageError(f"{option}: {exc}") from None


def hunt_command(args: argparse.Namespace) -> int:
    try:
        import sqlglot  # noqa: F401

        __import__({"spark": "pyspark", "trino": "trino"}.get(args.engine, "duckdb"))
    except ImportError as exc:
        extra = args.engine if args.engine in ("spark", "trino") else "hunt"
        print(f"auditwatch hunt: needs {exc.name}: pip install 'auditwatch[{extra}]'", file=sys.stderr)
        return EXIT_USAGE
    from auditwatch.engine.pipeline import OutputRow
    from auditwatch.offline.hunt import Engine, hunt
    from auditwatch.offline.scan import format_table

    plan = detection_plan(args.detection)
    since, until = _when("--since", args.since), _when("--until", args.until)
    if since is not None and until is not None and since >= until:
        raise UsageError(f"--since {args.since} is not before --until {args.until}")
    if args.print_sql:
        print(_sql(args, plan, since, until))
        return 0
    if args.engine == "trino":
        if args.logs or not args.trino_url:
            raise UsageError(
                "--engine trino reads --table on --trino-url, not LOG files (README: the archive as a table)"
            )
    elif not args.logs:
        print("auditwatch hunt: give at least one LOG (or --print-sql)", file=sys.stderr)
        return EXIT_USAGE
    findings = _findings(args, plan, since, until)
    collected: list[OutputRow] = []
    out = sys.stdout.buffer

    def emit(row: OutputRow) -> None:
        if args.output == "table":
            collected.append(row)
        else:
            out.write(orjson.dumps(row) + b"\n")
        if findings is not None:
            findings.add(row)

    engine = Engine(
        args.engine,
        args.memory_limit,
        args.threads,
        args.spark_master,
        args.trino_url or "",
        args.table,
        args.source_column,
    )
    with reading(args.detection):
        result = hunt(plan, args.logs, emit, args.geoip_db, engine, since, until)
    if args.output == "table":
        sys.stdout.write(format_table(collected))
    out.flush()
    took = f"{result.seconds:.2f} s ({args.engine})"
    print(f"auditwatch hunt: {result.rows:,} rows from {result.files:,} files in {took}", file=sys.stderr)
    if findings is not None:
        created, updated = findings.write(args.findings)
        print(
            f"auditwatch hunt: findings in {args.findings}: {created:,} created, {updated:,} updated "
            f"(kubectl get findings -n {args.findings} -l auditwatch.io/hunt={findings.hunt.name})",
            file=sys.stderr,
        )
    return 0


def _sql(args: argparse.Namespace, plan: Any, since: float | None, until: float | None) -> str:
    """The query the engine would run (for Trino and Athena: over --table)."""
    from auditwatch.ir.plan import within

    plan = within(plan, since, until)
    if args.engine == "trino":
        from auditwatch.engine.trino import render as render_trino

        return render_trino(plan, args.table, args.source_column)
    from auditwatch.engine.sql import render

    return render(plan, args.engine)


def _findings(args: argparse.Namespace, plan: Any, since: float | None, until: float | None) -> Any:
    """What gathers the rows into findings, with ``--findings``: the detection must have a name."""
    if args.findings is None:
        return None
    from auditwatch.api.models import load_detection
    from auditwatch.offline.hunt_findings import Hunt, HuntFindings

    detection = load_detection(args.detection)
    if not detection.metadata.name:
        raise UsageError(f"{args.detection}: metadata.name: --findings names its findings after the detection")
    return HuntFindings(Hunt(detection, since, until, args.engine), plan)
