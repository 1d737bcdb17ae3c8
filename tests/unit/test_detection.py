"""What the operator accepts to run, and the errors it puts on the detection's Ready condition."""

import pytest

from auditwatch.api.models import AuditDetectionSpec
from auditwatch.detection import InvalidDetection, compile_detection
from auditwatch.handlers import parse_spec

FILE = [{"name": "log", "file": {"path": "/var/log/kubernetes/audit/audit.log"}}]


def spec(search, sources=FILE):
    return AuditDetectionSpec.model_validate({"search": search, "sources": sources})


def test_the_seed_shape_compiles_and_its_lint_warnings_come_along():
    clean = "user.username=system:anonymous | stats count BY user.username sourceIPs{} | rename sourceIPs{} as src_ip"
    plan, warnings = compile_detection(spec(clean + ", user.username as user"))
    assert plan.stats is not None and warnings == ""
    _, warnings = compile_detection(spec("user.username=x | stats count BY user.username"))
    assert "warning[no-prefilter]" in warnings and "warning[key-not-output]: finding.groupBy 'user'" in warnings


@pytest.mark.parametrize(
    ("search", "sources", "reason", "message"),
    [
        ("a=1 | stats count BY", FILE, "InvalidSearch",
         "spec.search: stats BY: expected a field name, got end of search at column 21"),
        ('user.username="system:anonymous" | stats count BY user.uid', FILE, "LintError",
         "spec.search: error[never-set]: `stats ... BY user.uid` over anonymous requests"),
        ("a=1 | iplocation sourceIPs{} | stats count BY Country", FILE, "InvalidSearch",
         "spec.search: iplocation needs a MaxMind-format database"),
        ("a=1 | stats count BY a", [{"name": "hook", "webhook": {}}], "UnsupportedSource",
         "spec.sources[hook]: the operator runs without its webhook server (auditwatch run --webhook-listen)"),
        ("a=1 | stats count BY a", [{"name": "eks", "cloudwatch": {"logGroup": "/aws/eks/x", "region": "eu-west-1"}}],
         "UnsupportedSource", "spec.sources[eks]: cloudwatch sources are not implemented yet"),
    ],
)  # fmt: skip
def test_what_cannot_run_says_why(search, sources, reason, message):
    with pytest.raises(InvalidDetection) as err:
        compile_detection(spec(search, sources))
    assert err.value.reason == reason and str(err.value).startswith(message)


def test_a_spec_the_schema_would_reject_is_named_field_by_field():
    with pytest.raises(InvalidDetection) as err:
        parse_spec({"spec": {"search": "x", "finding": {"riskScore": 500}}})
    assert err.value.reason == "InvalidSpec"
    assert str(err.value) == "spec.finding.riskScore: Input should be less than or equal to 100"
