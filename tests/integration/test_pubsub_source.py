"""The Pub/Sub source against a real Pub/Sub server (Google's emulator on loopback): every message spooled
once through repeated publishing, lost acknowledgements (redelivery), restarts before and after the ack
deadline, and two replicas sharing the subscription; what is not an audit event, and a missing
subscription, named."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from auditwatch.api.models import PubSubSource, Source
from auditwatch.api.settings import Settings
from auditwatch.runtime.readers import Readers
from auditwatch.sources import pubsub
from auditwatch.sources.pubsub import Puller, event_of
from factory import SEED, auditwatch, event
from gcp import PROJECT, Topic, gke_entry, pubsub_emulator
from spooling import spooled, stopped, until

ACK_DEADLINE = 10  # the emulator's (and Pub/Sub's) shortest


@pytest.fixture(scope="module")
def emulator() -> Iterator[str]:
    with pubsub_emulator() as host:
        yield host


@pytest.fixture
def topic(emulator: str, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Topic:
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", emulator)
    return Topic("t-" + re.sub(r"[^-_A-Za-z0-9]", "-", request.node.name)[:200], ACK_DEADLINE)


def entries(n: int, agent: str = "e2e") -> list[dict[str, Any]]:
    return [gke_entry(event(agent=agent, uri=f"/api/v1/pods?n={i}", object_ref={"resource": "pods",
                                                                                 "apiVersion": "v1"}))
            for i in range(n)]  # fmt: skip


async def test_every_message_is_spooled_once_through_repeats_lost_acks_and_restarts(
    topic: Topic, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sub = topic.subscription("every-message").rsplit("/", 1)[1]
    first, second = entries(300), entries(200)
    expected = [e["insertId"] for e in first + second]
    topic.publish([json.dumps(e).encode() for e in first + first[:20]])  # the sink published 20 entries twice
    topic.publish([b"not json", b'{"level": "info", "msg": "not an audit entry"}'])

    # The acknowledgement of the first batch is lost: its messages come again after the ack deadline.
    puller = Puller(PROJECT, sub, tmp_path, max_messages=100)
    acknowledge, lost = puller._acknowledge, []

    async def lose_the_first(client: Any, ack_ids: list[str]) -> None:
        if not lost:
            lost.append(ack_ids)
            raise ConnectionResetError("the acknowledgement did not arrive")
        await acknowledge(client, ack_ids)

    monkeypatch.setattr(puller, "_acknowledge", lose_the_first)
    puller.subscribe(None, 0.1)
    directory = tmp_path / PROJECT / sub
    await until(lambda: len(spooled(directory)) == 300, 30, lambda: f"300 spooled: {len(spooled(directory))}")
    await until(lambda: puller.duplicates >= 20 + 100, ACK_DEADLINE + 20,
                lambda: f"the sink's repeats and the lost batch dropped: {puller.details()}")  # fmt: skip
    assert puller.dropped == 2 and "neither a GKE audit log entry" in puller.last_dropped
    assert puller.details()["messages"] == 300 + 20 + 2 + 100 and puller.ready and not puller.error

    # Killed between spooling a batch and acknowledging it: the next puller acknowledges it again at start.
    kept = asyncio.Event()

    async def killed_before_acking(client: Any, ack_ids: list[str]) -> None:
        kept.set()
        await asyncio.Event().wait()  # cancelled here

    monkeypatch.setattr(puller, "_acknowledge", killed_before_acking)
    topic.publish([json.dumps(e).encode() for e in second[:100]])
    await asyncio.wait_for(kept.wait(), 30)
    await stopped(puller)
    assert len(spooled(directory)) == 400
    again = Puller(PROJECT, sub, tmp_path, max_messages=100)
    again.subscribe(None, 0.1)
    topic.publish([json.dumps(e).encode() for e in second[100:]])
    await until(lambda: len(spooled(directory)) == 500, 30, lambda: f"500 spooled: {len(spooled(directory))}")
    await asyncio.sleep(ACK_DEADLINE + 3)  # nothing comes again: acknowledged before the deadline
    assert again.duplicates == 0 and again.messages == 100, again.details()

    await stopped(again)
    assert not topic.pending(sub)  # everything was acknowledged
    assert sorted(spooled(directory)) == sorted(expected)


async def test_what_comes_again_after_a_restart_is_dropped(
    topic: Topic, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Down longer than the ack IDs are good for (their spooling older than REACK_SECONDS here), the batch is
    not acknowledged again at start: it is delivered again and dropped by the window rebuilt from the spool."""
    sub = topic.subscription("late-restart").rsplit("/", 1)[1]
    batch = entries(50)
    puller = Puller(PROJECT, sub, tmp_path)
    kept = asyncio.Event()

    async def killed_before_acking(client: Any, ack_ids: list[str]) -> None:
        kept.set()
        await asyncio.Event().wait()

    monkeypatch.setattr(puller, "_acknowledge", killed_before_acking)
    puller.subscribe(None, 0.1)
    topic.publish([json.dumps(e).encode() for e in batch])
    await asyncio.wait_for(kept.wait(), 30)
    await stopped(puller)
    monkeypatch.setattr(pubsub, "REACK_SECONDS", 0)
    again = Puller(PROJECT, sub, tmp_path)
    again.subscribe(None, 0.1)
    await until(lambda: again.duplicates == 50, ACK_DEADLINE + 30, lambda: f"50 dropped: {again.details()}")
    await stopped(again)
    assert sorted(spooled(tmp_path / PROJECT / sub)) == sorted(e["insertId"] for e in batch)


async def test_two_replicas_share_a_subscription_and_spool_each_message_once(topic: Topic, tmp_path: Path) -> None:
    sub = topic.subscription("shared").rsplit("/", 1)[1]
    batch = entries(2000)
    replicas = [Puller(PROJECT, sub, tmp_path / f"r{i}", max_messages=50) for i in range(2)]
    for puller in replicas:
        puller.subscribe(None, 0.1)
    topic.publish([json.dumps(e).encode() for e in batch])
    parts = lambda: [spooled(tmp_path / f"r{i}" / PROJECT / sub) for i in range(2)]  # noqa: E731
    await until(lambda: sum(map(len, parts())) >= 2000, 60, lambda: f"2000 spooled: {list(map(len, parts()))}")
    await asyncio.sleep(1)
    for puller in replicas:
        await stopped(puller)
    a, b = parts()
    assert not set(a) & set(b) and sorted(a + b) == sorted(e["insertId"] for e in batch), (len(a), len(b))


async def test_detections_read_the_spool_through_the_shared_reader(topic: Topic, tmp_path: Path) -> None:
    sub = topic.subscription("readers").rsplit("/", 1)[1]
    readers = Readers(Settings(pubsub_spool=str(tmp_path), evaluation_worker=False))
    spec = Source(name="gke", pubsub=PubSubSource(project=PROJECT, subscription=sub))
    subscription = readers.subscribe(spec, None, None)
    topic.publish([json.dumps(e).encode() for e in entries(30, agent="via-readers")])
    seen: list[dict[str, Any]] = []
    read_to = [0]

    async def read() -> None:
        async for delivery in subscription.chunks():
            for line in delivery.data.splitlines():
                seen.extend(orjson.loads(line)["items"])
            assert delivery.origin == f"pubsub:projects/{PROJECT}/subscriptions/{sub}"
            read_to[0] = delivery.seq + len(delivery.data)

    reading = asyncio.create_task(read())
    try:
        await until(lambda: len(seen) == 30, 30, lambda: f"30 read: {len(seen)}")
        assert {e["userAgent"] for e in seen} == {"via-readers"} and subscription.ready
        details = subscription.details
        assert details["messages"] == 30 and details["pulls"] >= 1 and details["lagBytes"] == 0
        position = subscription.position(read_to[0])
        assert position is not None
        assert position.status() == {"path": f"pubsub:projects/{PROJECT}/subscriptions/{sub}",
                                     "inode": (tmp_path / PROJECT / sub / "audit.log").stat().st_ino,
                                     "offset": read_to[0]}  # fmt: skip
    finally:
        reading.cancel()
        await asyncio.gather(reading, return_exceptions=True)
    assert not readers.pullers[PROJECT, sub]._task  # the last reader gone, pulling stopped


async def test_a_subscription_that_does_not_exist_is_named(emulator: str, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", emulator)
    puller = Puller(PROJECT, "no-such-subscription", tmp_path)
    feed = puller.subscribe(None, 0.1)
    try:
        await until(lambda: puller.error, 30, "an error")
        assert not feed.ready
        assert feed.error.startswith(f"subscription projects/{PROJECT}/subscriptions/no-such-subscription does not")
        assert "gcloud pubsub subscriptions create" in feed.error
    finally:
        await stopped(puller)


def test_scan_drains_a_subscription_only_when_told_to(topic: Topic, tmp_path: Path, emulator: str) -> None:
    """`scan pubsub://...?drain=true` reads the subscription's GKE entries as the operator does (the same
    rows as scan over the same events mapped into a file), repeats dropped, and acknowledges them."""
    sub = topic.subscription("hunt").rsplit("/", 1)[1]
    batch = entries(40)
    topic.publish([json.dumps(e).encode() for e in batch + batch[:5]] + [b"not an entry"])
    url = f"pubsub://{PROJECT}/{sub}"
    env = {"PUBSUB_EMULATOR_HOST": emulator}
    code, out, err = auditwatch("scan", "--detection", str(SEED), url, env=env)
    assert code == 2 and "add ?drain=true if that is meant" in err
    code, out, err = auditwatch("scan", "--detection", str(SEED), f"{url}?drain=true&wait=3s", env=env)
    assert code == 0, err
    assert f"{url}?drain=true&wait=3s: 40 events, 5 repeats dropped, 1 messages no audit event" in err
    mapped = tmp_path / "mapped.log"
    mapped.write_bytes(b"".join(orjson.dumps(event_of(json.dumps(e).encode())[0]) + b"\n" for e in batch))
    code, from_file, err = auditwatch("scan", "--detection", str(SEED), str(mapped))
    assert code == 0 and sorted(out.splitlines()) == sorted(from_file.splitlines())
    assert sum(json.loads(row)["count"] for row in out.splitlines()) == 40
    assert not topic.pending(sub)  # acknowledged
