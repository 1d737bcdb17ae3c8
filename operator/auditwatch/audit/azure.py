"""AKS's audit events as Azure Monitor's diagnostic settings export them (categories ``kube-audit`` and
``kube-audit-admin``): records ``{"time", "resourceId", "category", "properties": {"log": ..., "pod"}}``
whose ``properties.log`` is the audit Event as JSON text; wrapped in ``{"records": [...]}`` for Event Hubs,
one record per line in a storage account's append blobs."""

from __future__ import annotations

from typing import Any


def record_log(record: Any) -> str | None:
    """The audit Event text of a diagnostic record, or None for anything else."""
    properties = record.get("properties") if isinstance(record, dict) else None
    log = properties.get("log") if isinstance(properties, dict) else None
    return log if isinstance(log, str) else None
