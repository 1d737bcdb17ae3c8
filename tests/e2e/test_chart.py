"""The Helm chart (charts/auditwatch): lint, a schema that refuses bad values at install, the kustomize
install's objects in each mode, options the operator takes, and a server-side dry-run of each mode."""

import json
import subprocess

import pytest
import yaml
from conftest import ROOT
from pydantic import ValidationError

from auditwatch.api.chart import ChartValues
from auditwatch.cli import build_parser
from auditwatch.cli.cluster import WEBHOOK_HOSTS
from auditwatch.cli.common import make_settings
from auditwatch.devcluster.binaries import helm_binary

CHART = ROOT / "charts/auditwatch"
HELM_LABELS = {
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/managed-by",
    "helm.sh/chart",
}
ROLE = "arn:aws:iam::111122223333:role/auditwatch-cloudwatch-reader"  # manifests/eks/serviceaccount-irsa.yaml's
GOOGLE_ACCOUNT = "auditwatch@my-gcp-project.iam.gserviceaccount.com"  # manifests/gke's Workload Identity
AZURE_CLIENT = "00000000-0000-0000-0000-000000000000"  # manifests/aks's Workload Identity
MODES = {  # the chart's values -> the kustomize install it must equal
    "nodes": ([], "manifests"),
    "webhook": (["--set", "mode=webhook"], "manifests/webhook"),
    "eks": (["--set", "mode=eks", "--set", f"cloudwatch.roleArn={ROLE}"], "manifests/eks"),
    "gke": (["--set", "mode=gke", "--set", f"pubsub.serviceAccount={GOOGLE_ACCOUNT}"], "manifests/gke"),
    "aks": (["--set", "mode=aks", "--set", f"azure.clientId={AZURE_CLIENT}"], "manifests/aks"),
    "aks-eventhubs": (
        ["--set", "mode=aks-eventhubs", "--set", f"azure.clientId={AZURE_CLIENT}"],
        "manifests/aks-eventhubs",
    ),
}


@pytest.fixture(scope="module")
def helm():
    return helm_binary()


def run(helm, *args, check=True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(helm), *map(str, args)], capture_output=True, text=True, check=check)


def template(helm, *args, release="auditwatch", namespace="auditwatch") -> list[dict]:
    out = run(helm, "template", release, CHART, "--namespace", namespace, *args).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def by_name(objects) -> dict[tuple[str, str], dict]:
    return {(o["kind"], o["metadata"]["name"]): o for o in objects}


def without_helm_labels(obj: dict) -> dict:
    labels = {k: v for k, v in obj["metadata"]["labels"].items() if k not in HELM_LABELS}
    return {**obj, "metadata": {**obj["metadata"], "labels": labels}}


def test_the_chart_lints_strictly_in_every_mode(helm):
    for values, _ in MODES.values():
        proc = run(helm, "lint", "--strict", CHART, *values)
        assert "1 chart(s) linted, 0 chart(s) failed" in proc.stdout


@pytest.mark.parametrize("mode", MODES)
def test_each_mode_renders_the_objects_of_its_kustomize_install(cluster, helm, mode):
    values, path = MODES[mode]
    kustomized = yaml.safe_load_all(cluster.kubectl("kustomize", str(ROOT / path)).stdout)
    # Helm installs into a namespace that exists (--create-namespace) and keeps CRDs apart (crds/);
    # the EKS install's seed detection is a detection, applied as the others are.
    expected = by_name(
        o for o in kustomized if o["kind"] not in ("Namespace", "CustomResourceDefinition", "AuditDetection")
    )
    charted = by_name(map(without_helm_labels, (o for o in template(helm, *values) if o["kind"] != "AuditDetection")))
    assert charted.keys() == expected.keys()
    for key, obj in charted.items():
        assert obj == expected[key], key


def test_the_detection_packs_are_the_manifests_detections_in_the_release_namespace(helm):
    def detections(*values):
        return by_name(o for o in template(helm, *values, namespace="sec") if o["kind"] == "AuditDetection")

    [seed] = yaml.safe_load_all(
        (ROOT / "manifests/detections/kubernetes-aws-detect-suspicious-kubectl-calls.yaml").read_text()
    )
    charted = detections()  # the default: the seed detection only
    assert list(charted) == [("AuditDetection", seed["metadata"]["name"])]
    obj = without_helm_labels(charted[("AuditDetection", seed["metadata"]["name"])])
    assert obj["metadata"].pop("annotations").pop("helm.sh/resource-policy") == "keep"  # uninstall keeps findings
    assert obj["metadata"].pop("namespace") == "sec"
    assert obj["spec"] == seed["spec"] and obj["metadata"]["labels"] == {
        **seed["metadata"]["labels"],
        "app.kubernetes.io/name": "auditwatch",
        "app.kubernetes.io/component": "operator",
    }
    escu = yaml.safe_load((ROOT / "manifests/detections/escu/kustomization.yaml").read_text())["resources"]
    both = detections("--set", "detections.escu=true")
    assert len(both) == len(escu) and charted.keys() <= both.keys()  # the seed's name is ESCU's too: once
    assert both[("AuditDetection", seed["metadata"]["name"])]["spec"] == seed["spec"]  # as the seed, not ESCU's
    assert not detections("--set", "detections.seed=false")

    # In a cloud mode, every installed detection reads the mode's source instead of the node's log file.
    hub = [{"name": "aks-audit", "eventHub": {"namespace": "aks-audit", "hub": "kube-audit"}}]
    cloud = detections(*MODES["aks-eventhubs"][0], "--set", "detections.escu=true", "--set-json",
                       f"detections.sources={json.dumps(hub)}")  # fmt: skip
    assert cloud.keys() == both.keys() and all(d["spec"]["sources"] == hub for d in cloud.values())
    assert cloud[("AuditDetection", seed["metadata"]["name"])]["spec"]["search"] == seed["spec"]["search"]


def test_the_webhook_certificate_from_cert_manager_names_what_auditwatch_cluster_certs_does(helm):
    [cert] = [o for o in template(helm, "--set", "webhook.certManager.issuer=ca") if o["kind"] == "Certificate"]
    assert cert["spec"]["secretName"] == "auditwatch-webhook-tls"  # the Secret the pods mount
    assert cert["spec"]["issuerRef"] == {"name": "ca", "kind": "Issuer"}
    assert {*cert["spec"]["ipAddresses"], *cert["spec"]["dnsNames"]} == set(WEBHOOK_HOSTS)
    for mode in ("eks", "gke", "aks", "aks-eventhubs"):  # no webhook server
        assert not [o for o in template(helm, "--set", "webhook.certManager.issuer=ca", *MODES[mode][0])
                    if o["kind"] == "Certificate"]  # fmt: skip


@pytest.mark.parametrize("mode", MODES)
def test_each_mode_gives_the_operator_options_it_takes(helm, mode):
    values, _ = MODES[mode]
    extra = ["--set", "detectionNamespaces={team-a,team-b}", "--set", "extraArgs={--reports}"]
    [workload] = [o for o in template(helm, *values, *extra) if o["kind"] in ("DaemonSet", "StatefulSet", "Deployment")]
    args = workload["spec"]["template"]["spec"]["containers"][0]["args"]
    settings = make_settings(build_parser().parse_args(args))
    assert settings.detection_namespaces == ("team-a", "team-b") and settings.reports
    assert (settings.write_qps, settings.write_burst, settings.metrics_listen) == (50, 100, "0.0.0.0:8082")


def test_the_chart_carries_the_generated_crds(helm):
    crds = by_name(o for o in template(helm, "--include-crds") if o["kind"] == "CustomResourceDefinition")
    generated = by_name(yaml.safe_load(p.read_text()) for p in sorted((ROOT / "crds").glob("*_*.yaml")))
    assert crds == generated and len(crds) == 2


def test_another_release_names_its_cluster_wide_objects_after_itself(helm):
    objects = template(helm, "--set", "mode=webhook", release="team-audit", namespace="audit")
    cluster_wide = {o["metadata"]["name"] for o in objects if "namespace" not in o["metadata"]}
    assert cluster_wide == {"team-audit-operator", "team-audit-detection-author"}
    binding = by_name(objects)[("ClusterRoleBinding", "team-audit-operator")]
    assert binding["roleRef"]["name"] == "team-audit-operator"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "auditwatch", "namespace": "audit"}]


BAD = [
    ({"mode": "edge"}, "mode"),
    ({"writeBudget": {"qps": 0}}, "qps"),  # bounded as --write-qps is
    ({"mode": "eks"}, "roleArn"),  # the EKS install needs its IAM role
    ({"imag": {"tag": "1"}}, "imag"),  # a misspelt key
    ({"metricsListen": "8082"}, "metricsListen"),
    ({"detectionNamespaces": ["Team_A"]}, "detectionNamespaces"),
    ({"cloudwatch": {"roleArn": "auditwatch-reader"}}, "roleArn"),
    ({"extraArgs": ["reports"]}, "extraArgs"),
    ({"allowPaths": ["var/log"]}, "allowPaths"),  # a file source's directory is absolute
    ({"detections": {"sigma": True}}, "sigma"),  # a pack the chart does not carry
    ({"monitoring": {"prometheusRule": "yes"}}, "prometheusRule"),
    ({"webhook": {"certManager": {"issuer": "ca", "kind": "VaultIssuer"}}}, "kind"),
    ({"pubsub": {"serviceAccount": "projects/p/serviceAccounts/a"}}, "serviceAccount"),  # an email, not a path
    ({"azure": {"clientId": "auditwatch"}}, "clientId"),  # a GUID
    ({"eventHub": {"replicas": 0}}, "replicas"),
    ({"detections": {"sources": [{"name": "aks", "eventHub": {"namespace": "aks-audit"}}]}}, "hub"),
]


@pytest.mark.parametrize(("values", "field"), BAD, ids=[f for _, f in BAD])
def test_the_schema_refuses_a_bad_value_at_install_as_the_model_does(helm, tmp_path, values, field):
    given = tmp_path / "values.yaml"
    given.write_text(yaml.safe_dump(values))
    proc = run(helm, "template", "auditwatch", CHART, "-f", given, check=False)
    assert proc.returncode != 0 and "values don't meet the specifications of the schema" in proc.stderr
    assert field in proc.stderr
    with pytest.raises(ValidationError):
        ChartValues.model_validate(values)


@pytest.mark.parametrize("mode", MODES)
def test_each_mode_passes_server_side_dry_run(cluster, helm, mode):
    values, _ = MODES[mode]
    rendered = run(helm, "template", "auditwatch", CHART, "--namespace", "auditwatch", *values).stdout
    proc = cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=rendered)
    assert "serviceaccount/auditwatch" in proc.stdout and "(server dry run)" in proc.stdout
