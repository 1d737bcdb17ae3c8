"""Alerts: the receivers' file, what each receiver gets, retries, severity filters and a full queue,
against a real HTTP server on loopback (tests/receivers.py); Alertmanager itself is in the e2e tests."""

import asyncio
import logging

import pytest
from test_writer import DETECTION, ROW, FakeKube, flush

from auditwatch.api.models import FindingPolicy
from auditwatch.findings.aggregate import Aggregator
from auditwatch.findings.alerts import AlertConfig, AlertConfigError, Notice, Notifier, load_config
from auditwatch.findings.writer import Writer
from receivers import Recorder

NOTICE = Notice(what="created", detection="seed", namespace="sec", finding="seed-0a1b2c3d4e",
                key={"user": "system:anonymous", "src.ip": "10.0.0.1"}, message="anonymous calls from 10.0.0.1",
                count=3, first_seen="2026-11-30T00:00:00Z", last_seen="2026-11-30T00:01:00Z", severity="high",
                risk_score=70, mitre="T1204,T1552.007")  # fmt: skip


@pytest.fixture
def recorder():
    r = Recorder()
    yield r
    r.close()


def config(*receivers, **more):
    return AlertConfig.model_validate({"receivers": list(receivers), **more})


async def until(check, timeout=10.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("receivers: []", "receivers: List should have at least 1 item"),
        ("receivers: [{name: a, type: pager, endpoint: {url: http://x}}]", "receivers.0.type: Input should be"),
        ("receivers: [{name: a, type: slack, endpoint: {}}]", "receivers.0.endpoint: Value error, give exactly one"),
        ("receivers: [{name: a, type: slack, endpoint: {urlFile: /nonexistent/url}}]",
         "receiver a: endpoint.urlFile /nonexistent/url is not a readable file"),
        ("receivers: [{name: a, type: webhook, endpoint: {url: http://x}}, {name: a, type: slack, endpoint: "
         "{url: http://y}}]", "receiver names repeat: a, a"),
        ("receivers: [{name: a, type: webhook, endpoint: {url: http://x}}]\nupdateInterval: soon",
         "updateInterval: String should match pattern"),
        ("receivers: [{name: a, type: webhook, endpoint: {url: http://x}, severity: high}]",
         "receivers.0.severity: Extra inputs are not permitted"),
        ("receivers: [", "not YAML"),
    ],
)  # fmt: skip
def test_a_bad_alerts_file_is_refused_naming_the_field(tmp_path, text, message):
    path = tmp_path / "alerts.yaml"
    path.write_text(text)
    with pytest.raises(AlertConfigError) as err:
        load_config(path)
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value)


async def test_each_receiver_gets_its_own_format_with_credentials_read_from_files(recorder, tmp_path):
    (tmp_path / "token").write_text("s3cret\n")
    (tmp_path / "slack-url").write_text(f"{recorder.url}/slack\n")
    notifier = Notifier(config(
        {"name": "am", "type": "alertmanager", "endpoint": {"url": f"{recorder.url}/am"}},
        {"name": "hook", "type": "webhook", "endpoint": {"url": f"{recorder.url}/hook",
                                                          "bearerTokenFile": str(tmp_path / "token")}},
        {"name": "chat", "type": "slack", "endpoint": {"urlFile": str(tmp_path / "slack-url")}},
    ), api_url="https://10.96.0.1:443")  # fmt: skip
    notifier.start()
    delivered = []
    notifier.notify(NOTICE, delivered.append)
    await until(lambda: delivered)
    await notifier.stop()
    paths = sorted(p for p, _, _ in recorder.posts)
    assert paths == ["/am/api/v2/alerts", "/hook", "/slack"] and delivered == [NOTICE]
    link = "https://10.96.0.1:443/apis/auditwatch.io/v1alpha1/namespaces/sec/detectionfindings/seed-0a1b2c3d4e"
    [alert] = recorder.bodies("/am/api/v2/alerts")[0]
    assert alert == {
        "labels": {"alertname": "seed", "namespace": "sec", "finding": "seed-0a1b2c3d4e", "severity": "high",
                   "source": "auditwatch", "mitre_technique": "T1204,T1552.007", "key_user": "system:anonymous",
                   "key_src_ip": "10.0.0.1"},
        "annotations": {"summary": "anonymous calls from 10.0.0.1", "count": "3", "firstSeen": "2026-11-30T00:00:00Z",
                        "lastSeen": "2026-11-30T00:01:00Z", "riskScore": "70"},
        "startsAt": "2026-11-30T00:00:00Z", "generatorURL": link,
    }  # fmt: skip
    [(_, headers, hook)] = [p for p in recorder.posts if p[0] == "/hook"]
    assert headers["Authorization"] == "Bearer s3cret"
    assert hook["kind"] == "finding.created" and hook["url"] == link
    assert hook["detection"]["mitre"] == ["T1204", "T1552.007"] and hook["finding"]["count"] == 3
    [slack] = recorder.bodies("/slack")
    assert slack["text"].startswith("*New finding* [high] seed · MITRE T1204,T1552.007\n")
    assert f"<{link}|sec/seed-0a1b2c3d4e>" in slack["text"]
    assert notifier.sent == {("am", "sent"): 1, ("hook", "sent"): 1, ("chat", "sent"): 1}


async def test_a_failing_receiver_is_retried_with_backoff_and_delivery_waits_for_it(recorder):
    recorder.fail = 3
    notifier = Notifier(config({"name": "hook", "type": "webhook", "endpoint": {"url": f"{recorder.url}/hook"}}),
                        backoff=(0.01, 0.05))  # fmt: skip
    notifier.start()
    delivered = []
    notifier.notify(NOTICE, delivered.append)
    await until(lambda: delivered)
    await notifier.stop()
    assert len(recorder.bodies("/hook")) == 1
    assert notifier.sent == {("hook", "failed"): 3, ("hook", "sent"): 1} and notifier.pending("hook") == 0


async def test_a_receiver_down_does_not_block_and_a_full_queue_drops_the_oldest(recorder):
    notifier = Notifier(config({"name": "hook", "type": "webhook", "endpoint": {"url": "http://127.0.0.1:9/hook"}}),
                        backoff=(5.0, 5.0), max_queue=3)  # fmt: skip
    notifier.start()
    for i in range(5):
        notifier.notify(Notice(**{**NOTICE.__dict__, "finding": f"f{i}"}))  # returns at once
    assert [n.finding for n, _ in notifier.queues["hook"]] == ["f2", "f3", "f4"]
    assert notifier.sent[("hook", "dropped")] == 2
    await notifier.stop()


async def test_receivers_below_their_minimum_severity_are_skipped(recorder):
    notifier = Notifier(config(
        {"name": "page", "type": "webhook", "minSeverity": "critical", "endpoint": {"url": f"{recorder.url}/page"}},
        {"name": "all", "type": "webhook", "endpoint": {"url": f"{recorder.url}/all"}},
    ))  # fmt: skip
    notifier.start()
    delivered = []
    notifier.notify(NOTICE, delivered.append)  # severity high
    await until(lambda: delivered)
    await notifier.stop()
    assert [p for p, _, _ in recorder.posts] == ["/all"]


async def test_a_finding_is_announced_once_when_created_and_again_only_when_grown_after_the_interval(recorder):
    kube = FakeKube()
    notifier = Notifier(config({"name": "hook", "type": "webhook", "endpoint": {"url": f"{recorder.url}/hook"}},
                               updateInterval="60s"))  # fmt: skip
    notifier.start()
    writer = Writer(kube, DETECTION, FindingPolicy(severity="low"), logging.getLogger("test"), notifier=notifier)
    agg = Aggregator("seed", ["user", "src_ip"], "calls from $src_ip$", max_findings=5)
    agg.add(ROW, "log", 0, 10, "t1")
    assert await flush(writer, agg, 100.0)
    [name] = kube.objects
    assert kube.objects[name]["status"]["alert"] == "pending"  # written with the count, before it is sent
    await until(lambda: kube.objects[name]["status"]["alert"] == "sent")
    agg.add(ROW, "log", 10, 20, "t2")
    assert await flush(writer, agg, 130.0)  # grown, but within the interval
    agg.add(ROW, "log", 20, 30, "t3")
    assert await flush(writer, agg, 161.0)
    await until(lambda: len(recorder.bodies("/hook")) == 2)
    await notifier.stop()
    assert [(b["kind"], b["finding"]["count"]) for b in recorder.bodies("/hook")] == [
        ("finding.created", 1), ("finding.updated", 3)]  # fmt: skip
    assert kube.objects[name]["status"]["alert"] == "sent"


async def test_a_creation_notice_not_taken_before_a_restart_is_sent_after_it(recorder):
    kube = FakeKube()
    down = Notifier(config({"name": "hook", "type": "webhook", "endpoint": {"url": "http://127.0.0.1:9/hook"}}),
                    backoff=(5.0, 5.0))  # fmt: skip
    down.start()
    writer = Writer(kube, DETECTION, FindingPolicy(), logging.getLogger("test"), notifier=down)
    agg = Aggregator("seed", ["user", "src_ip"], "calls from $src_ip$", max_findings=5)
    agg.add(ROW, "log", 0, 10, "t1")
    assert await flush(writer, agg, 100.0)
    await down.stop()  # the operator stops with the notice still queued
    [(name, obj)] = kube.objects.items()
    assert obj["status"]["alert"] == "pending"

    up = Notifier(config({"name": "hook", "type": "webhook", "endpoint": {"url": f"{recorder.url}/hook"}}))
    up.start()
    restarted = Writer(kube, DETECTION, FindingPolicy(), logging.getLogger("test"), notifier=up)
    again = Aggregator("seed", ["user", "src_ip"], "calls from $src_ip$", max_findings=5)
    again.load(obj)
    restarted.resume_alerts(again)
    await until(lambda: kube.objects[name]["status"]["alert"] == "sent")
    await up.stop()
    assert [b["kind"] for b in recorder.bodies("/hook")] == ["finding.created"]
