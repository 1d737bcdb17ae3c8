"""``auditwatch run``: the operator."""

from __future__ import annotations

import argparse
from typing import Any

from auditwatch.cli.common import (
    UsageError,
    add_verdict_options,
    make_settings,
    settings_options,
)


def register(sub: Any) -> None:
    p = sub.add_parser(
        "run",
        help="run the operator",
        description="Run the kopf operator: every AuditDetection in the watched namespaces is evaluated "
        "continuously; matches become DetectionFindings and Events. Credentials: in-cluster, else "
        "$KUBECONFIG.",
    )
    p.add_argument(
        "--namespace", "-n", dest="namespaces", action="append", metavar="NS", help="watch only NS (repeatable)"
    )
    add_verdict_options(p)
    p.add_argument(
        "--liveness",
        default="http://0.0.0.0:8080/healthz",
        metavar="URL",
        help="kopf's liveness endpoint (default: http://0.0.0.0:8080/healthz; '' turns it off)",
    )
    _add_write_options(p)
    _add_shard_options(p)
    p.add_argument(
        "--alerts",
        metavar="FILE",
        help="send a notice when a finding is created (and when it grows, at most hourly) to the receivers "
        "this YAML file names: Alertmanager, a JSON webhook, Slack; mount it from a Secret (README: Alerts)",
    )
    p.add_argument(
        "--metrics-listen",
        metavar="HOST:PORT",
        help="serve Prometheus metrics at http://HOST:PORT/metrics (default: none; the install uses 0.0.0.0:8082)",
    )
    p.add_argument(
        "--cloudwatch-calls-per-second",
        type=float,
        metavar="N",
        help="FilterLogEvents calls per CloudWatch log group, however many detections read it (default 1; "
        "the quota is per account and region, 5/s, and shared with every other reader of the account)",
    )
    p.add_argument(
        "--pubsub-spool",
        metavar="DIR",
        help="where messages pulled from Pub/Sub subscriptions are kept, before they are acknowledged, for the "
        "detections to read (default: auditwatch-pubsub in the temporary directory; the GKE install's volume)",
    )
    p.add_argument(
        "--eventhub-spool",
        metavar="DIR",
        help="where records fetched from event hubs are kept, before their offsets are committed, for the "
        "detections to read (default: auditwatch-eventhub in the temporary directory; the AKS Event Hubs "
        "install's volume)",
    )
    p.add_argument(
        "--no-evaluation-worker",
        dest="evaluation_worker",
        action="store_false",
        default=None,
        help="evaluate on the operator's event loop instead of in one worker process per source read (the "
        "default: evaluation then holds neither the loop nor the GIL that writes and watches need, at the "
        "cost of a process of about 40 MB per source)",
    )
    p.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    settings_options(p)
    p.set_defaults(func=run_command)


def _add_write_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--write-qps",
        type=float,
        metavar="N",
        help="API writes per second, all detections together: finding creates and updates, detection "
        "statuses, Events, per replica (default 50: about 40%% of a core of a small kube-apiserver at "
        "full use, README 'What a finding write costs'; new findings go first, counts are written less often "
        "under pressure, never lost)",
    )
    p.add_argument(
        "--write-burst",
        type=int,
        metavar="N",
        help="writes allowed at once above the rate after a quiet spell (default 100)",
    )
    p.add_argument("--write-concurrency", type=int, metavar="N", help="API writes under way at once (default 4)")
    p.add_argument(
        "--reports",
        action="store_true",
        default=None,
        help="mirror each detection's findings into an OpenReports Report (openreports.io/v1alpha1, read "
        "by Policy Reporter and its outputs): one per detection, in its namespace, the 100 most counted "
        "findings",
    )


def _add_shard_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--shard",
        metavar="NAME",
        help="which audit log this replica reads, kept with its positions and its part of each finding: "
        "the node's name for a DaemonSet on the control-plane nodes, the pod's for a webhook replica "
        "(default: $AUDITWATCH_SHARD, else 'default'); replicas with different shards count into the same "
        "findings, and a replica with a shard of its own watches them to write over the others' latest "
        "counts",
    )
    p.add_argument(
        "--shard-lease-seconds",
        type=float,
        metavar="S",
        help="with a shard: renew its Lease every S/4 seconds; a shard whose Lease this replica has not "
        "seen renewed for S seconds is silent and its detections say SourcesReady=False (default: 40, "
        "as node leases)",
    )
    p.add_argument(
        "--retire-shards-after",
        dest="retire_shards_seconds",
        type=float,
        metavar="S",
        help="a shard with no Lease for S seconds (its Pod deleted: a control-plane node replaced, a webhook "
        "replica scaled away) is retired by the live replica with the smallest shard name: its parts of "
        "findings and of detections' status move into their retired totals (counts unchanged), keeping "
        "the last 16 retired shards whole so one that comes back under its name resumes without "
        "counting again (default: 3600)",
    )
    p.add_argument(
        "--host-root",
        metavar="DIR",
        help="read file sources below DIR: where the node's file system is mounted when not at / "
        "(default: none; the install mounts the audit directory at its own path)",
    )


def run_command(args: argparse.Namespace) -> int:
    import logging

    import kopf

    import auditwatch.runtime.handlers  # noqa: F401 (registers the handlers)

    settings = make_settings(args)
    alerts = None
    if args.alerts:
        from auditwatch.findings.alerts import AlertConfigError, load_config

        try:
            alerts = load_config(args.alerts)
        except AlertConfigError as exc:
            raise UsageError(f"--alerts: {exc}") from None
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    kopf.run(
        clusterwide=not settings.namespaces,
        namespaces=settings.namespaces,
        liveness_endpoint=settings.liveness or None,
        standalone=True,
        memo=kopf.Memo(settings=settings, alerts=alerts),
    )
    return 0
