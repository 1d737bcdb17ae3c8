"""The ``auditwatch`` command."""

from __future__ import annotations

import argparse
import atexit
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

import orjson

from auditwatch import __version__
from auditwatch.manifest import ManifestError, search_and_macros
from auditwatch.spl import SPLError, compile_search

EXIT_USAGE = 2


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
    except (ManifestError, SPLError) as exc:
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
        description="Run an AuditDetection's SPL search over audit logs (JSON lines, EventList batches, "
        ".gz, or - for stdin). Rows go to stdout; a summary (lines, events, malformed lines, "
        "rows, speed) goes to stderr. Exit 0 on success, 2 for an invalid detection or unreadable file.",
    )
    p.add_argument("--detection", "-d", required=True, metavar="FILE", help="AuditDetection manifest (YAML/JSON)")
    p.add_argument("--output", "-o", choices=("jsonl", "table"), default="jsonl", help="row format (jsonl)")
    p.add_argument("--no-prefilter", action="store_true", help="parse every line (slower; the rows are the same)")
    add_geoip_option(p)
    p.add_argument("logs", nargs="+", metavar="LOG", help="audit log files; - reads stdin")
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
    p.add_argument(
        "--liveness",
        default="http://0.0.0.0:8080/healthz",
        metavar="URL",
        help="kopf's liveness endpoint (default: http://0.0.0.0:8080/healthz; '' turns it off)",
    )
    p.add_argument(
        "--webhook-listen",
        default="0.0.0.0:8081",
        metavar="HOST:PORT",
        help="HTTP address for kube-apiserver's audit webhook backend (webhook sources); '' turns it off",
    )
    add_geoip_option(p)
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
        "loopback and keep them running until Ctrl-C.",
    )
    p.add_argument("action", choices=("build", "up"))
    p.add_argument("--workdir", metavar="DIR", help="up: where the cluster keeps its files (default: a temp dir)")
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
        "--macros", metavar="DIR", help="ESCU macro files (default: macros/ beside the first file's directory)"
    )
    p.set_defaults(func=cmd_import_escu)

    p = sub.add_parser(
        "lint",
        help="check detections for mistakes that compile but do not do what they say",
        description="Compile each AuditDetection and report errors and warnings (never-set, unknown-field, "
        "no-prefilter, unbounded-key, key-not-output; see auditwatch/lint.py). Exit 1 on errors, and on "
        "warnings too with --strict; 0 otherwise. Fits a GitOps CI step.",
    )
    p.add_argument("detections", nargs="+", metavar="DETECTION", help="AuditDetection manifests (YAML/JSON)")
    p.add_argument("--strict", action="store_true", help="warnings fail too")
    p.set_defaults(func=cmd_lint)
    return parser


def add_geoip_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--geoip-db",
        default=os.environ.get("AUDITWATCH_GEOIP_DB"),
        metavar="FILE",
        help="MaxMind-format database (GeoLite2-City or compatible) for `iplocation` (default: $AUDITWATCH_GEOIP_DB)",
    )


def cmd_scan(args: argparse.Namespace) -> int:
    from auditwatch.engine.pipeline import OutputRow
    from auditwatch.scan import format_table, scan, stderr_progress, summary

    search, macros = search_and_macros(args.detection)
    plan = compile_search(search, macros, args.geoip_db)
    collected: list[OutputRow] = []
    out = sys.stdout.buffer

    def json_line(row: OutputRow) -> bytes:
        return orjson.dumps(row) + b"\n"

    # table: rows collected as they are, to be aligned at the end; jsonl: each written as a line
    emit, encode = (collected.append, lambda row: row) if args.output == "table" else (out.write, json_line)
    try:
        result = scan(plan, args.logs, emit, encode, not args.no_prefilter, stderr_progress())
    except BrokenPipeError:
        raise
    except OSError as exc:
        print(f"auditwatch: {exc.filename or 'input'}: cannot read: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE
    except EOFError:
        print("auditwatch: a compressed input ends early (truncated .gz)", file=sys.stderr)
        return EXIT_USAGE
    if args.output == "table":
        sys.stdout.write(format_table(collected))
    out.flush()
    print(summary(result), file=sys.stderr)
    return 0


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

    import auditwatch.handlers  # noqa: F401 - registers the handlers

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    kopf.run(
        clusterwide=not args.namespace,
        namespaces=args.namespace or (),
        liveness_endpoint=args.liveness or None,
        standalone=True,
        memo=kopf.Memo(webhook_listen=args.webhook_listen, geoip_db=args.geoip_db),
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
        with DevCluster(workdir=args.workdir) as cluster:
            print(f"export KUBECONFIG={cluster.admin_kubeconfig}")
            print(f"kubectl: {cluster.bins['kubectl']}; audit log: {cluster.audit_log}; Ctrl-C stops it", flush=True)
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


def cmd_import_escu(args: argparse.Namespace) -> int:
    from pathlib import Path

    from auditwatch.escu import ImportError_, import_detection, load_macros, render

    files = [Path(f) for f in args.files]
    macro_dir = Path(args.macros) if args.macros else files[0].resolve().parent.parent / "macros"
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
    from auditwatch.api.models import load_detection
    from auditwatch.lint import lint

    failed = False
    for path in args.detections:
        try:
            spec = load_detection(path).spec  # the whole object, as the CRD schema will check it
        except ManifestError as exc:
            print(f"{path}: error[manifest]: {exc}")
            failed = True
            continue
        try:
            plan = compile_search(spec.search, spec.macros, geoip_db="(lint: not opened)")
        except SPLError as exc:
            print(f"{path}: error[compile]: {exc}")
            failed = True
            continue
        problems = lint(plan, spec.finding.groupBy)
        for problem in problems:
            print(f"{path}: {problem}")
        failed |= any(p.level == "error" or args.strict for p in problems)
        if not problems:
            print(f"{path}: ok")
    return 1 if failed else 0
