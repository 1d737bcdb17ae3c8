"""Benchmark: the CloudWatch source against moto's server. Prints figures, asserts nothing.

1. At rest: FilterLogEvents calls per minute of one log group's reader, with the default timing.
2. Under load: audit events put at RATE a second into three streams (LATE of them 60 s after their
   timestamp: later than promptWithin); calls per minute, whether the reader kept up, and the delay
   from each event's ingestion (its PutLogEvents) to the reader handing it to the detections, prompt
   and late apart. moto pages at 10,000 events, AWS at 1 MB: the fault proxy pages at PAGE events.
3. End to end (--operator): the local control plane and `auditwatch run` with a detection reading the
   log group; one anonymous audit event put at a time, the delay until its finding's count shows it.

    python bench/cloudwatch_bench.py                      # 60 s at rest, 150 s at 50 events/s
    python bench/cloudwatch_bench.py --rate 200 --sweep 5m --operator 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from auditwatch.api.models import CloudWatchSource
from auditwatch.sources.cloudwatch import CloudWatchPosition, CloudWatchTail, LogGroup, Timing
from awslogs import REGION, FaultProxy, LogGroupWriter, aws_env, moto_server

ROOT = Path(__file__).resolve().parents[1]
PAD = "x" * 900  # audit events are about 1-2 KB


def message(n: int, anonymous: bool = False) -> str:
    user = "system:anonymous" if anonymous else "system:serviceaccount:kube-system:replicaset-controller"
    return json.dumps({"kind": "Event", "apiVersion": "audit.k8s.io/v1", "auditID": f"bench-{n}", "verb": "get",
                       "stage": "ResponseComplete", "requestURI": "/api/v1/namespaces/default/pods",
                       "user": {"username": user, "groups": ["system:unauthenticated"] if anonymous else []},
                       "sourceIPs": ["10.0.0.1"], "userAgent": "bench", "annotations": {"pad": PAD}})  # fmt: skip


def quantiles(values: list[float]) -> str:
    if len(values) < 2:
        return f"{len(values)} events"
    q = statistics.quantiles(values, n=100)
    p99 = f", p99 {q[98]:.1f} s" if len(values) >= 100 else ""
    return f"{len(values):,} events: p50 {statistics.median(values):.1f} s{p99}, max {max(values):.1f} s"


async def read(source: CloudWatchSource, seconds: float, delivered: dict[str, float]) -> LogGroup:
    group = LogGroup(source.region, source.logGroup, 1.0)
    start = CloudWatchPosition.starting(source, round(time.time() * 1000))
    tail = CloudWatchTail(group, source.logStreamPrefix, Timing.of(source), start)

    async def consume() -> None:
        async for chunk in tail.chunks():
            now = time.time()
            for line in chunk.data.splitlines():
                delivered[json.loads(line)["auditID"]] = now

    task = asyncio.create_task(consume())
    await asyncio.sleep(seconds)
    task.cancel()
    return group


def put_at_rate(
    logs: LogGroupWriter, rate: int, late: float, seconds: float, put: dict[str, tuple[float, bool]]
) -> None:
    """Put ``rate`` events a second for ``seconds``; a ``late`` share stamped 60 s before they are put."""
    n, started = 0, time.time()
    while time.time() - started < seconds:
        tick = time.time()
        batches: dict[str, list[tuple[int, str]]] = {}
        for _ in range(rate):
            is_late = (n % 100) < late * 100
            stamp = round((tick - (60 if is_late else 0)) * 1000)
            batches.setdefault(f"kube-apiserver-audit-{n % 3:04x}", []).append((stamp, message(n)))
            put[f"bench-{n}"] = (tick, is_late)
            n += 1
        for stream, events in batches.items():
            logs.put(stream, events)
        time.sleep(max(0.0, 1 - (time.time() - tick)))


def reader_figures(endpoint: str, args: argparse.Namespace) -> None:
    logs = LogGroupWriter(endpoint, "/aws/eks/bench/cluster")
    logs.create_group()
    logs.put("kube-apiserver-audit-0000", [(round(time.time() * 1000), message(-1))])
    source = CloudWatchSource(logGroup=logs.group, region=REGION, sweepInterval=args.sweep)
    timing = Timing.of(source)
    print(f"timing: poll {timing.poll} ms, promptWithin {timing.prompt} ms, settle {timing.settle} ms, "
          f"sweep {timing.sweep} ms, maxLateness {timing.late} ms; 1 call/s per log group")  # fmt: skip
    group = asyncio.run(read(source, args.rest, {}))
    print(f"at rest: {group.calls} calls in {args.rest:.0f} s = {group.calls * 60 / args.rest:.1f} calls/min")

    put: dict[str, tuple[float, bool]] = {}
    delivered: dict[str, float] = {}
    writer = threading.Thread(target=put_at_rate, args=(logs, args.rate, args.late, args.load, put), daemon=True)
    writer.start()
    settle = timing.sweep / 1000 + timing.prompt / 1000 + 30
    group = asyncio.run(read(source, args.load + settle, delivered))
    writer.join()
    prompt = [delivered[i] - t for i, (t, late) in put.items() if i in delivered and not late]
    late = [delivered[i] - t for i, (t, late) in put.items() if i in delivered and late]
    missing = len(put) - sum(1 for i in put if i in delivered)
    print(f"under load: {args.rate} events/s for {args.load:.0f} s ({len(put):,} events, {args.late:.0%} 60 s late, "
          f"pages of {args.page}): "
          f"{group.calls} calls = {group.calls * 60 / (args.load + settle):.1f} calls/min, "
          f"{group.throttled} throttled; {missing:,} not read {settle:.0f} s after the last put")  # fmt: skip
    print(f"  ingestion -> read, prompt: {quantiles(prompt)}")
    print(f"  ingestion -> read, late:   {quantiles(late)}")


def operator_figures(endpoint: str, proxy: str, requests: int) -> None:
    import ssl
    import urllib.request

    from auditwatch.devcluster import DevCluster

    logs = LogGroupWriter(endpoint, "/aws/eks/bench-e2e/cluster")
    logs.create_group()
    with DevCluster() as c:
        c.kubectl("apply", "--server-side", "-k", str(ROOT / "crds"))
        c.kubectl("wait", "--for=condition=Established", "crd/detectionfindings.auditwatch.io")
        for name in ("namespace.yaml", "rbac.yaml"):
            c.kubectl("apply", "-f", str(ROOT / "manifests" / "base" / name))
        body = {"apiVersion": "auditwatch.io/v1alpha1", "kind": "AuditDetection",
                "metadata": {"name": "latency", "namespace": "auditwatch"},
                "spec": {"search": 'user.username="system:anonymous" | stats count BY user.username',
                         "sources": [{"name": "eks", "cloudwatch": {"logGroup": logs.group, "region": REGION}}],
                         "finding": {"groupBy": ["user.username"]}}}  # fmt: skip
        c.kubectl("apply", "-f", "-", input=json.dumps(body))
        env = {**os.environ, "KUBECONFIG": str(c.operator_kubeconfig), **aws_env(proxy)}
        op = subprocess.Popen([sys.executable, "-m", "auditwatch", "run", "--liveness", "", "--webhook-listen="],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        ctx = ssl.create_default_context(cafile=str(c.ca_bundle))
        url = (f"{c.server}/apis/auditwatch.io/v1alpha1/namespaces/auditwatch/detectionfindings"
               "?labelSelector=auditwatch.io/detection%3Dlatency")  # fmt: skip

        def count() -> int:
            request = urllib.request.Request(url, headers={"Authorization": f"Bearer {c.admin_token}"})
            with urllib.request.urlopen(request, context=ctx) as resp:
                return sum(i.get("status", {}).get("count", 0) for i in json.load(resp)["items"])

        latencies = []
        try:
            time.sleep(5)
            for n in range(requests):
                before = count()
                started = time.time()
                logs.put("kube-apiserver-audit-0000", [(round(started * 1000), message(n, anonymous=True))])
                while count() < before + 1:
                    time.sleep(0.05)
                latencies.append(time.time() - started)
        finally:
            op.terminate()
            op.wait()
    print(f"end to end, default timing: ingestion -> finding count: {quantiles(latencies)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rest", type=float, default=60, help="seconds at rest")
    ap.add_argument("--load", type=float, default=150, help="seconds under load")
    ap.add_argument("--rate", type=int, default=50, help="events a second under load")
    ap.add_argument("--late", type=float, default=0.1, help="share of events that arrive 60 s late")
    ap.add_argument("--page", type=int, default=900, help="events a page (AWS: 1 MB, about 900 of these)")
    ap.add_argument("--sweep", default="1m", help="the source's sweepInterval (default 1m: sweeps within the run)")
    ap.add_argument("--operator", type=int, metavar="N", default=0, help="then N events end to end via the operator")
    args = ap.parse_args()
    with moto_server() as endpoint:
        proxy = FaultProxy(endpoint)
        proxy.page_limit = args.page
        for name, value in aws_env(proxy.url).items():
            os.environ[name] = value
        reader_figures(endpoint, args)
        if args.operator:
            operator_figures(endpoint, proxy.url, args.operator)
        proxy.close()


if __name__ == "__main__":
    main()
