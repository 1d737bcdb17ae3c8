"""A Sigma and a Falco detection, as imported from the published packs, in the operator against the real
control plane: a pod with a host path and a ClusterRoleBinding to cluster-admin, made with kubectl, become
findings; the Falco rule's lint verdict (Ready, LintClean) is the one lint prints."""

import json

import yaml
from conftest import NAMESPACE, ROOT, ready, total, wait_for

PACKS = ROOT / "manifests/detections"


def installed(api, cluster, path):
    obj = yaml.safe_load(path.read_text())
    obj["metadata"]["namespace"] = NAMESPACE
    obj["spec"]["sources"][0]["file"]["path"] = str(cluster.audit_log)
    api.apply(obj)
    return obj["metadata"]["name"]


def audit_count(api, since_inode, predicate):
    return len(api.audit_events(predicate, since_inode))


def test_a_sigma_and_a_falco_detection_find_real_requests(cluster, operator, api, tmp_path):
    live = cluster.audit_log.stat().st_ino
    sigma = installed(api, cluster, PACKS / "sigma/sigma-container-with-a-hostpath-mount-created.yaml")
    falco = installed(api, cluster, PACKS / "falco/falco-attach-to-cluster-admin-role.yaml")
    for name in (sigma, falco):
        wait_for(lambda name=name: ready(api, name).get("status") == "True", what=f"{name} Ready")

    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "e2e-hostpath", "namespace": "default"},
           "spec": {"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.9"}],
                    "volumes": [{"name": "root", "hostPath": {"path": "/"}}]}}  # fmt: skip
    plain = {**pod, "metadata": {"name": "e2e-plain", "namespace": "default"},
             "spec": {"containers": pod["spec"]["containers"]}}  # fmt: skip
    account = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": "default"}}
    cluster.kubectl("apply", "-f", "-", input=json.dumps(account))  # pods need it; kube-controller-manager may lag
    for body in (pod, plain):
        cluster.kubectl("create", "-f", "-", input=json.dumps(body))
    binding = tmp_path / "crb.yaml"
    binding.write_text(yaml.safe_dump({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": "e2e-to-cluster-admin"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"kind": "User", "name": "mallory", "apiGroup": "rbac.authorization.k8s.io"}],
    }))  # fmt: skip
    cluster.kubectl("create", "-f", str(binding))
    cluster.kubectl("create", "clusterrolebinding", "e2e-to-view", "--clusterrole=view", "--user=mallory")

    def hostpath(ev):
        vols = (ev.get("requestObject") or {}).get("spec", {}).get("volumes") or []
        return ev.get("verb") == "create" and any("hostPath" in v for v in vols)

    def to_cluster_admin(ev):
        return (ev.get("stage") == "ResponseComplete" and ev.get("verb") == "create"
                and (ev.get("requestObject") or {}).get("roleRef", {}).get("name") == "cluster-admin")  # fmt: skip

    for name, predicate in ((sigma, hostpath), (falco, to_cluster_admin)):

        def counted(name=name, predicate=predicate):
            return total(api, name) == audit_count(api, live, predicate) >= 1

        def shown(name=name, predicate=predicate):
            return f"{name} to count each matching event: {total(api, name)} vs {audit_count(api, live, predicate)}"

        wait_for(counted, what=shown)

    [finding] = api.findings(falco)
    assert finding["spec"]["message"].startswith("Cluster Role Binding to cluster-admin role (user=")
    assert finding["spec"]["severity"] == "medium"
    [finding] = api.findings(sigma)
    assert finding["spec"]["message"].startswith("Container With A hostPath Mount Created: ")
    assert finding["spec"]["severity"] == "low"
