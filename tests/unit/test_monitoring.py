"""The chart's alert rules (monitoring/rules.yaml) and Grafana dashboard (monitoring/dashboard.json): every
query parses as PromQL, and the alerts an operator of auditwatch needs are there, each saying what to do."""

import json
import re
from pathlib import Path

import promql_parser
import pytest
import yaml

MONITORING = Path(__file__).resolve().parents[2] / "charts/auditwatch/monitoring"
RULES = [r for g in yaml.safe_load((MONITORING / "rules.yaml").read_text())["groups"] for r in g["rules"]]
DASHBOARD = json.loads((MONITORING / "dashboard.json").read_text())
TARGETS = [t["expr"] for p in DASHBOARD["panels"] for t in p["targets"]]


def metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\bauditwatch_[a-z_]+\b", expr))


@pytest.mark.parametrize("rule", RULES, ids=[r["alert"] for r in RULES])
def test_each_alert_parses_and_says_what_to_do(rule):
    promql_parser.parse(rule["expr"])
    assert metric_names(rule["expr"])
    assert rule["labels"]["severity"] in ("warning", "critical")
    assert rule["annotations"]["summary"] and len(rule["annotations"]["description"]) > 40


def test_the_alerts_cover_what_stops_detection():
    watched = {name for r in RULES for name in metric_names(r["expr"])}
    assert watched >= {
        "auditwatch_shard_lease_age_seconds",  # a shard silent
        "auditwatch_source_error",  # a source erroring
        "auditwatch_source_lag_bytes",  # a source lagging (files)
        "auditwatch_source_lag_seconds",  # (CloudWatch)
        "auditwatch_findings_dropped_total",  # findings dropped at the cap
        "auditwatch_webhook_requests_total",  # webhook requests refused
        "auditwatch_api_throttled_total",  # writes throttled
    }


def test_a_broken_query_is_refused_by_the_parser():
    with pytest.raises(Exception, match="parenthesis"):
        promql_parser.parse("sum by (namespace) (rate(auditwatch_rows_total[5m])")


def test_each_dashboard_query_parses_with_its_variables_filled_in():
    assert {v["name"] for v in DASHBOARD["templating"]["list"]} == {"datasource", "namespace"}
    assert len({p["id"] for p in DASHBOARD["panels"]}) == len(DASHBOARD["panels"])
    for expr in TARGETS:
        promql_parser.parse(expr.replace("$namespace", ".*"))
        assert metric_names(expr)
