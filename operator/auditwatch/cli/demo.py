"""``auditwatch demo``: real findings from real anonymous requests to a local control plane."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def register(sub: Any) -> None:
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
    p.set_defaults(func=demo_command)


def demo_command(args: argparse.Namespace) -> int:
    from auditwatch.devcluster.binaries import BuildError
    from auditwatch.devcluster.cluster import ClusterError
    from auditwatch.devcluster.demo import DemoError, run_demo

    try:
        return run_demo(keep=args.keep, workdir=args.workdir)
    except (DemoError, BuildError, ClusterError) as exc:
        print(f"auditwatch demo: {exc}", file=sys.stderr)
        return 1
