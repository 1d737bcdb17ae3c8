"""Faults: the control plane goes away for a while, the operator is killed while the API server sends it
batches. The operator keeps reading, writes when it can, and the counts come out exact."""

import json
import threading
import time
import uuid

from conftest import AGENT_SEARCH, anonymous_with_agent, detection, ready, total, wait_for


def forge_lines(agent, n):
    """Audit lines for anonymous requests, as another API server writing to this log would."""
    now = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
    return b"".join(json.dumps({
        "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata", "auditID": str(uuid.uuid4()),
        "stage": "ResponseComplete", "requestURI": "/version", "verb": "get", "userAgent": agent,
        "user": {"username": "system:anonymous", "groups": ["system:unauthenticated"]}, "sourceIPs": ["127.0.0.1"],
        "responseStatus": {"metadata": {}, "code": 200}, "requestReceivedTimestamp": now, "stageTimestamp": now,
    }).encode() + b"\n" for _ in range(n))  # fmt: skip


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def outage(cluster, operator, api, part, seconds, agent, produce):
    api.apply(detection(agent, AGENT_SEARCH.format(agent=agent), cluster.audit_log, group_by=["user"]))
    wait_for(lambda: ready(api, agent).get("status") == "True", what="Ready=True")
    api.anonymous("/version", agent, times=5)
    cluster.stop_process(part)
    try:
        for _ in range(int(seconds)):  # events keep coming while the API is away
            produce(agent)
            time.sleep(1)
            assert operator.proc.poll() is None, f"the operator exited while {part} was down:\n{operator.log()}"
        peak = rss_mib(operator.proc.pid)
    finally:
        cluster.start_process(part)
    api.anonymous("/version", agent, times=5)
    expected = len(api.audit_events(anonymous_with_agent(agent)))
    assert expected >= 10 + 20 * int(seconds), f"{expected} events in the audit logs"
    wait_for(lambda: total(api, agent) == expected, timeout=120,
             what=lambda: f"count == {expected} after {part} came back, counted {total(api, agent)}")  # fmt: skip
    time.sleep(2)  # and no more: nothing counted twice once the writes that failed are made again
    assert total(api, agent) == expected and len(api.findings(agent)) == 1
    assert peak < 300, f"{peak:.0f} MiB while {part} was down"


def test_kube_apiserver_down_for_30_seconds(cluster, operator, api):
    """Lines arrive in the log while this API server is down (from another one, say): read, counted,
    and written once the API is back."""

    def append_lines(agent):  # only while kube-apiserver is down: it writes without O_APPEND after a rotation
        with open(cluster.audit_log, "ab") as f:
            f.write(forge_lines(agent, 20))

    outage(cluster, operator, api, "kube-apiserver", 30, "e2e-apiserver-outage", append_lines)


def test_etcd_restarted(cluster, operator, api):
    """kube-apiserver stays up (and audits requests that need no storage) while etcd is away."""
    outage(cluster, operator, api, "etcd", 10, "e2e-etcd-outage", lambda agent: api.anonymous("/version", agent, 20))


def test_operator_killed_while_the_api_server_posts_webhook_batches(cluster, operator, api):
    """What the webhook acknowledged is in its spool; what it did not, kube-apiserver sends again (and
    what it sends twice is dropped): killed and restarted mid-stream, the count is every request."""
    agent = "e2e-webhook-kill"
    body = detection(agent, AGENT_SEARCH.format(agent=agent), cluster.audit_log, group_by=["user"])
    body["spec"]["sources"] = [{"name": "apiserver", "webhook": {"path": "/audit"}}]
    api.apply(body)
    wait_for(lambda: ready(api, agent).get("status") == "True", what="Ready=True")
    stop = threading.Event()

    def traffic():
        while not stop.is_set():
            api.anonymous("/version", agent, times=5)
            time.sleep(0.1)

    sender = threading.Thread(target=traffic)
    sender.start()
    try:
        time.sleep(2)
        operator.kill()  # SIGKILL: batches acknowledged but not yet counted are only in the spool
        time.sleep(3)  # batches sent meanwhile fail; kube-apiserver retries them 10 s later
        operator.start()
        time.sleep(3)
    finally:
        stop.set()
        sender.join()
    expected = len(api.audit_events(anonymous_with_agent(agent)))
    wait_for(lambda: total(api, agent) == expected, timeout=150,
             what=lambda: f"count == {expected} after the kill, counted {total(api, agent)}")  # fmt: skip
    time.sleep(2)
    assert total(api, agent) == expected and len(api.findings(agent)) == 1
