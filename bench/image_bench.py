"""Benchmark: the operator's image (`make image`). Prints figures.

Builds the image (buildah; layers cached from an earlier build), then prints its size unpacked (what a
node stores) and packed (the OCI archive's gzip layers: what a node pulls), and what it holds: the venv,
the Python standard library, whether the C extension is there and a compiler is not. Then on the local
control plane (the kustomize install's RBAC, the seed detection) it runs the image under podman as the
DaemonSet's pod runs (uid 0, no capabilities, read-only root, the audit directory read-only, the host
network, the ServiceAccount's token), `--runs` times, and prints start to Ready (podman run until the
detection's Ready condition is True, written by this container), start to the first finding for an
anonymous request, and the RSS of the operator and its evaluation worker after `--rest` seconds at rest.

    python bench/image_bench.py
    python bench/image_bench.py --runs 5 --rest 60
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import time
from datetime import datetime
from pathlib import Path

from auditwatch.devcluster import DevCluster
from auditwatch.devcluster.image import LIMITS, PODMAN, build_image
from operator_bench import platform_name

ROOT = Path(__file__).resolve().parents[1]
SEED = "kubernetes-aws-detect-suspicious-kubectl-calls"
AUDIT = "/var/log/kubernetes/audit"
SA = "/var/run/secrets/kubernetes.io/serviceaccount"


def sizes(tag: str) -> tuple[float, float]:
    """(unpacked MB, packed MB) of ``tag``."""
    unpacked = int(subprocess.run(["podman", "image", "inspect", "--format", "{{.Size}}", tag],
                                  capture_output=True, text=True, check=True).stdout)  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "image.tar"
        subprocess.run(["buildah", "push", "--quiet", tag, f"oci-archive:{archive}"], check=True, capture_output=True)
        packed = archive.stat().st_size
    return unpacked / 1e6, packed / 1e6


def inside(tag: str, script: str) -> str:
    done = subprocess.run([*PODMAN, "run", "--rm", *LIMITS, "--entrypoint", "/bin/sh", tag, "-c", script],
                          capture_output=True, text=True, check=True)  # fmt: skip
    return done.stdout.strip()


def ready_since(cluster: DevCluster, since: float) -> bool:
    """The seed detection's Ready condition is True, set after ``since`` (this container's write)."""
    out = cluster.kubectl("get", "auditdetection", SEED, "-n", "auditwatch", "-o", "json", check=False).stdout
    conditions = json.loads(out or "{}").get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True"
               and datetime.fromisoformat(c["lastTransitionTime"].replace("Z", "+00:00")).timestamp() >= since - 1
               for c in conditions)  # fmt: skip


def rss_mb(name: str) -> list[float]:
    """The RSS of the container's processes (the operator, its worker), in MB."""
    pid = subprocess.run([*PODMAN, "inspect", "--format", "{{.State.Pid}}", name], capture_output=True, text=True,
                         check=True).stdout.strip()  # fmt: skip
    pids = [pid, *Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    return [int(next(ln for ln in Path(f"/proc/{p}/status").read_text().splitlines()
                     if ln.startswith("VmRSS")).split()[1]) / 1024 for p in pids]  # fmt: skip


def wait(check, timeout: float = 120) -> float:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit("timed out")
        time.sleep(0.05)
    return time.monotonic()


def run_once(cluster: DevCluster, tag: str, workdir: Path, rest: float) -> tuple[float, float, list[float]]:
    cluster.kubectl("apply", "-f", str(ROOT / "manifests/detections" / f"{SEED}.yaml"))
    sa = workdir / "serviceaccount"
    sa.mkdir(exist_ok=True)
    (sa / "token").write_text(cluster.kubectl("create", "token", "auditwatch", "-n", "auditwatch").stdout.strip())
    (sa / "ca.crt").write_bytes(cluster.ca_bundle.read_bytes())
    (sa / "namespace").write_text("auditwatch")
    (workdir / "tmp").mkdir(exist_ok=True)
    name = f"auditwatch-bench-{time.monotonic_ns()}"
    port = cluster.server.rsplit(":", 1)[1]
    wall, start = time.time(), time.monotonic()
    subprocess.run([*PODMAN, "run", "-d", "--name", name, "--network=host", *LIMITS, "--user=0:0", "--read-only",
                    "--read-only-tmpfs=false", "--cap-drop=all", "--security-opt=no-new-privileges",
                    "-e", "KUBERNETES_SERVICE_HOST=127.0.0.1", "-e", f"KUBERNETES_SERVICE_PORT={port}",
                    "-e", "POD_NAMESPACE=auditwatch", "-v", f"{cluster.audit_dir}:{AUDIT}:ro",
                    "-v", f"{workdir / 'tmp'}:/tmp", "-v", f"{sa}:{SA}:ro", tag, "run", "--sources=file",
                    "--webhook-listen=", "--liveness="], check=True, capture_output=True)  # fmt: skip
    try:
        ready = wait(lambda: ready_since(cluster, wall)) - start
        cluster.kubectl("get", "pods", kubeconfig=cluster.anonymous_kubeconfig, check=False)
        found = wait(lambda: cluster.kubectl("get", "detectionfindings", "-n", "auditwatch", "-o", "name").stdout)
        time.sleep(rest)
        return ready, found - start, rss_mb(name)
    finally:  # deleted while the operator runs (it removes its finalizer), its findings with it
        cluster.kubectl("delete", "auditdetection", SEED, "-n", "auditwatch", "--timeout=60s", check=False)
        subprocess.run([*PODMAN, "rm", "--force", name], capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="containers started, one after another (default 3)")
    parser.add_argument("--rest", type=float, default=30, help="seconds at rest before RSS is read (default 30)")
    args = parser.parse_args()
    began = time.monotonic()
    tag = build_image(ROOT)
    print(f"{platform_name()}; {tag} built in {time.monotonic() - began:.0f} s (cached layers where unchanged)")
    unpacked, packed = sizes(tag)
    print(f"image: {unpacked:.0f} MB unpacked, {packed:.0f} MB packed (the OCI archive: what a node pulls)")
    engine = "/opt/auditwatch/lib/python3.11/site-packages/auditwatch/engine"
    script = f"du -sh /opt/auditwatch /usr/lib/python3.11 | tr '\\t\\n' ' '; ls {engine} | grep _candidates.*so"
    print("inside:", inside(tag, f"{script}; command -v gcc cc || echo no compiler"))
    with tempfile.TemporaryDirectory() as tmp, DevCluster(workdir=Path(tmp) / "cluster") as cluster:
        cluster.kubectl("apply", "--server-side", "-k", str(ROOT / "crds"))
        cluster.kubectl("wait", "--for=condition=Established", "crd/auditdetections.auditwatch.io")
        cluster.kubectl("apply", "-k", str(ROOT / "manifests"))
        runs = [run_once(cluster, tag, Path(tmp), args.rest) for _ in range(args.runs)]
    for i, (ready, found, rss) in enumerate(runs, 1):
        print(f"run {i}: start to Ready {ready:.2f} s, to the first finding {found:.2f} s, "
              f"RSS at rest {' + '.join(f'{r:.0f}' for r in rss)} MB (operator + worker)")  # fmt: skip
    print(f"median start to Ready {statistics.median(r for r, _, _ in runs):.2f} s")


if __name__ == "__main__":
    main()
