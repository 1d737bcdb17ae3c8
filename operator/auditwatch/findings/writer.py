"""Writing findings to the cluster: create-or-patch, coalesced, with rate-limited Events.

At most one write per finding per ``min_interval`` seconds whatever the event rate; a finding's count
and checkpoints go in one status PATCH (see aggregate.py for why that makes counts exactly-once).
Events: a Warning on the detection and on the finding when a finding is created, then at most one
``FindingUpdated`` per finding per ``event_interval``, and one ``FindingsCapReached``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from auditwatch.api.models import (
    GROUP,
    VERSION,
    DetectionFinding,
    DetectionFindingSpec,
    FindingPolicy,
    ObjectMeta,
)
from auditwatch.findings.aggregate import Aggregator, FindingState
from auditwatch.kube import ApiException, Kube

# (object reference, event type, reason, message) -> posted; kopf.event in the operator, a list in tests.
PostEvent = Callable[[dict[str, Any], str, str, str], None]


class Writer:
    def __init__(
        self,
        kube: Kube,
        detection: dict[str, Any],
        policy: FindingPolicy,
        post_event: PostEvent,
        logger: logging.Logger | logging.LoggerAdapter[Any],
        min_interval: float = 1.0,
        event_interval: float = 60.0,
    ) -> None:
        self.kube = kube
        self.detection = detection  # apiVersion, kind, metadata {name, namespace, uid}
        self.namespace = detection["metadata"]["namespace"]
        self.policy = policy
        self.post_event = post_event
        self.logger = logger
        self.min_interval = min_interval
        self.event_interval = event_interval
        self.cap_announced = False

    async def flush(self, aggregator: Aggregator, now: float | None = None) -> bool:
        """Write the findings that are due; True when every dirty finding is written."""
        now = time.monotonic() if now is None else now
        complete = True
        for finding in list(aggregator.findings.values()):
            if not finding.dirty:
                continue
            if now - finding.written_at < self.min_interval:
                complete = False
                continue
            try:
                await self._write(finding, now)
            except ApiException as exc:
                complete = False
                self.logger.warning("writing finding %s failed: %s %s", finding.name, exc.status, exc.reason)
        if aggregator.dropped and not self.cap_announced:
            self.cap_announced = True
            self.post_event(self.detection, "Warning", "FindingsCapReached",
                            f"more than {aggregator.max_findings} findings: new ones are counted in "
                            f"status.counters.findingsDropped, not created")  # fmt: skip
        return complete

    async def _write(self, finding: FindingState, now: float) -> None:
        created = False
        if not finding.uid:
            try:
                obj = await self.kube.create_finding(self.namespace, self._body(finding))
                created = True
            except ApiException as exc:
                if exc.status != 409:
                    raise
                obj = await self.kube.get_finding(self.namespace, finding.name)  # a retried create
            finding.uid = obj["metadata"]["uid"]
        try:
            status = finding.snapshot().model_dump(mode="json")
            await self.kube.patch_finding_status(self.namespace, finding.name, status)
        except BaseException:
            finding.unwritten()
            raise
        finding.written(now)
        ref = self._ref(finding)
        if created:
            text = f"{finding.message} ({finding.count} so far; finding {finding.name})"
            self.post_event(self.detection, "Warning", "FindingCreated", text)
            self.post_event(ref, "Warning", "SuspiciousActivity", finding.message)
            finding.announced_at = now
        elif now - finding.announced_at >= self.event_interval:
            self.post_event(ref, "Warning", "FindingUpdated", f"{finding.message} ({finding.count} in all)")
            finding.announced_at = now

    def _body(self, finding: FindingState) -> dict[str, Any]:
        meta = self.detection["metadata"]
        body = DetectionFinding(
            metadata=ObjectMeta(
                name=finding.name, namespace=self.namespace, labels={f"{GROUP}/detection": meta["name"]},
                ownerReferences=[{
                    "apiVersion": f"{GROUP}/{VERSION}", "kind": "AuditDetection", "name": meta["name"],
                    "uid": meta["uid"], "controller": True, "blockOwnerDeletion": False,
                }],
            ),
            spec=DetectionFindingSpec(
                detection=meta["name"], key=finding.key, message=finding.message,
                severity=self.policy.severity, riskScore=self.policy.riskScore,
            ),
        )  # fmt: skip
        return body.model_dump(mode="json", exclude_none=True)

    def _ref(self, finding: FindingState) -> dict[str, Any]:
        return {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "DetectionFinding",
            "metadata": {"name": finding.name, "namespace": self.namespace, "uid": finding.uid},
        }

    async def expire(self, aggregator: Aggregator, ttl_seconds: float) -> int:
        """Delete findings not seen for ``ttl_seconds``; returns how many."""
        gone = aggregator.expire(ttl_seconds)
        for finding in gone:
            await self.kube.delete_finding(self.namespace, finding.name)
            self.post_event(
                self.detection, "Normal", "FindingExpired", f"{finding.name} not seen for {ttl_seconds:.0f} s"
            )
        return len(gone)
