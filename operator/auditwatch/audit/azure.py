"""AKS's audit events as Azure Monitor's diagnostic settings export them (categories ``kube-audit`` and
``kube-audit-admin``): records ``{"time", "resourceId", "category", "properties": {"log": ..., "pod"}}``
whose ``properties.log`` is the audit Event as JSON text; wrapped in ``{"records": [...]}`` for Event Hubs,
one record per line in a storage account's append blobs."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson


def record_log(record: Any) -> str | None:
    """The audit Event text of a diagnostic record, or None for anything else."""
    properties = record.get("properties") if isinstance(record, dict) else None
    log = properties.get("log") if isinstance(properties, dict) else None
    return log if isinstance(log, str) else None


def hub_events(body: bytes) -> Iterator[tuple[dict[str, Any] | None, str]]:
    """The audit Events of one Event Hubs event (``{"records": [...]}``; an audit Event as it is is read
    too): ``(event, "")`` each, and ``(None, why)`` for each record or body that is not one."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        yield None, f"not JSON: {exc}"
        return
    if _is_event(value):
        yield value, ""
        return
    records = value.get("records") if isinstance(value, dict) else None
    if not isinstance(records, list):
        yield None, 'neither diagnostic records ({"records": [...]}) nor an audit Event'
        return
    for i, record in enumerate(records):
        log = record_log(record)
        if log is None:
            yield None, f"record {i} has no properties.log"
            continue
        try:
            event = orjson.loads(log)
        except orjson.JSONDecodeError:
            event = None
        if _is_event(event):
            yield event, ""
        else:  # another category's record (kube-apiserver's own log lines)
            category = record.get("category", "")
            yield None, f"record {i} (category {category!r}) is not an audit Event: stream only kube-audit(-admin)"


def _is_event(value: Any) -> bool:
    return isinstance(value, dict) and value.get("kind") == "Event" and "auditID" in value
