"""OpenReports: each detection's findings mirrored into a Report, against the real CRD (from the
OpenReports Go module) installed on the control plane, so the API server validates what is written."""

import json

from conftest import NAMESPACE, detection, total, wait_for

SEARCH = 'user.username="system:anonymous" userAgent="e2e-reports" | stats count BY requestURI user.username'


def report(cluster, name):
    done = cluster.kubectl("get", "reports.openreports.io", f"auditwatch-{name}", "-n", NAMESPACE, "-o", "json",
                           check=False)  # fmt: skip
    return json.loads(done.stdout) if done.returncode == 0 else None


def test_findings_are_mirrored_into_a_bounded_report_deleted_with_the_detection(cluster, operator, api):
    name = "reports"
    api.apply(detection(name, SEARCH, cluster.audit_log, group_by=["requestURI"]))
    for i in range(120):  # more findings than a report holds results
        api.request(f"/version?n={i}", "e2e-reports")
    api.request("/version?n=0", "e2e-reports")  # one finding counted more than the others

    def mirrored():
        found = api.findings(name)
        rep = report(cluster, name)
        return len(found) == 120 and rep and rep["summary"]["fail"] == 120 and rep

    rep = wait_for(mirrored, timeout=90, what=lambda: f"a report of 120 findings: {report(cluster, name)}")
    assert len(rep["results"]) == 100 and rep["configuration"]["limits"]["maxResults"] == 100
    top = rep["results"][0]
    counts = {f["metadata"]["name"]: f["status"]["count"] for f in api.findings(name)}
    assert top["resources"][0]["name"] == max(counts, key=counts.get)
    assert (
        top["properties"]["count"] == str(max(counts.values()))
        and top["properties"]["key.requestURI"] == "/version?n=0"
    )
    assert top["result"] == "fail" and top["severity"] == "low" and top["policy"] == name
    assert rep["scope"]["kind"] == "AuditDetection" and rep["metadata"]["ownerReferences"][0]["name"] == name
    assert len(json.dumps(rep)) < 256 * 1024
    assert total(api, name) == sum(counts.values())

    cluster.kubectl("delete", "auditdetection", name, "-n", NAMESPACE, "--wait=true", "--timeout=60s")
    wait_for(lambda: report(cluster, name) is None, timeout=60, what="the report garbage-collected")
