"""The operator against a real control plane: anonymous requests in, findings and Events out."""

import json
import ssl
import threading
import time
import urllib.error
import urllib.request

import pytest
import yaml
from conftest import AGENT_SEARCH, NAMESPACE, ROOT, anonymous_with_agent, detection, ready, total, wait_for


def test_the_seed_detection_counts_every_anonymous_request(cluster, operator, api):
    seed = yaml.safe_load(
        (ROOT / "manifests/detections/kubernetes-aws-detect-suspicious-kubectl-calls.yaml").read_text()
    )
    seed["spec"]["sources"][0]["file"]["path"] = str(cluster.audit_log)
    live = cluster.audit_log.stat().st_ino  # a new detection reads the live file from its start, and on
    api.apply(seed)
    name = seed["metadata"]["name"]
    api.anonymous("/version", "e2e-seed/1.0", times=3)
    api.anonymous("/api/v1/namespaces/kube-system/secrets", "e2e-seed/1.0", times=2)
    for _ in range(3):
        api.request("/api/v1/namespaces", "e2e-admin/1.0", token=cluster.admin_token)  # not anonymous

    def anonymous(ev):
        user = ev.get("user", {})
        return user.get("username") == "system:anonymous" and "system:unauthenticated" in user.get("groups", [])

    def counted():
        found = api.findings(name)
        return found and found[0].get("status", {}).get("count") == len(api.audit_events(anonymous, live))

    wait_for(counted, what=lambda: f"the seed finding to count every anonymous audit event: "
             f"{[f.get('status', {}).get('count') for f in api.findings(name)]} vs "
             f"{len(api.audit_events(anonymous, live))}; "
             f"{api.get('auditdetection', name).get('status')}")  # fmt: skip
    [finding] = api.findings(name)
    assert finding["spec"]["key"] == {"user": "system:anonymous", "src_ip": "127.0.0.1"}
    assert finding["spec"]["message"] == "Suspicious kubectl API calls from system:anonymous"
    assert finding["spec"]["severity"] == "low" and finding["spec"]["riskScore"] == 20
    assert finding["metadata"]["ownerReferences"][0]["name"] == name
    status = finding["status"]
    assert "/version" in status["values"]["requestURI"] and "e2e-seed/1.0" in status["values"]["userAgent"]
    assert status["firstSeen"] <= status["lastSeen"]
    reasons = {e["reason"] for e in api.events(name)}
    assert "FindingCreated" in reasons
    assert "SuspiciousActivity" in {e["reason"] for e in api.events(finding["metadata"]["name"])}
    wait_for(lambda: ready(api, name).get("status") == "True", what="Ready=True")


def test_kubectl_get_findings_shows_who_from_where_how_many_since_when(cluster, operator, api):
    body = detection("columns", AGENT_SEARCH.format(agent="e2e-columns"), cluster.audit_log)
    body["metadata"]["labels"] = {"mitre-attack.escu.splunk.com/T1552.007": "true"}  # as import-escu writes them
    api.apply(body)
    api.anonymous("/healthz", "e2e-columns", times=2)
    wait_for(lambda: api.findings("columns"), what="a finding")
    header = cluster.kubectl("get", "findings", "-n", NAMESPACE).stdout.splitlines()[0].split()
    for column in ["DETECTION", "USER", "SOURCE", "IP", "COUNT", "SEVERITY", "FIRST", "LAST", "SEEN"]:
        assert column in header
    assert "MESSAGE" not in header
    wide = cluster.kubectl("get", "findings", "-n", NAMESPACE, "-o", "wide", "-l", "auditwatch.io/detection=columns")
    header, row = wide.stdout.splitlines()[:2]
    assert header.split()[-2:] == ["MESSAGE", "TECHNIQUE"]
    assert row.endswith("anonymous calls from 127.0.0.1   T1552.007")


def test_an_invalid_search_sets_a_condition_and_an_event_and_others_keep_running(cluster, operator, api):
    api.apply(detection("broken", "user.username=x | stats count BY", cluster.audit_log))
    cond = wait_for(lambda: ready(api, "broken").get("reason") == "InvalidSearch" and ready(api, "broken"),
                    what="Ready=False/InvalidSearch")  # fmt: skip
    assert cond["status"] == "False"
    assert cond["message"] == "spec.search: stats BY: expected a field name, got end of search at column 33"
    assert any(e["reason"] == "InvalidSearch" and e["type"] == "Warning" for e in api.events("broken"))
    api.apply(detection("healthy", AGENT_SEARCH.format(agent="e2e-healthy"), cluster.audit_log))
    api.anonymous("/version", "e2e-healthy", times=4)
    wait_for(lambda: total(api, "healthy") == len(api.audit_events(anonymous_with_agent("e2e-healthy"))) > 0,
             what="the healthy detection to count")  # fmt: skip


def test_a_spec_change_restarts_the_plan_and_keeps_positions(cluster, operator, api):
    api.apply(detection("changing", AGENT_SEARCH.format(agent="e2e-before"), cluster.audit_log))
    api.anonymous("/version", "e2e-before", times=3)
    before = len(api.audit_events(anonymous_with_agent("e2e-before")))
    wait_for(lambda: total(api, "changing") == before, what="counts before the change")
    api.apply(detection("changing", AGENT_SEARCH.format(agent="e2e-*"), cluster.audit_log))
    wait_for(lambda: api.get("auditdetection", "changing").get("status", {}).get("observedGeneration") == 2,
             what="generation 2")  # fmt: skip
    api.anonymous("/version", "e2e-after", times=2)
    wait_for(lambda: len(api.audit_events(anonymous_with_agent("e2e-after"))) == 4, what="4 audit events")
    wait_for(lambda: total(api, "changing") >= before + 4, what="the new query counting")
    time.sleep(3)  # the new query would re-count earlier e2e-* events here if it re-read the log from its start
    assert total(api, "changing") == before + 4


def test_deleting_a_detection_deletes_its_findings(cluster, operator, api):
    api.apply(detection("doomed", AGENT_SEARCH.format(agent="e2e-doomed"), cluster.audit_log))
    api.anonymous("/version", "e2e-doomed")
    wait_for(lambda: api.findings("doomed"), what="a finding")
    cluster.kubectl("delete", "auditdetection", "doomed", "-n", NAMESPACE, "--wait=true", "--timeout=60s")
    wait_for(lambda: not api.findings("doomed"), timeout=60, what="garbage collection of the findings")


def test_counts_stay_exact_when_the_operator_is_killed_mid_stream(cluster, operator, api):
    api.apply(detection("restarts", AGENT_SEARCH.format(agent="e2e-restarts"), cluster.audit_log,
                        group_by=["user"]))  # fmt: skip
    # Exactly once from the detection's first saved position on. Until it has one, a killed operator
    # starts it again as a new detection, at the live file's start: a rotation meanwhile (every few
    # seconds under this traffic) would leave earlier lines out, as they are out of any new detection's.
    wait_for(lambda: saved_position(api, "restarts"), what="the detection's first saved position")
    stop = threading.Event()

    def traffic():
        while not stop.is_set():
            api.anonymous("/version", "e2e-restarts")
            api.request("/api/v1/namespaces", "e2e-noise", token=cluster.admin_token)

    sender = threading.Thread(target=traffic)
    sender.start()
    try:
        for pause in (1.5, 0.7, 2.2):
            time.sleep(pause)
            operator.kill()
            time.sleep(0.5)
            operator.start()
    finally:
        time.sleep(1)
        stop.set()
        sender.join()

    def counts():
        return total(api, "restarts"), len(api.audit_events(anonymous_with_agent("e2e-restarts")))

    wait_for(lambda: (c := counts())[0] == c[1] > 20, timeout=60,
             what=lambda: f"count == audit events after 3 kills: (count, events) = {counts()}")  # fmt: skip
    time.sleep(2)
    found, expected = counts()
    assert found == expected, operator.log()


def test_counts_stay_exact_across_audit_log_rotation(cluster, operator, api):
    api.apply(detection("rotation", AGENT_SEARCH.format(agent="e2e-rotation"), cluster.audit_log, group_by=["user"]))
    first_files = set(cluster.audit_dir.glob("audit*.log"))
    deadline = time.monotonic() + 120
    # About 1 KiB per audit event: a little over 1 MiB makes kube-apiserver rotate (--audit-log-maxsize=1).
    while set(cluster.audit_dir.glob("audit*.log")) == first_files and time.monotonic() < deadline:
        for _ in range(20):
            api.request("/api/v1/namespaces/default/configmaps", "e2e-filler", token=cluster.admin_token)
        api.anonymous("/version", "e2e-rotation")
    assert set(cluster.audit_dir.glob("audit*.log")) != first_files, "kube-apiserver did not rotate its log"
    api.anonymous("/version", "e2e-rotation", times=3)
    expected = len(api.audit_events(anonymous_with_agent("e2e-rotation")))
    wait_for(lambda: total(api, "rotation") == expected, timeout=60,
             what=lambda: f"count == {expected} across rotation, counted {total(api, 'rotation')}")  # fmt: skip
    status = api.get("auditdetection", "rotation")["status"]
    assert (
        status["counters"]["malformed"] == 0
        and json.dumps(status["shards"]["default"]["sources"][0]["lastError"]) == '""'
    )


def test_the_audit_webhook_backend_feeds_a_webhook_source(cluster, operator, api):
    body = detection("webhook", AGENT_SEARCH.format(agent="e2e-webhook"), cluster.audit_log, group_by=["user"])
    body["spec"]["sources"] = [{"name": "apiserver", "webhook": {"path": "/audit"}}]
    api.apply(body)
    wait_for(lambda: ready(api, "webhook").get("status") == "True", what="Ready=True")
    api.anonymous("/version", "e2e-webhook", times=3)
    # kube-apiserver sends the same events to its log and, in batches within a second, to the webhook.
    expected = len(api.audit_events(anonymous_with_agent("e2e-webhook")))
    wait_for(lambda: total(api, "webhook") == expected > 0, what=f"{expected} events counted from webhook batches")

    def status():
        return api.get("auditdetection", "webhook")["status"]

    wait_for(
        lambda: status()["shards"]["default"]["sources"][0]["webhook"]["path"].startswith("webhook:"),
        what="the webhook source in the status",
    )
    assert status()["counters"]["malformed"] == 0
    # A pod that POSTs made-up events to the operator's webhook gets nothing in: no client certificate
    # (or one the webhook CA did not sign) is refused, and the count stays.
    forged = json.dumps({"kind": "EventList", "items": [
        {"kind": "Event", "auditID": f"forged-{i}", "stage": "ResponseComplete", "userAgent": "e2e-webhook",
         "user": {"username": "system:anonymous", "groups": ["system:unauthenticated"]}, "sourceIPs": ["10.6.6.6"],
         "requestReceivedTimestamp": "2026-11-29T00:00:00Z"} for i in range(5)]}).encode()  # fmt: skip
    url = f"https://127.0.0.1:{cluster.webhook_port}/audit"
    no_cert = ssl.create_default_context(cafile=str(cluster.webhook_certs.ca))
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(urllib.request.Request(url, data=forged, method="POST"), context=no_cert, timeout=5)
    assert refused.value.code == 401
    time.sleep(2)  # longer than a status interval: a forged batch, had it got in, would be counted by now
    assert total(api, "webhook") == expected


def saved_position(api, name):
    """The file position the detection's status holds, if any."""
    shards = api.get("auditdetection", name).get("status", {}).get("shards", {})
    sources = (shards.get("default") or {}).get("sources") or [{}]
    return (sources[0].get("file") or {}).get("inode")
