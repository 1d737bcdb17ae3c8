"""Alerts: a real Alertmanager (built from its Go module) and a recording webhook/Slack endpoint receive
one notice per finding; an Alertmanager restart gets again only what it had not taken."""

from conftest import NAMESPACE, detection, wait_for

AGENT = "e2e-alerts"
SEARCH = f'user.username="system:anonymous" userAgent="{AGENT}" | stats count BY requestURI'


def by_uri(api, name):
    return {f["spec"]["key"]["requestURI"]: f for f in api.findings(name)}


def test_each_finding_alerts_once_and_an_alertmanager_restart_gets_only_what_was_not_delivered(
    cluster, operator, api, alertmanager, recorder
):
    name = "alerts"
    body = detection(name, SEARCH, cluster.audit_log, group_by=["requestURI"])
    body["metadata"]["labels"] = {"mitre-attack.escu.splunk.com/T1204": "true"}
    body["spec"]["finding"] |= {"severity": "high", "message": "anonymous $requestURI$"}
    api.apply(body)
    wait_for(lambda: api.get("auditdetection", name).get("status", {}).get("shards"), what="the detection running")
    api.request("/version?alert=a", AGENT)

    def alerted(uri):
        return alertmanager.alerts(alertname=name, key_requestURI=uri)

    [alert] = wait_for(lambda: alerted("/version?alert=a"), timeout=60, what="the alert in Alertmanager")
    a = by_uri(api, name)["/version?alert=a"]
    assert alert["labels"] == {"alertname": name, "namespace": NAMESPACE, "finding": a["metadata"]["name"],
                               "severity": "high", "source": "auditwatch", "mitre_technique": "T1204",
                               "key_requestURI": "/version?alert=a"}  # fmt: skip
    assert alert["annotations"]["summary"] == "anonymous /version?alert=a"
    assert alert["generatorURL"].endswith(f"/namespaces/{NAMESPACE}/detectionfindings/{a['metadata']['name']}")
    assert alert["status"]["state"] == "active"
    wait_for(lambda: by_uri(api, name)["/version?alert=a"]["status"].get("alert") == "sent", what="recorded as sent")
    api.anonymous("/version?alert=a", AGENT, times=3)  # grows; the next growth notice is an hour away
    wait_for(lambda: by_uri(api, name)["/version?alert=a"]["status"]["count"] >= 4, what="the count grown")

    alertmanager.stop()  # loses the alerts it holds (Alertmanager keeps only silences on disk)
    api.request("/version?alert=b", AGENT)
    b = wait_for(lambda: by_uri(api, name).get("/version?alert=b"), timeout=60, what="finding b")
    hooks = lambda: [h for h in recorder.bodies("/hook") if h["detection"]["name"] == name]  # noqa: E731
    wait_for(lambda: len(hooks()) == 2, timeout=30, what="the webhook told of b while Alertmanager is down")
    assert by_uri(api, name)["/version?alert=b"]["status"]["alert"] == "pending"  # Alertmanager has not taken it

    alertmanager.start()
    wait_for(lambda: alerted("/version?alert=b"), timeout=60, what="b delivered once Alertmanager is back")
    assert alerted("/version?alert=a") == []  # taken before the restart: not sent again
    wait_for(lambda: by_uri(api, name)["/version?alert=b"]["status"].get("alert") == "sent", what="b recorded sent")

    assert sorted((h["kind"], h["finding"]["name"]) for h in hooks()) == sorted(
        [("finding.created", a["metadata"]["name"]), ("finding.created", b["metadata"]["name"])]
    )
    assert all(h["detection"]["severity"] == "high" for h in hooks())
    slack = [p["text"] for p in recorder.bodies("/slack")]
    assert len(slack) == 2 and all(f"[high] {name} · MITRE T1204" in text for text in slack)  # low ones filtered
    cluster.kubectl("delete", "auditdetection", name, "-n", NAMESPACE, "--wait=true", "--timeout=60s")
