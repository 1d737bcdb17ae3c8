"""Event Hubs source throughput and lag against Apache Kafka's broker on loopback (the protocol of Event
Hubs' Kafka endpoint): AKS diagnostic events (20 kube-audit records each, as a diagnostic setting batches
them) sent to a four-partition hub as fast as one producer goes, read by one or two replicas (members of
one consumer group) into their spools.

    python bench/eventhub_bench.py [--events 40000] [--replicas 1] [--max-records 500] [--backlog]

Prints audit events spooled per second (per replica and in all), send-to-spool lag p50/p99 (the record's
timestamp to its spooling), and fetch rounds and offset commits a minute under load and at rest. With
--backlog everything is sent before the readers start: the rate is then the readers' own, a backlog
drained (after a restart, or a new consumer group reading what the hub retains). The broker
is not Event Hubs (no TLS, no quotas): the figures bound what the reader costs here.
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

from auditwatch.sources.eventhub import HubReader
from factory import event
from kafka import create_hub, hub_body, kafka_broker, send

PER_BODY = 20  # records in one Event Hubs event


def spooled_count(directory: Path) -> int:
    return sum(
        len(json.loads(line)["items"]) for p in directory.glob("audit*.log") for line in p.read_bytes().splitlines()
    )


async def run(args: argparse.Namespace, broker: str, workdir: Path) -> None:
    await asyncio.to_thread(create_hub, broker, "bench", 4)
    lags: list[float] = []
    commits = [0]
    readers = [HubReader("bench-ns", "bench", "bench", workdir / f"r{i}", None, args.max_records, "earliest")
               for i in range(args.replicas)]  # fmt: skip
    for reader in readers:  # each record's send-to-spool time as the reader sees it
        keep = reader._keep

        async def timed(batch, now, keep=keep):
            offsets = await keep(batch, now)
            done = time.time()
            lags.extend(
                done - r.timestamp / 1000 for records in batch.values() for r in records for _ in range(PER_BODY)
            )
            commits[0] += 1
            return offsets

        reader._keep = timed  # type: ignore[method-assign]
    base = event(object_ref={"resource": "pods", "apiVersion": "v1", "namespace": "default"})
    events = [dict(base, auditID=f"bench-{i}") for i in range(args.events)]
    bodies = [hub_body(events[i : i + PER_BODY]) for i in range(0, len(events), PER_BODY)]
    if args.backlog:
        await asyncio.to_thread(send, broker, "bench", bodies)
    for reader in readers:
        reader.subscribe(None, 0.1)
    while not all(r._consumer is not None and r._consumer.assignment() for r in readers):
        await asyncio.sleep(0.05)
    started = time.monotonic()
    if not args.backlog:
        await asyncio.to_thread(send, broker, "bench", bodies)
    sent = time.monotonic()
    while sum(r.events for r in readers) < args.events:
        await asyncio.sleep(0.2)
    done = time.monotonic()
    fetches_loaded, commits_loaded = sum(r.fetches for r in readers), commits[0]
    await asyncio.sleep(30)
    fetches_rest, commits_rest = sum(r.fetches for r in readers) - fetches_loaded, commits[0] - commits_loaded
    dirs = [workdir / f"r{i}" / "bench-ns" / "bench" / "bench" for i in range(args.replicas)]
    counts = [spooled_count(d) for d in dirs]
    assert sum(counts) == args.events, counts
    minutes = (done - started) / 60
    print(f"events: {args.events} ({len(bodies)} Event Hubs events of {PER_BODY}), replicas: {args.replicas}, "
          f"max records a fetch: {args.max_records}")  # fmt: skip
    if not args.backlog:
        print(f"sent in {sent - started:.1f} s ({args.events / (sent - started):,.0f} events/s, the producer's pace)")
    print(
        f"spooled in {done - started:.1f} s from the {'readers being assigned' if args.backlog else 'first send'}: "
        f"{args.events / (done - started):,.0f} events/s in "
        f"all; per replica {', '.join(f'{c:,}' for c in counts)} events"
    )
    if not args.backlog:
        q = statistics.quantiles(lags, n=100)
        print(f"send to spool: p50 {q[49]:.2f} s, p99 {q[98]:.2f} s")
    print(f"fetch rounds: {fetches_loaded / minutes:,.0f} a minute under load, {fetches_rest * 2} a minute at rest")
    print(f"offset commits: {commits_loaded / minutes:,.0f} a minute under load, {commits_rest * 2} at rest")
    for reader in readers:
        reader.unsubscribe()
    await asyncio.sleep(1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=40000)
    p.add_argument("--replicas", type=int, default=1)
    p.add_argument("--max-records", type=int, default=500)
    p.add_argument("--backlog", action="store_true", help="send everything before the readers start")
    args = p.parse_args()
    with kafka_broker() as broker, tempfile.TemporaryDirectory() as workdir:
        os.environ["EVENTHUB_KAFKA_BROKER"] = broker.address
        asyncio.run(run(args, broker.address, Path(workdir)))


if __name__ == "__main__":
    main()
