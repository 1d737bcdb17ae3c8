"""OpenReports mirroring: the Report's shape and bounds, and when it is written."""

import logging

import pytest
from test_writer import DETECTION

from auditwatch.api.models import FindingPolicy
from auditwatch.findings.aggregate import Aggregator
from auditwatch.findings.report import MAX_RESULTS, ReportMirror, report_body
from auditwatch.kube.client import ApiException

POLICY = FindingPolicy(severity="informational", riskScore=10)


def aggregator(counts: dict[str, int]) -> Aggregator:
    agg = Aggregator("seed", ["src_ip"], "calls from $src_ip$", 1000, None)
    seq = 0
    for ip, n in counts.items():
        for _ in range(n):
            agg.add({"src_ip": ip, "count": 1}, "log", seq, seq + 10, "2026-11-27T10:00:00Z")
            seq += 10
    return agg


def test_the_report_ranks_the_most_counted_findings_and_keeps_at_most_the_limit():
    counts = {f"10.0.{i // 250}.{i % 250}": 1 + i % 7 for i in range(MAX_RESULTS + 30)}
    body = report_body(DETECTION, POLICY, list(aggregator(counts).findings.values()))
    assert body["summary"] == {"pass": 0, "fail": MAX_RESULTS + 30, "warn": 0, "error": 0, "skip": 0}
    results = body["results"]
    assert len(results) == MAX_RESULTS and int(results[0]["properties"]["count"]) == 7
    assert [int(r["properties"]["count"]) for r in results] == sorted((int(r["properties"]["count"]) for r in results),
                                                                        reverse=True)  # fmt: skip
    assert results[0]["severity"] == "info" and results[0]["message"].startswith("calls from 10.0.")
    assert body["metadata"]["ownerReferences"][0]["uid"] == "d-uid"


class ReportKube:
    def __init__(self):
        self.written: list[dict] = []
        self.fail = False

    async def put_report(self, body):
        if self.fail:
            raise ApiException(status=404, reason="NotFound")
        self.written.append(body)


@pytest.mark.asyncio
async def test_a_report_is_written_when_a_finding_changed_at_most_once_an_interval(caplog):
    kube = ReportKube()
    mirror = ReportMirror(kube, DETECTION, POLICY, logging.getLogger("test"), interval=10)
    agg = aggregator({"10.0.0.1": 1})
    kube.fail = True
    for now in (0, 1, 11):  # the CRD missing: said once, tried again each interval
        mirror.sync(agg, now)
        await mirror.settle()
    assert kube.written == [] and caplog.text.count("is the OpenReports CRD installed?") == 1
    kube.fail = False
    mirror.sync(agg, 21)
    await mirror.settle()
    mirror.sync(agg, 40)  # nothing changed
    await mirror.settle()
    assert len(kube.written) == 1
    agg.add({"src_ip": "10.0.0.1", "count": 1}, "log", 100, 110, "2026-11-27T10:01:00Z")
    mirror.sync(agg, 25)  # changed, within the interval of the last write
    await mirror.settle()
    assert len(kube.written) == 1
    mirror.sync(agg, 31)
    await mirror.settle()
    assert [r["properties"]["count"] for r in kube.written[-1]["results"]] == ["2"]
