"""Benchmark: the operator as installed, N detections on one busy audit file. Prints figures, asserts nothing.

Starts the local control plane, installs the CRDs and RBAC, and per step: applies N detections (the
seed first, then the imported ESCU pack, every source pointed at one file; the `iplocation` ones
with a generated GeoIP database), runs `auditwatch run` under the operator's own credentials,
appends generated audit lines at a fixed rate (2% anonymous from 40 source IPs, plus one new source
IP a second), and polls the seed's findings every 0.2 s. Per step it prints: lines/s offered,
whether the operator kept up, new-finding and count latency p50/p99 (line written -> visible in
`kubectl get findings`), operator CPU and peak RSS, API writes/s by kind counted from the API
server's own audit log (the operator's user, ResponseComplete), findings and Events.

    python bench/operator_bench.py                          # steps 1:20000 and 18:20000, 30 s each
    python bench/operator_bench.py --step 18:5000 --seconds 60
    python bench/operator_bench.py --flood                  # 1,000,000 anonymous lines from 100,000 IPs
"""

from __future__ import annotations

import argparse
import json
import os
import random
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path

import yaml

from auditwatch.devcluster import DevCluster
from auditwatch.devcluster.cluster import OPERATOR_USER
from generate import make_event

ROOT = Path(__file__).resolve().parents[1]
SEED = ROOT / "manifests" / "detections" / "kubernetes-aws-detect-suspicious-kubectl-calls.yaml"
TICK = 0.05  # lines are appended every TICK seconds
MAX_FINDINGS = 1000  # the seed's maxFindings (the default)


def detections(n: int, log: Path) -> list[dict]:
    """The seed, then ESCU's Kubernetes detections, all reading ``log``."""
    bodies = [yaml.safe_load(SEED.read_text())]
    for path in sorted((ROOT / "manifests" / "detections" / "escu").glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        if doc.get("kind") == "AuditDetection":
            doc["metadata"]["name"] = "escu-" + doc["metadata"]["name"]
            bodies.append(doc)
    for body in bodies:
        body["metadata"]["namespace"] = "auditwatch"
        body["spec"]["sources"] = [{"name": "audit", "file": {"path": str(log)}}]
    return bodies[:n]


def geoip_db(workdir: Path) -> str:
    from mmdb_writer import MMDBWriter
    from netaddr import IPSet

    writer = MMDBWriter(ip_version=4, database_type="GeoLite2-City")
    writer.insert_network(IPSet(["203.0.113.0/24"]), {"city": {"names": {"en": "Paris"}},
                                                      "country": {"names": {"en": "France"}}})  # fmt: skip
    path = workdir / "city.mmdb"
    writer.to_db_file(str(path))
    return str(path)


class Lines:
    """Pre-serialized audit lines, stamped per tick: generating JSON at 20,000 lines/s would take the CPU
    the operator needs."""

    def __init__(self) -> None:
        rnd = random.Random(1)
        t = datetime(2026, 1, 1, tzinfo=UTC)
        self.normal = []
        for _ in range(4000):
            ev = make_event(rnd, t, anonymous=False)
            ev["requestReceivedTimestamp"] = ev["stageTimestamp"] = "@TS@"
            self.normal.append(json.dumps(ev, separators=(",", ":")).encode())
        ev = make_event(rnd, t, anonymous=True)
        ev.update(stage="ResponseComplete", sourceIPs=["@IP@"], requestReceivedTimestamp="@TS@", stageTimestamp="@TS@")
        self.anonymous = json.dumps(ev, separators=(",", ":")).encode()
        self.at = 0

    def batch(self, n: int, ips: list[str]) -> bytes:
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ").encode()
        out = []
        for ip in ips:
            out.append(self.anonymous.replace(b"@IP@", ip.encode()))
        for _ in range(n - len(ips)):
            out.append(self.normal[self.at % len(self.normal)])
            self.at += 1
        return (b"\n".join(out) + b"\n").replace(b"@TS@", stamp)


class Api:
    def __init__(self, c: DevCluster) -> None:
        self.c, self.ctx = c, ssl.create_default_context(cafile=str(c.ca_bundle))
        self.headers = {"Authorization": f"Bearer {c.admin_token}"}

    def get(self, path: str) -> dict:
        request = urllib.request.Request(f"{self.c.server}{path}", headers=self.headers)
        with urllib.request.urlopen(request, context=self.ctx) as resp:
            return json.load(resp)

    def findings(self, detection: str) -> list[dict]:
        return self.get("/apis/auditwatch.io/v1alpha1/namespaces/auditwatch/detectionfindings"
                        f"?labelSelector=auditwatch.io/detection%3D{detection}")["items"]  # fmt: skip

    def detection(self, name: str) -> dict:
        return self.get(f"/apis/auditwatch.io/v1alpha1/namespaces/auditwatch/auditdetections/{name}")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def api_writes(audit_log: Path, since: str, until: str) -> tuple[Counter[str], Counter[str], float]:
    """The operator's writes in the API server's audit log between two times: by kind, the most in a
    second, and the seconds between the two times."""
    kinds: Counter[str] = Counter()
    per_second: dict[str, Counter[str]] = defaultdict(Counter)
    for path in sorted(audit_log.parent.glob("audit*.log")):
        with open(path, "rb") as f:
            for raw in f:
                if OPERATOR_USER.encode() not in raw:
                    continue
                ev = json.loads(raw)
                stamp = ev.get("requestReceivedTimestamp", "")
                write = ev.get("verb") in ("create", "patch", "update", "delete")
                if ev.get("stage") != "ResponseComplete" or not write or not since <= stamp <= until:
                    continue
                ref = ev.get("objectRef", {})
                sub = f"/{ref['subresource']}" if "subresource" in ref else ""
                kind = f"{ev['verb']} {ref.get('resource', '?')}{sub}"
                kinds[kind] += 1
                per_second[stamp[:19]][kind] += 1
    seconds = (datetime.fromisoformat(until) - datetime.fromisoformat(since)).total_seconds()
    busiest = max(per_second.values(), key=lambda c: sum(c.values()), default=Counter())
    return kinds, busiest, seconds


class Poller(threading.Thread):
    """Lists the seed's findings every 0.2 s: when each anonymous line's count, and each new IP's
    finding, became visible."""

    def __init__(self, api: Api, detection: str, written: dict[str, list[float]], settle: float) -> None:
        super().__init__(daemon=True)
        self.api, self.detection, self.written, self.settle = api, detection, written, settle
        self.counts: dict[str, int] = {}
        self.count_latency: list[float] = []
        self.new_latency: list[float] = []
        self.stop_at = float("inf")  # the poller ends once counts are exact, or ``settle`` s after this

    def run(self) -> None:
        while time.monotonic() < self.stop_at + self.settle:
            now = time.monotonic()
            for f in self.api.findings(self.detection):
                ip, count = f["spec"]["key"].get("src_ip", ""), f.get("status", {}).get("count", 0)
                times = self.written.get(ip, [])
                if ip not in self.counts and times:  # the finding exists
                    self.new_latency.append(now - times[0])
                before = self.counts.get(ip, 0)
                self.count_latency.extend(now - t for t in times[before:count])
                self.counts[ip] = max(before, count)
            if now > self.stop_at and self.exact():
                return
            time.sleep(0.2)

    def exact(self) -> bool:
        """Every finding there will be (one per IP, up to the cap) exists, with every line counted."""
        counts, written = self.counts, self.written
        return len(counts) == min(len(written), MAX_FINDINGS) and all(counts[ip] == len(written[ip]) for ip in counts)


def append_lines(log: Path, rate: int, seconds: float, flood: bool, written: dict[str, list[float]]) -> int:
    """Append lines at ``rate`` for ``seconds``; record when each anonymous line was written, by IP."""
    lines, offered, fresh, tick = Lines(), 0, 0, 0
    started = time.monotonic()
    with open(log, "ab", buffering=0) as out:
        while time.monotonic() - started < seconds:
            per_tick = int(rate * TICK)
            if flood:  # every line anonymous, from 100,000 source IPs in turn
                ips = [f"10.{k // 65536}.{(k // 256) % 256}.{k % 256}"
                       for k in (i % 100_000 for i in range(offered, offered + per_tick))]  # fmt: skip
            else:  # 2% anonymous from 40 IPs, and one new attacker a second
                anon = per_tick // 50
                ips = [f"203.0.113.{(tick * anon + k) % 40 + 1}" for k in range(anon)]
                if tick % round(1 / TICK) == 0:
                    fresh += 1
                    ips.append(f"198.51.{fresh // 256}.{fresh % 256}")
            now = time.monotonic()
            for ip in ips:
                written[ip].append(now)
            out.write(lines.batch(max(per_tick, len(ips)), ips))
            offered += max(per_tick, len(ips))
            tick += 1
            time.sleep(max(0.0, started + tick * TICK - time.monotonic()))
    return offered


def start_operator(c: DevCluster, geo: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "KUBECONFIG": str(c.operator_kubeconfig)}
    return subprocess.Popen([sys.executable, "-m", "auditwatch", "run", "--liveness", "", "--webhook-listen=",
                             "--allow-path", str(c.audit_dir), "--geoip-db", geo],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip


def wait_ready(api: Api, name: str) -> None:
    deadline = time.time() + 60
    while time.time() < deadline:
        conditions = api.detection(name).get("status", {}).get("conditions", [])
        if any(x["type"] == "Ready" and x["status"] == "True" for x in conditions):
            return
        time.sleep(0.2)
    raise SystemExit(f"{name} did not become Ready")


def quantile(values: list[float], p: int) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100)[p - 1]


def now_stamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def run_step(c: DevCluster, api: Api, n: int, rate: int, seconds: float, geo: str, log: Path, flood: bool) -> None:
    log.touch()
    bodies = detections(n, log)
    for body in bodies:
        c.kubectl("apply", "-f", "-", input=json.dumps(body))
    seed = bodies[0]["metadata"]["name"]
    op = start_operator(c, geo)
    try:
        wait_ready(api, seed)
        written: dict[str, list[float]] = defaultdict(list)
        poller = Poller(api, seed, written, settle=180 if flood else 60)
        since, cpu0, started = now_stamp(), cpu_seconds(op.pid), time.monotonic()
        poller.start()
        offered = append_lines(log, rate, seconds, flood, written)
        elapsed = time.monotonic() - started
        poller.stop_at = time.monotonic()
        poller.join()
        caught_up = time.monotonic() - poller.stop_at
        cpu = (cpu_seconds(op.pid) - cpu0) / (time.monotonic() - started) * 100
        rss, until = peak_rss_mb(op.pid), now_stamp()
        time.sleep(2)  # the last writes reach the audit log
        report(api, seed, n, flood, offered, elapsed, written, poller, caught_up, cpu, rss,
               api_writes(c.audit_log, since, until))  # fmt: skip
    finally:  # the detections go while the operator runs, so that it removes their finalizers
        c.kubectl("delete", "auditdetections", "-n", "auditwatch", "--all", "--timeout=60s")
        op.terminate()
        op.wait()
        c.kubectl("delete", "detectionfindings", "-n", "auditwatch", "--all")
        c.kubectl("delete", "events", "-n", "auditwatch", "--all")


def report(
    api: Api,
    seed: str,
    n: int,
    flood: bool,
    offered: int,
    elapsed: float,
    written: dict[str, list[float]],
    poller: Poller,
    caught_up: float,
    cpu: float,
    rss: float,
    writes: tuple[Counter[str], int],
) -> None:
    kinds, peak, window = writes
    status = api.detection(seed).get("status", {})
    counters = status.get("counters", {})
    findings = api.findings(seed)
    exact = all(f.get("status", {}).get("count") == len(written[f["spec"]["key"]["src_ip"]]) for f in findings)
    biggest = max((len(json.dumps(f)) for f in findings), default=0)
    events = api.get("/api/v1/namespaces/auditwatch/events")["items"]
    new, counts = poller.new_latency, poller.count_latency
    anonymous = sum(map(len, written.values()))
    print(
        f"\n{'flood' if flood else f'{n} detection(s)'}: {offered / elapsed:,.0f} lines/s offered for "
        f"{elapsed:.0f} s ({anonymous:,} anonymous from {len(written):,} IPs)"
    )
    state = "exact" if exact else "not yet all written"
    print(f"  kept up: {'yes' if caught_up < 5 else 'no'} (counts {state} {caught_up:.1f} s after the last line)")
    print(f"  new finding visible p50 {quantile(new, 50):.2f} s, p99 {quantile(new, 99):.2f} s ({len(new)} findings)")
    print(f"  count visible p50 {quantile(counts, 50):.2f} s, p99 {quantile(counts, 99):.2f} s")
    print(f"  operator CPU {cpu:.0f}%, peak RSS {rss:.0f} MB")
    busiest = ", ".join(f"{k} {v}" for k, v in peak.most_common())
    print(f"  API writes {sum(kinds.values()) / window:.1f}/s over {window:.0f} s (busiest second: {busiest}): "
          + ", ".join(f"{k} {v}" for k, v in kinds.most_common()))  # fmt: skip
    print(
        f"  seed: {len(findings)} findings, {counters.get('findingsDropped', 0):,} rows over the cap, counts "
        f"exact: {exact}, largest finding {biggest / 1024:.1f} KiB; {len(events)} Events, "
        f"{counters.get('eventsFolded', 0)} folded; writes {status.get('writes')}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--step", action="append", metavar="N:RATE", help="N detections at RATE lines/s (repeatable)")
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--flood", action="store_true", help="then 1,000,000 anonymous lines from 100,000 IPs at 20,000/s")
    args = ap.parse_args()
    steps = [tuple(map(int, s.split(":"))) for s in args.step or ["1:20000", "18:20000"]]
    with tempfile.TemporaryDirectory() as tmp, DevCluster() as c:
        c.kubectl("apply", "--server-side", "-k", str(ROOT / "crds"))
        c.kubectl("wait", "--for=condition=Established", "crd/detectionfindings.auditwatch.io")
        for name in ("namespace.yaml", "rbac.yaml"):
            c.kubectl("apply", "-f", str(ROOT / "manifests" / "base" / name))
        api, geo = Api(c), geoip_db(Path(tmp))
        print(f"machine: {os.cpu_count()} cores, {platform_name()}")
        for i, (n, rate) in enumerate(steps):
            run_step(c, api, n, rate, args.seconds, geo, c.audit_dir / f"bench-{i}.log", flood=False)
        if args.flood:
            run_step(c, api, 1, 20_000, 50, geo, c.audit_dir / "bench-flood.log", flood=True)


def platform_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


if __name__ == "__main__":
    main()
