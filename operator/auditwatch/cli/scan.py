"""``auditwatch scan``: one detection over audit-log files, rows to stdout."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson

from auditwatch.cli.common import add_geoip_option, detection_plan, reading


def register(sub: Any) -> None:
    p = sub.add_parser(
        "scan",
        help="run one detection over audit-log files and print the result rows",
        description="Run an AuditDetection's rule (SPL, Sigma or Falco) over audit logs: JSON lines, EventList "
        "batches, JSON documents (pretty-printed, arrays), CloudWatch Logs exports (aws logs filter-log-events "
        "output, subscription-filter payloads, Kinesis/Firehose records), AKS diagnostic records, oc adm "
        "node-logs output, .gz, - for stdin, or a log "
        "group read directly: cloudwatch://REGION/LOG_GROUP?since=24h (until=, prefix=; AWS credentials "
        "from the standard chain), or a Pub/Sub subscription of GKE's audit entries, drained: "
        "pubsub://PROJECT/SUBSCRIPTION?drain=true (wait=5s; its messages are acknowledged), or an AKS "
        "diagnostic archive's hourly blobs: azblob://ACCOUNT/CONTAINER/PREFIX?since=24h, or what an event "
        "hub retains, read without a consumer group: eventhub://NAMESPACE/HUB?since=24h. Rows go to "
        "stdout; a summary (lines, events, malformed lines, rows, speed) goes to stderr. Exit 0 on success, 2 "
        "for an invalid detection or unreadable input.",
    )
    p.add_argument("--detection", "-d", required=True, metavar="FILE", help="AuditDetection manifest (YAML/JSON)")
    p.add_argument("--output", "-o", choices=("jsonl", "table"), default="jsonl", help="row format (jsonl)")
    p.add_argument("--no-prefilter", action="store_true", help="parse every line (slower; the rows are the same)")
    add_geoip_option(p)
    p.add_argument(
        "logs",
        nargs="+",
        metavar="LOG",
        help="audit log files, - for stdin, cloudwatch://REGION/GROUP, pubsub://PROJECT/SUBSCRIPTION?drain=true, "
        "azblob://ACCOUNT/CONTAINER/PREFIX or eventhub://NAMESPACE/HUB",
    )
    p.set_defaults(func=scan_command)


def scan_command(args: argparse.Namespace) -> int:
    from auditwatch.engine.pipeline import OutputRow
    from auditwatch.offline.scan import format_table, scan, stderr_progress, summary

    plan = detection_plan(args.detection)
    collected: list[OutputRow] = []
    out = sys.stdout.buffer

    def json_line(row: OutputRow) -> bytes:
        return orjson.dumps(row) + b"\n"

    # table: rows collected as they are, to be aligned at the end; jsonl: each written as a line
    emit, encode = (collected.append, lambda row: row) if args.output == "table" else (out.write, json_line)
    with reading(args.detection):
        result = scan(
            plan,
            args.logs,
            emit,
            encode,
            not args.no_prefilter,
            stderr_progress(),
            geoip_db=args.geoip_db,
            notes=sys.stderr,
        )
    if args.output == "table":
        sys.stdout.write(format_table(collected))
    out.flush()
    print(summary(result), file=sys.stderr)
    return 1 if result.broken else 0
