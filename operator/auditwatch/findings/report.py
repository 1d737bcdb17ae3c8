"""A detection's findings mirrored into an OpenReports ``Report`` (``auditwatch run --reports``).

Policy Reporter (its UI and outputs), Kyverno's tooling and others read policy reports; OpenReports
(``openreports.io/v1alpha1``, the successor of wgpolicyk8s.io's PolicyReport) is where that ecosystem
is going. Each detection gets one Report in its namespace, named ``auditwatch-<detection>``, owned by
the detection (deleted with it by the garbage collector): a ``fail`` result per finding, the most
counted first, at most ``MAX_RESULTS`` (so the object stays a few hundred KiB, far below etcd's 1.5
MiB), the summary counting them all. It is written through the write budget, at most once per
interval and only when a finding changed; a failed write is tried again at the next interval and
never holds detection up.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from auditwatch.api.models import GROUP, VERSION, FindingPolicy, detection_owner
from auditwatch.audit.decode import epoch_seconds
from auditwatch.findings.aggregate import Aggregator, FindingState
from auditwatch.kube.client import ApiException, Kube

MAX_RESULTS = 100
SEVERITY = {"informational": "info"}  # OpenReports' names; the others are the same


def report_name(detection: str) -> str:
    return f"auditwatch-{detection}"[:253]


def report_body(detection: dict[str, Any], policy: FindingPolicy, findings: list[FindingState]) -> dict[str, Any]:
    """The Report for a detection (its reference: apiVersion, kind, metadata name/namespace/uid)."""
    meta = detection["metadata"]
    ranked = sorted(findings, key=lambda f: (-f.total, f.name))[:MAX_RESULTS]
    return {
        "apiVersion": "openreports.io/v1alpha1",
        "kind": "Report",
        "metadata": {
            "name": report_name(meta["name"]),
            "namespace": meta["namespace"],
            "labels": {f"{GROUP}/detection": meta["name"], "app.kubernetes.io/managed-by": "auditwatch"},
            "ownerReferences": [detection_owner(meta)],
        },
        "source": "auditwatch",
        "scope": {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "AuditDetection",
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta["uid"],
        },
        "configuration": {"limits": {"maxResults": MAX_RESULTS, "statusFilter": ["fail"]}},
        "summary": {"pass": 0, "fail": len(findings), "warn": 0, "error": 0, "skip": 0},
        "results": [_result(meta, policy, f) for f in ranked],
    }


def _result(meta: dict[str, Any], policy: FindingPolicy, finding: FindingState) -> dict[str, Any]:
    seen = epoch_seconds(finding.seen_last) or 0.0
    properties = {"count": str(finding.total), "firstSeen": finding.seen_first, "lastSeen": finding.seen_last}
    properties |= {f"key.{k}": v[:1024] for k, v in finding.key.items()}
    return {
        "source": "auditwatch",
        "policy": meta["name"],
        "rule": meta["name"],
        "category": "Kubernetes audit",
        "severity": SEVERITY.get(policy.severity, policy.severity),
        "result": "fail",
        "scored": True,
        "message": finding.message[:1024],
        "timestamp": {"seconds": int(seen), "nanos": int(seen % 1 * 1e9)},
        "resources": [
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "DetectionFinding",
                "name": finding.name,
                "namespace": meta["namespace"],
            }
        ],
        "properties": properties,
    }


class ReportMirror:
    """Keeps one detection's Report in step with its findings."""

    def __init__(
        self,
        kube: Kube,
        detection: dict[str, Any],
        policy: FindingPolicy,
        logger: logging.Logger | logging.LoggerAdapter[Any],
        interval: float,
    ) -> None:
        self.kube, self.detection, self.policy, self.logger = kube, detection, policy, logger
        self.interval = interval
        self.written: tuple[Any, ...] | None = None  # what the last write showed
        self.last = float("-inf")
        self.failures = 0
        self._task: asyncio.Task[None] | None = None

    def sync(self, aggregator: Aggregator, now: float) -> None:
        """Start writing the Report when a finding changed and the interval has passed (a task: the
        write waits for the budget, the detection does not wait for it)."""
        findings = list(aggregator.findings.values())
        shown = tuple(sorted((f.name, f.total, f.seen_last) for f in findings))
        if shown == self.written or now - self.last < self.interval or (self._task and not self._task.done()):
            return
        self.last = now
        self._task = asyncio.create_task(self._write(report_body(self.detection, self.policy, findings), shown))

    async def settle(self) -> None:
        """Wait for a write under way."""
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)

    async def _write(self, body: dict[str, Any], shown: tuple[Any, ...]) -> None:
        try:
            await self.kube.put_report(body)
        except ApiException as exc:  # the CRD missing, RBAC, a conflict: tried again next interval
            self.failures += 1
            if self.failures == 1:
                name = report_name(self.detection["metadata"]["name"])
                self.logger.warning(
                    "Report %s not written (%s %s): is the OpenReports CRD installed?", name, exc.status, exc.reason
                )
            return
        self.written, self.failures = shown, 0
