"""The operator in-process against an emulated API: create, invalid search, spec change, delete,
restart with exact counts, rotation. Same scenarios as tests/e2e, in a second each."""

import asyncio
import os

import pytest
from conftest import DETECTIONS, EVENTS, FINDINGS, detection_body, eventually

from factory import event, line

pytestmark = pytest.mark.asyncio
SEARCH = (
    'user.username="system:anonymous" | stats count BY user.username sourceIPs{} '
    "| rename sourceIPs{} as src_ip, user.username as user"
)


def counts(h):
    return {f["spec"]["key"]["src_ip"]: f.get("status", {}).get("count", 0) for f in h.objects(FINDINGS)}


def checkpoint(h, name):
    sources = (h.get(DETECTIONS, name) or {}).get("status", {}).get("shards", {}).get("default", {}).get("sources") or [
        {}
    ]
    return (sources[0].get("file") or {}).get("offset")


def condition(h, name, kind="Ready"):
    obj = h.get(DETECTIONS, name) or {}
    return next((c for c in obj.get("status", {}).get("conditions", []) if c["type"] == kind), {})


async def test_create_gives_findings_and_events(harness):
    h = harness
    h.write(line(event(ips=["10.0.0.1"])), line(event(ips=["10.0.0.2"])), line(event(username="alice")),
            line(event(ips=["10.0.0.1"])))  # fmt: skip
    await h.apply(detection_body("seed", h.log, SEARCH))
    await eventually(lambda: counts(h) == {"10.0.0.1": 2, "10.0.0.2": 1}, what="two findings")
    finding = h.objects(FINDINGS)[0]
    assert finding["metadata"]["ownerReferences"][0]["name"] == "seed"

    def reasons():
        return sorted(e["reason"] for e in h.objects(EVENTS))

    await eventually(lambda: reasons() == ["FindingCreated"] * 2 + ["SuspiciousActivity"] * 2, what="4 Events")
    await eventually(lambda: condition(h, "seed").get("status") == "True", what="Ready=True")
    size = os.path.getsize(h.log)  # the checkpoint follows the findings' writes
    status = await eventually(
        lambda: (
            (s := h.get(DETECTIONS, "seed")["status"])["shards"]["default"]["sources"][0]["file"]["offset"] == size
            and s
        )
    )
    assert status["counters"]["matched"] == 3
    assert {kind for kind, _ in h.k.written} >= {"finding", "status"}  # each checked against its model
    created = [w for kind, w in h.k.written if kind == "finding"]
    assert len(created) == 2  # one write made each finding, its count and checkpoint in it
    assert all(f.status.count >= 1 and f.status.shards["default"].checkpoints["log"] > 0 for f in created)


async def test_an_invalid_search_sets_the_condition_and_a_warning(harness):
    h = harness
    await h.apply(detection_body("bad", h.log, "a=1 | stats count BY"))
    cond = await eventually(lambda: condition(h, "bad").get("reason") == "InvalidSearch" and condition(h, "bad"))
    assert cond["status"] == "False" and cond["message"].endswith("got end of search at column 21")
    await eventually(lambda: any(e["reason"] == "InvalidSearch" and e["type"] == "Warning" for e in h.objects(EVENTS)))


async def test_a_spec_change_switches_plans_and_keeps_the_position(harness):
    h = harness
    h.write(line(event(ips=["10.0.0.1"])))
    await h.apply(detection_body("d", h.log, SEARCH))
    await eventually(lambda: counts(h) == {"10.0.0.1": 1})
    await h.apply(detection_body("d", h.log, SEARCH.replace("system:anonymous", "alice")))
    await eventually(lambda: h.get(DETECTIONS, "d").get("status", {}).get("observedGeneration") == 2, what="gen 2")
    h.write(line(event(username="alice", ips=["10.0.0.9"])), line(event(ips=["10.0.0.1"])))
    await eventually(lambda: counts(h) == {"10.0.0.1": 1, "10.0.0.9": 1}, what="alice counted, not re-read")
    await asyncio.sleep(0.3)
    assert counts(h) == {"10.0.0.1": 1, "10.0.0.9": 1}


async def test_delete_stops_the_detection_and_its_findings_go(harness):
    h = harness
    h.write(line(event()))
    await h.apply(detection_body("gone", h.log, SEARCH))
    await eventually(lambda: h.objects(FINDINGS), what="a finding")
    await h.delete("gone")
    await eventually(lambda: h.get(DETECTIONS, "gone") is None, what="the finalizer removed and the object gone")
    await eventually(lambda: not h.objects(FINDINGS), what="its findings collected")


async def test_restart_after_a_crash_between_finding_and_checkpoint_counts_exactly(harness):
    """The worst moment: findings written, the detection's checkpoint not. No line may count twice."""
    h = harness
    h.write(*[line(event(ips=[f"10.0.0.{i % 3}"])) for i in range(30)])
    await h.apply(detection_body("exact", h.log, SEARCH))
    await eventually(lambda: sum(counts(h).values()) == 30, what="30 counted")
    size = os.path.getsize(h.log)
    await eventually(lambda: checkpoint(h, "exact") == size, what="the checkpoint at the end of the log")
    # The API now refuses the detection's status: findings keep being written, the checkpoint stays.
    h.k.refuse.add((DETECTIONS, "status"))
    h.write(*[line(event(ips=[f"10.0.0.{i % 3}"])) for i in range(20)])
    await eventually(lambda: sum(counts(h).values()) == 50, what="50 counted")
    assert checkpoint(h, "exact") == size < os.path.getsize(h.log)  # so a restart reads those 20 lines again
    await h.stop_operator()
    h.k.refuse.clear()  # the API accepts status writes again
    h.write(*[line(event(ips=["10.0.0.7"])) for _ in range(5)])
    await h.start_operator()
    await eventually(lambda: sum(counts(h).values()) == 55, what="55 counted after the restart")
    await asyncio.sleep(0.5)
    assert counts(h) == {"10.0.0.0": 17, "10.0.0.1": 17, "10.0.0.2": 16, "10.0.0.7": 5}


async def test_rotation_is_followed_without_loss(harness):
    h = harness
    h.write(line(event(ips=["10.0.0.1"])))
    await h.apply(detection_body("rot", h.log, SEARCH))
    await eventually(lambda: counts(h) == {"10.0.0.1": 1})
    h.write(line(event(ips=["10.0.0.1"])))
    os.rename(h.log, h.log.with_name("audit-2026-11-27T10-00-00.000.log"))
    h.write(line(event(ips=["10.0.0.1"])), line(event(ips=["10.0.0.2"])))
    await eventually(lambda: counts(h) == {"10.0.0.1": 3, "10.0.0.2": 1}, what="counts across the rotation")


async def test_webhook_batches_become_findings(harness):
    import aiohttp

    h = harness
    body = detection_body("hook", h.log, SEARCH)
    body["spec"]["sources"] = [{"name": "apiserver", "webhook": {"path": "/audit"}}]
    await h.apply(body)
    await eventually(lambda: condition(h, "hook").get("status") == "True", what="Ready=True")
    items = [event(ips=["10.0.0.1"]), event(ips=["10.0.0.1"]), event(username="alice"), event(ips=["10.0.0.5"])]
    async with aiohttp.ClientSession() as session:
        url = f"http://127.0.0.1:{h.webhook_port}/audit"
        async with session.post(url, json={"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": items}) as r:
            assert r.status == 200
    await eventually(lambda: counts(h) == {"10.0.0.1": 2, "10.0.0.5": 1}, what="findings from one batch")


async def test_a_windowed_detection_counts_exactly_across_a_restart(harness):
    """`where count > 5` needs the window's state: a restart rebuilds it from the log, counting nothing twice."""
    h = harness
    search = (
        '"user.groups{}"="system:unauthenticated" "responseStatus.code"=403 | stats count values(requestURI) as uris '
        "BY sourceIPs{} | where count > 5 | rename sourceIPs{} as src_ip"
    )
    scans = [line(event(ips=["10.9.9.9"], uri=f"/p{i}", ts=f"2026-11-27T10:00:{i:02d}Z")) for i in range(10)]
    await h.apply(detection_body("scan", h.log, search, group_by=["src_ip"]))
    h.write(*scans[:4])
    await eventually(
        lambda: (h.get(DETECTIONS, "scan") or {}).get("status", {}).get("counters", {}).get("matched") == 4
    )
    assert h.objects(FINDINGS) == []  # 4 requests: not a scan yet
    h.write(*scans[4:7])
    await eventually(lambda: counts(h) == {"10.9.9.9": 7}, what="a finding once the 6th request arrives")
    h.k.refuse.add((DETECTIONS, "status"))
    h.write(*scans[7:9])
    await eventually(lambda: counts(h) == {"10.9.9.9": 9})
    await h.stop_operator()
    h.k.refuse.clear()
    h.write(scans[9])
    await h.start_operator()
    await eventually(lambda: counts(h) == {"10.9.9.9": 10}, what="10 after the restart")
    await asyncio.sleep(0.5)
    assert counts(h) == {"10.9.9.9": 10}
    [finding] = h.objects(FINDINGS)
    assert len(finding["status"]["values"]["uris"]) == 10


async def test_detections_outside_the_allowed_namespaces_do_not_run(harness):
    """A team namespace's detection would read the whole cluster's audit trail: refused, nothing read."""
    h = harness
    await h.stop_operator()
    h.settings = h.settings.model_copy(update={"detection_namespaces": ("sec",)})
    await h.start_operator()
    h.write(line(event(ips=["10.0.0.1"])))
    elsewhere = detection_body("nosy", h.log, SEARCH)
    elsewhere["metadata"]["namespace"] = "team-a"
    await h.apply(elsewhere)
    await h.apply(detection_body("allowed", h.log, SEARCH))
    await eventually(lambda: counts(h) == {"10.0.0.1": 1}, what="the allowed detection's finding")
    nosy = await eventually(lambda: h.get(DETECTIONS, "nosy", "team-a").get("status", {}).get("conditions"))
    ready = next(c for c in nosy if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "NamespaceNotAllowed")
    assert ready["message"].startswith("metadata.namespace: the operator runs detections only in sec")
    assert {f["metadata"]["namespace"] for f in h.objects(FINDINGS)} == {"sec"}


def counts_of(h, detection):
    return {
        f["spec"]["key"]["src_ip"]: f.get("status", {}).get("count", 0)
        for f in h.objects(FINDINGS)
        if f["spec"]["detection"] == detection
    }


async def test_detections_sharing_a_file_keep_exact_independent_counts(harness):
    """Three detections on one file: one shared tail; a spec change, a deletion, a late arrival and an
    operator restart disturb none of the others' counts."""
    h = harness
    h.write(*[line(event(ips=[f"10.0.0.{i % 2}"])) for i in range(10)])
    await h.apply(detection_body("a", h.log, SEARCH))
    await h.apply(detection_body("b", h.log, SEARCH))
    await h.apply(detection_body("gone", h.log, SEARCH))
    expected = {"10.0.0.0": 5, "10.0.0.1": 5}
    for name in ("a", "b", "gone"):
        await eventually(lambda n=name: counts_of(h, n) == expected, what=f"{name}'s counts")
    # b now counts alice's requests instead; "gone" is deleted; both while lines keep coming.
    await h.apply(detection_body("b", h.log, SEARCH.replace("system:anonymous", "alice")))
    await h.delete("gone")
    await eventually(lambda: h.get(DETECTIONS, "b")["status"].get("observedGeneration") == 2, what="b's gen 2")
    h.write(*[line(event(ips=["10.0.0.0"])) for _ in range(5)], line(event(username="alice", ips=["10.0.0.9"])))
    await eventually(lambda: counts_of(h, "a") == {"10.0.0.0": 10, "10.0.0.1": 5}, what="a undisturbed")
    await eventually(lambda: counts_of(h, "b") == {**expected, "10.0.0.9": 1}, what="b's new spec, no re-read")
    # A detection added later reads the file from its start on its own, then joins the shared tail.
    await h.apply(detection_body("late", h.log, SEARCH))
    h.write(line(event(ips=["10.0.0.1"])))
    await eventually(lambda: counts_of(h, "late") == {"10.0.0.0": 10, "10.0.0.1": 6}, what="late caught up")
    await eventually(lambda: counts_of(h, "a") == {"10.0.0.0": 10, "10.0.0.1": 6}, what="a counted it once")
    await h.stop_operator()
    h.write(*[line(event(ips=["10.0.0.5"])) for _ in range(3)])
    await h.start_operator()
    after = {"10.0.0.0": 10, "10.0.0.1": 6, "10.0.0.5": 3}
    await eventually(lambda: counts_of(h, "a") == counts_of(h, "late") == after, what="counts after the restart")
    await asyncio.sleep(0.5)
    assert counts_of(h, "a") == counts_of(h, "late") == after
    assert counts_of(h, "b") == {**expected, "10.0.0.9": 1}
    assert counts_of(h, "gone") == {}


async def test_writes_under_a_small_budget_and_429s_lose_nothing(harness):
    """60 findings through a budget of 5 writes/s, the first 10 finding writes refused with 429: every
    count exact in the end, the throttling shown in the status, Events folded."""
    h = harness
    await h.stop_operator()
    h.settings = h.settings.model_copy(update={"write_qps": 5.0, "write_burst": 2})
    h.k.throttle = 10
    await h.start_operator()
    h.write(*[line(event(ips=[f"10.0.1.{i % 60}"])) for i in range(180)])
    await h.apply(detection_body("budget", h.log, SEARCH))
    expected = {f"10.0.1.{i}": 3 for i in range(60)}
    await eventually(lambda: counts(h) == expected, timeout=60, what="every count written")
    assert h.k.throttle == 0

    def status():  # written once the findings' writes let it (they come first: each is a count shown)
        return h.get(DETECTIONS, "budget").get("status") or {"shards": {"default": {"writes": {}}}, "counters": {}}

    await eventually(lambda: status()["shards"]["default"]["writes"].get("throttled", 0) >= 10, what="the 429s")
    reasons = [e["reason"] for e in h.objects(EVENTS)]
    assert reasons.count("FindingCreated") <= 5 + 1  # the first few per interval, not one per finding
    await eventually(lambda: status()["counters"].get("eventsFolded", 0) >= 54, what="folded")


async def test_a_detection_made_again_under_its_name_neither_counts_into_nor_loses_with_the_old_findings(harness):
    """Deleted and applied again at once (`kubectl replace --force`, a GitOps re-create): the old detection's
    findings, of the same names, wait for the garbage collector. The new one adopts none of them, and its
    first write of one replaces it, so its counts are its own (the old count was 1000 here)."""
    h = harness

    async def collector_behind() -> None:  # the garbage collector has not come to them yet
        return None

    h.k._collect_garbage = collector_behind
    h.write(*[line(event(ips=["10.0.0.1"])) for _ in range(3)])
    await h.apply(detection_body("again", h.log, SEARCH))
    await eventually(lambda: counts(h) == {"10.0.0.1": 3}, what="the first detection's finding")
    await h.stop_operator()
    [old] = h.objects(FINDINGS)
    old_owner = old["metadata"]["ownerReferences"][0]["uid"]
    for (resource, _, name), obj in list(h.k.objects.items()):  # deleted; its garbage not collected yet
        if resource == DETECTIONS and name == "again":
            obj.delete()
    old["status"]["count"] = old["status"]["shards"]["default"]["count"] = 1000
    h.write(*[line(event(ips=["10.0.0.1"])) for _ in range(2)])
    await h.start_operator()
    await h.apply(detection_body("again", h.log, SEARCH))  # a new object: a new uid
    new_owner = await eventually(lambda: (d := h.get(DETECTIONS, "again")) and d["metadata"]["uid"], what="made")
    assert new_owner != old_owner
    await eventually(lambda: counts(h) == {"10.0.0.1": 5}, what=lambda: f"its own count, 5: {counts(h)}")
    [finding] = h.objects(FINDINGS)
    assert finding["metadata"]["ownerReferences"][0]["uid"] == new_owner
