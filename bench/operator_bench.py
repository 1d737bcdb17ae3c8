"""Benchmark: the operator as installed, N detections on one busy audit file. Prints figures, asserts nothing.

Starts the local control plane, installs the CRDs and RBAC, and per step: applies N detections (the
seed first, then the imported ESCU pack, every source pointed at one file; the `iplocation` ones
with a generated GeoIP database), runs `auditwatch run` under the operator's own credentials,
appends generated audit lines at a fixed rate (2% anonymous from 40 source IPs, plus one new source
IP a second), and polls the seed's findings (and its copies') every 0.2 s. Per step it prints:
lines/s offered, whether the operator kept up, new-finding and count latency p50/p99 (line written ->
visible in `kubectl get findings`), operator CPU and peak RSS, the event loop's lag (from the
operator's metrics), API writes/s by kind counted from the API server's own audit log (the
operator's user, ResponseComplete), findings and Events.

    python bench/operator_bench.py                          # the seed, 17 copies, the pack: 30 s each
    python bench/operator_bench.py --step 18:5000 --seconds 60
    python bench/operator_bench.py --step 17x:5000          # 17 copies of the seed: 17 findings per IP
    python bench/operator_bench.py --write-qps 50           # the operator's write budget
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
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import yaml

from auditwatch.devcluster import DevCluster
from auditwatch.devcluster.cluster import OPERATOR_USER, free_port
from generate import make_event

ROOT = Path(__file__).resolve().parents[1]
SEED = ROOT / "manifests" / "detections" / "kubernetes-aws-detect-suspicious-kubectl-calls.yaml"
TICK = 0.05  # lines are appended every TICK seconds
MAX_FINDINGS = 1000  # the seed's maxFindings (the default)


def detections(n: int, log: Path, copies: bool) -> list[dict]:
    """The seed, then ESCU's Kubernetes detections (or copies of the seed), all reading ``log``."""
    bodies = [yaml.safe_load(SEED.read_text())]
    for i in range(2, n + 1) if copies else ():
        doc = yaml.safe_load(SEED.read_text())
        doc["metadata"]["name"] += f"-{i}"
        bodies.append(doc)
    for path in [] if copies else sorted((ROOT / "manifests" / "detections" / "escu").glob("*.yaml")):
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

    def all_findings(self) -> list[dict]:
        return self.get("/apis/auditwatch.io/v1alpha1/namespaces/auditwatch/detectionfindings")["items"]

    def detection(self, name: str) -> dict:
        return self.get(f"/apis/auditwatch.io/v1alpha1/namespaces/auditwatch/auditdetections/{name}")


def machine_jiffies() -> tuple[int, int]:
    """The machine's CPU time so far (every core): busy, and in all."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(values) - values[3] - values[4], sum(values)  # idle and iowait are not busy


def workers(pid: int) -> list[int]:
    """The operator's child processes: its evaluation workers."""
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def peak_rss_mb(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                total += int(line.split()[1]) / 1024
    return total


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
    """Lists the findings of the seed (and of its copies) every 0.2 s: when each anonymous line's count,
    and each new IP's finding, became visible."""

    def __init__(self, api: Api, seeds: list[str], written: dict[str, list[float]], settle: float) -> None:
        super().__init__(daemon=True)
        self.api, self.seeds, self.written, self.settle = api, seeds, written, settle
        self.counts: dict[tuple[str, str], int] = {}  # (detection, source IP) -> count seen
        self.count_latency: list[float] = []
        self.new_latency: list[float] = []  # the first burst's findings (40 IPs in the first second)
        self.burst_shown = 0.0  # when the last of the first burst's findings was seen
        self.fresh: list[tuple[float, float]] = []  # the new attackers' (one IP a second): (first line, latency)
        self.started = 0.0  # wall time of the step's first line
        self.stop_at = float("inf")  # the poller ends once counts are exact, or ``settle`` s after this
        self.behind: list[int] = []  # the seed's reader: bytes written to its file and not yet read (its status)
        # Every detection's findings: (wall time first listed, wall time of its first event: status.firstSeen).
        self.visible: dict[tuple[str, str], tuple[float, float]] = {}

    def run(self) -> None:
        seeds = set(self.seeds)
        while time.monotonic() < self.stop_at + self.settle:
            now, wall = time.monotonic(), time.time()
            for f in self.api.all_findings():
                first = f.get("status", {}).get("firstSeen")
                name = (f["spec"]["detection"], json.dumps(f["spec"]["key"], sort_keys=True))
                if first and name not in self.visible:
                    self.visible[name] = (wall, datetime.fromisoformat(first).timestamp())
                if f["spec"]["detection"] not in seeds:
                    continue
                key = (f["spec"]["detection"], f["spec"]["key"].get("src_ip", ""))
                count = f.get("status", {}).get("count", 0)
                times = self.written.get(key[1], [])
                if key not in self.counts and times:  # the finding exists
                    if key[1].startswith("198.51."):
                        self.fresh.append((times[0], now - times[0]))
                    else:
                        self.new_latency.append(now - times[0])
                        self.burst_shown = now
                before = self.counts.get(key, 0)
                self.count_latency.extend(now - t for t in times[before:count])
                self.counts[key] = max(before, count)
            if now < self.stop_at:
                shards = self.api.detection(self.seeds[0]).get("status", {}).get("shards", {})
                sources = shards.get("default", {}).get("sources") or [{}]
                self.behind.append(int((sources[0].get("file") or {}).get("lagBytes", 0)))
            if now > self.stop_at and self.exact():
                return
            time.sleep(0.2)

    def pack(self, started: float) -> tuple[list[float], float, list[float]]:
        """Every detection's findings: the latencies of the first burst's (a first event in the step's first
        second), when the last of them showed, and the latencies of those first seen after that."""
        burst = [(shown, first) for shown, first in self.visible.values() if started <= first < started + 1]
        written = max((shown for shown, _ in burst), default=started)
        after = [shown - first for shown, first in self.visible.values() if first > written]
        return [shown - first for shown, first in burst], written - started, after

    def exact(self) -> bool:
        """Every finding there will be (one per IP and detection, up to the cap) exists, with every line counted."""
        counts, written = self.counts, self.written
        expected = min(len(written), MAX_FINDINGS) * len(self.seeds)
        return len(counts) == expected and all(n == len(written[ip]) for (_, ip), n in counts.items())


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


@dataclass(frozen=True)
class Step:
    n: int  # detections
    rate: int  # lines/s
    copies: bool = False  # copies of the seed, not the seed and ESCU's pack
    flood: bool = False

    @classmethod
    def parse(cls, text: str) -> Step:
        n, rate = text.split(":")
        return cls(int(n.rstrip("x")), int(rate), copies=n.endswith("x"))

    def __str__(self) -> str:
        if self.flood:
            return "flood"
        return f"{self.n} copies of the seed" if self.copies else f"{self.n} detection(s)"


def start_operator(
    c: DevCluster, geo: str, write_qps: float | None, metrics: int, options: list[str]
) -> subprocess.Popen[bytes]:
    env = {**os.environ, "KUBECONFIG": str(c.operator_kubeconfig)}
    budget = ["--write-qps", str(write_qps), "--write-burst", str(round(write_qps * 1.5))] if write_qps else []
    return subprocess.Popen([sys.executable, "-m", "auditwatch", "run", "--liveness", "", "--webhook-listen=",
                             "--allow-path", str(c.audit_dir), "--geoip-db", geo, *budget, *options,
                             "--metrics-listen", f"127.0.0.1:{metrics}"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip


def loop_lag(port: int) -> str:
    """The operator's event-loop lag from its metrics: the p99 bucket bound and the largest."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics") as resp:
        text = resp.read().decode()
    buckets, largest = [], 0.0
    for line in text.splitlines():
        if line.startswith("auditwatch_event_loop_lag_seconds_bucket"):
            bound = line.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((float(bound), float(line.rsplit(" ", 1)[1])))
        elif line.startswith("auditwatch_event_loop_lag_max_seconds "):
            largest = float(line.rsplit(" ", 1)[1])
    total = buckets[-1][1] if buckets else 0
    p99 = next((bound for bound, n in buckets if n >= 0.99 * total), float("nan"))
    return f"p99 <= {p99 * 1000:.0f} ms, largest {largest * 1000:.0f} ms ({total:.0f} wake-ups)"


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


def run_step(
    c: DevCluster,
    api: Api,
    step: Step,
    seconds: float,
    geo: str,
    log: Path,
    write_qps: float | None,
    options: list[str],
) -> None:
    log.touch()
    bodies = detections(step.n, log, step.copies)
    for body in bodies:
        c.kubectl("apply", "-f", "-", input=json.dumps(body))
    seeds = [b["metadata"]["name"] for b in bodies] if step.copies else [bodies[0]["metadata"]["name"]]
    port = free_port()
    op = start_operator(c, geo, write_qps, port, options)
    try:
        wait_ready(api, seeds[0])
        written: dict[str, list[float]] = defaultdict(list)
        poller = Poller(api, seeds, written, settle=180 if step.flood else 60)
        kids = workers(op.pid)
        since, started, size = now_stamp(), time.monotonic(), log.stat().st_size
        cpu0 = cpu_seconds([op.pid]), cpu_seconds(kids)
        poller.start()
        poller.started, machine0 = time.time(), machine_jiffies()
        offered = append_lines(log, step.rate, seconds, step.flood, written)
        elapsed = time.monotonic() - started
        bytes_per_s = (log.stat().st_size - size) / elapsed
        poller.stop_at = time.monotonic()
        poller.join()
        caught_up = time.monotonic() - poller.stop_at
        took, machine = time.monotonic() - started, machine_jiffies()
        busy = (machine[0] - machine0[0]) / (machine[1] - machine0[1]) * 100
        cpu = ((cpu_seconds([op.pid]) - cpu0[0]) / took * 100, (cpu_seconds(kids) - cpu0[1]) / took * 100)
        rss, until, lag = (
            (peak_rss_mb([op.pid]), peak_rss_mb(kids)),
            now_stamp(),
            f"{loop_lag(port)}; machine {busy:.0f}% busy",
        )
        time.sleep(2)  # the last writes reach the audit log
        report(api, seeds[0], step, offered, elapsed, written, poller, caught_up, cpu, rss, lag,
               api_writes(c.audit_log, since, until), bytes_per_s)  # fmt: skip
    finally:  # the detections go while the operator runs, so that it removes their finalizers
        c.kubectl("delete", "auditdetections", "-n", "auditwatch", "--all", "--timeout=60s")
        op.terminate()
        op.wait()
        c.kubectl("delete", "detectionfindings", "-n", "auditwatch", "--all")
        c.kubectl("delete", "events", "-n", "auditwatch", "--all")


def report(
    api: Api,
    seed: str,
    step: Step,
    offered: int,
    elapsed: float,
    written: dict[str, list[float]],
    poller: Poller,
    caught_up: float,
    cpu: tuple[float, float],
    rss: tuple[float, float],
    lag: str,
    writes: tuple[Counter[str], Counter[str], float],
    bytes_per_s: float,
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
        f"\n{step}: {offered / elapsed:,.0f} lines/s offered for "
        f"{elapsed:.0f} s ({anonymous:,} anonymous from {len(written):,} IPs)"
    )
    burst, burst_written, after = poller.pack(poller.started)
    print(f"  every detection: the first burst's {len(burst)} findings visible p50 {quantile(burst, 50):.2f} s, "
          f"p99 {quantile(burst, 99):.2f} s, all {burst_written:.1f} s after the first line; then new findings "
          f"p50 {quantile(after, 50):.2f} s, p99 {quantile(after, 99):.2f} s ({len(after)})")  # fmt: skip
    state = "exact" if poller.exact() else f"not all exact ({len(poller.counts)} findings seen)"
    print(f"  kept up: {'yes' if caught_up < 5 else 'no'} (counts {state} {caught_up:.1f} s after the last line)")
    fresh = [latency for first, latency in poller.fresh if first > poller.burst_shown]
    print(f"  first burst's findings visible p50 {quantile(new, 50):.2f} s, p99 {quantile(new, 99):.2f} s "
          f"({len(new)} findings); then a new attacker's p50 {quantile(fresh, 50):.2f} s, p99 "
          f"{quantile(fresh, 99):.2f} s ({len(fresh)})")  # fmt: skip
    print(f"  count visible p50 {quantile(counts, 50):.2f} s, p99 {quantile(counts, 99):.2f} s")
    print(f"  operator CPU {cpu[0]:.0f}% + evaluation worker {cpu[1]:.0f}%, peak RSS {rss[0]:.0f} MB + "
          f"{rss[1]:.0f} MB; event loop lag {lag}")  # fmt: skip
    behind = [b / bytes_per_s for b in poller.behind] if bytes_per_s else []
    print(f"  the shared reader behind the file (the seed's status; each detection's queue holds 8 chunks "
          f"more): p50 {quantile(behind, 50):.2f} s, p99 {quantile(behind, 99):.2f} s, "
          f"max {max(behind, default=0):.2f} s of lines")  # fmt: skip
    busiest = ", ".join(f"{k} {v}" for k, v in peak.most_common())
    print(f"  API writes {sum(kinds.values()) / window:.1f}/s over {window:.0f} s (busiest second: {busiest}): "
          + ", ".join(f"{k} {v}" for k, v in kinds.most_common()))  # fmt: skip
    print(
        f"  seed: {len(findings)} findings, {counters.get('findingsDropped', 0):,} rows over the cap, counts "
        f"exact: {exact}, largest finding {biggest / 1024:.1f} KiB; {len(events)} Events, "
        f"{counters.get('eventsFolded', 0)} folded; writes {status.get('shards', {}).get('default', {}).get('writes')}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--step", action="append", metavar="N[x]:RATE",
                    help="N detections at RATE lines/s (repeatable); Nx: N copies of the seed")  # fmt: skip
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--write-qps", type=float, help="the operator's write budget (default: the operator's)")
    ap.add_argument("--flood", action="store_true", help="then 1,000,000 anonymous lines from 100,000 IPs at 20,000/s")
    ap.add_argument("--no-evaluation-worker", action="store_true", help="the operator evaluates on its event loop")
    args = ap.parse_args()
    options = ["--no-evaluation-worker"] if args.no_evaluation_worker else []
    steps = [Step.parse(s) for s in args.step or ["1:20000", "17x:5000", "17x:20000", "18:5000", "18:20000"]]
    with tempfile.TemporaryDirectory() as tmp, DevCluster() as c:
        c.kubectl("apply", "--server-side", "-k", str(ROOT / "crds"))
        c.kubectl("wait", "--for=condition=Established", "crd/detectionfindings.auditwatch.io")
        for name in ("namespace.yaml", "rbac.yaml"):
            c.kubectl("apply", "-f", str(ROOT / "manifests" / "base" / name))
        api, geo = Api(c), geoip_db(Path(tmp))
        print(f"machine: {os.cpu_count()} cores, {platform_name()}")
        print(f"write budget: {args.write_qps or 'the default'} writes/s")
        for i, step in enumerate(steps):
            run_step(c, api, step, args.seconds, geo, c.audit_dir / f"bench-{i}.log", args.write_qps, options)
        if args.flood:
            flood = Step(1, 20_000, flood=True)
            run_step(c, api, flood, 50, geo, c.audit_dir / "bench-flood.log", args.write_qps, options)


def platform_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


if __name__ == "__main__":
    main()
