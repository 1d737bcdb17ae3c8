"""Writing findings: create-or-patch, coalescing, Events, and failures that keep the checkpoint back."""

import asyncio
import logging

import pytest

from auditwatch.api.models import FindingPolicy
from auditwatch.budget import WriteBudget
from auditwatch.findings.aggregate import Aggregator
from auditwatch.findings.writer import EVENTS_PER_WINDOW, Writer
from auditwatch.kube import ApiException

pytestmark = pytest.mark.asyncio
DETECTION = {"apiVersion": "auditwatch.io/v1alpha1", "kind": "AuditDetection",
             "metadata": {"name": "seed", "namespace": "sec", "uid": "d-uid",
                          "labels": {"mitre-attack.escu.splunk.com/T1552.007": "true", "team": "sec"}}}  # fmt: skip
ROW = {"user": "system:anonymous", "src_ip": "10.0.0.1", "count": 1}


class FakeKube:
    """The writer's side of the API, in memory (the e2e tests use the real one)."""

    def __init__(self):
        self.objects: dict[str, dict] = {}
        self.calls: list[tuple[str, str]] = []
        self.events: list[tuple[str, str, str, str]] = []
        self.fail_patch = False
        self.budget = WriteBudget()

    async def post_event(self, obj, kind, reason, message):
        self.events.append((obj["metadata"]["name"], kind, reason, message))

    async def create_finding(self, namespace, body):
        name = body["metadata"]["name"]
        self.calls.append(("create", name))
        if name in self.objects:
            raise ApiException(status=409, reason="AlreadyExists")
        self.objects[name] = {**body, "metadata": {**body["metadata"], "uid": f"uid-{name}"}}
        return self.objects[name]

    async def get_finding(self, namespace, name):
        self.calls.append(("get", name))
        return self.objects[name]

    async def patch_finding_status(self, namespace, name, status, since=None):
        self.calls.append(("patch", name))
        if self.fail_patch:
            raise ApiException(status=500, reason="InternalError")
        self.objects[name]["status"] = {**self.objects[name].get("status", {}), **status}  # a merge patch
        return self.objects[name]

    async def delete_finding(self, namespace, name):
        self.calls.append(("delete", name))
        self.objects.pop(name, None)


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


async def test_first_write_creates_the_object_then_patches_its_status(setup):
    kube, events, writer, agg = setup
    agg.add(ROW, "log", 0, 10, "t1")
    assert await flush(writer, agg, 100.0)
    [(name, obj)] = kube.objects.items()
    assert obj["spec"] == {"detection": "seed", "key": {"user": "system:anonymous", "src_ip": "10.0.0.1"},
                           "message": "calls from 10.0.0.1", "severity": "low", "riskScore": 20,
                           "mitre": "T1552.007"}  # fmt: skip
    assert obj["metadata"]["labels"] == {"auditwatch.io/detection": "seed"}
    assert obj["metadata"]["ownerReferences"][0]["uid"] == "d-uid"
    assert obj["status"]["count"] == 1 and obj["status"]["checkpoints"] == {"log": 10}
    assert [(n, k, r) for n, k, r, _ in events] == [("seed", "Warning", "FindingCreated"),
                                                    (name, "Warning", "SuspiciousActivity")]  # fmt: skip


async def test_writes_are_coalesced_to_one_per_second_per_finding(setup):
    kube, _, writer, agg = setup
    agg.add(ROW, "log", 0, 10, "t")
    await flush(writer, agg, 100.0)
    for i in range(50):
        agg.add(ROW, "log", 10 + i * 10, 20 + i * 10, "t")
        assert not await flush(writer, agg, 100.5)  # due in a second: not written, not complete
    assert [c for c, _ in kube.calls].count("patch") == 1
    assert await flush(writer, agg, 101.0)
    assert [c for c, _ in kube.calls].count("patch") == 2
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
    kube.fail_patch = True
    agg.add(ROW, "log", 40, 50, "t")
    assert not await flush(writer, agg, 100.0)
    assert agg.resume_seq("log", 1000) == 40  # the detection checkpoint may not pass the unwritten line
    kube.fail_patch = False
    assert await flush(writer, agg, 101.0)
    assert agg.resume_seq("log", 1000) == 1000


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
    real_patch = kube.patch_finding_status

    async def slow_patch(namespace, name, status, since=None):
        await gate.wait()
        return await real_patch(namespace, name, status)

    kube.patch_finding_status = slow_patch
    agg.add(ROW, "log", 10, 20, "t")
    writer.flush(agg, now=101.0)
    await asyncio.sleep(0.01)
    agg.add(ROW, "log", 20, 30, "t")  # counted while the PATCH with count 2 is on its way
    writer.flush(agg, now=101.5)  # no second write of the same finding while one is under way
    gate.set()
    await writer.settle(agg)
    name = next(iter(agg.findings))
    assert kube.objects[name]["status"]["count"] == 2 and kube.objects[name]["status"]["checkpoints"] == {"log": 20}
    assert agg.resume_seq("log", 30) == 20  # a crash now must read the third row again
    await flush(writer, agg, 102.0)
    assert kube.objects[name]["status"]["count"] == 3 and agg.resume_seq("log", 30) == 30


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
