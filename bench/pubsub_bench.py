"""Pub/Sub source throughput and lag against Google's emulator on loopback: GKE audit entries published as
fast as the publisher goes, pulled by one or two pullers (replicas) into their spools.

    python bench/pubsub_bench.py [--events 20000] [--replicas 1] [--max-messages 1000]

Prints events spooled per second (per replica and in all), publish-to-spool lag p50/p99, and pulls a
minute under load and at rest. The emulator is not Pub/Sub: its figures bound what the puller costs here.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from auditwatch.sources.pubsub import Puller
from factory import event
from gcp import PROJECT, Topic, gke_entry, pubsub_emulator


def spooled_count(directory: Path) -> int:
    return sum(
        len(json.loads(line)["items"]) for p in directory.glob("audit*.log") for line in p.read_bytes().splitlines()
    )


async def run(args: argparse.Namespace, workdir: Path) -> None:
    topic = Topic("bench", ack_deadline=60)
    topic.subscription("bench-sub")
    template = gke_entry(event(object_ref={"resource": "pods", "apiVersion": "v1", "namespace": "default"}))
    lags: list[float] = []
    pullers = [Puller(PROJECT, "bench-sub", workdir / f"r{i}", args.max_messages) for i in range(args.replicas)]
    for puller in pullers:  # record each message's publish-to-spool time as the puller sees it
        keep = puller._keep

        async def timed(received, now, keep=keep):
            lags.extend(now - r.message.publish_time.timestamp() for r in received)
            await keep(received, now)

        puller._keep = timed  # type: ignore[method-assign]
        puller.subscribe(None, 0.1)
    messages = []
    for i in range(args.events):
        entry = dict(template, insertId=f"bench-{i}")
        messages.append(json.dumps(entry).encode())
    started = time.monotonic()
    await asyncio.to_thread(topic.publish, messages)
    published = time.monotonic()
    dirs = [workdir / f"r{i}" / PROJECT / "bench-sub" for i in range(args.replicas)]
    while sum(p.messages for p in pullers) < args.events:
        await asyncio.sleep(0.2)
    done = time.monotonic()
    pulls_loaded = sum(p.pulls for p in pullers)
    await asyncio.sleep(30)
    pulls_rest = sum(p.pulls for p in pullers) - pulls_loaded
    counts = [spooled_count(d) for d in dirs]
    assert sum(counts) == args.events, counts
    print(f"events: {args.events}, replicas: {args.replicas}, max messages a pull: {args.max_messages}")
    print(
        f"published in {published - started:.1f} s ({args.events / (published - started):,.0f}/s, the publisher's pace)"
    )
    print(
        f"spooled in {done - started:.1f} s from the first publish: "
        f"{args.events / (done - started):,.0f} events/s in all; "
        f"per replica {', '.join(f'{c:,}' for c in counts)} events"
    )
    q = statistics.quantiles(lags, n=100)
    print(f"publish to spool: p50 {q[49]:.2f} s, p99 {q[98]:.2f} s")
    print(
        f"pulls: {pulls_loaded / ((done - started) / 60):,.0f} a minute under load, {pulls_rest * 2} a minute at rest"
    )
    for puller in pullers:
        puller.unsubscribe()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=20000)
    p.add_argument("--replicas", type=int, default=1)
    p.add_argument("--max-messages", type=int, default=1000)
    args = p.parse_args()
    with pubsub_emulator() as host, tempfile.TemporaryDirectory() as workdir:
        os.environ["PUBSUB_EMULATOR_HOST"] = host
        asyncio.run(run(args, Path(workdir)))


if __name__ == "__main__":
    main()
