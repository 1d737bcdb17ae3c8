"""Installed as users install it: `helm install` on a control plane of its own, the operator then run from
its image (`make image`) under podman as the chart's pod would run (tests/podman.py): the chart's
ServiceAccount, security context, args and mounts. Then `helm upgrade` and `helm uninstall`.

The session operator watches the shared control plane's every namespace; this module's own control plane
has nothing running but what it installs, so the two never handle the same detection.
"""

import json
import re
import shutil
import subprocess
import tempfile
import urllib.request
from pathlib import Path

import pytest
import yaml
from conftest import (
    CERT_MANAGER,
    PROMETHEUS_OPERATOR,
    ROOT,
    Api,
    anonymous_with_agent,
    detection,
    module_file,
    ready,
    scrape,
    total,
    wait_for,
)

from auditwatch.devcluster import DevCluster
from auditwatch.devcluster.binaries import helm_binary
from auditwatch.devcluster.cluster import free_port
from auditwatch.devcluster.image import build_image
from podman import Pod, pod_template

CHART = ROOT / "charts/auditwatch"
RELEASE = NAMESPACE = "auditwatch"
SEED = "kubernetes-aws-detect-suspicious-kubectl-calls"
AUDIT_DIR = "/var/log/kubernetes/audit"  # the DaemonSet's hostPath


@pytest.fixture(scope="module")
def image():
    return build_image(ROOT)


@pytest.fixture(scope="module")
def bare():
    workdir = Path(tempfile.mkdtemp(prefix="auditwatch-helm-"))
    try:
        with DevCluster(workdir=workdir, webhook_port=free_port()) as c:
            yield c
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


class Release:
    """helm on ``cluster`` as its admin; the release's objects as installed."""

    def __init__(self, cluster: DevCluster) -> None:
        self.cluster, self.helm = cluster, helm_binary()

    def run(self, *args: str) -> str:
        done = subprocess.run([str(self.helm), *args, "--kubeconfig", str(self.cluster.admin_kubeconfig)],
                              capture_output=True, text=True)  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout

    def manifests(self) -> list[dict]:
        out = self.run("get", "manifest", RELEASE, "-n", NAMESPACE)
        return [d for d in yaml.safe_load_all(out) if d]


# The other projects' CRDs the chart can use, from their Go modules: installed first, as where users turn them on.
CRDS = [
    *(
        (PROMETHEUS_OPERATOR, f"example/prometheus-operator-crd/monitoring.coreos.com_{plural}.yaml")
        for plural in ("podmonitors", "prometheusrules")
    ),
    (CERT_MANAGER, "deploy/crds/cert-manager.io_certificates.yaml"),
]


@pytest.fixture(scope="module")
def release(bare, image, tmp_path_factory):
    """The chart installed in mode nodes with the webhook's Secrets it names, its monitoring objects and
    the webhook's Certificate (the Secret made here stands in for what cert-manager would issue)."""
    for module, path in CRDS:
        bare.kubectl("apply", "--server-side", "-f", str(module_file(module, path, tmp_path_factory.mktemp("go"))))
    bare.kubectl("create", "namespace", NAMESPACE)
    certs = bare.webhook_certs
    bare.kubectl("-n", NAMESPACE, "create", "secret", "tls", "auditwatch-webhook-tls",
                 f"--cert={certs.server_cert}", f"--key={certs.server_key}")  # fmt: skip
    bare.kubectl("-n", NAMESPACE, "create", "secret", "generic", "auditwatch-webhook-client-ca",
                 f"--from-file=ca.crt={certs.ca}")  # fmt: skip
    r = Release(bare)
    repository, tag = image.rsplit(":", 1)
    r.run("install", RELEASE, str(CHART), "-n", NAMESPACE, "--set", f"image.repository={repository}",
          "--set", f"image.tag={tag}", "--set", "monitoring.podMonitor=true",
          "--set", "monitoring.prometheusRule=true", "--set", "monitoring.grafanaDashboard=true",
          "--set", "webhook.certManager.issuer=auditwatch-ca")  # fmt: skip
    return r


def ports(bare) -> list[str]:
    """The pod's fixed ports, which the host network would share: free ones (the webhook's: where this
    control plane's API server sends its batches)."""
    return [f"--webhook-listen=127.0.0.1:{bare.webhook_port}", f"--metrics-listen=127.0.0.1:{free_port()}",
            f"--liveness=http://127.0.0.1:{free_port()}/healthz"]  # fmt: skip


def daemonset_pod(bare, image, release, tmp_path) -> Pod:
    """The DaemonSet's pod on node cp-0: its hostPath is the control plane's audit directory."""
    template = pod_template(release.manifests(), "DaemonSet")
    return Pod(template, image, tmp_path, bare, NAMESPACE, {AUDIT_DIR: bare.audit_dir}, ports(bare))


def until(pod: Pod, check, timeout: float = 60):
    """``wait_for(check)``, naming the pod's last log lines if it times out."""
    return wait_for(check, timeout, lambda: pod.logs()[-3000:])


def is_ready(api: Api, name: str) -> bool:
    """The detection's Ready condition is True (as the last operator to run it wrote)."""
    return ready(api, name).get("status") == "True"


def assert_runs_as(pod: Pod, uid: int) -> None:
    """The container's process runs as ``uid`` with no effective capability."""
    status = pod.exec("sh", "-c", "grep -E '^(Uid|CapEff)' /proc/1/status").stdout
    assert "CapEff:\t0000000000000000" in status and f"Uid:\t{uid}\t{uid}\t{uid}\t{uid}" in status


def seed_total_is_exact(api: Api) -> bool:
    """The seed's count is every anonymous event of the log (it has one file: no rotation here)."""
    return total(api, SEED) == len(api.audit_events(anonymous_with_agent()))


def metrics_port(pod: Pod) -> int:
    return int(next(a for a in pod.extra_args if a.startswith("--metrics-listen")).rsplit(":", 1)[1])


def series_names(port: int) -> set[str]:
    """The series an operator exports, those without samples yet too (from its families' TYPE lines); none
    before it serves."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
            text = resp.read().decode()
    except OSError:
        return set()
    families = [line.split()[2:4] for line in text.splitlines() if line.startswith("# TYPE")]
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}
    return {name.removesuffix("_total") + s for name, kind in families for s in suffixes.get(kind, [""])}


def webhook_answers(pod: Pod) -> set[str]:
    """The HTTP status codes the pod's webhook server answered with (its metrics)."""
    samples = scrape(metrics_port(pod))
    return {dict(labels)["code"] for (name, labels) in samples if name == "auditwatch_webhook_requests_total"}


def test_the_installed_operator_runs_from_its_image_as_the_chart_runs_it(bare, image, release, tmp_path):
    api = Api(bare)
    with daemonset_pod(bare, image, release, tmp_path) as pod:
        until(pod, lambda: is_ready(api, SEED))
        api.anonymous("/api/v1/namespaces/default/secrets", "curl/8.5.0", times=3)
        until(pod, lambda: seed_total_is_exact(api) and total(api, SEED) >= 3)
        assert "candidate search: native" in pod.logs()
        # Read-only root file system, no compiler, uid 0 without capabilities (the DaemonSet's context).
        assert pod.exec("touch", "/opt/auditwatch/x").returncode != 0
        assert pod.exec("sh", "-c", "command -v gcc cc").returncode != 0
        assert_runs_as(pod, 0)
        # The API server's batches reached the webhook server with the client certificate the chart's Secrets
        # trust (a wrong one: no TLS session, or 403); 503 until a detection reads the webhook (the next test).
        wait_for(lambda: webhook_answers(pod) == {"503"}, 30, lambda: f"{webhook_answers(pod)} {pod.logs()[-2000:]}")


def test_the_alert_rules_and_dashboard_query_only_series_the_operator_exports(bare, image, release, tmp_path):
    installed = {o["kind"]: o for o in release.manifests()}
    rules = installed["PrometheusRule"]["spec"]["groups"][0]["rules"]
    panels = json.loads(installed["ConfigMap"]["data"]["auditwatch.json"])["panels"]
    queried = {n for e in [r["expr"] for r in rules] + [t["expr"] for p in panels for t in p["targets"]]
               for n in re.findall(r"\bauditwatch_[a-z_]+\b", e)}  # fmt: skip
    with daemonset_pod(bare, image, release, tmp_path) as pod:
        exported = until(pod, lambda: series_names(metrics_port(pod)))
    assert queried and queried <= exported


def test_an_upgrade_with_a_changed_value_keeps_positions_and_counts(bare, image, release, tmp_path):
    api = Api(bare)
    with daemonset_pod(bare, image, release, tmp_path) as pod:
        until(pod, lambda: is_ready(api, SEED))
        api.anonymous("/api/v1/namespaces/default/pods", "curl/8.5.0", times=2)
        until(pod, lambda: total(api, SEED) >= 5)
        before = total(api, SEED)
        release.run("upgrade", RELEASE, str(CHART), "-n", NAMESPACE, "--reuse-values", "--set", "writeBudget.qps=40")
    # The rollout: a new pod from the upgraded template, reading on from the saved positions.
    upgraded = daemonset_pod(bare, image, release, tmp_path)
    assert "--write-qps=40" in upgraded.container["args"]
    with upgraded:
        until(upgraded, lambda: is_ready(api, SEED))
        api.anonymous("/api/v1/namespaces/default/pods", "curl/8.5.0", times=2)
        until(upgraded, lambda: total(api, SEED) >= before + 2)
        wait_for(lambda: seed_total_is_exact(api), 30)


def test_the_webhook_statefulset_runs_non_root_from_the_same_image(bare, image, release, tmp_path):
    """Mode webhook's pod (uid 65532, no capabilities, read-only root): the API server's batches, over mTLS,
    into a detection that reads the webhook source."""
    api = Api(bare)
    rendered = release.run("template", RELEASE, str(CHART), "-n", NAMESPACE, "--set", "mode=webhook")
    template = pod_template([d for d in yaml.safe_load_all(rendered) if d], "StatefulSet")
    pod = Pod(template, image, tmp_path, bare, NAMESPACE, {}, ports(bare), node="")
    hook = detection("webhook-anonymous", 'user.username="system:anonymous" userAgent="helm-e2e/1" '
                     "| stats count BY user.username sourceIPs{} | rename sourceIPs{} as src_ip, user.username as user",
                     Path("/unused"))  # fmt: skip
    hook["spec"]["sources"] = [{"name": "webhook", "webhook": {}}]
    api.apply(hook)
    with pod:
        until(pod, lambda: is_ready(api, "webhook-anonymous"))
        api.anonymous("/api/v1/namespaces/default/configmaps", "helm-e2e/1", times=3)

        def exact() -> bool:
            """Every event the log has of them (each stage the policy logs; read again each time: the last
            stage's line may be written after the response)."""
            sent = len(api.audit_events(anonymous_with_agent("helm-e2e/1")))
            return total(api, "webhook-anonymous") == sent >= 3

        until(pod, exact)
        assert_runs_as(pod, 65532)
        bare.kubectl("delete", "auditdetection", "webhook-anonymous", "-n", NAMESPACE, "--timeout=60s")


def test_findings_go_with_their_detection_and_uninstall_leaves_only_detections_behind(
    bare, image, release, tmp_path
):  # fmt: skip
    """A detection deleted while the operator runs takes its findings with it. `helm uninstall` removes every
    other object of the release, and keeps the detections with their findings (helm.sh/resource-policy)."""
    api = Api(bare)
    # Running, as the DaemonSet's pods are until deleted.
    with daemonset_pod(bare, image, release, tmp_path) as pod:
        doomed = json.loads(bare.kubectl("get", "auditdetection", SEED, "-n", NAMESPACE, "-o", "json").stdout)
        doomed["metadata"] = {"name": "doomed", "namespace": NAMESPACE}
        api.apply(doomed)
        api.anonymous("/api/v1/namespaces/default/services", "curl/8.5.0")
        until(pod, lambda: api.findings("doomed") and total(api, SEED) > 0)
        bare.kubectl("delete", "auditdetection", "doomed", "-n", NAMESPACE, "--timeout=60s")
        wait_for(lambda: not api.findings("doomed"), 60, "the deleted detection's findings to go")
        wait_for(lambda: seed_total_is_exact(api), 60, "the seed's count to settle")
        kept = total(api, SEED)
        installed = [o for o in release.manifests() if o["kind"] != "AuditDetection"]
        release.run("uninstall", RELEASE, "-n", NAMESPACE, "--wait", "--timeout=60s")
    left = []
    for obj in installed:
        args = ["get", obj["kind"], obj["metadata"]["name"], "--ignore-not-found", "-o", "name"]
        left += bare.kubectl(*args, *(["-n", NAMESPACE] if "namespace" in obj["metadata"] else [])).stdout.split()
    assert not left
    names = bare.kubectl("get", "clusterroles,clusterrolebindings,roles,rolebindings,serviceaccounts,services",
                         "-A", "-o", "name", "-l", f"app.kubernetes.io/instance={RELEASE}").stdout.split()  # fmt: skip
    assert not names
    assert ready(api, SEED) and total(api, SEED) == kept
