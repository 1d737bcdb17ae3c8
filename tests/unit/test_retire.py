"""Retiring gone shards' parts (findings/retire.py, runtime/retire.py): counts never change, a status stays
under its caps however many nodes come and go, and a shard back under its name counts nothing twice."""

import copy
import logging

import pytest

from auditwatch.api.models import (
    MAX_RETIRED,
    AuditDetectionStatus,
    CounterStatus,
    DetectionFindingStatus,
    FindingPolicy,
    RetiredParts,
    RetiredShards,
    ShardStatus,
    SourceStatus,
)
from auditwatch.findings.aggregate import Aggregator
from auditwatch.findings.retire import reclaim_detection, retire_detection, retire_finding
from auditwatch.findings.writer import Writer
from auditwatch.kube.client import ApiException
from auditwatch.runtime.retire import retire_gone_shards
from auditwatch.runtime.shards import ShardLeases
from fake_kube import FakeKube, merge_patch

DETECTION = {"apiVersion": "auditwatch.io/v1alpha1", "kind": "AuditDetection",
             "metadata": {"name": "seed", "namespace": "sec", "uid": "d-uid"}}  # fmt: skip
ROW = {"user": "system:anonymous", "src_ip": "10.0.0.1"}
LOG = logging.getLogger("test")


def part(count, seen, checkpoint=0):
    return {"count": count, "firstSeen": seen, "lastSeen": seen, "checkpoints": {"log": checkpoint or count}}


async def write_all(kube, aggregator, now):
    """What ``aggregator`` counted, written by its replica's writer."""
    writer = Writer(kube, DETECTION, FindingPolicy(severity="low", riskScore=20), LOG)
    writer.flush(aggregator, now)
    await writer.settle(aggregator)


async def counted(kube, shard, events):
    """The replica of ``shard`` after counting ``events`` of one finding and writing it: its aggregator
    and the finding's name."""
    aggregator = Aggregator("seed", ["user", "src_ip"], "", max_findings=10, shard=shard)
    aggregator.add(ROW, "log", 0, 100, "2026-01-01T00:00:00Z", events=events)
    await write_all(kube, aggregator, 100.0)
    [name] = kube.objects
    return aggregator, name


def cp2_gone_an_hour(kube):
    """cp-0's view of the Leases: cp-0 alone, cp-2's gone for an hour."""
    leases = ShardLeases(kube, "auditwatch", "cp-0", None, lease_seconds=40)
    leases.observe([("cp-0", "1")], now=0.0)
    leases.gone_for("cp-2")
    leases._gone["cp-2"] -= 3600
    return leases


def detection(shards):
    return {**DETECTION, "metadata": {**DETECTION["metadata"], "resourceVersion": "7"}, "status": {"shards": shards}}


def total(status):
    """What a finding's count must be: its live parts and its retired ones."""
    return sum(p["count"] for p in status.get("shards", {}).values()) + status.get("retired", {}).get("count", 0)


def test_retiring_moves_a_part_into_the_retired_total_and_the_count_stays():
    status = {"count": 6, "shards": {"cp-0": part(1, "2026-01-01T00:00:00Z"), "cp-1": part(5, "2026-01-02T00:00:00Z")}}
    assert retire_finding(status, ["cp-9"]) is None  # nothing of that shard here: no write
    after = merge_patch(status, retire_finding(status, ["cp-1"]))
    DetectionFindingStatus.model_validate(after)  # as the CRD's schema takes it
    assert after["shards"] == {"cp-0": part(1, "2026-01-01T00:00:00Z")} and total(after) == after["count"] == 6
    assert after["retired"]["shards"] == {"cp-1": part(5, "2026-01-02T00:00:00Z")}
    assert (after["retired"]["firstSeen"], after["retired"]["lastSeen"]) == ("2026-01-02T00:00:00Z",) * 2


def test_a_hundred_rolling_upgrades_keep_a_finding_under_its_caps_and_its_count():
    """Three control-plane nodes replaced 100 times, each new node with a new name: at most 3 live parts and
    16 retired ones, whatever the number of upgrades; the total is every part ever counted."""
    status, counted = {}, 0
    for upgrade in range(100):
        nodes = [f"cp-{upgrade}-{i}" for i in range(3)]
        seen = f"2026-01-01T00:{upgrade // 60:02d}:{upgrade % 60:02d}Z"
        status = merge_patch(status, {"shards": {n: part(upgrade + i + 1, seen) for i, n in enumerate(nodes)}})
        counted += sum(upgrade + i + 1 for i in range(3))
        status = merge_patch(status, retire_finding(status, nodes) or {})
        status["count"] = total(status)
        DetectionFindingStatus.model_validate(status)
        assert not status["shards"] and len(status["retired"]["shards"]) == min(3 * (upgrade + 1), MAX_RETIRED)
    assert status["count"] == counted
    assert min(status["retired"]["shards"]) >= "cp-94"  # the latest retired parts are the ones kept whole


def test_a_detection_status_keeps_the_latest_retired_shards_and_every_counter():
    status = {}
    for i in range(40):
        shard = f"cp-{i:02d}"
        mine = ShardStatus(sources=[SourceStatus(name="log", seq=i)], counters=CounterStatus(lines=10, matched=i))
        status = merge_patch(status, {"shards": {shard: mine.model_dump(mode="json", exclude_unset=True)}})
        status = merge_patch(status, retire_detection(status, [shard]))
        AuditDetectionStatus.model_validate(status)
    retired = RetiredShards.model_validate(status["retired"])
    assert not status["shards"] and retired.counters.lines == 400 and retired.counters.matched == sum(range(40))
    assert len(retired.shards) == len(retired.retiredAt) <= MAX_RETIRED and "cp-39" in retired.shards
    back, patch = reclaim_detection(retired, "cp-39")
    assert back.sources[0].seq == 39  # where that shard's replica resumes
    after = RetiredShards.model_validate(merge_patch(status["retired"], patch))
    assert "cp-39" not in after.shards and after.counters.lines == 390 and after.counters.matched == sum(range(39))
    assert reclaim_detection(retired, "cp-00") is None  # retired before 16 others: in the totals only


@pytest.mark.asyncio
async def test_a_shard_back_under_its_name_takes_its_part_back_and_counts_nothing_twice():
    kube = FakeKube()
    _, name = await counted(kube, "cp-1", 7)
    obj = kube.objects[name]
    kube.objects[name] = obj = merge_patch(obj, {"status": retire_finding(obj["status"], ["cp-1"])})
    assert obj["status"]["count"] == 7 and "cp-1" not in obj["status"]["shards"]

    back = Aggregator("seed", ["user", "src_ip"], "", max_findings=10, shard="cp-1")  # its replica, back
    back.load(obj)
    finding = back.findings[name]
    assert (finding.count, finding.total, finding.dirty) == (7, 7, True)  # its part, to take back
    assert back.add(ROW, "log", 0, 100, "2026-01-01T00:00:00Z", events=7) == "skipped"  # read again: in already
    assert back.add(ROW, "log", 100, 150, "2026-01-01T00:01:00Z", events=2) == "updated"
    await write_all(kube, back, 200.0)
    status = kube.objects[name]["status"]
    assert status["shards"]["cp-1"]["count"] == 9 and status["count"] == total(status) == 9
    assert status["retired"] == {"count": 0, "firstSeen": "2026-01-01T00:00:00Z", "lastSeen": "2026-01-01T00:00:00Z",
                                 "shards": {}}  # fmt: skip


@pytest.mark.asyncio
async def test_a_retirement_that_crosses_the_shard_s_return_is_undone_by_its_next_write():
    kube = FakeKube()
    live, name = await counted(kube, "cp-1", 3)
    obj = kube.objects[name]
    retired = merge_patch(obj, {"status": retire_finding(obj["status"], ["cp-1"])})
    retired["metadata"]["resourceVersion"] = "99"
    live.observe(retired)  # seen on the watch while cp-1 still counts
    assert live.findings[name].total == 3 and live.findings[name].dirty  # not counted twice meanwhile
    kube.objects[name] = retired
    await write_all(kube, live, 200.0)
    status = kube.objects[name]["status"]
    assert status["shards"]["cp-1"]["count"] == 3 and status["retired"]["count"] == 0 and status["count"] == 3


@pytest.mark.asyncio
async def test_one_replica_retires_a_shard_gone_long_enough_findings_first():
    kube, calls = FakeKube(), []
    live, name = await counted(kube, "cp-0", 3)
    kube.objects[name] = merge_patch(
        kube.objects[name], {"status": {"count": 8, "shards": {"cp-2": part(5, "2026-01-01T00:00:00Z")}}}
    )

    async def list_findings(namespace, detection):
        return copy.deepcopy(list(kube.objects.values()))

    async def patch_detection_status(namespace, name, status, since=None, resource_version=""):
        calls.append((status, resource_version))

    kube.list_findings, kube.patch_detection_status = list_findings, patch_detection_status
    body = detection({"cp-0": {}, "cp-1": {}, "cp-2": {"counters": {"lines": 4}}})
    leases = ShardLeases(kube, "auditwatch", "cp-0", None, lease_seconds=40)
    leases.observe([("cp-0", "1"), ("cp-1", "1")], now=0.0)
    assert await retire_gone_shards(kube, body, leases, 3600, live, LOG) == []  # gone for 0 s so far
    leases._gone["cp-2"] -= 3600  # as if seen gone an hour ago
    other = ShardLeases(kube, "auditwatch", "cp-1", None, lease_seconds=40)
    other.observe([("cp-0", "1"), ("cp-1", "1")])
    assert not other.retires() and leases.retires()  # the smallest live shard's replica does it
    assert await retire_gone_shards(kube, body, leases, 3600, live, LOG) == ["cp-2"]
    status = kube.objects[name]["status"]
    assert set(status["shards"]) == {"cp-0"} and status["retired"]["count"] == 5 and status["count"] == 8
    assert live.findings[name].resource_version == kube.objects[name]["metadata"]["resourceVersion"]
    [(patch, version)] = calls
    assert version == "7" and patch["shards"] == {"cp-2": None} and patch["retired"]["counters"]["lines"] == 4
    assert RetiredParts.model_validate(status["retired"]).shards["cp-2"].count == 5


@pytest.mark.asyncio
async def test_a_status_written_by_another_replica_meanwhile_is_read_again():
    """Every replica writes the detection's status each second, and kopf's view of it lags: a 409 on the
    status move reads the status again and retries, as for findings."""
    kube, calls = FakeKube(), []
    stale = detection({"cp-0": {}, "cp-2": {"counters": {"lines": 4}}})
    fresh = {**stale, "metadata": {**stale["metadata"], "resourceVersion": "9"},
             "status": {"shards": {"cp-0": {}, "cp-2": {"counters": {"lines": 6}}}}}  # fmt: skip

    async def list_findings(namespace, detection):
        return []

    async def get_detection(namespace, name):
        return fresh

    async def patch_detection_status(namespace, name, status, since=None, resource_version=""):
        calls.append((resource_version, status["retired"]["counters"]["lines"]))
        if resource_version != "9":
            raise ApiException(status=409, reason="Conflict")

    kube.list_findings, kube.get_detection, kube.patch_detection_status = (
        list_findings,
        get_detection,
        patch_detection_status,
    )
    leases = cp2_gone_an_hour(kube)
    assert await retire_gone_shards(kube, stale, leases, 3600, Aggregator("seed", ["user"], "", 10), LOG) == ["cp-2"]
    assert calls == [("7", 4), ("9", 6)]  # the move made again from the status as it is


@pytest.mark.asyncio
async def test_the_status_keeps_a_shard_while_a_finding_still_holds_a_part_of_it():
    """Found by the soak run: the finding's move lost every attempt to the other replicas' writes, the
    status moved anyway, and the finding's part was never retired (the next rounds look at the status)."""
    kube, calls = FakeKube(), []
    live, name = await counted(kube, "cp-0", 3)
    kube.objects[name] = merge_patch(
        kube.objects[name], {"status": {"count": 8, "shards": {"cp-2": part(5, "2026-01-01T00:00:00Z")}}}
    )
    patch_finding = kube.patch_finding

    async def busy(namespace, name, make_patch, since=None):  # another replica wrote first, every time
        kube.objects[name]["metadata"]["resourceVersion"] += "0"
        return await patch_finding(namespace, name, make_patch, since)

    async def list_findings(namespace, detection):
        return copy.deepcopy(list(kube.objects.values()))

    async def patch_detection_status(namespace, name, status, since=None, resource_version=""):
        calls.append(status)

    kube.list_findings, kube.patch_detection_status, kube.patch_finding = list_findings, patch_detection_status, busy
    body, leases = detection({"cp-0": {}, "cp-2": {}}), cp2_gone_an_hour(kube)
    assert await retire_gone_shards(kube, body, leases, 3600, live, LOG) == []
    assert calls == [] and "cp-2" in kube.objects[name]["status"]["shards"]
    kube.patch_finding = patch_finding  # the writes calm down: the next round retires it
    assert await retire_gone_shards(kube, body, leases, 3600, live, LOG) == ["cp-2"]
    assert "cp-2" not in kube.objects[name]["status"]["shards"] and len(calls) == 1


@pytest.mark.asyncio
async def test_the_move_is_made_from_the_finding_as_the_watch_last_showed_it():
    """Listed a while ago, written by the others since: the move's PATCH takes the precondition and the
    parts from the finding as this replica holds it when the budget lets the write go, not a 409 and a read."""
    kube = FakeKube()
    live, name = await counted(kube, "cp-0", 3)
    kube.watchers.append(live.observe)

    async def cp2_writes(count):  # cp-2's replica, before it went; the watch shows each write
        part_ = part(count, "2026-01-01T00:00:00Z")
        await kube.patch_finding("sec", name, lambda: {"status": {"shards": {"cp-2": part_}}})

    await cp2_writes(2)
    listed = copy.deepcopy(kube.objects[name])
    await cp2_writes(4)  # after the listing

    async def list_findings(namespace, detection):
        return [listed]

    async def patch_detection_status(namespace, name, status, since=None, resource_version=""):
        pass

    kube.list_findings, kube.patch_detection_status = list_findings, patch_detection_status
    body, leases = detection({"cp-0": {}, "cp-2": {}}), cp2_gone_an_hour(kube)
    kube.calls.clear()
    assert await retire_gone_shards(kube, body, leases, 3600, live, LOG) == ["cp-2"]
    assert kube.calls == [("patch", name)]  # no conflict, no read
    assert kube.objects[name]["status"]["retired"]["count"] == 4  # cp-2's latest part, not the listed one
