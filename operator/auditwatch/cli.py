"""The ``auditwatch`` command."""

from __future__ import annotations

import argparse
import atexit
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NoReturn

import orjson

from auditwatch import __version__
from auditwatch.manifest import ManifestError, search_and_macros
from auditwatch.spl import SPLError, parse_search

if TYPE_CHECKING:
    from auditwatch.settings import Settings

EXIT_USAGE = 2
# The webhook Service as kube-apiserver reaches it (manifests/base/deployment.yaml: a fixed ClusterIP).
WEBHOOK_HOSTS = (
    "10.96.200.200",
    "auditwatch-webhook.auditwatch.svc",
    "auditwatch-webhook.auditwatch.svc.cluster.local",
)


class UsageError(ValueError):
    """An option with a value that cannot work; the message names the option."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:  # the reader of our output went away (`| head`): not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (ManifestError, SPLError, UsageError) as exc:
        print(f"auditwatch: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


def entry() -> NoReturn:
    """The ``auditwatch`` command: ``main``, then exit without tearing the interpreter down.

    Exit handlers run and output is flushed as on any exit; only the freeing of every object and
    module is skipped, which is 5% of a large ``scan``'s time (the stats table, ~15 ms).
    """
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    atexit._run_exitfuncs()
    os._exit(code)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="auditwatch",
        description="Splunk ESCU detections over Kubernetes audit logs, offline or as an in-cluster operator.",
    )
    parser.add_argument("--version", action="version", version=f"auditwatch {__version__}")
    sub = parser.add_subparsers(metavar="COMMAND")

    p = sub.add_parser(
        "scan",
        help="run one detection over audit-log files and print the result rows",
        description="Run an AuditDetection's SPL search over audit logs: JSON lines, EventList batches, "
        "JSON documents (pretty-printed, arrays), CloudWatch Logs exports (aws logs filter-log-events "
        "output, subscription-filter payloads, Kinesis/Firehose records), AKS diagnostic records, oc adm "
        "node-logs output, .gz, - for stdin, or a log "
        "group read directly: cloudwatch://REGION/LOG_GROUP?since=24h (until=, prefix=; AWS credentials "
        "from the standard chain). Rows go to stdout; a summary (lines, events, malformed lines, rows, "
        "speed) goes to stderr. Exit 0 on success, 2 for an invalid detection or unreadable input.",
    )
    p.add_argument("--detection", "-d", required=True, metavar="FILE", help="AuditDetection manifest (YAML/JSON)")
    p.add_argument("--output", "-o", choices=("jsonl", "table"), default="jsonl", help="row format (jsonl)")
    p.add_argument("--no-prefilter", action="store_true", help="parse every line (slower; the rows are the same)")
    add_geoip_option(p)
    p.add_argument("logs", nargs="+", metavar="LOG", help="audit log files, - for stdin, or cloudwatch://REGION/GROUP")
    p.set_defaults(func=cmd_scan)

    p = sub.add_parser(
        "crds",
        help="write the CRDs generated from the API models",
        description="Write the CustomResourceDefinitions of AuditDetection and DetectionFinding, generated "
        "from the pydantic models, into DIR. With --check, write nothing and exit 1 if DIR differs.",
    )
    p.add_argument("directory", nargs="?", default="crds", metavar="DIR", help="output directory (crds)")
    p.add_argument("--check", action="store_true", help="exit 1 when DIR is not what would be written")
    p.set_defaults(func=cmd_crds)

    p = sub.add_parser(
        "run",
        help="run the operator",
        description="Run the kopf operator: every AuditDetection in the watched namespaces is evaluated "
        "continuously; matches become DetectionFindings and Events. Credentials: in-cluster, else "
        "$KUBECONFIG.",
    )
    p.add_argument("--namespace", "-n", action="append", metavar="NS", help="watch only NS (repeatable)")
    add_detection_namespace_option(p)
    p.add_argument(
        "--liveness",
        default="http://0.0.0.0:8080/healthz",
        metavar="URL",
        help="kopf's liveness endpoint (default: http://0.0.0.0:8080/healthz; '' turns it off)",
    )
    add_webhook_option(p)
    add_geoip_option(p)
    add_source_options(p)
    p.add_argument(
        "--write-qps",
        type=float,
        metavar="N",
        help="API writes per second, all detections together: finding creates and updates, detection "
        "statuses, Events (default 20, as kube-controller-manager's clients; new findings go first, "
        "counts are written less often under pressure, never lost)",
    )
    p.add_argument(
        "--write-burst",
        type=int,
        metavar="N",
        help="writes allowed at once above the rate after a quiet spell (default 30)",
    )
    p.add_argument("--write-concurrency", type=int, metavar="N", help="API writes under way at once (default 4)")
    p.add_argument(
        "--reports",
        action="store_true",
        default=None,
        help="mirror each detection's findings into an OpenReports Report (openreports.io/v1alpha1, read by "
        "Policy Reporter and its outputs): one per detection, in its namespace, the 100 most counted findings",
    )
    p.add_argument(
        "--shard",
        metavar="NAME",
        help="which audit log this replica reads, kept with its positions and its part of each finding: the "
        "node's name for a DaemonSet on the control-plane nodes, the pod's for a webhook replica (default: "
        "$AUDITWATCH_SHARD, else 'default'); replicas with different shards count into the same findings, "
        "and a replica with a shard of its own watches them to write over the others' latest counts",
    )
    p.add_argument(
        "--shard-lease-seconds",
        type=float,
        metavar="S",
        help="with a shard: renew its Lease every S/4 seconds; a shard whose Lease this replica has not seen renewed "
        "for S seconds is silent and its detections say SourcesReady=False (default: 40, as node leases)",
    )
    p.add_argument(
        "--host-root",
        metavar="DIR",
        help="read file sources below DIR: where the node's file system is mounted when not at / (default: "
        "none; the install mounts the audit directory at its own path)",
    )
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
    p.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "demo",
        help="real findings from real anonymous requests to a local kube-apiserver",
        description="Start a local control plane (etcd, kube-apiserver with audit logging, "
        "kube-controller-manager; built from the Go module proxy on the first run, about 6 minutes), "
        "install the CRDs, RBAC and the seed ESCU detection, run the operator, make anonymous and "
        "authenticated requests, and print the findings and Events.",
    )
    p.add_argument("--keep", action="store_true", help="leave it all running until Ctrl-C; prints how to use it")
    p.add_argument("--workdir", metavar="DIR", help="where the cluster keeps its files (default: a temp dir)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser(
        "cluster",
        help="the local control plane: build its binaries, or run it",
        description="build: build kube-apiserver, kube-controller-manager and kubectl from the Go module "
        "proxy into the cache (~/.cache/auditwatch, or $AUDITWATCH_CACHE) unless they are there. "
        "up: start etcd, kube-apiserver (RBAC, anonymous auth, audit log) and kube-controller-manager on "
        "loopback and keep them running until Ctrl-C. "
        "certs: write the audit webhook's CA, serving and client certificates (for kind and the install).",
    )
    p.add_argument("action", choices=("build", "up", "certs"))
    p.add_argument(
        "--apiservers",
        type=int,
        default=1,
        choices=range(1, 6),
        metavar="N",
        help="up: N kube-apiservers on one etcd, each its own port and audit log, as an HA control plane (default 1)",
    )
    p.add_argument(
        "--workdir",
        metavar="DIR",
        help="up: where the cluster keeps its files (default: a temp dir); "
        "certs: where to write the certificates (default: webhook-certs)",
    )
    p.add_argument(
        "--host",
        action="append",
        metavar="NAME",
        help="certs: an IP address or DNS name of the webhook Service for the serving certificate "
        f"(repeatable; default: {', '.join(WEBHOOK_HOSTS)})",
    )
    p.set_defaults(func=cmd_cluster)

    p = sub.add_parser(
        "import-escu",
        help="turn Splunk ESCU detection YAML into AuditDetection manifests",
        description="Write one AuditDetection manifest per ESCU detection file: the search verbatim, the "
        "macros it calls (from --macros), rba/tags -> spec.finding, description and known false positives "
        "as annotations, MITRE ATT&CK techniques and analytic stories as labels.",
    )
    p.add_argument("files", nargs="+", metavar="FILE.yml", help="ESCU detection files")
    p.add_argument("-o", "--output", metavar="DIR", help="write <name>.yaml files into DIR (default: stdout)")
    p.add_argument(
        "--macros",
        metavar="DIR",
        help="ESCU macro files (default: the macros/ directory of the checkout the "
        "first file is in: security_content/macros for security_content/detections/cloud/*.yml)",
    )
    p.set_defaults(func=cmd_import_escu)

    p = sub.add_parser(
        "lint",
        help="say whether the operator would run each detection, and what it would do that looks wrong",
        description="Validate each AuditDetection as the operator does, with the operator's settings "
        "(give it the options `auditwatch run` gets): errors are what the operator puts on Ready=False "
        "(InvalidSpec, InvalidSearch, UnsupportedSource, PathNotAllowed, NamespaceNotAllowed when the "
        "manifest names its namespace, and lint errors as LintError), "
        "warnings what it puts on LintClean=False (never-set, unknown-field, no-prefilter, unbounded-key, "
        "key-not-output; see auditwatch/lint.py). Exit 1 on errors, and on warnings too with --strict; 0 "
        "otherwise. Fits a GitOps CI step.",
    )
    p.add_argument("detections", nargs="+", metavar="DETECTION",
                   help="AuditDetection manifests (YAML/JSON), directories of them or kustomizations (what they "
                   "list is linted; documents that are no AuditDetection are passed over with a note)")  # fmt: skip
    p.add_argument("--strict", action="store_true", help="warnings fail too")
    p.add_argument("--output", "-o", choices=("text", "json"), default="text",
                   help="text: a line per problem; json: one object per file with its Ready condition")  # fmt: skip
    add_detection_namespace_option(p)
    add_webhook_option(p)
    add_geoip_option(p)
    add_source_options(p)
    p.set_defaults(func=cmd_lint)
    return parser


def add_webhook_option(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "audit webhook",
        "kube-apiserver's audit webhook backend POSTs batches here (webhook sources). Only the API server "
        "may: it needs a client certificate the --webhook-client-ca signed, or the bearer token in "
        "--webhook-token-file; without either the server stays off. `auditwatch cluster certs DIR` makes "
        "the certificates.",
    )
    g.add_argument(
        "--webhook-listen",
        default="0.0.0.0:8081",
        metavar="HOST:PORT",
        help="address of the webhook server; '' turns it off (default: 0.0.0.0:8081)",
    )
    g.add_argument(
        "--webhook-tls-cert", metavar="FILE", help="serve TLS with this certificate (PEM; reloaded on change)"
    )
    g.add_argument("--webhook-tls-key", metavar="FILE", help="the certificate's private key (PEM)")
    g.add_argument("--webhook-client-ca", metavar="FILE", help="accept client certificates this CA signed (mTLS)")
    g.add_argument(
        "--webhook-client-name",
        action="append",
        metavar="CN",
        help="accept only client certificates with this common or DNS name (repeatable)",
    )
    g.add_argument(
        "--webhook-token-file",
        metavar="FILE",
        help="accept requests with this bearer token (a file, e.g. a mounted Secret; reloaded)",
    )
    g.add_argument(
        "--webhook-spool",
        metavar="DIR",
        help="where accepted batches are kept for the detections to read (default: auditwatch-webhook in the "
        "temporary directory, the install's emptyDir /tmp)",
    )
    g.add_argument(
        "--webhook-insecure",
        action="store_true",
        help="accept batches from anyone, over plain HTTP if no certificate: tests only",
    )


def add_detection_namespace_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--detection-namespace",
        action="append",
        metavar="NS",
        help="run detections only in NS (repeatable; '*' for every namespace; default: the operator's own, "
        "$POD_NAMESPACE, else auditwatch); others get Ready=False, reason NamespaceNotAllowed",
    )


def add_source_options(p: argparse.ArgumentParser) -> None:
    from auditwatch.sources.paths import AUDIT_LOG_DIRS

    p.add_argument(
        "--sources",
        metavar="KIND,...",
        help="the kinds of source this install reads (default: file,webhook,cloudwatch): file and webhook "
        "sources are read by every replica (each its node's log, its share of batches), a cloudwatch source "
        "by one (the EKS install); a detection with another kind gets Ready=False, reason UnsupportedSource",
    )
    p.add_argument(
        "--allow-path",
        action="append",
        metavar="DIR",
        help="file sources may only read files inside DIR, symlinks resolved (repeatable; default: "
        f"{', '.join(AUDIT_LOG_DIRS)})",
    )


def add_geoip_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--geoip-db",
        default=os.environ.get("AUDITWATCH_GEOIP_DB"),
        metavar="FILE",
        help="MaxMind-format database (GeoLite2-City or compatible) for `iplocation` (default: $AUDITWATCH_GEOIP_DB)",
    )


OPTIONS = {
    "source_kinds": "sources",
    "allow_paths": "allow-path",
    "detection_namespaces": "detection-namespace",
    "webhook_client_names": "webhook-client-name",
}  # settings named unlike their options


def make_settings(args: argparse.Namespace, **values: Any) -> Settings:
    """The operator's settings from the options `run` and `lint` share (one not given keeps its default)
    and ``values``; a bad one is a UsageError naming its option."""
    from pydantic import ValidationError

    from auditwatch.settings import Settings

    names = ("listen", "tls_cert", "tls_key", "client_ca", "token_file", "insecure")
    values |= {f"webhook_{n}": getattr(args, f"webhook_{n}") for n in names}
    values |= {"geoip_db": args.geoip_db, "webhook_client_names": tuple(args.webhook_client_name or ())}
    optional = {"webhook_spool": args.webhook_spool, "allow_paths": args.allow_path,
                "detection_namespaces": args.detection_namespace,
                "source_kinds": args.sources.split(",") if args.sources else None}  # fmt: skip
    values |= {k: tuple(v) if isinstance(v, list) else v for k, v in optional.items() if v}
    try:
        return Settings(**values)
    except ValidationError as exc:
        raise UsageError("; ".join(f"--{OPTIONS.get(str(e['loc'][0]), str(e['loc'][0]).replace('_', '-'))}: {e['msg']}"
                                   for e in exc.errors(include_url=False))) from None  # fmt: skip


def cmd_scan(args: argparse.Namespace) -> int:
    from auditwatch.engine.pipeline import EngineError, OutputRow
    from auditwatch.inputs import InputError
    from auditwatch.scan import format_table, scan, stderr_progress, summary

    search, macros = search_and_macros(args.detection)
    query = parse_search(search, macros)
    collected: list[OutputRow] = []
    out = sys.stdout.buffer

    def json_line(row: OutputRow) -> bytes:
        return orjson.dumps(row) + b"\n"

    # table: rows collected as they are, to be aligned at the end; jsonl: each written as a line
    emit, encode = (collected.append, lambda row: row) if args.output == "table" else (out.write, json_line)
    try:
        result = scan(query, args.logs, emit, encode, not args.no_prefilter, stderr_progress(), geoip_db=args.geoip_db,
                      notes=sys.stderr)  # fmt: skip
    except BrokenPipeError:
        raise
    except EngineError as exc:
        print(f"auditwatch: {args.detection}: spec.search: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"auditwatch: {exc.filename or 'input'}: cannot read: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE
    except InputError as exc:
        print(f"auditwatch: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.output == "table":
        sys.stdout.write(format_table(collected))
    out.flush()
    print(summary(result), file=sys.stderr)
    return 1 if result.broken else 0


def cmd_crds(args: argparse.Namespace) -> int:
    from pathlib import Path

    from auditwatch.api.crds import crds, render, write

    directory = Path(args.directory)
    if args.check:
        stale = [
            n for n, c in crds().items() if not (directory / n).exists() or (directory / n).read_text() != render(c)
        ]
        for name in stale:
            print(
                f"auditwatch: {directory / name} differs from the models; run `auditwatch crds`",
                file=sys.stderr,
            )
        return 1 if stale else 0
    for path in write(directory):
        print(f"wrote {path}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    import logging

    import kopf

    import auditwatch.handlers  # registers the handlers

    given = {f"write_{n}": getattr(args, f"write_{n}") for n in ("qps", "burst", "concurrency")}
    given["cloudwatch_calls_per_second"] = args.cloudwatch_calls_per_second
    given["metrics_listen"] = args.metrics_listen
    given["reports"] = args.reports
    given["shard"] = args.shard
    given["shard_lease_seconds"] = args.shard_lease_seconds
    given["host_root"] = args.host_root
    settings = make_settings(args, namespaces=tuple(args.namespace or ()), liveness=args.liveness,
                             **{k: v for k, v in given.items() if v is not None})  # fmt: skip
    if settings.sharded:
        auditwatch.handlers.follow_peer_writes()
    alerts = None
    if args.alerts:
        from auditwatch.alerts import AlertConfigError, load_config

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


def cmd_demo(args: argparse.Namespace) -> int:
    from auditwatch.demo import DemoError, run_demo
    from auditwatch.devcluster.binaries import BuildError
    from auditwatch.devcluster.cluster import ClusterError

    try:
        return run_demo(keep=args.keep, workdir=args.workdir)
    except (DemoError, BuildError, ClusterError) as exc:
        print(f"auditwatch demo: {exc}", file=sys.stderr)
        return 1


def cmd_cluster(args: argparse.Namespace) -> int:
    import time

    from auditwatch.devcluster import DevCluster, ensure_binaries
    from auditwatch.devcluster.binaries import BuildError
    from auditwatch.devcluster.cluster import ClusterError

    try:
        if args.action == "build":
            for name, path in ensure_binaries().items():
                print(f"{name}: {path}")
            return 0
        if args.action == "certs":
            return cmd_certs(args.workdir or "webhook-certs", args.host or list(WEBHOOK_HOSTS))
        with DevCluster(workdir=args.workdir, apiservers=args.apiservers) as cluster:
            print(f"export KUBECONFIG={cluster.admin_kubeconfig}")
            logs = ", ".join(str(d / "audit.log") for d in cluster.audit_dirs)
            print(f"kubectl: {cluster.bins['kubectl']}; audit log(s): {logs}; Ctrl-C stops it", flush=True)
            for i, node in enumerate(cluster.nodes):
                print(f"node cp-{i}: {cluster.servers[i]}, root {node} (auditwatch run --shard cp-{i} "
                      f"--host-root {node})")  # fmt: skip
            try:
                while all(p.poll() is None for p in cluster.procs.values()):
                    time.sleep(1)
            except KeyboardInterrupt:
                return 0
            print("auditwatch: a control-plane process exited; see its log under", cluster.workdir / "logs")
            return 1
    except (BuildError, ClusterError) as exc:
        print(f"auditwatch cluster: {exc}", file=sys.stderr)
        return 1


def cmd_certs(directory: str, hosts: list[str]) -> int:
    from pathlib import Path

    from auditwatch.devcluster.certs import make_webhook_certs

    certs = make_webhook_certs(Path(directory), hosts)
    print(f"wrote {certs.ca}, {certs.server_cert}, {certs.server_key}, {certs.client_cert}, {certs.client_key}")
    print("the operator's Secrets (manifests/base/deployment.yaml mounts them):")
    print(f"  kubectl -n auditwatch create secret tls auditwatch-webhook-tls --cert={certs.server_cert} "
          f"--key={certs.server_key}")  # fmt: skip
    print(f"  kubectl -n auditwatch create secret generic auditwatch-webhook-client-ca --from-file=ca.crt={certs.ca}")
    print("kube-apiserver's side: client.crt, client.key and ca.crt, named by kind-audit-webhook.kubeconfig")
    return 0


def cmd_import_escu(args: argparse.Namespace) -> int:
    from pathlib import Path

    from auditwatch.escu import ImportError_, import_detection, load_macros, render

    files = [Path(f) for f in args.files]
    # A checkout of security_content has detections/cloud/*.yml beside macros/ at its top.
    near = [parent / "macros" for parent in files[0].resolve().parents[1:3]]
    macro_dir = Path(args.macros) if args.macros else next((d for d in near if d.is_dir()), near[0])
    macros = load_macros(macro_dir) if macro_dir.is_dir() else {}
    out_dir = Path(args.output) if args.output else None
    if out_dir:
        out_dir.mkdir(parents=True, exist_ok=True)
    try:
        for path in files:
            obj = import_detection(path, macros)
            text = render(obj, path.name)
            if out_dir is None:
                sys.stdout.write("---\n" + text)
            else:
                target = out_dir / f"{obj['metadata']['name']}.yaml"
                target.write_text(text)
                print(f"wrote {target}", file=sys.stderr)
    except (ImportError_, OSError) as exc:
        print(f"auditwatch import-escu: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return 0


def cmd_lint(args: argparse.Namespace) -> int:
    from auditwatch.manifest import NoDetection, manifest_files, read_detection
    from auditwatch.validate import validate

    settings = make_settings(args)
    failed = False
    for path, passed_over in manifest_files(args.detections):
        try:
            if passed_over:
                raise NoDetection(f"{path}: {passed_over}")
            manifest = read_detection(path)
        except NoDetection as exc:
            print(orjson.dumps({"file": path, "skipped": str(exc)}).decode() if args.output == "json" else
                  f"note: {exc}")  # fmt: skip
            continue
        except ManifestError as exc:
            print(json_verdict(path, False, "InvalidManifest", str(exc), []) if args.output == "json" else
                  f"{path}: error[InvalidManifest]: {exc}")  # fmt: skip
            failed = True
            continue
        spec, meta = manifest.get("spec"), manifest.get("metadata")
        namespace = meta.get("namespace") if isinstance(meta, dict) else None
        verdict = validate(spec if isinstance(spec, dict) else {}, settings, namespace)
        failed |= not verdict.ready or (args.strict and bool(verdict.diagnostics))
        if args.output == "json":
            print(json_verdict(path, verdict.ready, verdict.reason, verdict.message, verdict.diagnostics))
            continue
        for line in [*map(str, verdict.problems), *map(str, verdict.diagnostics)] or ["ok"]:
            print(f"{path}: {line}")
    return 1 if failed else 0


def json_verdict(path: str, ready: bool, reason: str, message: str, diagnostics: Sequence[object]) -> str:
    """One line of `lint -o json`: the Ready condition the operator would set, and lint's diagnostics."""
    return orjson.dumps({
        "file": path, "ready": ready, "reason": str(reason), "message": message,
        "diagnostics": [str(d) for d in diagnostics],
    }).decode()  # fmt: skip
