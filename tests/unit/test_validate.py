"""What the operator accepts to run, and the errors it puts on the detection's Ready condition."""

import pytest

from auditwatch.api.settings import Settings
from auditwatch.rules.validate import validate

FILE = [{"name": "log", "file": {"path": "/var/log/kubernetes/audit/audit.log"}}]
SETTINGS = Settings(geoip_db=None, webhook_token_file="/run/secrets/webhook/token")


def spec(search, sources=FILE, **extra):
    return {"search": search, "sources": sources, **extra}


def test_the_seed_shape_runs_and_its_lint_warnings_come_along():
    clean = "user.username=system:anonymous | stats count BY user.username sourceIPs{} | rename sourceIPs{} as src_ip"
    verdict = validate(spec(clean + ", user.username as user"), SETTINGS)
    assert verdict.ready and verdict.reason == "Running" and verdict.query.stats is not None
    assert verdict.warnings == "" and verdict.spec.finding.groupBy == ["user", "src_ip"]
    verdict = validate(spec("user.username=x | stats count BY user.username"), SETTINGS)
    assert verdict.ready
    assert "warning[no-prefilter]" in verdict.warnings
    assert "warning[key-not-output]: finding.groupBy 'user'" in verdict.warnings


@pytest.mark.parametrize(
    ("search", "sources", "settings", "reason", "message"),
    [
        ("a=1 | stats count BY", FILE, SETTINGS, "InvalidSearch",
         "spec.search: stats BY: expected a field name, got end of search at column 21"),
        ('user.username="system:anonymous" | stats count BY user.uid', FILE, SETTINGS, "LintError",
         "spec.search: error[never-set]: `stats ... BY user.uid` over anonymous requests"),
        ("a=1 | iplocation sourceIPs{} | stats count BY Country", FILE, SETTINGS, "InvalidSearch",
         "spec.search: iplocation needs a MaxMind-format database"),
        ("a=1 | iplocation sourceIPs{} | stats count BY Country", FILE, Settings(geoip_db="/nonexistent.mmdb"),
         "InvalidSearch", "spec.search: iplocation: cannot read the MaxMind database /nonexistent.mmdb"),
        ("a=1 | stats count BY a", [{"name": "hook", "webhook": {}}], Settings(webhook_listen=""),
         "UnsupportedSource",
         "spec.sources[hook]: the operator runs without its webhook server (auditwatch run --webhook-listen)"),
        ("a=1 | stats count BY a", [{"name": "hook", "webhook": {}}], Settings(), "UnsupportedSource",
         "spec.sources[hook]: the webhook server is off: no way to authenticate the API server is configured"),
        ("a=1 | stats count BY a", [{"name": "eks", "cloudwatch": {"logGroup": "/aws/eks/x", "region": "eu-west-1",
                                                                   "sweepInterval": "3s"}}],
         SETTINGS, "InvalidSpec", "spec.sources.0.cloudwatch: Value error, sweepInterval 3s must be a multiple of "
         "pollInterval 2s"),
        ("a=1 | stats count BY a", [{"name": "eks", "cloudwatch": {"logGroup": "/aws/eks/x", "region": "eu-west-1",
                                                                   "start": "yesterday"}}],
         SETTINGS, "InvalidSpec", "spec.sources.0.cloudwatch.start: Value error, start 'yesterday' is not now, an "
         "RFC 3339 time or a duration such as 24h"),
        # Every replica of the DaemonSet would read the cluster's one log group: counted once per replica.
        ("a=1 | stats count BY a", [{"name": "eks", "cloudwatch": {"logGroup": "/aws/eks/x", "region": "eu-west-1"}}],
         Settings(source_kinds=("file", "webhook")), "UnsupportedSource",
         "spec.sources[eks]: this install reads only file, webhook sources (auditwatch run --sources): a cloudwatch "
         "source is read by the EKS install"),
        ("a=1 | stats count BY a", FILE, Settings(source_kinds=("cloudwatch",)), "UnsupportedSource",
         "spec.sources[log]: this install reads only cloudwatch sources"),
    ],
)  # fmt: skip
def test_what_cannot_run_says_why(search, sources, settings, reason, message):
    verdict = validate(spec(search, sources), settings)
    assert not verdict.ready and verdict.reason == reason and verdict.message.startswith(message)


def test_a_webhook_source_runs_when_the_server_is_on():
    assert validate(spec("a=1 | stats count BY a", [{"name": "hook", "webhook": {}}]), SETTINGS).ready


def test_a_cloudwatch_source_runs():
    eks = [{"name": "eks", "cloudwatch": {"logGroup": "/aws/eks/prod/cluster", "region": "eu-west-1",
                                          "start": "2026-11-28T00:00:00Z"}}]  # fmt: skip
    assert validate(spec("a=1 | stats count BY a", eks), SETTINGS).ready


def test_every_reason_is_given_not_only_the_first():
    sources = [{"name": "hook", "webhook": {}}]
    verdict = validate(spec('user.username="system:anonymous" | stats count BY user.uid', sources), Settings())
    assert verdict.reason == "UnsupportedSource"
    assert "webhook server is off" in verdict.message and "error[never-set]" in verdict.message


def test_a_spec_the_schema_would_reject_is_named_field_by_field():
    verdict = validate({"search": "x", "finding": {"riskScore": 500}}, SETTINGS)
    assert verdict.reason == "InvalidSpec" and verdict.spec is None
    assert verdict.message == "spec.finding.riskScore: Input should be less than or equal to 100"


def test_file_sources_may_only_read_inside_the_allowed_directories(tmp_path):
    logs, secrets = tmp_path / "logs", tmp_path / "secrets"
    logs.mkdir()
    secrets.mkdir()
    (secrets / "token").write_text("t")
    (logs / "link.log").symlink_to(secrets / "token")
    settings = Settings(allow_paths=(str(logs),))

    def verdict(path):
        return validate(spec("verb=get | stats count BY verb", [{"name": "f", "file": {"path": str(path)}}]), settings)

    assert verdict(logs / "audit.log").ready  # need not exist yet
    for path in (secrets / "token", logs / ".." / "secrets" / "token", logs / "link.log", "/proc/self/environ"):
        refused = verdict(path)
        assert (refused.ready, refused.reason) == (False, "PathNotAllowed")
        assert refused.message == (f"spec.sources[f].file.path: {path} is not inside a directory the operator may "
                                   f"read ({logs}; auditwatch run --allow-path)")  # fmt: skip
    assert validate(spec("verb=get | stats count BY verb", [{"name": "f", "file": {"path": str(logs / "audit.log")}}]),
                    Settings()).reason == "PathNotAllowed"  # the default: the usual audit-log directories  # fmt: skip
