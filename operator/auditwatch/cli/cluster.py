"""``auditwatch cluster``: the local control plane (build its binaries, run it, make webhook certificates)
and the operator's image."""

from __future__ import annotations

import argparse
import sys
from typing import Any

# The webhook Service as kube-apiserver reaches it (manifests/base/deployment.yaml: a fixed ClusterIP).
WEBHOOK_HOSTS = (
    "10.96.200.200",
    "auditwatch-webhook.auditwatch.svc",
    "auditwatch-webhook.auditwatch.svc.cluster.local",
)


def register(sub: Any) -> None:
    p = sub.add_parser(
        "cluster",
        help="the local control plane: build its binaries, or run it; build the operator's image",
        description="build: build kube-apiserver, kube-controller-manager and kubectl from the Go module "
        "proxy into the cache (~/.cache/auditwatch, or $AUDITWATCH_CACHE) unless they are there. "
        "up: start etcd, kube-apiserver (RBAC, anonymous auth, audit log) and kube-controller-manager on "
        "loopback and keep them running until Ctrl-C. "
        "certs: write the audit webhook's CA, serving and client certificates (for kind and the install). "
        "image: build the Dockerfile without Docker (buildah, on a Debian base made by mmdebstrap; Debian's "
        "podman and runc run it) as localhost/auditwatch:VERSION.",
    )
    p.add_argument("action", choices=("build", "up", "certs", "image"))
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
    p.add_argument(
        "--output",
        metavar="FILE",
        help="image: also write the image to FILE, an OCI archive (podman load -i FILE; kind load image-archive)",
    )
    p.set_defaults(func=cluster_command)


def cluster_command(args: argparse.Namespace) -> int:
    from auditwatch.devcluster import ensure_binaries
    from auditwatch.devcluster.binaries import BuildError
    from auditwatch.devcluster.cluster import ClusterError

    try:
        if args.action == "build":
            for name, path in ensure_binaries().items():
                print(f"{name}: {path}")
            return 0
        if args.action == "image":
            from pathlib import Path

            from auditwatch.devcluster.image import build_image

            print(build_image(Path.cwd(), Path(args.output) if args.output else None))
            return 0
        if args.action == "certs":
            return certs(args.workdir or "webhook-certs", args.host or list(WEBHOOK_HOSTS))
        return up(args.workdir, args.apiservers)
    except (BuildError, ClusterError) as exc:
        print(f"auditwatch cluster: {exc}", file=sys.stderr)
        return 1


def up(workdir: str | None, apiservers: int) -> int:
    """Run the control plane until Ctrl-C (0) or until one of its processes exits (1)."""
    import time

    from auditwatch.devcluster import DevCluster

    with DevCluster(workdir=workdir, apiservers=apiservers) as cluster:
        print(f"export KUBECONFIG={cluster.admin_kubeconfig}")
        logs = ", ".join(str(d / "audit.log") for d in cluster.audit_dirs)
        print(f"kubectl: {cluster.bins['kubectl']}; audit log(s): {logs}; Ctrl-C stops it", flush=True)
        for i, node in enumerate(cluster.nodes):
            print(f"node cp-{i}: {cluster.servers[i]}, root {node} (auditwatch run --shard cp-{i} --host-root {node})")
        try:
            while all(p.poll() is None for p in cluster.procs.values()):
                time.sleep(1)
        except KeyboardInterrupt:
            return 0
        print("auditwatch: a control-plane process exited; see its log under", cluster.workdir / "logs")
        return 1


def certs(directory: str, hosts: list[str]) -> int:
    from pathlib import Path

    from auditwatch.devcluster.certs import make_webhook_certs

    made = make_webhook_certs(Path(directory), hosts)
    print(f"wrote {made.ca}, {made.server_cert}, {made.server_key}, {made.client_cert}, {made.client_key}")
    print("the operator's Secrets (manifests/base/deployment.yaml mounts them):")
    print(
        f"  kubectl -n auditwatch create secret tls auditwatch-webhook-tls --cert={made.server_cert} "
        f"--key={made.server_key}"
    )
    print(f"  kubectl -n auditwatch create secret generic auditwatch-webhook-client-ca --from-file=ca.crt={made.ca}")
    print("kube-apiserver's side: client.crt, client.key and ca.crt, named by kind-audit-webhook.kubeconfig")
    return 0
