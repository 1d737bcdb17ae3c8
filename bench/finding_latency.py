"""Benchmark: how long from an anonymous request to its count in a DetectionFinding, end to end.

Starts the local control plane, runs the operator under its RBAC, applies a detection on the audit log,
then makes one anonymous request at a time and polls the finding (every 20 ms) until its count goes up.
Prints p50/p95/max latency. Never asserts timings.

    python bench/finding_latency.py --requests 40
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import ssl
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from auditwatch.devcluster import DevCluster

SEARCH = (
    'user.username="system:anonymous" userAgent="latency-bench" | stats count BY user.username sourceIPs{} '
    "| rename sourceIPs{} as src_ip, user.username as user"
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=40)
    args = ap.parse_args()
    root = Path(__file__).resolve().parents[1]
    with DevCluster() as c:
        c.kubectl("apply", "--server-side", "-k", str(root / "crds"))
        c.kubectl("wait", "--for=condition=Established", "crd/detectionfindings.auditwatch.io")
        for name in ("namespace.yaml", "rbac.yaml"):
            c.kubectl("apply", "-f", str(root / "manifests" / "base" / name))
        body = {
            "apiVersion": "auditwatch.io/v1alpha1", "kind": "AuditDetection",
            "metadata": {"name": "latency", "namespace": "auditwatch"},
            "spec": {"search": SEARCH, "sources": [{"name": "log", "file": {"path": str(c.audit_log)}}],
                     "finding": {"groupBy": ["user"]}},
        }  # fmt: skip
        c.kubectl("apply", "-f", "-", input=json.dumps(body))
        env = {**os.environ, "KUBECONFIG": str(c.operator_kubeconfig)}
        op = subprocess.Popen([sys.executable, "-m", "auditwatch", "run", "--liveness", "",
                               "--webhook-listen=", "--allow-path", str(c.audit_dir)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        ctx = ssl.create_default_context(cafile=str(c.ca_bundle))
        admin = {"Authorization": f"Bearer {c.admin_token}"}
        url = (
            f"{c.server}/apis/auditwatch.io/v1alpha1/namespaces/auditwatch/detectionfindings"
            "?labelSelector=auditwatch.io/detection%3Dlatency"
        )

        def count() -> int:
            with urllib.request.urlopen(urllib.request.Request(url, headers=admin), context=ctx) as resp:
                return sum(i.get("status", {}).get("count", 0) for i in json.load(resp)["items"])

        def anonymous() -> None:
            request = urllib.request.Request(f"{c.server}/version", headers={"User-Agent": "latency-bench"})
            with contextlib.suppress(urllib.error.HTTPError):
                urllib.request.urlopen(request, context=ctx).close()

        try:
            time.sleep(3)
            latencies = []
            for _ in range(args.requests):
                before = count()
                started = time.perf_counter()
                anonymous()  # two audit events: RequestReceived and ResponseComplete
                while count() < before + 2:
                    time.sleep(0.02)
                latencies.append(time.perf_counter() - started)
                time.sleep(0.3)
        finally:
            op.terminate()
            op.wait()
    q = statistics.quantiles(latencies, n=20)
    p50, p95, worst = statistics.median(latencies) * 1000, q[18] * 1000, max(latencies) * 1000
    print(f"{len(latencies)} anonymous requests -> finding count updated: p50 {p50:.0f} ms, p95 {p95:.0f} ms, "
          f"max {worst:.0f} ms")  # fmt: skip


if __name__ == "__main__":
    main()
