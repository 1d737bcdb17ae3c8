"""Benchmark: the operator's memory with many findings, three sharded replicas watching them. Prints figures.

Starts the local control plane, applies the seed detection (``maxFindings: 10000``, reading an empty
file), creates ``--findings`` findings of it as the operator writes them (each with three shards'
parts, values and latest rows: about 2.5 KB), then starts ``--replicas`` replicas (``auditwatch run
--shard cp-N``, as the DaemonSet runs them: each adopts every finding at start and watches the findings
from then on: kube/watch.py). Prints how long the replicas took to adopt them (each says so in its part of the
detection's status) and each replica's RSS then, against the same replicas with no findings.

    python bench/findings_memory.py                     # 10,000 findings, 3 replicas
    python bench/findings_memory.py --findings 2000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from auditwatch.devcluster import DevCluster
from auditwatch.kube.budget import WriteBudget
from auditwatch.kube.client import Kube
from operator_bench import SEED, Api, cpu_seconds, platform_name
from write_cost_bench import create_all

NAMESPACE = "auditwatch"
DETECTION = "kubernetes-aws-detect-suspicious-kubectl-calls"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def replicas(c: DevCluster, n: int, audit_dir: Path) -> list[subprocess.Popen[bytes]]:
    """``n`` sharded replicas (each watches the findings), or with ``n`` 0 one replica without a shard."""
    env = {**os.environ, "KUBECONFIG": str(c.operator_kubeconfig)}
    run = [sys.executable, "-m", "auditwatch", "run", "--liveness", "", "--webhook-listen=", "--allow-path"]
    shards = [["--shard", f"cp-{i}"] for i in range(n)] or [[]]
    quiet = subprocess.DEVNULL
    return [subprocess.Popen([*run, str(audit_dir), *s], env=env, stdout=quiet, stderr=quiet) for s in shards]


def measure(
    c: DevCluster, api: Api, n: int, audit_dir: Path, findings: int, settle: float, timeout: float
) -> list[float]:
    """Each replica's RSS once every one says (in its part of the status) it adopted ``findings``, or at the
    timeout (then what each said)."""
    ops, started = replicas(c, n, audit_dir), time.monotonic()
    try:
        names = [f"cp-{i}" for i in range(n)] or ["default"]
        while time.monotonic() - started < timeout:
            time.sleep(5)  # a status of this run's replicas, not the last run's
            shards = api.detection(DETECTION).get("status", {}).get("shards", {})
            adopted = [shards.get(s, {}).get("counters", {}).get("findings", -1) for s in names]
            if adopted == [findings] * len(names):
                print(f"  every replica adopted {findings:,} findings {time.monotonic() - started:.0f} s after start")
                time.sleep(settle)
                break
        else:
            cpu = [f"{cpu_seconds(op.pid) / timeout * 100:.0f}%" for op in ops]
            print(f"  not adopted within {timeout:.0f} s (the status says {adopted}); CPU {', '.join(cpu)}")
        return [rss_mb(op.pid) for op in ops]
    finally:
        for op in ops:
            op.terminate()
        for op in ops:
            op.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--findings", type=int, default=10_000)
    ap.add_argument("--replicas", type=int, default=3, help="0: one replica without a shard (no findings watch)")
    ap.add_argument("--settle", type=float, default=10, help="seconds after the adoption before measuring")
    ap.add_argument("--timeout", type=float, default=600, help="seconds to wait for the adoption")
    args = ap.parse_args()
    root = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as tmp, DevCluster() as c:
        c.kubectl("apply", "--server-side", "-k", str(root / "crds"))
        c.kubectl("wait", "--for=condition=Established", "crd/detectionfindings.auditwatch.io")
        for name in ("namespace.yaml", "rbac.yaml"):
            c.kubectl("apply", "-f", str(root / "manifests" / "base" / name))
        audit_dir = Path(tmp)
        (audit_dir / "audit.log").touch()
        seed = yaml.safe_load(SEED.read_text())
        seed["spec"]["sources"] = [{"name": "audit", "file": {"path": str(audit_dir / "audit.log")}}]
        seed["spec"]["finding"]["maxFindings"] = 10_000
        c.kubectl("apply", "-f", "-", input=json.dumps(seed))
        api = Api(c)
        print(f"machine: {os.cpu_count()} cores, {platform_name()}; {args.replicas} replicas")
        empty = measure(c, api, args.replicas, audit_dir, 0, args.settle, args.timeout)
        print(f"no findings: RSS {', '.join(f'{r:.0f}' for r in empty)} MB", flush=True)
        from kubernetes import config

        config.load_kube_config(str(c.operator_kubeconfig))
        started, shards = time.monotonic(), tuple(f"cp-{i}" for i in range(args.replicas)) or ("default",)
        kube = Kube(WriteBudget(qps=1000, burst=1000), post=lambda *_: None)  # the operator's write path, no budget
        asyncio.run(create_all(kube, args.findings, seed["metadata"]["name"], shards))
        print(f"{args.findings:,} findings created in {time.monotonic() - started:.0f} s", flush=True)
        full = measure(c, api, args.replicas, audit_dir, args.findings, args.settle, args.timeout)
        per = [(f - e) * 1024 / args.findings for f, e in zip(full, empty, strict=True)]
        print(f"{args.findings:,} findings: RSS {', '.join(f'{r:.0f}' for r in full)} MB "
              f"({', '.join(f'{p:.1f}' for p in per)} KB per finding)")  # fmt: skip


if __name__ == "__main__":
    main()
