"""The Event Hubs source against a real Kafka broker (Apache Kafka in KRaft mode on loopback, speaking the
protocol of Event Hubs' Kafka endpoint): every audit Event spooled once through repeated records, a kill
between spooling and committing, two replicas sharing the hub's partitions and a rebalance, a receive
that stalls; what is not an audit event, and a hub that does not exist, named."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from auditwatch.sources import eventhub
from auditwatch.sources.eventhub import HubReader
from factory import SEED, auditwatch, event
from kafka import CONNECTION_STRING, Broker, create_hub, hub_body, kafka_broker, send
from spooling import spooled, stopped, until

NAMESPACE = "aks-audit-ns"


@pytest.fixture(scope="module")
def running() -> Iterator[Broker]:
    with kafka_broker() as started:
        yield started


@pytest.fixture(scope="module")
def broker(running: Broker) -> str:
    return running.address


@pytest.fixture
def hub(broker: str, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> str:
    monkeypatch.setenv("EVENTHUB_KAFKA_BROKER", broker)
    name = "h-" + re.sub(r"[^-_A-Za-z0-9]", "-", request.node.name)[:200]
    create_hub(broker, name)
    return name


def events(n: int, agent: str = "aks") -> list[dict[str, Any]]:
    return [event(agent=agent, uri=f"/api/v1/pods?n={i}") for i in range(n)]


def bodies(evs: list[dict[str, Any]], per_body: int = 5) -> list[bytes]:
    return [hub_body(evs[i : i + per_body]) for i in range(0, len(evs), per_body)]


def reader(hub: str, spool: Path, instance: str | None = None, start: str = "earliest") -> HubReader:
    return HubReader(NAMESPACE, hub, f"g-{hub}", spool, instance=instance, max_records=20, start=start)


async def test_every_event_is_spooled_once_through_repeats_and_a_kill_before_committing(
    hub: str, broker: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = events(300), events(200)
    admin = first[:30]  # kube-audit-admin repeats the events that are not reads
    await asyncio.to_thread(send, broker, hub, [*bodies(first), hub_body(admin, "kube-audit-admin")])
    await asyncio.to_thread(send, broker, hub, [b"not json", hub_body([{"msg": "not audit"}], "kube-apiserver")])
    one = reader(hub, tmp_path, instance="auditwatch-0")
    one.subscribe(None, 0.1)
    directory = tmp_path / NAMESPACE / hub / f"g-{hub}"
    await until(lambda: len(spooled(directory)) == 300, 60, lambda: f"300 spooled: {len(spooled(directory))}")
    await until(lambda: one.duplicates == 30 and one.dropped == 2, 30, lambda: f"repeats dropped: {one.details()}")
    assert "not an audit Event" in one.last_dropped or "not JSON" in one.last_dropped
    assert one.ready and not one.error and one.records == 60 + 1 + 2, one.details()

    # Killed between spooling a batch and committing it: the next reader starts where the spool reached.
    kept = asyncio.Event()
    commit = one._consumer.commit

    async def killed_before_committing(offsets: Any = None) -> None:
        if kept.is_set():  # the process is gone: not even its last words (the commit on stopping) arrive
            raise ConnectionResetError("killed")
        if offsets is not None and any(o > 0 for o in offsets.values()):
            kept.set()
            await asyncio.Event().wait()  # cancelled here
        await commit(offsets)

    monkeypatch.setattr(one._consumer, "commit", killed_before_committing)
    await asyncio.to_thread(send, broker, hub, bodies(second[:100]))
    await asyncio.wait_for(kept.wait(), 30)
    await stopped(one)
    held = len(spooled(directory))
    assert 300 < held <= 400
    again = reader(hub, tmp_path, instance="auditwatch-0")
    again.subscribe(None, 0.1)
    await asyncio.to_thread(send, broker, hub, bodies(second[100:]))
    await until(lambda: len(spooled(directory)) == 500, 60, lambda: f"500 spooled: {len(spooled(directory))}")
    await asyncio.sleep(2)
    assert again.duplicates == 0, again.details()  # nothing spooled was fetched again
    assert sorted(again.partitions) == [0, 1, 2, 3]
    await stopped(again)
    assert sorted(spooled(directory)) == sorted(e["auditID"] for e in first + second)


async def test_two_replicas_share_the_partitions_and_spool_each_event_once(
    hub: str, broker: str, tmp_path: Path
) -> None:
    batch = events(2000)
    replicas = [reader(hub, tmp_path / f"r{i}") for i in range(2)]  # dynamic members: one leaving is rebalanced at once
    for r in replicas:
        r.subscribe(None, 0.1)
    # Both in the group, the partitions spread (the first to join holds all four until the second does).
    await until(lambda: all(r._consumer is not None and r._consumer.assignment() for r in replicas), 60,
                lambda: f"both assigned: {[r.details()['partitions'] for r in replicas]}")  # fmt: skip
    await asyncio.to_thread(send, broker, hub, bodies(batch[:1000]))
    parts = lambda: [spooled(tmp_path / f"r{i}" / NAMESPACE / hub / f"g-{hub}") for i in range(2)]  # noqa: E731
    await until(lambda: sum(map(len, parts())) >= 1000, 60, lambda: f"1000 spooled: {list(map(len, parts()))}")
    assert all(parts()), "each replica reads its partitions"
    assert sorted(replicas[0].partitions) + sorted(replicas[1].partitions) != []
    assert not set(replicas[0].partitions) & set(replicas[1].partitions)

    # One replica leaves: the other is given its partitions, from the offsets the first committed.
    await stopped(replicas[1])
    await asyncio.to_thread(send, broker, hub, bodies(batch[1000:]))
    await until(lambda: sum(map(len, parts())) >= 2000, 120, lambda: f"2000 spooled: {list(map(len, parts()))}")
    await asyncio.sleep(1)
    await stopped(replicas[0])
    a, b = parts()
    assert not set(a) & set(b) and sorted(a + b) == sorted(e["auditID"] for e in batch), (len(a), len(b))


async def test_a_stalled_receive_is_named_and_replaced(
    hub: str, broker: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As Falco's AKS plugin did after an Event Hubs timeout: the consumer stays up and receives nothing while
    records wait. The watchdog sees records waiting and none coming, says so, and starts a new consumer."""
    monkeypatch.setattr(eventhub, "WATCH_SECONDS", 0.5)
    monkeypatch.setattr(eventhub, "STALL_SECONDS", 3.0)
    one = reader(hub, tmp_path)
    one.subscribe(None, 0.1)
    await until(lambda: one.ready and one._consumer is not None and one._consumer.assignment(), 30, "assigned")
    stuck = one._consumer
    stuck.pause(*stuck.assignment())  # it fetches nothing from now on, as a stalled receiver
    await asyncio.to_thread(send, broker, hub, bodies(events(40)))
    await until(lambda: "stalled" in one.error, 30, lambda: f"named: {one.details()}")
    # As many of the 8 records as had arrived when the watch found none coming for STALL_SECONDS.
    assert re.search(r"the receive stalled: [1-8] records wait in partitions 0,1,2,3 ", one.error), one.error
    assert one.stalls == 1 and not one.ready
    directory = tmp_path / NAMESPACE / hub / f"g-{hub}"
    await until(lambda: len(spooled(directory)) == 40, 60, lambda: f"40 spooled after: {one.details()}")
    # Ready once a round goes through whole: the one that spooled the batch may still be committing.
    await until(lambda: one.ready and not one.error, 60, lambda: f"ready again: {one.error}")
    assert one._consumer is not stuck
    await stopped(one)


async def test_an_outage_that_answers_nothing_is_named_and_outlived(
    hub: str, broker: str, running: Broker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As an Event Hubs timeout: the broker answers nothing for a while (stopped, its connections open). The
    reader's calls time out and it says so; when the broker answers again it goes on by itself (no restart),
    every event spooled once."""
    monkeypatch.setattr(eventhub, "WATCH_SECONDS", 0.5)
    monkeypatch.setattr(eventhub, "CALL_SECONDS", 3.0)
    first, second = events(100), events(100)
    one = reader(hub, tmp_path)
    one.subscribe(None, 0.1)
    directory = tmp_path / NAMESPACE / hub / f"g-{hub}"
    await asyncio.to_thread(send, broker, hub, bodies(first))
    await until(lambda: len(spooled(directory)) == 100, 60, lambda: f"100 spooled: {one.details()}")
    with running.frozen():
        await until(lambda: one.error, 30, lambda: f"the outage named: {one.details()}")
        assert f"the Kafka endpoint {broker} does not answer" in one.error and not one.ready
    await asyncio.to_thread(send, broker, hub, bodies(second))
    await until(lambda: len(spooled(directory)) == 200, 120, lambda: f"200 spooled after: {one.details()}")
    # Ready once a round goes through whole: the one that spooled the last batch may still be watching.
    await until(lambda: one.ready and not one.error, 60, lambda: f"ready again: {one.error}")
    await stopped(one)
    assert sorted(spooled(directory)) == sorted(e["auditID"] for e in first + second)


def unsigned_token(subject: str) -> str:
    """A JWT without signature (alg none), which the test broker's OAUTHBEARER takes as Event Hubs takes
    an Entra ID token."""
    part = lambda value: base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")  # noqa: E731
    now = int(time.time())
    return f"{part({'alg': 'none'})}.{part({'sub': subject, 'iat': now, 'exp': now + 3600})}."


@pytest.mark.parametrize("mechanism", ["PLAIN", "OAUTHBEARER"])
async def test_tls_and_sasl_as_event_hubs_asks_for_them(
    running: Broker, hub: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mechanism: str
) -> None:
    """Over the broker's listener that speaks as Event Hubs' (TLS, then SASL): the connection string as SASL
    PLAIN's password, or Workload Identity's Entra ID token by OAUTHBEARER, asked for the namespace's
    scope; a wrong connection string named."""
    import azure.identity.aio
    from azure.core.credentials import AccessToken

    monkeypatch.setenv("EVENTHUB_KAFKA_BROKER", running.sasl_ssl)
    monkeypatch.setenv("SSL_CERT_FILE", str(running.ca))  # the default trust store, as the operator's
    scopes: list[str] = []

    class WorkloadIdentity:  # azure-identity's DefaultAzureCredential, as it answers in an AKS pod
        async def get_token(self, scope: str) -> AccessToken:
            scopes.append(scope)
            return AccessToken(unsigned_token("auditwatch"), int(time.time()) + 3600)

    if mechanism == "PLAIN":
        monkeypatch.setenv("EVENTHUB_CONNECTION_STRING", CONNECTION_STRING)
    else:
        monkeypatch.delenv("EVENTHUB_CONNECTION_STRING", raising=False)
        monkeypatch.setattr(azure.identity.aio, "DefaultAzureCredential", WorkloadIdentity)
    batch = events(30)
    await asyncio.to_thread(send, running.address, hub, bodies(batch))
    one = reader(hub, tmp_path)
    one.subscribe(None, 0.1)
    directory = tmp_path / NAMESPACE / hub / f"g-{hub}"
    await until(lambda: len(spooled(directory)) == 30, 60, lambda: f"30 spooled: {one.details()}")
    await stopped(one)
    assert sorted(spooled(directory)) == sorted(e["auditID"] for e in batch)
    if mechanism == "OAUTHBEARER":
        assert set(scopes) == {f"https://{NAMESPACE}.servicebus.windows.net/.default"}
        return
    monkeypatch.setenv("EVENTHUB_CONNECTION_STRING", CONNECTION_STRING.replace("k0", "wrong"))
    refused = reader(hub, tmp_path / "refused")
    refused.subscribe(None, 0.1)
    await until(lambda: refused.error, 30, "the refusal")
    assert "Event Hubs refused the credentials" in refused.error and "SaslAuthenticationFailed" in refused.error
    await stopped(refused)


async def test_a_hub_that_does_not_exist_is_named(broker: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("EVENTHUB_KAFKA_BROKER", broker)
    one = reader("no-such-hub", tmp_path)
    one.subscribe(None, 0.1)
    await until(lambda: one.error, 30, "an error")
    assert one.error.startswith(
        "event hub no-such-hub in aks-audit-ns.servicebus.windows.net (consumer group g-no-such-hub) does not exist"
    ), one.error
    assert not one.ready
    await stopped(one)


def test_scan_reads_what_a_hub_retains_without_moving_any_offsets(hub: str, broker: str, tmp_path: Path) -> None:
    """`scan eventhub://...` reads every partition's retained events as the operator reads them (the same
    rows as scan over the same events in a file), repeats dropped, without a consumer group."""
    batch = events(60)
    send(broker, hub, [*bodies(batch), hub_body(batch[:10], "kube-audit-admin"), b"not json"])
    url = f"eventhub://{NAMESPACE}/{hub}?since=1h"
    env = {"EVENTHUB_KAFKA_BROKER": broker}
    code, out, err = auditwatch("scan", "--detection", str(SEED), url, env=env)
    assert code == 0, err
    assert f"{url}: 60 events, 10 repeats dropped, 1 records no audit event" in err
    plain = tmp_path / "plain.log"
    plain.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in batch))
    code, from_file, err = auditwatch("scan", "--detection", str(SEED), str(plain))
    assert code == 0 and sorted(out.splitlines()) == sorted(from_file.splitlines())
    assert sum(orjson.loads(row)["count"] for row in out.splitlines()) == 60
    code, out, err = auditwatch("scan", "--detection", str(SEED), f"{url.split('?')[0]}?since=1s", env=env)
    assert code == 0 and not out and "0 events" in err  # sent more than a second ago: not in that range
    code, _, err = auditwatch("scan", "--detection", str(SEED), f"eventhub://{NAMESPACE}/no-such-hub", env=env)
    assert code == 2 and "event hub no-such-hub in aks-audit-ns.servicebus.windows.net" in err
    assert "does not exist" in err
