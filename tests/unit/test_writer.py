"""Writing findings: create-or-patch, coalescing, Events, and failures that keep the checkpoint back."""

import asyncio
import copy
import logging

import pytest
import urllib3

from auditwatch.api.models import FindingPolicy
from auditwatch.findings.aggregate import Aggregator
from auditwatch.findings.peers import PeerWrites
from auditwatch.findings.writer import EVENTS_PER_WINDOW, Writer
from auditwatch.kube.budget import WriteBudget
from auditwatch.kube.client import UNREACHABLE, ApiException, Kube
from fake_kube import FakeKube

pytestmark = pytest.mark.asyncio
DETECTION = {"apiVersion": "auditwatch.io/v1alpha1", "kind": "AuditDetection",
             "metadata": {"name": "seed", "namespace": "sec", "uid": "d-uid",
                          "labels": {"mitre-attack.escu.splunk.com/T1552.007": "true", "team": "sec"}}}  # fmt: skip
ROW = {"user": "system:anonymous", "src_ip": "10.0.0.1", "count": 1}


async def flush(writer, agg, now):
    """Start the due writes and wait for them: True when every finding is written."""
    writer.flush(agg, now)
    return await writer.settle(agg)


@pytest.fixture
def setup():
    kube = FakeKube()
    events = kube.events
    writer = Writer(kube, DETECTION, FindingPolicy(severity="low", riskScore=20), logging.getLogger("test"))
    agg = Aggregator("seed", ["user", "src_ip"], "calls from $src_ip$", max_findings=1)
    return kube, events, writer, agg


async def test_a_new_finding_is_one_write_a_create_with_its_count_and_checkpoint(setup):
    kube, events, writer, agg = setup
    agg.add(ROW, "log", 0, 10, "t1")
    assert await flush(writer, agg, 100.0)
    [(name, obj)] = kube.objects.items()
    assert kube.calls == [("create", name)]
    assert obj["spec"] == {"detection": "seed", "key": {"user": "system:anonymous", "src_ip": "10.0.0.1"},
                           "message": "calls from 10.0.0.1", "severity": "low", "riskScore": 20,
                           "mitre": "T1552.007"}  # fmt: skip
    assert obj["metadata"]["labels"] == {"auditwatch.io/detection": "seed"}
    assert obj["metadata"]["ownerReferences"][0]["uid"] == "d-uid"
    assert obj["status"]["count"] == 1 and obj["status"]["shards"]["default"]["checkpoints"] == {"log": 10}
    assert [(n, k, r) for n, k, r, _ in events] == [("seed", "Warning", "FindingCreated"),
                                                    (name, "Warning", "SuspiciousActivity")]  # fmt: skip


async def test_writes_are_coalesced_to_one_per_second_per_finding(setup):
    kube, _, writer, agg = setup
    agg.add(ROW, "log", 0, 10, "t")
    await flush(writer, agg, 100.0)
    for i in range(50):
        agg.add(ROW, "log", 10 + i * 10, 20 + i * 10, "t")
        assert not await flush(writer, agg, 100.5)  # due in a second: not written, not complete
    assert [c for c, _ in kube.calls] == ["create"]
    assert await flush(writer, agg, 101.0)
    assert [c for c, _ in kube.calls] == ["create", "patch"]
    assert next(iter(kube.objects.values()))["status"]["count"] == 51


async def test_update_events_are_rate_limited(setup):
    _, events, writer, agg = setup
    agg.add(ROW, "log", 0, 10, "t")
    await flush(writer, agg, 100.0)
    for now in (102.0, 130.0, 161.0, 170.0):
        agg.add(ROW, "log", int(now) * 10, int(now) * 10 + 5, "t")
        await flush(writer, agg, now)
    assert [r for _, _, r, _ in events].count("FindingUpdated") == 1  # at 161: 60 s after the creation


async def test_a_retried_create_adopts_the_existing_object(setup):
    kube, _, writer, agg = setup
    agg.add(ROW, "log", 0, 10, "t")
    name = next(iter(agg.findings))
    kube.objects[name] = {"metadata": {"name": name, "uid": "earlier"}}
    assert await flush(writer, agg, 100.0)
    assert ("get", name) in kube.calls and agg.findings[name].uid == "earlier"


async def test_a_failed_write_keeps_the_finding_pending(setup):
    kube, _, writer, agg = setup
    kube.fail_writes = True
    agg.add(ROW, "log", 40, 50, "t")
    assert not await flush(writer, agg, 100.0)  # the create failed
    assert agg.resume_seq("log", 1000) == 40  # the detection checkpoint may not pass the unwritten line
    kube.fail_writes = False
    assert await flush(writer, agg, 101.0)
    assert agg.resume_seq("log", 1000) == 1000
    agg.add(ROW, "log", 1000, 1010, "t")
    kube.fail_writes = True
    assert not await flush(writer, agg, 102.0)  # the patch failed
    assert agg.resume_seq("log", 2000) == 1000
    kube.fail_writes = False
    assert await flush(writer, agg, 103.0)
    [obj] = kube.objects.values()
    assert obj["status"]["count"] == 2 and obj["status"]["shards"]["default"]["checkpoints"] == {"log": 1010}


async def test_the_cap_is_announced_once(setup):
    _, events, writer, agg = setup
    agg.add(ROW, "log", 0, 10, "t")
    agg.add({**ROW, "src_ip": "10.0.0.2"}, "log", 10, 20, "t")
    agg.add({**ROW, "src_ip": "10.0.0.3"}, "log", 20, 30, "t")
    await flush(writer, agg, 100.0)
    await flush(writer, agg, 200.0)
    assert [r for _, _, r, _ in events].count("FindingsCapReached") == 1 and agg.dropped == 2


async def test_expired_findings_are_deleted(setup):
    kube, events, writer, agg = setup
    agg.add(ROW, "log", 0, 10, "2020-01-01T00:00:00Z")
    await flush(writer, agg, 100.0)
    assert await writer.expire(agg, 3600) == 1
    await writer.settle(agg)  # the Event is posted when the budget allows
    assert kube.objects == {} and events[-1][2] == "FindingExpired"


async def test_rows_counted_while_the_patch_waits_are_written_next_and_hold_the_checkpoint(setup):
    kube, _, writer, agg = setup
    agg.add(ROW, "log", 0, 10, "t")
    await flush(writer, agg, 100.0)
    gate = asyncio.Event()
    real_patch = kube.patch_finding

    async def slow_patch(namespace, name, make_patch, since=None):
        patch = make_patch()  # the budget let it go: its body is made, then the call takes its time
        await gate.wait()
        return await real_patch(namespace, name, lambda: patch, since)

    kube.patch_finding = slow_patch
    agg.add(ROW, "log", 10, 20, "t")
    writer.flush(agg, now=101.0)
    await asyncio.sleep(0.01)
    agg.add(ROW, "log", 20, 30, "t")  # counted while the PATCH with count 2 is on its way
    writer.flush(agg, now=101.5)  # no second write of the same finding while one is under way
    gate.set()
    await writer.settle(agg)
    name = next(iter(agg.findings))
    status = kube.objects[name]["status"]
    assert status["count"] == 2 and status["shards"]["default"]["checkpoints"] == {"log": 20}
    assert agg.resume_seq("log", 30) == 20  # a crash now must read the third row again
    await flush(writer, agg, 102.0)
    assert kube.objects[name]["status"]["count"] == 3 and agg.resume_seq("log", 30) == 30


async def test_a_write_waiting_for_the_budget_carries_what_was_counted_while_it_waited(setup):
    """The body is made when the budget lets the write go: one create, one PATCH, each with every row counted
    until then, and nothing left dirty (made when queued, each would have needed another write)."""
    kube, _, writer, agg = setup
    gate = asyncio.Event()
    real_create, real_patch = kube.create_finding, kube.patch_finding

    async def create_after_budget(namespace, make_body):
        await gate.wait()
        return await real_create(namespace, make_body)

    async def patch_after_budget(namespace, name, make_patch, since=None):
        await gate.wait()
        return await real_patch(namespace, name, make_patch, since)

    kube.create_finding, kube.patch_finding = create_after_budget, patch_after_budget
    for start in range(0, 30, 10):
        agg.add(ROW, "log", start, start + 10, "t")
        writer.flush(agg, now=100.0 + start)  # the create was queued by the first flush, and waits
        await asyncio.sleep(0)
    gate.set()
    assert await writer.settle(agg)  # nothing counted is left unwritten
    [obj] = kube.objects.values()
    assert obj["status"]["count"] == 3 and [c for c, _ in kube.calls] == ["create"]
    gate.clear()
    for start in range(30, 60, 10):
        agg.add(ROW, "log", start, start + 10, "t")
        writer.flush(agg, now=200.0 + start)  # the PATCH was queued by the first flush, and waits
        await asyncio.sleep(0)
    gate.set()
    assert await writer.settle(agg)
    [obj] = kube.objects.values()
    assert [c for c, _ in kube.calls] == ["create", "patch"]
    assert obj["status"]["count"] == 6 and obj["status"]["shards"]["default"]["checkpoints"] == {"log": 60}
    assert agg.resume_seq("log", 60) == 60


async def test_events_beyond_the_first_few_per_interval_are_folded_into_one_summary():
    kube = FakeKube()
    writer = Writer(kube, DETECTION, FindingPolicy(), logging.getLogger("test"), event_interval=60.0)
    agg = Aggregator("seed", ["src_ip"], "calls from $src_ip$", max_findings=100)
    for i in range(40):
        agg.add({**ROW, "src_ip": f"10.0.0.{i}"}, "log", i * 10, i * 10 + 10, "t")
    assert await flush(writer, agg, 100.0)
    assert len(kube.objects) == 40  # every finding is written
    reasons = [r for _, _, r, _ in kube.events]
    assert reasons.count("FindingCreated") == reasons.count("SuspiciousActivity") == EVENTS_PER_WINDOW
    assert "FindingsSummary" not in reasons  # not before the interval ends
    await flush(writer, agg, 161.0)
    [summary] = [m for _, _, r, m in kube.events if r == "FindingsSummary"]
    assert summary.startswith(f"{40 - EVENTS_PER_WINDOW} more finding(s) created and 0 updated in the last 60 s")
    assert writer.events_folded == 40 - EVENTS_PER_WINDOW
    assert writer.events_posted == len(kube.events) == 2 * EVENTS_PER_WINDOW + 1


def shard_writer(kube, shard):
    writer = Writer(kube, DETECTION, FindingPolicy(), logging.getLogger(shard))
    return writer, Aggregator("seed", ["user", "src_ip"], "calls from $src_ip$", max_findings=5, shard=shard)


async def test_shards_write_their_parts_of_one_finding_concurrently_and_the_count_is_their_sum():
    kube = FakeKube()
    replicas = [shard_writer(kube, shard) for shard in ("node-a", "node-b", "node-c")]
    for round_ in range(20):
        for i, (_, agg) in enumerate(replicas):
            for line in range(i + 1):  # node-a counts one row a round, node-b two, node-c three
                start = round_ * 100 + line * 10
                agg.add(ROW, "log", start, start + 10, f"t{round_}")
        await asyncio.gather(*(flush(w, a, 100.0 + round_) for w, a in replicas))  # all at once: conflicts
    [obj] = kube.objects.values()
    parts = {shard: part["count"] for shard, part in obj["status"]["shards"].items()}
    assert parts == {"node-a": 20, "node-b": 40, "node-c": 60} and obj["status"]["count"] == 120
    assert sum(w.conflicts for w, _ in replicas) > 0  # the writes did overtake each other
    reasons = [e[2] for e in kube.events]
    assert reasons.count("FindingCreated") == 1 and "FindingUpdated" not in reasons  # one replica created it

    # A restarted replica takes its own part and checkpoint back, and the others' parts as they are.
    writer, agg = shard_writer(kube, "node-b")
    agg.load(await kube.get_finding("sec", obj["metadata"]["name"]))
    [finding] = agg.findings.values()
    assert finding.count == 40 and finding.total == 120 and agg.add(ROW, "log", 1900, 1910, "t") == "skipped"
    assert agg.add(ROW, "log", 5000, 5010, "t9") == "updated"
    assert await flush(writer, agg, 500.0)
    assert kube.objects[finding.name]["status"]["count"] == 121


async def test_shards_that_watch_the_findings_write_over_each_others_latest_writes_without_conflicts():
    for watched in (False, True):
        kube, replicas = FakeKube(), []
        for shard in ("node-a", "node-b", "node-c"):
            writer, agg = shard_writer(kube, shard)
            if watched:  # each replica's own watch, handing the finding to its running detection
                peers = PeerWrites()
                peers.follow("sec", "seed", agg)
                kube.watchers.append(peers.seen)
            replicas.append((writer, agg))
        for round_ in range(10):
            for writer, agg in replicas:  # in turn, as replicas whose flushes do not cross
                agg.add(ROW, "log", round_ * 10, round_ * 10 + 10, f"t{round_}")
                await flush(writer, agg, 100.0 + round_)
        [obj] = kube.objects.values()
        assert obj["status"]["count"] == 30 and all(p["count"] == 10 for p in obj["status"]["shards"].values())
        conflicts = sum(w.conflicts for w, _ in replicas)
        assert conflicts == 0 if watched else conflicts >= 20, (watched, conflicts)


async def test_a_finding_expires_once_and_only_as_last_read():
    kube = FakeKube()
    (wa, a), (wb, b) = shard_writer(kube, "node-a"), shard_writer(kube, "node-b")
    a.add(ROW, "log", 0, 10, "2020-01-01T00:00:00Z")
    assert await flush(wa, a, 100.0)
    b.add(ROW, "log", 0, 10, "2020-01-01T00:00:01Z")
    assert await flush(wb, b, 100.0)
    assert await wa.expire(a, ttl_seconds=60) == 0  # node-b wrote since node-a last read the finding
    assert kube.objects and await wb.expire(b, ttl_seconds=60) == 1
    await wb.settle(b)
    assert not kube.objects and [e[2] for e in kube.events].count("FindingExpired") == 1


async def test_the_findings_watch_reaches_the_running_generation_of_the_finding_s_detection():
    kube = FakeKube()
    (wa, a), (_, old), (_, b) = (shard_writer(kube, shard) for shard in ("node-a", "node-b", "node-b"))
    peers = PeerWrites()  # node-b's process: a new generation of its detection follows before the old one ends
    kube.watchers.append(peers.seen)
    peers.follow("sec", "seed", old)
    peers.follow("sec", "seed", b)
    peers.forget("sec", "seed", old)
    a.add(ROW, "log", 0, 10, "t")
    assert await flush(wa, a, 100.0)
    obj = next(iter(kube.objects.values()))
    b.load(copy.deepcopy(obj))
    a.add(ROW, "log", 10, 20, "t")
    assert await flush(wa, a, 101.0)
    assert b.findings[obj["metadata"]["name"]].total == 2  # node-a's second write, from the watch
    other = copy.deepcopy(kube.objects[obj["metadata"]["name"]])
    other["metadata"]["labels"] = {"auditwatch.io/detection": "another"}
    other["metadata"]["resourceVersion"] = "1000"
    assert not peers.seen(other) and not peers.seen({**other, "metadata": {**obj["metadata"], "namespace": "x"}})


async def test_an_expired_finding_whose_deletion_fails_is_expired_again_next_round(setup):
    kube, _, writer, agg = setup
    agg.add(ROW, "log", 0, 10, "2020-01-01T00:00:00Z")
    await flush(writer, agg, 100.0)
    real = kube.delete_finding

    async def unreachable(*args, **kwargs):
        raise ApiException(status=UNREACHABLE, reason="API server unreachable")

    kube.delete_finding = unreachable
    assert await writer.expire(agg, 3600) == 0
    assert len(agg.findings) == 1 and len(kube.objects) == 1  # kept, in memory and in the cluster
    kube.delete_finding = real
    assert await writer.expire(agg, 3600) == 1
    assert kube.objects == {} and agg.findings == {}


class Unreachable:
    """The kubernetes client's API objects when the API server refuses connections."""

    def __getattr__(self, name):
        def call(*args, **kwargs):
            raise urllib3.exceptions.MaxRetryError(None, "/apis", "connection refused")

        return call


async def test_an_unreachable_api_server_is_an_api_error_that_does_not_pause_the_budget():
    budget = WriteBudget()
    kube = Kube(budget, lambda *args: None)
    kube.custom = Unreachable()
    with pytest.raises(ApiException) as raised:
        await kube.patch_detection_status("ns", "d", {"observedGeneration": 1})
    assert raised.value.status == UNREACHABLE and "unreachable" in raised.value.reason
    assert budget.paused_until == 0.0 and budget.writes[("detection_status", "ApiException")] == 1
    with pytest.raises(ApiException):
        await kube.get_finding("ns", "f")  # reads too
