"""Benchmark: one finding written by every replica of an HA control plane. Prints figures, asserts nothing.

Starts the local control plane with N kube-apiservers (``auditwatch cluster up --apiservers N``), one
operator replica per API server's log (``--shard cp-i --host-root <node>``, as the DaemonSet runs),
applies the seed detection as shipped, and sends anonymous requests at a fixed rate spread over the
API servers, so that every replica counts into the same finding. Prints: anonymous events in the
logs and the finding's count (equal when exact), how long after the last request the count was
exact, the replicas' finding writes per second and how many were refused with 409 Conflict (another
replica wrote first; read again and retried), counted from the API servers' own audit logs.

    python bench/ha_bench.py                       # 3 API servers, 20 requests/s, 60 s
    python bench/ha_bench.py --apiservers 1 --rate 20 --seconds 60
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import yaml

from auditwatch.devcluster import DevCluster
from auditwatch.devcluster.cluster import OPERATOR_USER

ROOT = Path(__file__).resolve().parents[1]
SEED = ROOT / "manifests" / "detections" / "kubernetes-aws-detect-suspicious-kubectl-calls.yaml"


def audit_events(c: DevCluster) -> list[dict]:
    events = []
    for directory in c.audit_dirs:
        for path in directory.glob("audit*.log"):
            events += [json.loads(line) for line in path.read_bytes().splitlines() if line.strip()]
    return events


def anonymous(ev: dict) -> bool:
    user = ev.get("user", {})
    return user.get("username") == "system:anonymous" and "system:unauthenticated" in (user.get("groups") or [])


def finding_count(c: DevCluster) -> int:
    out = c.kubectl("get", "detectionfindings", "-n", "auditwatch", "-o", "json").stdout
    return sum(f.get("status", {}).get("count", 0) for f in json.loads(out)["items"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--apiservers", type=int, default=3)
    parser.add_argument("--rate", type=int, default=20, help="anonymous requests a second, all servers together")
    parser.add_argument("--seconds", type=float, default=60)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="auditwatch-ha-bench-"))
    with DevCluster(workdir=workdir, apiservers=args.apiservers) as c:
        c.kubectl("apply", "--server-side", "-k", str(ROOT / "crds"))
        c.kubectl("wait", "--for=condition=Established", "crd/detectionfindings.auditwatch.io")
        c.kubectl("apply", "-k", str(ROOT / "manifests"))
        seed = yaml.safe_load(SEED.read_text())
        if not c.nodes:  # one API server: its log is not under a node root
            seed["spec"]["sources"][0]["file"]["path"] = str(c.audit_log)
        c.kubectl("apply", "-f", "-", input=json.dumps(seed))
        replicas = []
        for i in range(args.apiservers):
            node = (
                ["--shard", f"cp-{i}", "--host-root", str(c.nodes[i])]
                if c.nodes
                else ["--allow-path", str(c.audit_dir)]
            )
            kubeconfig = c.kubeconfig_for((i + 1) % args.apiservers, c.operator_kubeconfig)
            env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
            log = open(workdir / f"operator-{i}.log", "wb")  # noqa: SIM115
            cmd = [sys.executable, "-m", "auditwatch", "run", "--liveness", "", "--webhook-listen=", *node]
            replicas.append(subprocess.Popen(cmd, env=env, stdout=log, stderr=log))
        ctx = ssl.create_default_context()
        for bundle in c.ca_bundles:
            ctx.load_verify_locations(cafile=str(bundle))
        time.sleep(5)  # the replicas start and read the logs' first lines
        started = time.time()
        n = 0
        while time.time() - started < args.seconds:
            url = f"{c.servers[n % args.apiservers]}/version?n={n}"
            with contextlib.suppress(urllib.error.URLError):
                urllib.request.urlopen(url, context=ctx, timeout=5).close()
            n += 1
            time.sleep(max(0.0, started + n / args.rate - time.time()))
        sent = time.time()
        expected = sum(anonymous(ev) for ev in audit_events(c))
        while (count := finding_count(c)) != expected and time.time() - sent < 120:
            expected = sum(anonymous(ev) for ev in audit_events(c))
            time.sleep(0.2)
        settled = time.time() - sent
        writes: Counter[str] = Counter()
        for ev in audit_events(c):
            mine = ev.get("user", {}).get("username") == OPERATOR_USER and ev.get("stage") == "ResponseComplete"
            if mine and ev.get("objectRef", {}).get("resource") == "detectionfindings" and ev["verb"] != "get":
                writes["409" if ev.get("responseStatus", {}).get("code") == 409 else "ok"] += 1
        for proc in replicas:
            proc.terminate()
            proc.wait()
    total = writes["ok"] + writes["409"]
    print(f"{args.apiservers} API server(s), {n} anonymous requests in {args.seconds:.0f} s ({args.rate}/s)")
    verdict = f"exact {settled:.1f} s after the last request" if count == expected else f"{count} after 120 s"
    print(f"  anonymous events in the logs: {expected}; the finding's count: {verdict}")
    print(f"  finding writes: {total / args.seconds:.1f}/s, {writes['409']} refused 409 Conflict "
          f"({100 * writes['409'] / max(total, 1):.1f}%), each read again and retried")  # fmt: skip


if __name__ == "__main__":
    main()
