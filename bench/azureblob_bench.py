"""Azure blob source throughput and calls against Azurite on loopback: an AKS diagnostic archive of N
records over three hourly blobs, read by one BlobTail from the first hour to the end.

    python bench/azureblob_bench.py [--events 60000]

Prints audit lines read per second, the calls made (lists and range reads), and calls a minute at rest
with the default 30 s poll. Azurite is not Azure Storage: the figures bound what the tail costs here.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from auditwatch.api.models import AzureBlobSource
from auditwatch.sources.azureblob import BlobTail, Container
from azurite import CLUSTER, Archive, azurite, hour_blob, record
from factory import event

HOUR = 3600


async def run(events: int, archive: Archive) -> None:
    spec = AzureBlobSource(accountUrl=archive.url, prefix=CLUSTER, settleDelay="0s", start="3h")
    container = Container(archive.url, archive.client.container_name)
    tail = BlobTail(container, spec, None)
    lines, started = 0, time.monotonic()
    chunks = tail.chunks()
    async for chunk in chunks:
        lines += chunk.data.count(b"\n")
        if lines >= events:
            break
    took = time.monotonic() - started
    calls = container.calls
    tail.poll = 30.0  # the default: what an idle archive costs
    rest = asyncio.ensure_future(anext(chunks))
    await asyncio.sleep(65)
    rest.cancel()
    print(f"events: {events:,} in 3 hourly blobs; read in {took:.1f} s: {events / took:,.0f} audit lines/s")
    at_rest = (container.calls - calls) * 60 / 65
    print(f"calls: {calls} (lists and 4 MB range reads) to read them; {at_rest:.1f} a minute at rest")
    await container.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=60000)
    args = p.parse_args()
    with azurite() as connection:
        os.environ["AZURE_STORAGE_CONNECTION_STRING"] = connection
        archive = Archive(connection)
        now = time.time()
        hours = [now - now % HOUR - h * HOUR for h in (2, 1, 0)]
        template = record(event(object_ref={"resource": "pods", "apiVersion": "v1", "namespace": "default"}))
        per_hour = args.events // 3
        for hour in hours:
            for i in range(0, per_hour, 1000):  # appends of 1,000 records, as Azure Monitor batches them
                archive.append(hour_blob(hour), template * min(1000, per_hour - i))
        asyncio.run(run(per_hour * 3, archive))


if __name__ == "__main__":
    main()
