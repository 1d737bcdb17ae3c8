"""`auditwatch lint` says what the operator will do: for every manifest shipped under manifests/ and a
set of broken ones (files outside the allowed directories among them), lint's verdict (ready or not,
and the reason) is the Ready condition the running operator sets, under the same settings."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import DETECTIONS, eventually

pytestmark = pytest.mark.asyncio
ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted(p for p in (ROOT / "manifests" / "detections").rglob("*.yaml") if p.name != "kustomization.yaml")
FILE = [{"name": "log", "file": {"path": "/var/log/kubernetes/audit/audit.log"}}]
BROKEN = {
    "invalid-spec": {"search": "verb=get | stats count BY verb", "finding": {"riskScore": 500}},
    "invalid-search": {"search": "verb=get | stats count BY", "sources": FILE},
    "never-set": {"search": 'user.username="system:anonymous" | stats count BY user.uid', "sources": FILE},
    "no-geoip": {"search": "verb=get | iplocation sourceIPs{} | stats count BY Country", "sources": FILE,
                 "finding": {"groupBy": ["Country"]}},
    "cloudwatch-timing": {"search": "verb=get | stats count BY verb", "finding": {"groupBy": ["verb"]},
                          "sources": [{"name": "eks", "cloudwatch": {"logGroup": "/aws/eks/x", "region": "us-east-1",
                                                                     "sweepInterval": "3s"}}]},
    "webhook": {"search": "verb=get | stats count BY verb", "finding": {"groupBy": ["verb"]},
                "sources": [{"name": "hook", "webhook": {}}]},
    "outside": {"search": "verb=get | stats count BY verb", "finding": {"groupBy": ["verb"]},
                "sources": [{"name": "token", "file": {"path": "/run/secrets/kubernetes.io/serviceaccount/token"}}]},
    "dot-dot": {"search": "verb=get | stats count BY verb", "finding": {"groupBy": ["verb"]},
                "sources": [{"name": "up", "file": {"path": "/var/log/kubernetes/../../../proc/self/environ"}}]},
}  # fmt: skip


def lint_verdicts(settings, paths):
    env = {k: v for k, v in os.environ.items() if k != "AUDITWATCH_GEOIP_DB"}
    done = subprocess.run(
        [sys.executable, "-m", "auditwatch", "lint", "-o", "json", "--webhook-listen", settings.webhook_listen,
         "--webhook-insecure", "--detection-namespace=*",
         *(f"--allow-path={d}" for d in settings.allow_paths), *map(str, paths)],
        capture_output=True, text=True, check=False, env=env,
    )  # fmt: skip
    return {v["file"]: v for v in map(json.loads, done.stdout.splitlines())}


async def test_lint_and_the_operator_agree_on_every_manifest(harness, tmp_path):
    h = harness
    # Each detection's start writes its status and Events; the 90 here at the default budget (20 writes/s)
    # would take 40 s to be written: this test is about the verdicts, so the budget is not in the way.
    await h.stop_operator()
    h.settings = h.settings.model_copy(update={"write_qps": 1000.0, "write_burst": 1000})
    await h.start_operator()
    paths = list(SHIPPED)
    for name, spec in BROKEN.items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump({"apiVersion": "auditwatch.io/v1alpha1", "kind": "AuditDetection",
                                        "metadata": {"name": name}, "spec": spec}))  # fmt: skip
        paths.append(path)
    verdicts = lint_verdicts(h.settings, paths)
    applied = {}
    for i, path in enumerate(paths):
        body = yaml.safe_load(path.read_text())
        body["metadata"]["namespace"] = f"ns{i}"  # two shipped detections share a name
        await h.apply(body)
        applied[str(path)] = body["metadata"]["name"]

    def ready(name, namespace):
        obj = h.get(DETECTIONS, name, namespace) or {}
        return next((c for c in obj.get("status", {}).get("conditions", []) if c["type"] == "Ready"), None)

    def conditions():
        return {p: ready(n, f"ns{i}") for i, (p, n) in enumerate(applied.items())}

    def without():
        return sorted(Path(p).name for p, c in conditions().items() if not c)

    # Each detection's start is work of the operator's (plan, readers, status): the wait grows with their
    # number (26 when it was 30 s; 90 with the Sigma and Falco packs; a loaded CI run needed over 30 s).
    found = await eventually(lambda: (c := conditions()) and all(c.values()) and c, timeout=max(30, len(paths)),
                             what=lambda: f"a Ready condition on every detection; none yet on {without()}")  # fmt: skip
    seen = {p: (c["status"] == "True", c["reason"]) for p, c in found.items()}
    said = {p: (v["ready"], v["reason"]) for p, v in verdicts.items()}
    assert said == seen
    # The set covers each way a detection can be refused, and the shipped pack has runnable ones.
    assert {r for ok, r in seen.values() if not ok} >= {"InvalidSpec", "InvalidSearch", "LintError",
                                                         "PathNotAllowed"}  # fmt: skip
    assert seen[str(tmp_path / "cloudwatch-timing.yaml")] == (False, "InvalidSpec")
    seed = ROOT / "manifests" / "detections" / "kubernetes-aws-detect-suspicious-kubectl-calls.yaml"
    assert seen[str(seed)] == (True, "Running") and len(SHIPPED) >= 18
