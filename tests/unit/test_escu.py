"""The ESCU Kubernetes pack: import-escu output (golden), and every detection on hand-written events."""

import json
import os
from pathlib import Path

import pytest
import yaml
from mmdb_writer import MMDBWriter
from netaddr import IPSet

from auditwatch.engine.evaluate import Evaluator
from auditwatch.engine.pipeline import Table
from auditwatch.rules.escu import import_detection, load_macros, render, severity
from auditwatch.spl import plan_search
from factory import event

ROOT = Path(__file__).resolve().parents[2]
# The ESCU files are read where they are shared, beside the checkout (as CI lays them out).
ESCU = Path(os.environ.get("AUDITWATCH_ESCU_DIR", ROOT.parent / "shared" / "escu"))
assert (ESCU / "detections").is_dir(), f"ESCU reference files not found at {ESCU}; set AUDITWATCH_ESCU_DIR"
MANIFESTS = ROOT / "manifests/detections/escu"
DETECTIONS = sorted((ESCU / "detections").glob("*.yml"))


def test_the_committed_manifests_are_what_the_importer_writes():
    macros = load_macros(ESCU / "macros")
    assert len(DETECTIONS) == 17
    for path in DETECTIONS:
        obj = import_detection(path, macros)
        committed = MANIFESTS / f"{obj['metadata']['name']}.yaml"
        assert committed.read_text() == render(obj, path.name), f"{committed} is stale: run import-escu"
    listed = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())["resources"]
    assert sorted(listed) == sorted(p.name for p in MANIFESTS.glob("*.yaml") if p.name != "kustomization.yaml")


def manifest(name):
    return yaml.safe_load((MANIFESTS / f"{name}.yaml").read_text())


def test_import_maps_search_macros_finding_annotations_and_labels():
    seed = manifest("kubernetes-aws-detect-suspicious-kubectl-calls")
    original = yaml.safe_load((ESCU / "detections/kubernetes_aws_detect_suspicious_kubectl_calls.yml").read_text())
    assert seed["spec"]["search"] == original["search"].strip()
    assert "macros" not in seed["spec"]  # kube_audit and the *_filter macro have defaults here
    assert seed["spec"]["finding"] == {"groupBy": ["user"], "message": "Kubernetes AWS detect suspicious kubectl calls",
                                       "riskScore": 25, "severity": "low"}  # fmt: skip
    location = manifest("kubernetes-abuse-of-secret-by-unusual-location")
    assert location["spec"]["macros"] == {"kube_allowed_locations": 'Country="United States"'}
    assert location["spec"]["finding"]["message"] == (
        "Access of Kubernetes secret $objectRef.name$ from unusual location $Country$ by $user$"
    )
    assert location["metadata"]["labels"]["mitre-attack.escu.splunk.com/T1552.007"] == "true"
    assert location["metadata"]["annotations"]["escu.splunk.com/known-false-positives"]
    eks = manifest("amazon-eks-kubernetes-pod-scan-detection")
    assert eks["spec"]["macros"] == {
        "security_content_ctime(field)": 'convert timeformat="%Y-%m-%dT%H:%M:%S" ctime($field$)'
    }
    assert eks["spec"]["sources"][0]["cloudwatch"]["logGroup"] == "/aws/eks/CLUSTER/cluster"
    assert eks["spec"]["finding"]["groupBy"] == ["user.username"]  # ESCU's `user`: not renamed in this search


def test_severity_follows_the_risk_score_buckets():
    assert [severity(s) for s in (0, 19, 20, 49, 60, 80, 100)] == [
        "informational", "informational", "low", "medium", "high", "critical", "critical"]  # fmt: skip


@pytest.fixture(scope="module")
def geoip(tmp_path_factory):
    path = tmp_path_factory.mktemp("geo") / "city.mmdb"
    writer = MMDBWriter(ip_version=4, database_type="GeoLite2-City")
    for net, city, country in (("203.0.113.0/24", "Paris", "France"), ("198.51.100.0/24", "Ashburn", "United States")):
        writer.insert_network(IPSet([net]), {"city": {"names": {"en": city}}, "country": {"names": {"en": country}},
                                             "location": {"latitude": 1.5, "longitude": 2.5}})  # fmt: skip
    writer.to_db_file(str(path))
    return str(path)


def rows(name, events, geoip, source="cluster-a"):
    spec = manifest(name)["spec"]
    ev = Evaluator(plan_search(spec["search"], spec.get("macros")), geoip_db=geoip)
    table = Table(ev.pipeline)
    data = b"".join(json.dumps(e).encode() + b"\n" for e in events)
    for _, _, record in ev.records(data, origin=source):
        table.add(record)
    return table.rows()


def anon(**kw):
    return event(**kw)


def secret_get(**kw):
    kw.setdefault("object_ref", {"resource": "secrets", "namespace": "prod", "name": "db-password"})
    return event(verb="get", username=kw.pop("username", "mallory"), groups=kw.pop("groups", ["dev"]),
                 uri="/api/v1/namespaces/prod/secrets/db-password", code=200, **kw)  # fmt: skip


def create(resource, body, namespace="prod", **kw):
    ref = {"resource": resource, "namespace": namespace, "name": body.get("metadata", {}).get("name", "x")}
    return event(verb=kw.pop("verb", "create"), username="bob", groups=["dev"], code=kw.pop("code", 201),
                 object_ref=ref, requestObject=body, kind="Event", **kw)  # fmt: skip


def test_eks_cluster_scan(geoip):
    events = [anon(ts="2026-11-27T10:00:00Z", agent="curl/8"), anon(ts="2026-11-27T10:00:05Z", agent="curl/8"),
              anon(agent="AWS Security Scanner"), event(username="alice", groups=["system:authenticated"])]  # fmt: skip
    [row] = rows("amazon-eks-kubernetes-cluster-scan-detection", events, geoip)
    assert row["count"] == 2 and row["src_ip"] == "203.0.113.7" and row["user.username"] == "system:anonymous"
    assert row["firstTime"] == "2026-11-27T10:00:00" and row["lastTime"] == "2026-11-27T10:00:05"
    assert row["cluster_name"] == "cluster-a" and row["http_user_agent"] == "curl/8"


def test_eks_pod_scan(geoip):
    hit = anon(verb="list", uri="/api/v1/pods", object_ref={"resource": "pods"})
    miss = anon(verb="list", uri="/api/v1/pods?limit=1", object_ref={"resource": "pods"})
    [row] = rows("amazon-eks-kubernetes-pod-scan-detection", [hit, hit, miss], geoip, source="prod-eks")
    assert row["count"] == 2 and row["cluster_name"] == "prod-eks" and row["values(requestURI)"] == "/api/v1/pods"


def test_secret_by_unusual_location(geoip):
    found = rows("kubernetes-abuse-of-secret-by-unusual-location",
                 [secret_get(ips=["203.0.113.9"]), secret_get(ips=["198.51.100.4"]), secret_get(ips=["10.0.0.1"]),
                  event(verb="list", object_ref={"resource": "secrets"})], geoip)  # fmt: skip
    assert sorted((r["src_ip"], r["Country"], r["City"]) for r in found) == [
        ("10.0.0.1", "0", "0"),  # not in the database: fillnull's 0, and not the allowed country
        ("203.0.113.9", "France", "Paris"),
    ]


def test_secret_by_unusual_user_agent_group_and_name(geoip):
    assert [r["userAgent"] for r in rows("kubernetes-abuse-of-secret-by-unusual-user-agent",
            [secret_get(agent="Helm/3.13.2"), secret_get(agent="curl/8")], geoip)] == ["curl/8"]  # fmt: skip
    assert [r["user.groups{}"] for r in rows("kubernetes-abuse-of-secret-by-unusual-user-group",
            [secret_get(groups=["admin"]), secret_get(groups=["dev"])], geoip)] == ["dev"]  # fmt: skip
    assert [r["user"] for r in rows("kubernetes-abuse-of-secret-by-unusual-user-name",
            [secret_get(username="admin"), secret_get(username="eve")], geoip)] == ["eve"]  # fmt: skip


@pytest.mark.parametrize("name", ["kubernetes-access-scanning", "kubernetes-scanning-by-unauthenticated-ip-address"])
def test_scanning_needs_more_than_five_forbidden_unauthenticated_requests(name, geoip):
    six = [anon(ips=["203.0.113.50"], uri=f"/api/v1/{r}", code=403) for r in ("a", "b", "c", "d", "e", "f")]
    five = [anon(ips=["203.0.113.60"], code=403)] * 5
    allowed = [anon(ips=["203.0.113.70"], code=200)] * 9
    [row] = rows(name, six + five + allowed, geoip)
    assert row["src_ip"] == "203.0.113.50" and row["count"] == 6 and row["Country"] == "France"
    assert sorted(row["requestURI"]) == [f"/api/v1/{r}" for r in "abcdef"] and row["user"] == "system:anonymous"


def test_the_older_suspicious_kubectl_calls(geoip):
    found = rows("kubernetes-aws-detect-suspicious-kubectl-calls", [anon(), anon(username="bob")], geoip)
    assert [(r["user"], r["user.uid"], r["count"]) for r in found] == [("system:anonymous", "0", 1)]


def last_applied(spec):
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": spec}
    return {"kind": "Pod", "metadata": {"name": "p", "annotations": {
        "kubectl.kubernetes.io/last-applied-configuration": json.dumps(pod, separators=(",", ":"))}}}  # fmt: skip


def test_privileged_pod_and_host_network(geoip):
    privileged = last_applied({"containers": [{"name": "c", "securityContext": {"privileged": True}}]})
    host = last_applied({"hostNetwork": True, "containers": [{"name": "c"}]})
    plain = last_applied({"containers": [{"name": "c"}]})
    events = [create("pods", privileged), create("pods", privileged, verb="update"), create("pods", host),
              create("pods", plain), create("pods", privileged, verb="get")]  # fmt: skip
    assert sum(r["count"] for r in rows("kubernetes-create-or-update-privileged-pod", events, geoip)) == 2
    [row] = rows("kubernetes-pod-with-host-network-attachment", events, geoip)
    assert row["verb"] == "create" and row["user"] == "bob" and row["user_groups"] == "dev"


def test_cron_job_daemonset_and_node_port(geoip):
    cron = {"kind": "CronJob", "metadata": {"name": "miner"},
            "spec": {"schedule": "*/5 * * * *", "jobTemplate": {"spec": {"template": {"spec": {
                "containers": [{"image": "evil/miner:1"}, {"image": "busybox"}]}}}}}}  # fmt: skip
    found = rows(
        "kubernetes-cron-job-creation", [create("cronjobs", cron), create("cronjobs", cron, verb="get")], geoip
    )
    assert sorted(r["requestObject.spec.jobTemplate.spec.template.spec.containers{}.image"] for r in found) == [
        "busybox", "evil/miner:1"] and found[0]["requestObject.spec.schedule"] == "*/5 * * * *"  # fmt: skip
    ds = {"kind": "DaemonSet", "metadata": {"name": "ds"}}
    [row] = rows("kubernetes-daemonset-deployed", [create("daemonsets", ds), create("deployments", ds)], geoip)
    assert row["objectRef.resource"] == "daemonsets" and row["requestObject.kind"] == "DaemonSet"
    svc = {"kind": "Service", "metadata": {"name": "s"}, "spec": {"type": "NodePort"}}
    cluster_ip = {"kind": "Service", "metadata": {"name": "s"}, "spec": {"type": "ClusterIP"}}
    [row] = rows("kubernetes-node-port-creation", [create("services", svc), create("services", cluster_ip)], geoip)
    assert row["requestObject.spec.type"] == "NodePort"


def test_pod_created_in_a_default_namespace(geoip):
    pod = {"kind": "Pod", "metadata": {"name": "p"}}
    events = [create("pods", pod, namespace=ns) for ns in ("default", "kube-system", "kube-public", "prod")]
    found = rows("kubernetes-pod-created-in-default-namespace", events, geoip)
    assert sorted(r["objectRef.namespace"] for r in found) == ["default", "kube-public", "kube-system"]


def test_suspicious_image_pulling(geoip):
    def pulling(name, message):
        return event(verb="create", username="system:node:n1", groups=["system:nodes"],
                     object_ref={"resource": "events", "namespace": "prod", "name": name},
                     requestObject={"kind": "Event", "message": message})  # fmt: skip

    events = [pulling("miner.1", 'Pulling image "evil/miner:1"'), pulling("falco-x.1", 'Pulling image "falco"'),
              pulling("web.1", 'Successfully pulled image "nginx"')]  # fmt: skip
    assert [r["objectRef.name"] for r in rows("kubernetes-suspicious-image-pulling", events, geoip)] == ["miner.1"]


def test_unauthorized_access(geoip):
    forbidden = create("pods", {"kind": "Pod"}, code=403)
    forbidden["responseStatus"] = {"code": 403, "reason": "Forbidden", "message": "pods is forbidden"}
    allowed = create("pods", {"kind": "Pod"})
    [row] = rows("kubernetes-unauthorized-access", [forbidden, allowed], geoip)
    assert row["responseStatus.message"] == "pods is forbidden" and row["user"] == "bob"


def test_an_imported_detection_through_the_scan_command(geoip, tmp_path):
    import subprocess
    import sys

    log = tmp_path / "audit.log"
    log.write_text("".join(json.dumps(anon(ips=["203.0.113.50"], uri=f"/x{i}", code=403)) + "\n" for i in range(7)))
    detection = MANIFESTS / "kubernetes-access-scanning.yaml"
    cmd = [sys.executable, "-m", "auditwatch", "scan", "-d", str(detection), str(log)]
    refused = subprocess.run(cmd, capture_output=True, text=True, check=False, env={"PATH": "/usr/bin:/bin"})
    assert refused.returncode == 2 and "iplocation needs a MaxMind-format database" in refused.stderr
    done = subprocess.run([*cmd, "--geoip-db", geoip], capture_output=True, text=True, check=True)
    [row] = [json.loads(x) for x in done.stdout.splitlines()]
    assert (row["src_ip"], row["Country"], row["City"], row["count"]) == ("203.0.113.50", "France", "Paris", 7)


def test_import_finds_the_macros_of_a_security_content_checkout(tmp_path):
    """security_content keeps detections/cloud/*.yml and macros/ at its top: the import finds them."""
    import shutil
    import subprocess
    import sys

    checkout = tmp_path / "security_content"
    (checkout / "detections/cloud").mkdir(parents=True)
    shutil.copytree(ESCU / "macros", checkout / "macros")
    for path in DETECTIONS:
        shutil.copy(path, checkout / "detections/cloud")
    out = tmp_path / "out"
    files = sorted((checkout / "detections/cloud").glob("*.yml"))
    subprocess.run(
        [sys.executable, "-m", "auditwatch", "import-escu", *files, "-o", out], check=True, capture_output=True
    )
    for written in out.glob("*.yaml"):
        assert written.read_text() == (MANIFESTS / written.name).read_text()
    assert len(list(out.glob("*.yaml"))) == 17
