"""An AuditDetection's status, built through its model (api/models.py) and written when it changes.

A condition keeps its ``lastTransitionTime`` until its status changes (metav1.Condition's rule), so a
status that says the same thing is the same object and is not written again.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Literal

from auditwatch.api.models import (
    AuditDetectionStatus,
    Condition,
    ConditionType,
    CounterStatus,
    ShardStatus,
    StatusReason,
)
from auditwatch.kube.client import ApiException, Kube
from auditwatch.rules.validate import Verdict
from auditwatch.times import utc_now

MAX_MESSAGE = 4096


def condition(kind: ConditionType, ok: bool | None, reason: StatusReason, message: str, generation: int) -> Condition:
    status: Literal["True", "False", "Unknown"] = "Unknown" if ok is None else "True" if ok else "False"
    return Condition(
        type=kind,
        status=status,
        reason=reason,
        message=message[:MAX_MESSAGE],
        lastTransitionTime=utc_now(),
        observedGeneration=generation,
    )


def refused(verdict: Verdict, generation: int) -> AuditDetectionStatus:
    """The status of a detection that cannot run: why, on its Ready condition."""
    return AuditDetectionStatus(
        observedGeneration=generation,
        conditions=[
            condition(ConditionType.READY, False, verdict.reason, verdict.message, generation),
            condition(
                ConditionType.SOURCES_READY, None, StatusReason.NOT_STARTED, "the detection is not running", generation
            ),
        ],
    )


def running(
    verdict: Verdict,
    generation: int,
    sources_ready: bool,
    source_errors: str,
    counters: CounterStatus,
    shards: dict[str, ShardStatus],
) -> AuditDetectionStatus:
    """The status of a running detection: its conditions, counters summed over the shards, and the parts
    of the shards this replica writes."""
    warnings = verdict.warnings
    return AuditDetectionStatus(
        observedGeneration=generation,
        conditions=[
            condition(ConditionType.READY, True, StatusReason.RUNNING, "evaluating audit events", generation),
            condition(
                ConditionType.LINT_CLEAN,
                not warnings,
                StatusReason.LINT_WARNINGS if warnings else StatusReason.CLEAN,
                warnings or "auditwatch lint has nothing to say",
                generation,
            ),
            condition(
                ConditionType.SOURCES_READY,
                sources_ready,
                StatusReason.READING if sources_ready else StatusReason.SOURCE_UNAVAILABLE,
                source_errors or ("all sources are being read" if sources_ready else "opening the sources"),
                generation,
            ),
        ],
        counters=counters,
        shards=shards,
    )


class StatusWriter:
    """PATCHes one detection's status when it differs from the last one written."""

    def __init__(
        self,
        kube: Kube,
        namespace: str,
        name: str,
        saved: AuditDetectionStatus,
        logger: logging.Logger | logging.LoggerAdapter[Any],
    ) -> None:
        self.kube, self.namespace, self.name, self.logger = kube, namespace, name, logger
        self._conditions = {c.type: c for c in saved.conditions}
        self._written: dict[str, Any] = {}
        # When the status was last written: its place in the write budget, beside findings' counts that
        # have waited as long (with "now" it would starve behind a backlog of finding writes).
        self._written_at = time.monotonic()

    async def write(self, status: AuditDetectionStatus, also: dict[str, Any] | None = None) -> None:
        """Write ``status``, with the fields of ``also`` (a merge patch's, nulls included) beside it."""
        for i, cond in enumerate(status.conditions):
            before = self._conditions.get(cond.type)
            if before is not None and before.status == cond.status:
                status.conditions[i] = cond.model_copy(update={"lastTransitionTime": before.lastTransitionTime})
        body = {**status.model_dump(mode="json", exclude_unset=True), **(also or {})}
        if body == self._written:
            return
        try:
            await self.kube.patch_detection_status(self.namespace, self.name, body, since=self._written_at)
        except ApiException as exc:
            # The checkpoint stays where it was: safe, the lines after it are read again on a restart.
            self.logger.warning("status of %s/%s not written: %s %s", self.namespace, self.name, exc.status, exc.reason)
            return
        self._written, self._written_at = body, time.monotonic()
        self._conditions = {c.type: c for c in status.conditions}
