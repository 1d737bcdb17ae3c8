"""kind-config.yaml, the local control plane and manifests/ agree on paths, policy and flags."""

from pathlib import Path

import yaml

from auditwatch.api.models import WebhookSource
from auditwatch.cli import build_parser
from auditwatch.cli.cluster import WEBHOOK_HOSTS
from auditwatch.devcluster.certs import CLIENT_NAME, WebhookCerts
from auditwatch.devcluster.cluster import POLICY, DevCluster

ROOT = Path(__file__).resolve().parents[2]
WORKLOAD = ROOT / "manifests/base/daemonset.yaml"


def workload():
    """The base install's DaemonSet: one replica per control-plane node."""
    return next(d for d in yaml.safe_load_all(WORKLOAD.read_text()) if d["kind"] == "DaemonSet")


def kind_apiserver(name="kind-config.yaml"):
    config = yaml.safe_load((ROOT / name).read_text())
    [node] = config["nodes"]
    patch = yaml.safe_load(node["kubeadmConfigPatches"][0])
    args = {a["name"]: a["value"] for a in patch["apiServer"]["extraArgs"]}
    return node, patch["apiServer"], args


def devcluster_args(tmp_path):
    cluster = DevCluster(workdir=tmp_path)
    return dict(a.removeprefix("--").split("=", 1) for a in cluster.apiserver_args(2379)), cluster


def test_kind_mounts_the_same_audit_policy_file_devcluster_uses():
    node, apiserver, args = kind_apiserver()
    [mount] = [m for m in node["extraMounts"] if m["containerPath"] == args["audit-policy-file"]]
    assert (ROOT / mount["hostPath"]).resolve() == POLICY.resolve()
    policy_dir = str(Path(args["audit-policy-file"]).parent)
    assert any(v["mountPath"] == policy_dir and v["readOnly"] for v in apiserver["extraVolumes"])


def test_kind_and_devcluster_set_the_same_audit_flags(tmp_path):
    _, _, kind = kind_apiserver()
    dev, cluster = devcluster_args(tmp_path)
    assert kind["audit-log-format"] == dev["audit-log-format"] == "json"
    assert kind["audit-log-maxbackup"] == dev["audit-log-maxbackup"]
    assert Path(kind["audit-log-path"]).name == Path(dev["audit-log-path"]).name == cluster.audit_log.name
    assert dev["anonymous-auth"] == "true" and dev["authorization-mode"] == "RBAC"


def test_the_log_directory_is_what_the_daemonset_mounts_and_the_seed_detection_reads():
    _, apiserver, kind = kind_apiserver()
    log_dir = str(Path(kind["audit-log-path"]).parent)
    assert any(v["hostPath"] == log_dir == v["mountPath"] for v in apiserver["extraVolumes"])
    deployment = workload()
    pod = deployment["spec"]["template"]["spec"]
    [volume] = [v for v in pod["volumes"] if v["name"] == "audit-log"]
    [mount] = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "audit-log"]
    assert volume["hostPath"]["path"] == log_dir == mount["mountPath"] and mount["readOnly"]
    seed = yaml.safe_load(
        (ROOT / "manifests/detections/kubernetes-aws-detect-suspicious-kubectl-calls.yaml").read_text()
    )
    assert seed["spec"]["sources"][0]["file"]["path"] == kind["audit-log-path"]


def test_the_webhook_backend_reaches_the_operators_service_on_the_path_sources_default_to():
    node, _, kind = kind_apiserver()
    [mount] = [m for m in node["extraMounts"] if m["containerPath"] == kind["audit-webhook-config-file"]]
    kubeconfig = yaml.safe_load((ROOT / mount["hostPath"]).read_text())
    server = kubeconfig["clusters"][0]["cluster"]["server"]
    docs = list(yaml.safe_load_all(WORKLOAD.read_text()))
    service = next(d for d in docs if d["kind"] == "Service")
    deployment = workload()
    [port] = service["spec"]["ports"]
    assert server == f"https://{service['spec']['clusterIP']}:{port['port']}{WebhookSource().path}"
    assert service["spec"]["clusterIP"] in WEBHOOK_HOSTS  # in the serving certificate `cluster certs` makes
    container_ports = {
        p["name"]: p["containerPort"] for p in deployment["spec"]["template"]["spec"]["containers"][0]["ports"]
    }
    assert port["targetPort"] == "audit-webhook" and container_ports["audit-webhook"] == 8081
    assert build_parser().parse_args(["run"]).webhook_listen.endswith(":8081")
    assert kind["audit-webhook-mode"] == "batch"


def test_the_api_server_and_the_operator_use_the_certificates_cluster_certs_makes(tmp_path):
    node, _, kind = kind_apiserver()
    made = WebhookCerts(tmp_path)  # the file names `auditwatch cluster certs` writes
    [mount] = [m for m in node["extraMounts"] if m["containerPath"] == kind["audit-webhook-config-file"]]
    kubeconfig = yaml.safe_load((ROOT / mount["hostPath"]).read_text())
    cluster, user = kubeconfig["clusters"][0]["cluster"], kubeconfig["users"][0]["user"]
    [certs] = [m for m in node["extraMounts"] if m["hostPath"] == "webhook-certs"]
    assert {cluster["certificate-authority"], user["client-certificate"], user["client-key"]} == {
        f"{certs['containerPath']}/{p.name}" for p in (made.ca, made.client_cert, made.client_key)}  # fmt: skip
    deployment = workload()
    pod = deployment["spec"]["template"]["spec"]
    args = build_parser().parse_args(pod["containers"][0]["args"])
    mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    secrets = {v["name"]: v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    assert secrets == {"webhook-tls": "auditwatch-webhook-tls", "webhook-client-ca": "auditwatch-webhook-client-ca"}
    assert args.webhook_tls_cert == f"{mounts['webhook-tls']}/tls.crt" and made.server_cert.name == "tls.crt"
    assert args.webhook_tls_key == f"{mounts['webhook-tls']}/tls.key" and made.server_key.name == "tls.key"
    assert args.webhook_client_ca == f"{mounts['webhook-client-ca']}/{made.ca.name}"
    assert args.webhook_client_names == [CLIENT_NAME] and not args.webhook_insecure


def test_the_ha_kind_config_has_three_control_plane_nodes_each_set_up_as_the_single_node_one():
    single = yaml.safe_load((ROOT / "kind-config.yaml").read_text())
    ha = yaml.safe_load((ROOT / "kind-config-ha.yaml").read_text())
    assert {k: v for k, v in ha.items() if k != "nodes"} == {k: v for k, v in single.items() if k != "nodes"}
    assert ha["nodes"] == single["nodes"] * 3  # the same audit flags, policy, webhook and mounts on each


def test_the_daemonset_reads_its_nodes_log_with_the_least_privilege_that_works():
    """kube-apiserver creates the log root-owned, mode 0600: uid 0 reads it as its owner, with no
    capability (no DAC override), no escalation, a read-only root, only the audit directory mounted."""
    ds = workload()
    pod = ds["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert pod["securityContext"]["runAsUser"] == 0 and pod["securityContext"]["seccompProfile"]["type"]
    assert container["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                            "capabilities": {"drop": ["ALL"]}}  # fmt: skip
    host = [v for v in pod["volumes"] if "hostPath" in v]
    assert [v["name"] for v in host] == ["audit-log"]
    assert all(m["readOnly"] for m in container["volumeMounts"] if m["name"] == "audit-log")
    assert not pod.get("hostNetwork") and not pod.get("hostPID")
    [shard] = [e for e in container["env"] if e["name"] == "AUDITWATCH_SHARD"]
    assert shard["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"  # stable across pod replacement
    assert pod["nodeSelector"] == {"node-role.kubernetes.io/control-plane": ""}
    namespace = yaml.safe_load((ROOT / "manifests/base/namespace.yaml").read_text())
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"  # hostPath
