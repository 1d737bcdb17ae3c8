"""Benchmark: what a finding write costs the control plane, at several write budgets. Prints figures.

Starts the local control plane (one kube-apiserver, one etcd, the install's audit policy), creates
``--findings`` findings as the operator does (with their status, one write each), then per budget
PATCHes their counts round robin through the operator's own write path (``kube.client.Kube`` and its
``WriteBudget``, under the operator's credentials) for ``--seconds``, while ``--watchers`` watches of the
findings stand in for the replicas that each receive every write. Per budget it prints: writes/s
achieved, write latency p50/p99, answers other than 200 (429s from API Priority and Fairness), the CPU
of kube-apiserver and etcd (percent of one core, above the idle baseline measured just before), etcd's database growth
per 1,000 writes, and the bytes every watcher received per second.

    python bench/write_cost_bench.py                        # budgets 20, 50, 100, 200 writes/s
    python bench/write_cost_bench.py --qps 50 --seconds 60
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import ssl
import statistics
import threading
import time
import urllib.request
from pathlib import Path

from auditwatch.api.models import GROUP, VERSION
from auditwatch.devcluster import DevCluster
from auditwatch.kube.budget import WriteBudget
from auditwatch.kube.client import ApiException, Kube
from operator_bench import cpu_seconds, platform_name

ROOT = Path(__file__).resolve().parents[1]
NAMESPACE = "auditwatch"


def finding(i: int, count: int, detection: str = "bench", shards: tuple[str, ...] = ("default",)) -> dict:
    """A finding as the seed detection writes one: its key, values and latest rows (about 1.5 KB), and each
    shard's part."""
    ip = f"198.51.{i // 256}.{i % 256}"
    row = {"user": "system:anonymous", "src_ip": ip, "verb": "get", "requestURI": f"/api/v1/pods?i={count}",
           "userAgent": "kubectl/v1.36.0", "responseStatus.code": "403"}  # fmt: skip
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "DetectionFinding",
        "metadata": {
            "name": f"{detection}-{i:05d}",
            "namespace": NAMESPACE,
            "labels": {f"{GROUP}/detection": detection},
        },
        "spec": {
            "detection": detection,
            "key": {"user": "system:anonymous", "src_ip": ip},
            "message": f"Anonymous requests from {ip}",
            "severity": "high",
            "riskScore": 49,
        },
        "status": status(row, count, shards),
    }


def status(row: dict, count: int, shards: tuple[str, ...] = ("default",)) -> dict:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return {
        "count": count,
        "firstSeen": "2026-01-01T00:00:00Z",
        "lastSeen": stamp,
        "writtenAt": stamp,
        "values": {k: [v] for k, v in row.items()},
        "latest": [row] * 5,
        "shards": {s: {"count": count, "lastSeen": stamp, "checkpoints": {"audit": count * 4000}} for s in shards},
    }


class Watcher(threading.Thread):
    """One watch of the findings, as each replica holds: counts the events and bytes it receives."""

    def __init__(self, c: DevCluster) -> None:
        super().__init__(daemon=True)
        self.c, self.bytes, self.events = c, 0, 0
        self.ctx = ssl.create_default_context(cafile=str(c.ca_bundle))

    def run(self) -> None:
        url = f"{self.c.server}/apis/{GROUP}/{VERSION}/detectionfindings?watch=true&timeoutSeconds=3600"
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {self.c.admin_token}"})
        with urllib.request.urlopen(request, context=self.ctx) as resp:
            for line in resp:
                self.bytes += len(line)
                self.events += 1


def etcd_db_bytes(c: DevCluster) -> int:
    return (c.workdir / "etcd" / "member" / "snap" / "db").stat().st_size


def usage(c: DevCluster) -> tuple[float, float, float]:
    """(kube-apiserver CPU seconds, etcd CPU seconds, now)."""
    return cpu_seconds(c.procs["kube-apiserver"].pid), cpu_seconds(c.procs["etcd"].pid), time.monotonic()


def percent(before: tuple[float, float, float], after: tuple[float, float, float]) -> tuple[float, float]:
    wall = after[2] - before[2]
    return 100 * (after[0] - before[0]) / wall, 100 * (after[1] - before[1]) / wall


async def create_all(kube: Kube, n: int, detection: str = "bench", shards: tuple[str, ...] = ("default",)) -> None:
    async def one(i: int) -> None:
        try:
            await kube.create_finding(NAMESPACE, lambda: finding(i, 1, detection, shards))
        except ApiException as exc:
            if exc.status != 409:
                raise

    await asyncio.gather(*(one(i) for i in range(n)))


async def patch_for(kube: Kube, n: int, seconds: float) -> tuple[int, list[float], dict[str, int]]:
    """PATCH counts round robin for ``seconds`` through the budget: (writes, latencies, failures)."""
    latencies: list[float] = []
    failures: dict[str, int] = {}
    end = time.monotonic() + seconds
    counter = iter(range(10**9))

    async def worker() -> None:
        while time.monotonic() < end:
            i = next(counter)
            row = finding(i % n, 0)["status"]["latest"][0]
            sent: list[float] = []

            def patch(i: int = i, row: dict = row, sent: list[float] = sent) -> dict:
                sent.append(time.monotonic())  # made when the budget lets the write go: the call starts
                return {"status": status(row, 2 + i // n)}

            try:
                await kube.patch_finding(NAMESPACE, f"bench-{i % n:05d}", patch)
                latencies.append(time.monotonic() - sent[0])
            except ApiException as exc:
                failures[str(exc.status)] = failures.get(str(exc.status), 0) + 1

    # Enough writers that the budget, not the writers, sets the pace.
    await asyncio.gather(*(worker() for _ in range(kube.budget.concurrency * 4)))
    return len(latencies), latencies, failures


def run_budget(c: DevCluster, qps: float, n: int, seconds: float, watchers: list[Watcher]) -> None:
    kube = Kube(WriteBudget(qps=qps, burst=int(qps)), post=lambda *_: None)
    time.sleep(5)  # the previous step's writes settle (watch deliveries, audit log)
    idle0 = usage(c)
    time.sleep(10)
    idle = percent(idle0, usage(c))
    before, db0, watched0 = usage(c), etcd_db_bytes(c), [w.bytes for w in watchers]
    writes, latencies, failures = asyncio.run(patch_for(kube, n, seconds))
    after, db1 = usage(c), etcd_db_bytes(c)
    wall = after[2] - before[2]
    api_cpu, etcd_cpu = percent(before, after)
    watch_kb = statistics.mean((w.bytes - b) / wall / 1024 for w, b in zip(watchers, watched0, strict=True))
    q = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
    print(
        f"| {qps:.0f} | {writes / wall:.1f} | {1000 * q[49]:.1f} / {1000 * q[98]:.1f} ms | "
        f"{json.dumps(failures) if failures else 'none'} | {api_cpu - idle[0]:.0f}% (idle {idle[0]:.0f}%) | "
        f"{etcd_cpu - idle[1]:.0f}% (idle {idle[1]:.0f}%) | "
        f"{(db1 - db0) / max(writes, 1) * 1000 / 2**20:.2f} MB | {watch_kb:.0f} KB/s |",
        flush=True,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--qps", type=float, action="append", help="a write budget to measure (repeatable)")
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--findings", type=int, default=1000)
    ap.add_argument("--watchers", type=int, default=3, help="watches of the findings (replicas)")
    args = ap.parse_args()
    with DevCluster() as c:
        c.kubectl("apply", "--server-side", "-k", str(ROOT / "crds"))
        c.kubectl("wait", "--for=condition=Established", "crd/detectionfindings.auditwatch.io")
        for name in ("namespace.yaml", "rbac.yaml"):
            c.kubectl("apply", "-f", str(ROOT / "manifests" / "base" / name))
        os.environ["KUBECONFIG"] = str(c.operator_kubeconfig)
        from kubernetes import config

        config.load_kube_config(str(c.operator_kubeconfig))
        asyncio.run(create_all(Kube(WriteBudget(qps=500, burst=500), post=lambda *_: None), args.findings))
        watchers = [Watcher(c) for _ in range(args.watchers)]
        for w in watchers:
            w.start()
        print(f"machine: {os.cpu_count()} cores, {platform_name()}; {args.findings} findings, "
              f"{args.watchers} watchers, {args.seconds:.0f} s per budget")  # fmt: skip
        print("| budget (writes/s) | achieved | latency p50 / p99 | refused | kube-apiserver CPU | etcd CPU "
              "| etcd growth per 1,000 writes | per watcher |")  # fmt: skip
        print("|---|---|---|---|---|---|---|---|")
        for qps in args.qps or [20, 50, 100, 200]:
            run_budget(c, qps, args.findings, args.seconds, watchers)


if __name__ == "__main__":
    main()
