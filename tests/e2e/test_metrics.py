"""The Prometheus endpoint of the operator running against the real control plane: its figures are what
the operator did, as the cluster shows it."""

from conftest import AGENT_SEARCH, METRICS_PORT, NAMESPACE, anonymous_with_agent, detection, scrape, total, wait_for


def test_metrics_are_what_the_operator_did(cluster, operator, api):
    name, agent = "metrics", "e2e-metrics"
    api.apply(detection(name, AGENT_SEARCH.format(agent=agent), cluster.audit_log, group_by=["user"]))
    api.anonymous("/version", agent, times=5)
    expected = len(api.audit_events(anonymous_with_agent(agent)))
    wait_for(lambda: total(api, name) == expected, what="the finding's count")
    labels = frozenset({"namespace": NAMESPACE, "detection": name}.items())

    def agrees() -> bool:
        status = api.get("auditdetection", name)["status"]
        m = scrape(METRICS_PORT)
        return (m[("auditwatch_matched_events_total", labels)] == expected == m[("auditwatch_rows_total", labels)]
                and m[("auditwatch_findings", labels)] == len(api.findings(name)) == 1
                and m[("auditwatch_lines_read_total", labels)] == status["counters"]["lines"] > 0
                and m[("auditwatch_malformed_lines_total", labels)] == 0)  # fmt: skip

    wait_for(agrees, what=lambda: f"the metrics to agree with the cluster: {scrape(METRICS_PORT)}")
    m = scrape(METRICS_PORT)
    source = labels | {("source", "apiserver-log")}
    assert m[("auditwatch_source_error", source)] == 0 and ("auditwatch_source_lag_bytes", source) in m
    created = m[("auditwatch_api_writes_total", frozenset({"kind": "finding_create", "result": "ok"}.items()))]
    assert (
        created >= 1 and m[("auditwatch_api_writes_total", frozenset({"kind": "event", "result": "ok"}.items()))] >= 1
    )
    # kube-apiserver sends batches to the operator's webhook (503 while it starts, 404 until a detection reads it)
    wait_for(
        lambda: any(k[0] == "auditwatch_webhook_requests_total" for k in scrape(METRICS_PORT)), what="webhook requests"
    )
    assert any(k[0] == "process_resident_memory_bytes" for k in m)
