"""The Azure blob source against a real Blob service (Azurite on loopback): AKS's hourly append blobs read
in hour order, each line once, through appends, a line being written, restarts from checkpoints, late
appends to an hour already done (counted, not read), records that are no audit event, and a missing
container named."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest

from auditwatch.api.models import AzureBlobSource
from auditwatch.sources.azureblob import BlobPosition, BlobTail, Container
from azurite import CLUSTER, Archive, azurite, hour_blob, record
from factory import SEED, auditwatch, checkpoint, event

HOUR = 3600


@pytest.fixture(scope="module")
def connection() -> Iterator[str]:
    with azurite() as conn:
        yield conn


@pytest.fixture
def archive(connection: str, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Archive:
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", connection)
    return Archive(connection, "c" + re.sub(r"[^a-z0-9]", "", request.node.name.lower())[-40:])


def spec(archive: Archive, **changes: Any) -> AzureBlobSource:
    values = {"accountUrl": archive.url, "container": archive.client.container_name, "prefix": CLUSTER,
              "pollInterval": "1s", "settleDelay": "0s", "start": "3h"} | changes  # fmt: skip
    return AzureBlobSource(**values)


def events(n: int, agent: str) -> list[dict[str, Any]]:
    return [event(agent=agent, uri=f"/api/v1/pods?n={i}") for i in range(n)]


async def read(tail: BlobTail, lines: int, timeout: float = 20) -> list[tuple[int, bytes]]:
    """(seq, line) of the next ``lines`` audit lines the tail yields."""
    got: list[tuple[int, bytes]] = []
    chunks = tail.chunks()
    try:
        async with asyncio.timeout(timeout):
            async for chunk in chunks:
                seq = chunk.seq
                for line in chunk.data.splitlines(keepends=True):
                    got.append((seq, line))
                    seq += len(line)
                if len(got) >= lines:
                    return got
    except TimeoutError:
        raise AssertionError(f"{len(got)} of {lines} lines: {tail.error or tail.details()}") from None
    finally:
        await chunks.aclose()
    return got


def agents(lines: list[tuple[int, bytes]]) -> list[str]:
    return [json.loads(line)["userAgent"] for _, line in lines]


async def test_each_line_once_in_hour_order_through_appends_and_restarts(archive: Archive) -> None:
    now = time.time()
    hours = [now - now % HOUR - 2 * HOUR, now - now % HOUR - HOUR, now - now % HOUR]
    archive.append(hour_blob(hours[1]), b"".join(record(e) for e in events(5, "h1")))
    archive.append(hour_blob(hours[0]), b"".join(record(e) for e in events(3, "h0")))
    archive.append(hour_blob(hours[0] - 5 * HOUR), record(event(agent="before-start")))  # before `start`
    archive.append(hour_blob(hours[1]), b'{"category": "kube-apiserver", "properties": {"pod": "x"}}\nnot json\n')
    container = Container(archive.url, archive.client.container_name)
    tail = BlobTail(container, spec(archive), None)
    first = await read(tail, 8)
    assert agents(first) == ["h0"] * 3 + ["h1"] * 5 and tail.dropped == 2
    seq_after_h0 = first[3][0]
    resume = checkpoint(tail, seq_after_h0)  # a detection's checkpoint after hour 0's lines

    written = record(event(agent="h2"))
    archive.append(hour_blob(hours[2]), record(event(agent="h2")) + written[:40])  # and half a line
    more = await read(tail, 1)
    assert agents(more) == ["h2"]
    archive.append(hour_blob(hours[2]), written[40:])  # the line completed
    last = await read(tail, 1)
    assert agents(last) == ["h2"]
    details = tail.details()
    assert details["newestBlob"] == hour_blob(hours[2]) and details["lagBytes"] == 0 and details["apiCalls"] > 0

    # A restart from the checkpoint reads what followed it again, the same bytes at the same seqs.
    assert isinstance(resume, BlobPosition) and resume.blob == hour_blob(hours[1]) and resume.offset == 0
    again = await read(BlobTail(container, spec(archive), resume), 7)
    assert again == [*first[3:], *more, *last]


async def test_an_hour_done_counts_what_is_appended_to_it_late(archive: Archive) -> None:
    now = time.time()
    old, new = now - now % HOUR - HOUR, now - now % HOUR
    archive.append(hour_blob(old), record(event(agent="old")))
    archive.append(hour_blob(new), record(event(agent="new")))
    tail = BlobTail(Container(archive.url, archive.client.container_name), spec(archive), None)
    assert agents(await read(tail, 2)) == ["old", "new"]
    late = record(event(agent="late"))
    archive.append(hour_blob(old), late)
    archive.append(hour_blob(new), record(event(agent="after")))
    assert agents(await read(tail, 1)) == ["after"]
    assert tail.late_bytes == len(late)


async def test_an_hour_still_growing_is_read_before_the_next(archive: Archive) -> None:
    now = time.time()
    old, new = now - now % HOUR - HOUR, now - now % HOUR
    archive.append(hour_blob(old), record(event(agent="old")))
    archive.append(hour_blob(new), record(event(agent="new")))
    tail = BlobTail(Container(archive.url, archive.client.container_name), spec(archive, settleDelay="1h"), None)
    assert agents(await read(tail, 1)) == ["old"]
    with pytest.raises(AssertionError, match="0 of 1 lines"):
        await read(tail, 1, timeout=3)  # the old hour was written to just now: not done for an hour
    assert tail.at.blob == hour_blob(old)


async def test_a_missing_container_is_named(connection: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", connection)
    url = connection.split("BlobEndpoint=")[1].rstrip(";")
    source = AzureBlobSource(accountUrl=url, container="no-such-container", pollInterval="1s")
    tail = BlobTail(Container(url, "no-such-container"), source, None)
    with pytest.raises(AssertionError):
        await read(tail, 1, timeout=3)
    assert not tail.ready
    assert tail.error.startswith(f"container no-such-container of {url} does not exist")


def test_scan_reads_the_archive_for_the_hours_asked(archive: Archive, connection: str, tmp_path: Any) -> None:
    """`scan azblob://ACCOUNT/CONTAINER/PREFIX?since=` gives the rows scan gives over the same events in a
    file; blobs of hours before ``since`` are not read."""
    now = time.time()
    recent = events(30, "recent")
    archive.append(hour_blob(now - now % HOUR - HOUR), b"".join(record(e) for e in recent[:10]))
    archive.append(hour_blob(now), b"".join(record(e) for e in recent[10:]) + b"not a record\n")
    archive.append(hour_blob(now - 30 * HOUR), record(event(agent="old")))
    url = f"azblob://devstoreaccount1/{archive.client.container_name}/{CLUSTER}?since=2h"
    code, out, err = auditwatch("scan", "--detection", SEED, url, env={"AZURE_STORAGE_CONNECTION_STRING": connection})
    assert code == 0, err
    assert f"{url}: 30 events from 2 blobs (1 lines no audit record)" in err
    file = tmp_path / "events.log"
    file.write_bytes(b"".join(json.dumps(e).encode() + b"\n" for e in recent))
    code, from_file, _ = auditwatch("scan", "--detection", SEED, file)
    assert code == 0 and sorted(out.splitlines()) == sorted(from_file.splitlines())
