"""auditwatch lint: each warning, the error, and the exit codes of the command."""

import json
import subprocess
import sys
from pathlib import Path

from auditwatch.rules.lint import lint
from auditwatch.spl import parse_search, plan
from factory import SEED, seed_search


def lint_search(search, group_by=None):
    query = parse_search(search)
    return lint(plan(query), group_by, query)


def codes(search, group_by=None):
    return [(f.level, f.code) for f in lint_search(search, group_by)]


def test_the_seed_gets_the_documented_never_set_warning_and_nothing_else():
    [finding] = lint_search(seed_search(), ["user", "src_ip"])
    assert (finding.level, finding.code) == ("warning", "never-set")
    assert "Splunk" in finding.message and 'fills it with "0"' in finding.message


def test_without_fillnull_the_uid_by_is_an_error():
    search = 'user.username="system:anonymous" | stats count BY user.uid user.username'
    assert codes(search) == [("error", "never-set")]
    assert codes('user.username="alice" | stats count BY user.uid') == []  # others have a uid


def test_unknown_fields_get_a_suggestion():
    [finding] = lint_search("verb=create apiGroup=apps | stats count BY verb")
    assert finding.code == "unknown-field" and finding.message.endswith("did you mean objectRef.apiGroup?")
    assert codes("verb=create requestObject.spec.anything=x | rename verb as v | stats count BY v") == []


def test_no_literal_means_no_prefilter():
    assert codes("NOT verb=get | stats count BY verb") == [("warning", "no-prefilter")]


def test_finding_keys_that_explode_or_do_not_exist():
    search = "verb=create | stats count BY requestReceivedTimestamp verb | rename verb as v"
    assert codes(search, ["requestReceivedTimestamp", "verb"]) == [
        ("warning", "unbounded-key"), ("warning", "key-not-output")]  # fmt: skip


def test_the_command_exits_1_on_errors_and_with_strict_on_warnings(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: AuditDetection\nspec:\n  search: 'a=1 | stats count BY'\n")

    def lint_cli(*args):
        return subprocess.run([sys.executable, "-m", "auditwatch", "lint", *map(str, args)], capture_output=True,
                              text=True, check=False)  # fmt: skip

    ok = lint_cli(SEED)
    assert ok.returncode == 0 and "warning[never-set]" in ok.stdout
    assert lint_cli("--strict", SEED).returncode == 1
    failed = lint_cli(bad)
    assert failed.returncode == 1
    assert "bad.yaml: error[InvalidSearch]: spec.search: stats BY: expected a field name" in failed.stdout
    invalid = tmp_path / "invalid.yaml"
    invalid.write_text("kind: AuditDetection\nspec:\n  search: x\n  finding: {riskScore: 500}\n")
    failed = lint_cli(invalid)
    assert failed.returncode == 1
    assert (
        "error[InvalidSpec]:" in failed.stdout
        and "spec.finding.riskScore: Input should be less than or equal to 100" in failed.stdout
    )


def test_lint_takes_the_operators_settings_and_says_what_it_would_do(tmp_path):
    hook = tmp_path / "hook.yaml"
    hook.write_text("kind: AuditDetection\nspec:\n  search: 'verb=get | stats count BY verb'\n"
                    "  sources: [{name: h, webhook: {}}]\n  finding: {groupBy: [verb]}\n")  # fmt: skip

    def lint_json(*args):
        done = subprocess.run([sys.executable, "-m", "auditwatch", "lint", "-o", "json", *map(str, args)],
                              capture_output=True, text=True, check=False)  # fmt: skip
        return done.returncode, json.loads(done.stdout)

    assert lint_json("--webhook-token-file", "/run/secrets/token", hook) == (
        0, {"file": str(hook), "ready": True, "reason": "Running", "message": "", "diagnostics": []})  # fmt: skip
    code, verdict = lint_json(hook)  # the defaults: no way to authenticate the API server, no webhook server
    assert code == 1 and (verdict["ready"], verdict["reason"]) == (False, "UnsupportedSource")
    assert verdict["message"].startswith("spec.sources[h]: the webhook server is off: no way to authenticate")
    bad = subprocess.run([sys.executable, "-m", "auditwatch", "lint", "--webhook-listen", "nowhere", str(hook)],
                         capture_output=True, text=True, check=False)  # fmt: skip
    assert bad.returncode == 2
    assert "--webhook-listen: Value error, webhook_listen 'nowhere' is not HOST:PORT" in bad.stderr


def test_lint_takes_directories_and_kustomizations_and_passes_over_what_is_no_detection():
    root = SEED.parents[2]
    done = subprocess.run([sys.executable, "-m", "auditwatch", "lint", "-o", "json", root / "manifests/eks",
                           root / "manifests/detections"], capture_output=True, text=True, check=False)  # fmt: skip
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    linted = [line["file"] for line in lines if "ready" in line]
    seed = root / "manifests/detections/kubernetes-aws-detect-suspicious-kubectl-calls.yaml"
    assert linted == [str(root / "manifests/eks/seed-detection.yaml"), str(seed)]
    skipped = {line["file"]: line["skipped"] for line in lines if "skipped" in line}
    assert "(DaemonSet, Service): skipped" in skipped[str(root / "manifests/base/daemonset.yaml")]
    assert "(CustomResourceDefinition)" in skipped[str(root / "crds/auditwatch.io_auditdetections.yaml")]
    assert all(line["ready"] for line in lines if "ready" in line)


def test_a_pubsub_source_names_the_fields_gke_does_not_log():
    root = SEED.parents[2]
    done = subprocess.run([sys.executable, "-m", "auditwatch", "lint", "-o", "json", root / "manifests/gke",
                           SEED], capture_output=True, text=True, check=False)  # fmt: skip
    verdicts = {Path(v["file"]).parent.name: v for v in map(json.loads, done.stdout.splitlines()) if "ready" in v}
    gaps = [d.removeprefix("warning[not-logged]: ") for d in verdicts["gke"]["diagnostics"] if "[not-logged]" in d]
    assert [gap.split(" ", 1)[0] for gap in gaps] == ["requestURI", "user.uid", "user.groups{}"]
    assert "system:unauthenticated for system:anonymous" in gaps[2]
    assert verdicts["gke"]["ready"]
    assert not [d for d in verdicts["detections"]["diagnostics"] if "[not-logged]" in d]
