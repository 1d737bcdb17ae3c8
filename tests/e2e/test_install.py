"""The CRDs and manifests/ against a real kube-apiserver: schema, dry-run, RBAC enough and no wider."""

import json
import os

import yaml
from conftest import NAMESPACE, ROOT, wait_for

from auditwatch.findings.alerts import AlertConfig

OPERATOR = "system:serviceaccount:auditwatch:auditwatch"


def test_an_invalid_detection_is_rejected_by_the_schema(cluster):
    bad = {
        "apiVersion": "auditwatch.io/v1alpha1", "kind": "AuditDetection",
        "metadata": {"name": "bad", "namespace": NAMESPACE},
        "spec": {"search": "x", "sources": [{"name": "a", "file": {"path": "/x"}, "webhook": {}}],
                 "finding": {"riskScore": 500, "severity": "urgent"}},
    }  # fmt: skip
    proc = cluster.kubectl("apply", "-f", "-", input=json.dumps(bad), check=False)
    assert proc.returncode != 0
    assert "spec.finding.riskScore: Invalid value: 500" in proc.stderr
    assert 'spec.finding.severity: Unsupported value: "urgent"' in proc.stderr
    both = {**bad, "spec": {"search": "x", "sources": bad["spec"]["sources"]}}  # CEL runs once the rest is valid
    proc = cluster.kubectl("apply", "-f", "-", input=json.dumps(both), check=False)
    assert proc.returncode != 0 and "a source sets exactly one of file, webhook, cloudwatch" in proc.stderr
    for spec in ({"sources": []}, {"search": "x", "sigma": "title: t"}):  # no rule, or two
        proc = cluster.kubectl("apply", "-f", "-", input=json.dumps({**bad, "spec": spec}), check=False)
        assert proc.returncode != 0 and "a detection sets exactly one of search, sigma, falco" in proc.stderr


def test_the_whole_kustomize_base_passes_server_side_dry_run(cluster):
    proc = cluster.kubectl("apply", "-k", str(ROOT / "manifests"), "--dry-run=server")
    assert "daemonset.apps/auditwatch" in proc.stdout and "clusterrole.rbac.authorization.k8s.io" in proc.stdout


def test_the_sample_detections_and_the_escu_component_are_accepted(cluster):
    proc = cluster.kubectl("apply", "-f", str(ROOT / "manifests/detections"), "--dry-run=server")
    assert "kubernetes-aws-detect-suspicious-kubectl-calls" in proc.stdout
    for pack, count in (("escu", 17), ("sigma", 16), ("falco", 48)):
        proc = cluster.kubectl("apply", "-k", str(ROOT / "manifests/detections" / pack), "--dry-run=server")
        assert proc.stdout.count("(server dry run)") == count


def can(cluster, verb, resource, namespace=NAMESPACE):
    resource, _, subresource = resource.partition("/")
    args = ["auth", "can-i", verb, resource, "--as", OPERATOR]
    args += [f"--subresource={subresource}"] if subresource else []
    args += ["-n", namespace] if namespace else ["--all-namespaces"]
    return cluster.kubectl(*args, check=False).stdout.strip() == "yes"


def test_operator_rbac_grants_what_it_needs(cluster):
    for verb, resource in [
        ("list", "auditdetections.auditwatch.io"), ("watch", "auditdetections.auditwatch.io"),
        ("patch", "auditdetections.auditwatch.io"), ("patch", "auditdetections.auditwatch.io/status"),
        ("create", "detectionfindings.auditwatch.io"), ("list", "detectionfindings.auditwatch.io"),
        ("delete", "detectionfindings.auditwatch.io"), ("patch", "detectionfindings.auditwatch.io"),
        ("create", "events"),
    ]:  # fmt: skip
        assert can(cluster, verb, resource), f"operator cannot {verb} {resource}"
    assert can(cluster, "list", "auditdetections.auditwatch.io", namespace=None)


def test_operator_rbac_is_no_wider(cluster):
    for verb, resource in [
        ("get", "secrets"), ("list", "pods"), ("create", "auditdetections.auditwatch.io"),
        ("delete", "auditdetections.auditwatch.io"), ("update", "auditdetections.auditwatch.io"),
        ("update", "detectionfindings.auditwatch.io"), ("patch", "detectionfindings.auditwatch.io/status"),
        ("delete", "events"), ("get", "configmaps"), ("create", "clusterrolebindings"),
    ]:  # fmt: skip
        assert not can(cluster, verb, resource), f"operator may {verb} {resource}"
    rules = next(
        d for d in yaml.safe_load_all((ROOT / "manifests/base/rbac.yaml").read_text()) if d["kind"] == "ClusterRole"
    )
    for rule in rules["rules"]:
        assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"]


def test_kubectl_without_credentials_is_anonymous(cluster, api):
    proc = cluster.kubectl("get", "pods", "-n", "default", kubeconfig=cluster.anonymous_kubeconfig, check=False)
    assert proc.returncode != 0 and "Forbidden" in proc.stderr
    wait_for(  # the audit event lands in the log just after the response
        lambda: api.audit_events(
            lambda ev: ev["user"]["username"] == "system:anonymous" and ev.get("userAgent", "").startswith("kubectl/")
        ),
        what="kubectl's anonymous request in the audit log",
    )


def test_the_eks_overlay_passes_server_side_dry_run(cluster):
    """manifests/eks: the base without hostPath, node selector or webhook, IRSA, the seed on CloudWatch."""
    proc = cluster.kubectl("apply", "-k", str(ROOT / "manifests/eks"), "--dry-run=server")
    assert "deployment.apps/auditwatch" in proc.stdout and "service/auditwatch-webhook" not in proc.stdout
    assert "daemonset.apps/auditwatch" not in proc.stdout
    assert "auditdetection.auditwatch.io/kubernetes-aws-detect-suspicious-kubectl-calls" in proc.stdout
    rendered = list(yaml.safe_load_all(cluster.kubectl("kustomize", str(ROOT / "manifests/eks")).stdout))
    [deployment] = [d for d in rendered if d["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    assert "nodeSelector" not in pod and not any("hostPath" in v for v in pod["volumes"])
    assert "--webhook-listen=" in pod["containers"][0]["args"] and pod["securityContext"]["runAsNonRoot"]
    [namespace] = [d for d in rendered if d["kind"] == "Namespace"]
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    [account] = [d for d in rendered if d["kind"] == "ServiceAccount"]
    assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].startswith("arn:aws:iam::")
    policy = json.loads((ROOT / "manifests/eks/iam-policy.json").read_text())
    [statement] = policy["Statement"]
    assert sorted(statement["Action"]) == ["logs:DescribeLogStreams", "logs:FilterLogEvents", "logs:GetLogEvents"]
    assert all(
        r.startswith("arn:aws:logs:REGION:ACCOUNT_ID:log-group:/aws/eks/CLUSTER/cluster") for r in statement["Resource"]
    )


def test_the_gke_overlay_passes_server_side_dry_run(cluster):
    """manifests/gke: the base without hostPath, node selector or webhook; Workload Identity; two replicas
    that pull the seed's subscription, each spooling on its own volume."""
    proc = cluster.kubectl("apply", "-k", str(ROOT / "manifests/gke"), "--dry-run=server")
    assert "statefulset.apps/auditwatch" in proc.stdout and "service/auditwatch-webhook" not in proc.stdout
    assert "daemonset.apps/auditwatch" not in proc.stdout
    assert "auditdetection.auditwatch.io/kubernetes-aws-detect-suspicious-kubectl-calls" in proc.stdout
    rendered = list(yaml.safe_load_all(cluster.kubectl("kustomize", str(ROOT / "manifests/gke")).stdout))
    [statefulset] = [d for d in rendered if d["kind"] == "StatefulSet"]
    pod = statefulset["spec"]["template"]["spec"]
    assert "nodeSelector" not in pod and not any("hostPath" in v for v in pod["volumes"])
    args = pod["containers"][0]["args"]
    assert {"--sources=pubsub", "--webhook-listen=", "--pubsub-spool=/var/spool/auditwatch"} <= set(args)
    assert [t["metadata"]["name"] for t in statefulset["spec"]["volumeClaimTemplates"]] == ["spool"]
    [account] = [d for d in rendered if d["kind"] == "ServiceAccount"]
    assert account["metadata"]["annotations"]["iam.gke.io/gcp-service-account"].endswith(".iam.gserviceaccount.com")
    [seed] = [d for d in rendered if d["kind"] == "AuditDetection"]
    assert seed["spec"]["sources"] == [
        {"name": "gke-audit", "pubsub": {"project": "my-gcp-project", "subscription": "auditwatch-gke-audit"}}
    ]


def test_the_aks_overlay_passes_server_side_dry_run(cluster):
    """manifests/aks: the base without hostPath, node selector or webhook; Workload Identity; one replica
    reading the storage account's archive."""
    proc = cluster.kubectl("apply", "-k", str(ROOT / "manifests/aks"), "--dry-run=server")
    assert "deployment.apps/auditwatch" in proc.stdout and "service/auditwatch-webhook" not in proc.stdout
    assert "auditdetection.auditwatch.io/kubernetes-aws-detect-suspicious-kubectl-calls" in proc.stdout
    rendered = list(yaml.safe_load_all(cluster.kubectl("kustomize", str(ROOT / "manifests/aks")).stdout))
    [deployment] = [d for d in rendered if d["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]
    assert pod["metadata"]["labels"]["azure.workload.identity/use"] == "true" and deployment["spec"]["replicas"] == 1
    assert "--sources=azureBlob" in pod["spec"]["containers"][0]["args"]
    [account] = [d for d in rendered if d["kind"] == "ServiceAccount"]
    assert "azure.workload.identity/client-id" in account["metadata"]["annotations"]
    [seed] = [d for d in rendered if d["kind"] == "AuditDetection"]
    archive = seed["spec"]["sources"][0]["azureBlob"]  # its container: insights-logs-kube-audit, the default
    assert archive["accountUrl"].endswith(".blob.core.windows.net") and "/MANAGEDCLUSTERS/" in archive["prefix"]


def test_the_aks_eventhubs_overlay_passes_server_side_dry_run(cluster):
    """manifests/aks-eventhubs: the AKS install with a StatefulSet of two replicas sharing the event hub's
    partitions, each spooling on its own volume, instead of the one replica reading the archive."""
    proc = cluster.kubectl("apply", "-k", str(ROOT / "manifests/aks-eventhubs"), "--dry-run=server")
    assert "statefulset.apps/auditwatch" in proc.stdout and "deployment.apps/auditwatch" not in proc.stdout
    rendered = list(yaml.safe_load_all(cluster.kubectl("kustomize", str(ROOT / "manifests/aks-eventhubs")).stdout))
    [statefulset] = [d for d in rendered if d["kind"] == "StatefulSet"]
    assert statefulset["spec"]["replicas"] == 2
    pod = statefulset["spec"]["template"]
    assert pod["metadata"]["labels"]["azure.workload.identity/use"] == "true"
    args = pod["spec"]["containers"][0]["args"]
    assert {"--sources=eventHub", "--webhook-listen=", "--eventhub-spool=/var/spool/auditwatch"} <= set(args)
    shard = next(e for e in pod["spec"]["containers"][0]["env"] if e["name"] == "AUDITWATCH_SHARD")
    assert shard["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"  # also its static group membership
    assert [t["metadata"]["name"] for t in statefulset["spec"]["volumeClaimTemplates"]] == ["spool"]
    [seed] = [d for d in rendered if d["kind"] == "AuditDetection"]
    assert seed["spec"]["sources"] == [{"name": "aks-audit", "eventHub": {"namespace": "aks-audit",
                                                                          "hub": "kube-audit"}}]  # fmt: skip
    assert seed["spec"]["finding"]["groupBy"] == ["user", "src_ip"]  # the rest is the AKS seed's


def with_component(cluster, tmp_path, component):
    """The DaemonSet's pod template from an overlay of manifests/ with one component, after the overlay
    passed a server-side dry run."""
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    base = os.path.relpath(ROOT / "manifests", overlay)
    (overlay / "kustomization.yaml").write_text(f"resources: [{base}]\ncomponents: [{base}/components/{component}]\n")
    assert "daemonset.apps/auditwatch" in cluster.kubectl("apply", "-k", str(overlay), "--dry-run=server").stdout
    rendered = yaml.safe_load_all(cluster.kubectl("kustomize", str(overlay)).stdout)
    [daemonset] = [d for d in rendered if d["kind"] == "DaemonSet"]
    return daemonset["spec"]["template"]


def test_the_prometheus_component_annotates_the_pod_for_its_metrics_port(cluster, tmp_path):
    pod = with_component(cluster, tmp_path, "prometheus")
    [container] = pod["spec"]["containers"]
    port = pod["metadata"]["annotations"]["prometheus.io/port"]
    assert {"name": "metrics", "containerPort": int(port)} in container["ports"]
    assert f"--metrics-listen=0.0.0.0:{port}" in container["args"]


def test_the_alerts_component_mounts_the_receivers_secret_and_its_example_is_valid(cluster, tmp_path):
    pod = with_component(cluster, tmp_path, "alerts")["spec"]
    [container] = pod["containers"]
    assert "--alerts=/etc/auditwatch/alerts/alerts.yaml" in container["args"]
    assert {"name": "alerts", "mountPath": "/etc/auditwatch/alerts", "readOnly": True} in container["volumeMounts"]
    assert {"name": "alerts", "secret": {"secretName": "auditwatch-alerts", "defaultMode": 0o400}} in pod["volumes"]
    example = yaml.safe_load((ROOT / "manifests/components/alerts/alerts.example.yaml").read_text())
    assert [r.type for r in AlertConfig.model_validate(example).receivers] == ["alertmanager", "webhook", "slack"]


def test_the_webhook_overlay_runs_two_non_root_replicas_with_stable_shards(cluster):
    """manifests/webhook: a StatefulSet of two behind the base's Service, each its pod name as its shard
    and its own spool volume, non-root under Pod Security "restricted" (the dry run applies the label)."""
    proc = cluster.kubectl("apply", "-k", str(ROOT / "manifests/webhook"), "--dry-run=server")
    assert "statefulset.apps/auditwatch" in proc.stdout and "service/auditwatch-webhook" in proc.stdout
    assert "daemonset.apps/auditwatch" not in proc.stdout
    rendered = list(yaml.safe_load_all(cluster.kubectl("kustomize", str(ROOT / "manifests/webhook")).stdout))
    [sts] = [d for d in rendered if d["kind"] == "StatefulSet"]
    [service] = [d for d in rendered if d["kind"] == "Service"]
    pod = sts["spec"]["template"]
    assert sts["spec"]["replicas"] == 2 and service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert pod["spec"]["securityContext"]["runAsNonRoot"] and not any("hostPath" in v for v in pod["spec"]["volumes"])
    [container] = pod["spec"]["containers"]
    [shard] = [e for e in container["env"] if e["name"] == "AUDITWATCH_SHARD"]
    assert shard["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert [c["metadata"]["name"] for c in sts["spec"]["volumeClaimTemplates"]] == ["webhook-spool"]
    [namespace] = [d for d in rendered if d["kind"] == "Namespace"]
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
