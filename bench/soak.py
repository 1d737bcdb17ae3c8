"""Soak run: the pack on an HA control plane for minutes (hours where you have them), while nodes are
replaced, replicas killed and API servers restarted. Prints figures; exits 1 when a count is not exact.

Starts three kube-apiservers on one etcd, each writing its own audit log on its own "node", applies the
seed and the ESCU pack (every source the node's log) and a detection whose findings expire after 30 s,
and runs one replica per node as the DaemonSet does (its node's name as its shard, a Pod owning its
Lease). Anonymous and authenticated requests go to the three servers at ``--rate`` per second, with a
user agent that changes every 10 s. Every ``--cycle`` seconds one of these, in turn:

- a node replaced: its API server stopped, its replica stopped and its Pod deleted, its audit log put
  aside, the API server started with a fresh log and a replica with a new node name (a new shard; the
  old one is retired after ``--retire-after`` seconds);
- a replica SIGKILLed and started again;
- an API server restarted (1 or 2: the local kube-controller-manager, whose garbage collector deletes a
  deleted Pod's Lease, talks to API server 0 only, and after that one restarted it deleted none in a run).

Before each, the traffic pauses and the seed's count must equal the anonymous events in every log
(those put aside included): the time it took is printed. At the end: the counts again, how long the
gone shards took to be retired, the findings of the expiring detection (each exact, the expired ones
gone), the shards in the statuses, and each replica slot's RSS over the run.

    python bench/soak.py                       # 6 minutes
    python bench/soak.py --minutes 120 --rate 100
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path

from auditwatch.devcluster import DevCluster
from operator_bench import detections, geoip_db, platform_name

ROOT = Path(__file__).resolve().parent.parent
NAMESPACE = "auditwatch"
SEED = "kubernetes-aws-detect-suspicious-kubectl-calls"
EXPIRING = "soak-agents"
LOG = "/var/log/kubernetes/audit/audit.log"


class Replica:
    """The DaemonSet pod of one node: a Pod object owning its Lease (never scheduled), and the operator."""

    def __init__(self, c: DevCluster, node: int, shard: str, args: list[str], logs: Path) -> None:
        self.c, self.node, self.shard, self.args, self.logs = c, node, shard, args, logs
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"auditwatch-{shard}", "namespace": NAMESPACE},
               "spec": {"serviceAccountName": "auditwatch", "automountServiceAccountToken": False,
                        "containers": [{"name": "operator", "image": "auditwatch"}]}}  # fmt: skip
        c.kubectl("apply", "-f", "-", input=json.dumps(pod))
        self.uid = c.kubectl(
            "get", "pod", "-n", NAMESPACE, f"auditwatch-{shard}", "-o", "jsonpath={.metadata.uid}"
        ).stdout
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        kubeconfig = self.c.kubeconfig_for((self.node + 1) % 3, self.c.operator_kubeconfig)  # another server
        env = {**os.environ, "KUBECONFIG": str(kubeconfig), "POD_NAME": f"auditwatch-{self.shard}", "POD_UID": self.uid}
        cmd = [sys.executable, "-m", "auditwatch", "run", "--shard", self.shard, "--host-root",
               str(self.c.nodes[self.node]), "--webhook-listen=", "--liveness=", *self.args]  # fmt: skip
        out = open(self.logs / f"{self.shard}.log", "ab")  # noqa: SIM115 (the process holds it)
        self.proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)

    def stop(self, kill: bool = False) -> None:
        assert self.proc is not None
        self.proc.kill() if kill else self.proc.terminate()
        self.proc.wait(60)

    def remove(self) -> None:
        self.stop()
        self.c.kubectl("delete", "pod", "-n", NAMESPACE, f"auditwatch-{self.shard}", "--wait")

    def rss_mb(self) -> float:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0


class Traffic:
    """Anonymous and authenticated GETs to the three API servers at a rate, pausable; a user agent per 10 s."""

    def __init__(self, c: DevCluster, rate: float) -> None:
        self.c, self.rate = c, rate
        self.ctx = ssl.create_default_context()
        for bundle in c.ca_bundles:
            self.ctx.load_verify_locations(cafile=str(bundle))
        self.running, self.stopped = threading.Event(), threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _get(self, server: int, agent: str, token: str | None) -> None:
        headers = {"User-Agent": agent, **({"Authorization": f"Bearer {token}"} if token else {})}
        req = urllib.request.Request(self.c.servers[server] + "/version", headers=headers)
        with contextlib.suppress(OSError):  # a server down: logged by none, counted by none
            urllib.request.urlopen(req, context=self.ctx, timeout=5).close()

    def _run(self) -> None:
        for n in itertools.count():
            if self.stopped.is_set():
                return
            self.running.wait()
            agent = f"soak-{int(time.time() // 10)}"
            self._get(n % 3, agent, None)
            self._get(n % 3, agent, self.c.admin_token)
            time.sleep(1 / self.rate)


def anonymous(ev: dict) -> bool:
    user = ev.get("user", {})
    return user.get("username") == "system:anonymous" and "system:unauthenticated" in (user.get("groups") or [])


def logged(c: DevCluster, aside: Path) -> Counter[str]:
    """Anonymous events per user agent in every audit log, the live ones and those put aside."""
    counts: Counter[str] = Counter()
    for d in [*c.audit_dirs, aside]:
        for path in d.rglob("audit*.log*"):
            for line in path.read_bytes().splitlines():
                ev = json.loads(line)
                if anonymous(ev):
                    counts[ev.get("userAgent", "")] += 1
    return counts


def findings(c: DevCluster, detection: str) -> list[dict]:
    out = c.kubectl("get", "detectionfindings", "-n", NAMESPACE, "-l", f"auditwatch.io/detection={detection}",
                    "-o", "json").stdout  # fmt: skip
    return list(json.loads(out)["items"])


def status(c: DevCluster, detection: str) -> dict:
    out = c.kubectl("get", "auditdetection", "-n", NAMESPACE, detection, "-o", "json").stdout
    return dict(json.loads(out).get("status") or {})


def exact_after(c: DevCluster, aside: Path, timeout: float) -> float | None:
    """Seconds until the seed's count equals the anonymous events logged (None: not within ``timeout``)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        expected = sum(logged(c, aside).values())
        if sum(f["status"]["count"] for f in findings(c, SEED)) == expected:
            return time.monotonic() - start
        time.sleep(1)
    return None


def unretired(c: DevCluster, live: set[str]) -> set[str]:
    """Shards with a part in the seed's status or findings that no replica reads any more."""
    parts = {s for f in findings(c, SEED) for s in f["status"].get("shards", {})}
    return (set(status(c, SEED).get("shards", {})) | parts) - live


def retired_after(c: DevCluster, live: set[str], timeout: float) -> float | None:
    start = time.monotonic()
    while unretired(c, live):
        if time.monotonic() - start > timeout:
            return None
        time.sleep(1)
    return time.monotonic() - start


def waited(took: float | None, timeout: float) -> str:
    return f"after {took:.1f} s" if took is not None else f"NOT within {timeout:.0f} s"


def expiring_detection() -> dict:
    search = 'user.username="system:anonymous" | stats count BY userAgent | rename userAgent as agent'
    return {"apiVersion": "auditwatch.io/v1alpha1", "kind": "AuditDetection",
            "metadata": {"name": EXPIRING, "namespace": NAMESPACE},
            "spec": {"search": search, "sources": [{"name": "apiserver-log", "file": {"path": LOG}}],
                     "finding": {"groupBy": ["agent"], "ttl": "30s", "severity": "low", "riskScore": 5}}}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=6.0)
    p.add_argument("--rate", type=float, default=50.0, help="anonymous (and as many authenticated) requests/s")
    p.add_argument("--cycle", type=float, default=45.0, help="seconds between two replacements or restarts")
    p.add_argument("--retire-after", type=float, default=20.0, help="--retire-shards-after of the replicas")
    args = p.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="auditwatch-soak-"))
    aside, logs = workdir / "aside", workdir / "logs"
    aside.mkdir()
    logs.mkdir()
    print(f"machine: {os.cpu_count()} cores, {platform_name()}; logs in {logs}", flush=True)
    with DevCluster(workdir=workdir / "cluster", apiservers=3, audit_max_size_mb=20) as c:
        c.kubectl("apply", "--server-side", "-k", str(ROOT / "crds"))
        c.kubectl("wait", "--for=condition=Established", "crd/auditdetections.auditwatch.io",
                  "crd/detectionfindings.auditwatch.io")  # fmt: skip
        c.kubectl("apply", "-k", str(ROOT / "manifests"))
        for body in detections(18, Path(LOG), copies=False):  # the seed and the ESCU pack, on the node's log
            c.kubectl("apply", "-f", "-", input=json.dumps(body))
        c.kubectl("apply", "-f", "-", input=json.dumps(expiring_detection()))
        flags = ["--shard-lease-seconds", "8", "--retire-shards-after", str(args.retire_after),
                 "--geoip-db", geoip_db(workdir)]  # fmt: skip
        replicas = [Replica(c, i, f"cp-{i}", flags, logs) for i in range(3)]
        for r in replicas:
            r.start()
        traffic = Traffic(c, args.rate)
        traffic.running.set()
        traffic.thread.start()
        rss: dict[int, list[float]] = {i: [] for i in range(3)}
        gone: list[str] = []
        events = itertools.cycle(["replace", "kill", "restart-apiserver"])
        generation = itertools.count(1)
        end, started = time.monotonic() + args.minutes * 60, time.monotonic()
        next_event = started + args.cycle
        while time.monotonic() < end:
            time.sleep(5)
            for i, r in enumerate(replicas):
                rss[i].append(r.rss_mb())
            if time.monotonic() < next_event:
                continue
            traffic.running.clear()
            took = exact_after(c, aside, 120)
            node, event = next(generation) % 3, next(events)
            if event == "restart-apiserver":  # not API server 0: the local garbage collector talks to it only
                node = node or 2
            at = f"{time.monotonic() - started:5.0f} s"
            print(f"{at}: seed exact {waited(took, 120)}; then {event} on node {node}", flush=True)
            if event == "replace":
                c.stop_process(c.apiserver(node))
                replicas[node].remove()
                gone.append(replicas[node].shard)
                put = aside / replicas[node].shard
                put.mkdir()
                for f in c.audit_dirs[node].glob("audit*.log*"):
                    shutil.move(f, put / f.name)
                c.start_process(c.apiserver(node))
                replicas[node] = Replica(c, node, f"cp-{node}-{time.strftime('%H%M%S')}", flags, logs)
                replicas[node].start()
            elif event == "kill":
                replicas[node].stop(kill=True)
                replicas[node].start()
            else:
                c.stop_process(c.apiserver(node))
                c.start_process(c.apiserver(node))
            traffic.running.set()
            next_event = time.monotonic() + args.cycle
        traffic.running.clear()
        took = exact_after(c, aside, 180)
        print(f"end: seed exact {waited(took, 180)}", flush=True)
        retired = retired_after(c, {r.shard for r in replicas}, args.retire_after + 120)
        print(f"end: the gone shards retired {waited(retired, args.retire_after + 120)}", flush=True)
        report(c, aside, replicas, gone, rss, took is not None)
        traffic.stopped.set()
        traffic.running.set()
        for r in replicas:
            r.stop()


def report(c: DevCluster, aside: Path, replicas: list[Replica], gone: list[str], rss: dict[int, list[float]],
           exact: bool) -> None:  # fmt: skip
    per_agent = logged(c, aside)
    expiring = {f["spec"]["key"]["agent"]: f["status"]["count"] for f in findings(c, EXPIRING)}
    wrong = {a: (n, per_agent.get(a, 0)) for a, n in expiring.items() if n != per_agent.get(a, 0)}
    soak_agents = [a for a in per_agent if a.startswith("soak-")]
    print(f"expiring detection: {len(soak_agents)} agents seen, {len(expiring)} findings left (TTL 30 s), "
          f"{len(wrong)} with a wrong count {wrong or ''}")  # fmt: skip
    live = {r.shard for r in replicas}
    st = status(c, SEED)
    parts = Counter(s for f in findings(c, SEED) for s in f["status"].get("shards", {}))
    retired = sorted((st.get("retired") or {}).get("shards", {}))
    print(f"seed status: shards {sorted(st.get('shards', {}))} (live {sorted(live)}), retired whole {retired} "
          f"of gone {gone}; finding parts {dict(parts)}")  # fmt: skip
    left = unretired(c, live)
    for i, series in rss.items():
        third = max(1, len(series) // 3)
        first, last = statistics.median(series[:third]), statistics.median(series[-third:])
        print(f"node {i} replica RSS: median {first:.0f} MB in the first third, {last:.0f} MB in the last, "
              f"max {max(series):.0f} MB")  # fmt: skip
    ok = exact and not wrong and not left
    print("OK" if ok else f"FAILED: exact={exact}, wrong expiring counts={bool(wrong)}, unretired={sorted(left)}")
    if not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
