"""Who can see what: detections run only in the namespaces the administrator allows, and writing one
takes a role of its own, not a namespace's admin or edit."""

from pathlib import Path

import yaml

from auditwatch.api.settings import Settings
from auditwatch.ir.planner import recorded_fields
from auditwatch.rules.validate import validate
from auditwatch.spl import plan_search

ROOT = Path(__file__).resolve().parents[2]
SPEC = {"search": "verb=get | stats count BY verb", "finding": {"groupBy": ["verb"]}}


def test_by_default_detections_run_only_in_the_operators_namespace(monkeypatch):
    monkeypatch.setenv("POD_NAMESPACE", "security")
    settings = Settings()
    assert validate(SPEC, settings, "security").ready
    refused = validate(SPEC, settings, "team-a")
    assert (refused.ready, refused.reason) == (False, "NamespaceNotAllowed")
    assert "only in security" in refused.message
    assert validate(SPEC, Settings(detection_namespaces=("*",)), "team-a").ready


def test_the_author_role_is_not_aggregated_and_grants_detections_and_reading_findings():
    docs = list(yaml.safe_load_all((ROOT / "manifests/base/rbac.yaml").read_text()))
    [author] = [d for d in docs if d["metadata"]["name"] == "auditwatch-detection-author"]
    labels = author["metadata"].get("labels") or {}
    assert not any(k.startswith("rbac.authorization.k8s.io/aggregate-to-") for k in labels)
    assert "aggregationRule" not in author
    grants = {(r, v) for rule in author["rules"] for r in rule["resources"] for v in rule["verbs"]}
    assert ("auditdetections", "create") in grants and ("detectionfindings", "list") in grants
    assert not any(r == "detectionfindings" and v in ("create", "patch", "delete") for r, v in grants)


def test_the_daemonset_tells_the_operator_its_namespace():
    deployment = next(d for d in yaml.safe_load_all((ROOT / "manifests/base/daemonset.yaml").read_text())
                      if d["kind"] == "DaemonSet")  # fmt: skip
    [env] = [e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"] if e["name"] == "POD_NAMESPACE"]
    assert env["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"


def test_findings_of_whole_event_searches_record_the_key_and_the_named_fields_only():
    assert recorded_fields(plan_search("verb=get user.username=*"), ["user.username"]) == ("user.username", "verb")
    assert recorded_fields(plan_search("verb=get | stats count BY verb"), ["verb"]) is None  # the rows are outputs
