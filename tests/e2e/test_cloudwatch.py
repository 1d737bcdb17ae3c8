"""EKS without EKS: the local control plane's real audit log shipped into a CloudWatch Logs API (moto's
server, behind the fault proxy) as EKS ships it, and the same detection reading CloudWatch and the file."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import (
    AGENT_SEARCH,
    NAMESPACE,
    ROOT,
    Forwarder,
    anonymous_with_agent,
    detection,
    ready,
    total,
    wait_for,
)

from awslogs import REGION, FaultProxy, LogGroupWriter

HELD_BACK_SECONDS = 8  # every fifth event reaches CloudWatch this late: read by the late pass


class Shipper(Forwarder):
    """Ships every line kube-apiserver writes to its audit log (rotated files too) into a log group, as
    EKS does: one log event per audit Event, stamped with its stageTimestamp, in streams
    ``kube-apiserver-audit-<hex>`` that are replaced as they grow; every fifth event arrives late."""

    def __init__(self, audit_dir: Path, logs: LogGroupWriter) -> None:
        super().__init__(audit_dir, pace=0.5)
        self.logs = logs
        self.held: list[tuple[float, int, str]] = []  # (when to ship, timestamp, message)
        self.shipped = 0

    def _stream(self) -> str:
        return f"kube-apiserver-audit-{self.shipped // 300:08x}"

    def forward(self, lines: list[bytes]) -> None:
        now_events: list[tuple[int, str]] = []
        for line in lines:
            event = json.loads(line)
            stamp = _ms(event["stageTimestamp"])
            if (self.shipped + len(now_events) + len(self.held)) % 5 == 4:
                self.held.append((time.time() + HELD_BACK_SECONDS, stamp, line.decode()))
            else:
                now_events.append((stamp, line.decode()))
        due = [(t, m) for when, t, m in self.held if when <= time.time()]
        self.held = [h for h in self.held if h[0] > time.time()]
        if now_events or due:
            self.logs.put(self._stream(), now_events + due)
            self.shipped += len(now_events) + len(due)


def _ms(timestamp: str) -> int:
    from auditwatch.times import epoch_ms

    return epoch_ms(timestamp)


def cloudwatch_detection(name: str, search: str, group: str, **timing: str) -> dict[str, Any]:
    obj = detection(name, search, Path("/unused"), group_by=["user"])
    source = {"logGroup": group, "region": REGION, "pollInterval": "2s", "promptWithin": "3s", "settleDelay": "1s",
              "sweepInterval": "10s", "maxLateness": "30s", "start": "1m"} | timing  # fmt: skip
    obj["spec"]["sources"] = [{"name": "eks", "cloudwatch": source}]
    return obj


@pytest.fixture(scope="module")
def shipped(cluster: Any, aws: FaultProxy) -> Any:
    logs = LogGroupWriter(aws.upstream, "/aws/eks/e2e/cluster")
    logs.create_group()
    with Shipper(cluster.audit_dir, logs) as shipper:
        yield shipper


def test_cloudwatch_counts_equal_the_file_through_kills_and_late_arrivals(cluster, operator, api, shipped, aws):
    agent = "e2e-eks"
    search = AGENT_SEARCH.format(agent=agent)
    api.apply(detection("eks-file", search, cluster.audit_log, group_by=["user"]))
    api.apply(cloudwatch_detection("eks-cloudwatch", search, "/aws/eks/e2e/cluster"))
    aws.page_limit, aws.empty_pages = 1000, True  # pages smaller than the 10,000 events moto gives, empty ones too
    stop = threading.Event()

    def traffic() -> None:
        while not stop.is_set():
            api.anonymous("/version", agent)
            api.request("/api/v1/namespaces", "e2e-noise", token=cluster.admin_token)
            time.sleep(0.05)

    sender = threading.Thread(target=traffic)
    sender.start()
    try:
        time.sleep(3)
        aws.throttle = 4
        for pause in (2.5, 4.0):
            time.sleep(pause)
            operator.kill()  # mid-range at times: the range is read again, the findings skip what they have
            time.sleep(3)  # events are shipped while it is down
            operator.start()
    finally:
        time.sleep(1)
        stop.set()
        sender.join()
    try:
        expected = len(api.audit_events(anonymous_with_agent(agent)))
        wait_for(lambda: total(api, "eks-file") == expected, timeout=60, what="the file detection's count")
        wait_for(lambda: total(api, "eks-cloudwatch") == expected, timeout=90,
                 what=lambda: f"the CloudWatch count {total(api, 'eks-cloudwatch')} == {expected}; status "
                 f"{api.get('auditdetection', 'eks-cloudwatch').get('status')}; {operator.log()}")  # fmt: skip
        time.sleep(HELD_BACK_SECONDS)  # nothing counted twice, late
        assert total(api, "eks-cloudwatch") == total(api, "eks-file") == expected > 20
    finally:
        aws.page_limit, aws.empty_pages, aws.throttle = 0, False, 0
    [by_file] = api.findings("eks-file")
    [by_cloudwatch] = api.findings("eks-cloudwatch")
    assert by_file["spec"]["key"] == by_cloudwatch["spec"]["key"] == {"user": "system:anonymous"}
    assert by_file["status"]["firstSeen"] == by_cloudwatch["status"]["firstSeen"]
    status = api.get("auditdetection", "eks-cloudwatch")["status"]
    [source] = status["shards"]["default"]["sources"]
    read = source["cloudwatch"]
    assert read["promptThrough"] and read["lateThrough"] and read["apiCalls"] > 0
    assert source["lastError"] == "" and ready(api, "eks-cloudwatch").get("status") == "True"


def test_a_log_group_that_does_not_exist_says_so(cluster, operator, api):
    api.apply(cloudwatch_detection("eks-missing", "a=1 | stats count BY a", "/aws/eks/missing/cluster"))

    def sources_ready() -> dict[str, Any]:
        conds = api.get("auditdetection", "eks-missing").get("status", {}).get("conditions", [])
        return next((c for c in conds if c["type"] == "SourcesReady"), {})

    cond = wait_for(lambda: "does not exist" in sources_ready().get("message", "") and sources_ready(),
                    what=lambda: f"SourcesReady=False naming the log group: {sources_ready()}")  # fmt: skip
    assert cond["status"] == "False" and cond["reason"] == "SourceUnavailable"
    assert "/aws/eks/missing/cluster in us-west-2 does not exist" in cond["message"]
    assert "audit logging" in cond["message"]
    cluster.kubectl("delete", "auditdetection", "eks-missing", "-n", NAMESPACE)


def test_the_escu_eks_detections_run_unchanged_on_cloudwatch(cluster, operator, api, shipped):
    """ESCU's two detections on `aws_cloudwatchlogs_eks`, as imported, with only their log group set."""
    names = ["amazon-eks-kubernetes-pod-scan-detection", "amazon-eks-kubernetes-cluster-scan-detection"]
    for name in names:
        obj = yaml.safe_load((ROOT / f"manifests/detections/escu/{name}.yaml").read_text())
        source = cloudwatch_detection(name, "", "/aws/eks/e2e/cluster")["spec"]["sources"][0]["cloudwatch"]
        obj["spec"]["sources"][0]["cloudwatch"] = source
        api.apply(obj)
    api.anonymous("/api/v1/pods", "e2e-eks-scan", times=3)

    def pod_scans(ev: dict[str, Any]) -> bool:
        return anonymous_with_agent("e2e-eks-scan")(ev) and ev.get("requestURI") == "/api/v1/pods"

    expected = len(api.audit_events(pod_scans))
    wait_for(lambda: total(api, names[0]) == expected > 0, timeout=60,
             what=lambda: f"the pod scan finding to count {expected}: {total(api, names[0])}")  # fmt: skip
    [scan] = wait_for(lambda: api.findings(names[1]), timeout=60, what="the cluster scan finding")
    assert scan["spec"]["key"] == {"user.username": "system:anonymous"}
    assert f"{REGION}:/aws/eks/e2e/cluster" in scan["status"]["values"]["cluster_name"]
