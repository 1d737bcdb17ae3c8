"""``auditwatch scan`` over what EKS users export audit events in: each shape gives the rows the same
events give as JSON lines, and says what it was read as."""

import base64
import gzip
import json

import pytest
from test_scan_cli import scan

from auditwatch.audit.envelopes import is_document
from auditwatch.offline.inputs import InputError, parse_url, splittable
from factory import SEED, event, line

EVENTS = [event(ips=[f"10.0.0.{i % 3}"]) for i in range(7)] + [event(username="alice", groups=["a"])]
MESSAGES = [line(e).decode().rstrip("\n") for e in EVENTS]


def log_events() -> list[dict]:
    return [{"logStreamName": "kube-apiserver-audit-0a1b", "timestamp": 1795000000000 + i, "message": m,
             "ingestionTime": 1795000001000 + i, "eventId": str(i)} for i, m in enumerate(MESSAGES)]  # fmt: skip


def subscription_payload(messages: list[str]) -> bytes:
    body = {"messageType": "DATA_MESSAGE", "owner": "123456789012", "logGroup": "/aws/eks/prod/cluster",
            "logStream": "kube-apiserver-audit-0a1b", "subscriptionFilters": ["to-firehose"],
            "logEvents": [{"id": str(i), "timestamp": 1795000000000 + i, "message": m}
                          for i, m in enumerate(messages)]}  # fmt: skip
    return gzip.compress(json.dumps(body).encode())


def plain_rows(tmp_path) -> str:
    path = tmp_path / "plain.log"
    path.write_bytes(b"".join(line(e) for e in EVENTS))
    code, out, _ = scan("--detection", SEED, path)
    assert code == 0 and out
    return out


CONTROL = {
    "messageType": "CONTROL_MESSAGE",
    "logEvents": [{"id": "", "timestamp": 1, "message": "CWL CONTROL MESSAGE"}],
}
SHAPES = {
    "filter-log-events": lambda: json.dumps({"events": log_events(), "searchedLogStreams": []}, indent=4).encode(),
    "get-log-events": lambda: json.dumps({"events": [{k: e[k] for k in ("timestamp", "message", "ingestionTime")}
                                                     for e in log_events()], "nextForwardToken": "f/1"}).encode(),
    # Firehose to S3: the gzip'd payloads one after another, a CONTROL_MESSAGE among them
    "firehose-s3": lambda: subscription_payload(MESSAGES[:3]) + gzip.compress(json.dumps(CONTROL).encode())
    + subscription_payload(MESSAGES[3:]),
    "kinesis-lambda-event": lambda: json.dumps({"Records": [
        {"kinesis": {"data": base64.b64encode(subscription_payload(MESSAGES[:4])).decode()}},
        {"kinesis": {"data": base64.b64encode(subscription_payload(MESSAGES[4:])).decode()}}]}).encode(),
    "firehose-transformation-event": lambda: json.dumps({"records": [
        {"recordId": "1", "data": base64.b64encode(subscription_payload(MESSAGES)).decode()}]}).encode(),
    "azure-diagnostic-records": lambda: json.dumps({"records": [
        {"category": "kube-audit", "operationName": "Microsoft.ContainerService/managedClusters/diagnosticLogs/Read",
         "properties": {"log": m, "stream": "stdout", "pod": "kube-apiserver-abc"}} for m in MESSAGES]}).encode(),
    "pretty-printed-array": lambda: b"\xef\xbb\xbf" + json.dumps(EVENTS, indent=2).encode(),
    "event-list": lambda: json.dumps({"kind": "EventList", "items": EVENTS}, indent=1).encode(),
}  # fmt: skip


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_each_export_gives_the_rows_of_the_same_events_as_lines(tmp_path, shape):
    path = tmp_path / f"{shape}.json"
    path.write_bytes(SHAPES[shape]())
    code, out, err = scan("--detection", SEED, path)
    assert code == 0, err
    assert out == plain_rows(tmp_path)
    assert f"{path}: read as " in err and f": {len(EVENTS)} events" in err


def test_a_gzip_compressed_export_and_stdin_are_read_too(tmp_path):
    path = tmp_path / "export.json.gz"
    path.write_bytes(gzip.compress(SHAPES["filter-log-events"]()))
    assert scan("--detection", SEED, path)[1] == plain_rows(tmp_path)
    assert scan("--detection", SEED, "-", stdin=SHAPES["kinesis-lambda-event"]())[1] == plain_rows(tmp_path)


def test_json_that_holds_no_audit_event_says_what_it_found(tmp_path):
    path = tmp_path / "other.json"
    path.write_text(json.dumps({"kind": "PodList", "items": []}, indent=2))
    code, out, err = scan("--detection", SEED, path)
    assert code == 0 and out == ""
    assert (
        f"{path}: warning: read as JSON: 0 events; 1 values that are no audit event (keys such as items, kind)" in err
    )


def test_lines_stay_lines_and_split_for_parallel_reading_documents_do_not(tmp_path):
    lines = tmp_path / "lines.log"
    lines.write_bytes(b"".join(line(e) for e in EVENTS))
    doc = tmp_path / "doc.json"
    doc.write_bytes(SHAPES["filter-log-events"]())
    assert splittable(str(lines)) and not splittable(str(doc))
    assert not is_document(b'{"kind":"Event","auditID":"x"}\n{"kind":')  # the first line decides
    assert not is_document(b"garbage\n{")
    assert is_document(b'{\n  "events": []\n}')


def test_cloudwatch_addresses():
    where = parse_url("cloudwatch://us-west-2/aws/eks/prod/cluster?since=2h&prefix=kube-apiserver-audit-ab", now=10_000)
    assert (where.region, where.group, where.prefix) == (
        "us-west-2",
        "/aws/eks/prod/cluster",
        "kube-apiserver-audit-ab",
    )
    assert (where.start, where.end) == (10_000_000 - 2 * 3600 * 1000, 10_000_000)
    assert parse_url("cloudwatch://eu-west-1/aws/eks/x/cluster?since=2026-11-28T00:00:00Z").start == 1795824000000
    for bad, says in [("cloudwatch://us-west-2", "expected cloudwatch://REGION/LOG_GROUP"),
                      ("cloudwatch://us-west-2/g?from=1h", "unknown: from"),
                      ("cloudwatch://us-west-2/g?since=never", "since=never is not an RFC 3339 time")]:  # fmt: skip
        with pytest.raises(InputError, match=says):
            parse_url(bad)


def test_oc_adm_node_logs_output_is_read_without_the_node_names(tmp_path):
    path = tmp_path / "node-logs.txt"
    path.write_bytes(b"".join(f"master-{i % 3}.ocp.example.com ".encode() + line(e) for i, e in enumerate(EVENTS)))
    code, out, err = scan("--detection", SEED, path)
    assert code == 0 and out == plain_rows(tmp_path)
    assert f"{path}: read as oc adm node-logs output" in err and "0 malformed" in err


def test_a_cloudwatch_export_task_object_is_read_without_the_timestamps(tmp_path):
    """``aws logs create-export-task`` writes ``<task>/<stream>/000000.gz``: gzip, each line the log
    event's timestamp, a space, its message."""
    path = tmp_path / "000000.gz"
    stamps = [f"2026-11-19T08:{i:02d}:00.{i:03d}Z " for i in range(len(MESSAGES))]
    path.write_bytes(gzip.compress("".join(s + m + "\n" for s, m in zip(stamps, MESSAGES, strict=True)).encode()))
    code, out, err = scan("--detection", SEED, path)
    assert code == 0 and out == plain_rows(tmp_path)
    assert f"{path}: read as a CloudWatch Logs export" in err and "0 malformed" in err


def test_json_lines_that_are_no_audit_events_get_one_warning(tmp_path):
    path = tmp_path / "app.log"
    path.write_text("".join(json.dumps({"level": "info", "msg": f"started {i}", "ts": i}) + "\n" for i in range(5)))
    code, out, err = scan("--detection", SEED, path)
    assert code == 0 and out == ""
    assert err.count("warning") == 1
    assert (
        f"{path}: warning: read as JSON: 0 events; 5 values that are no audit event (keys such as level, msg, ts): "
        "is it a Kubernetes audit log?"
    ) in err


def gke_entry(user: str, method: str, resource_name: str, code: int, operation: str) -> dict:
    """A GKE audit log entry as `gcloud logging read 'resource.type="k8s_cluster"' --format=json` prints it."""
    return {"insertId": f"ins-{operation}", "operation": {"id": operation, "producer": "k8s.io"},
            "protoPayload": {"@type": "type.googleapis.com/google.cloud.audit.AuditLog",
                             "authenticationInfo": {"principalEmail": user}, "methodName": method,
                             "requestMetadata": {"callerIp": "203.0.113.9", "callerSuppliedUserAgent": "curl/8.5.0"},
                             "resourceName": resource_name, "serviceName": "k8s.io",
                             "status": {"code": code, "message": "Forbidden" if code else ""}},
            "resource": {"type": "k8s_cluster", "labels": {"cluster_name": "prod", "location": "europe-west1"}},
            "labels": {"authorization.k8s.io/decision": "forbid" if code else "allow"},
            "timestamp": "2026-11-27T10:00:00.123456Z",
            "logName": "projects/p/logs/cloudaudit.googleapis.com%2Fdata_access"}  # fmt: skip


def test_gke_audit_entries_are_read_as_the_audit_events_they_record(tmp_path):
    path = tmp_path / "gke.json"
    path.write_text(json.dumps([
        gke_entry("system:anonymous", "io.k8s.core.v1.pods.list", "core/v1/namespaces/default/pods", 7, "op-1"),
        gke_entry("alice@example.com", "io.k8s.apps.v1.deployments.create", "apps/v1/namespaces/prod/deployments/web",
                  0, "op-2"),
    ], indent=2))  # fmt: skip
    code, out, err = scan("--detection", SEED, path)
    assert code == 0 and f"{path}: read as GKE audit log entries: 2 events" in err
    [row] = [json.loads(x) for x in out.splitlines()]
    expected = {
        "user": "system:anonymous",
        "src_ip": "203.0.113.9",
        "verb": "list",
        "objectRef.resource": "pods",
        "objectRef.namespace": "default",
        "responseStatus.code": "403",
        "userAgent": "curl/8.5.0",
        "count": 1,
    }
    assert {k: row[k] for k in expected} == expected


def test_gke_resource_names_give_the_object_reference():
    from auditwatch.audit.gke import audit_event

    def ref(method: str, resource_name: str) -> dict:
        return audit_event(gke_entry("u", method, resource_name, 0, "x"))["objectRef"]

    assert ref("io.k8s.apps.v1.deployments.patch", "apps/v1/namespaces/prod/deployments/web") == {
        "resource": "deployments",
        "apiGroup": "apps",
        "apiVersion": "v1",
        "namespace": "prod",
        "name": "web",
    }
    assert ref("io.k8s.core.v1.namespaces.get", "core/v1/namespaces/default") == {
        "resource": "namespaces",
        "apiGroup": "",
        "apiVersion": "v1",
        "name": "default",
    }
    assert ref("io.k8s.core.v1.pods.status.update", "core/v1/namespaces/ns/pods/p/status")["subresource"] == "status"


def test_json_lines_after_a_bom_are_read_whole(tmp_path):
    path = tmp_path / "saved-on-windows.log"
    path.write_bytes(b"\xef\xbb\xbf" + b"".join(line(e) for e in EVENTS))
    code, out, err = scan("--detection", SEED, path)
    assert code == 0 and out == plain_rows(tmp_path) and "0 malformed" in err


def test_an_aks_storage_blob_is_read_as_the_audit_events_its_records_carry(tmp_path):
    """A storage account's archive: one diagnostic record a line, no records array."""
    from azurite import record
    from factory import event

    path = tmp_path / "PT1H.json"
    path.write_bytes(record(event()) + record(event(agent="curl/8.5.0")))
    code, out, err = scan("--detection", SEED, path)
    assert code == 0 and f"{path}: read as Azure diagnostic records: 2 events" in err
    assert sum(json.loads(row)["count"] for row in out.splitlines()) == 2
