"""Findings as the other shards write them, from a watch, handed to the aggregator that holds each.

Every shard writes its part of a finding with the object's resourceVersion as the precondition
(writer.py). Knowing that version only from its own writes, a replica met a 409 Conflict, then a
read and a second write, on about every other write when three replicas counted the same finding
(bench/ha_bench.py). With the watch (kube/watch.py) each replica holds the finding as last
written by anyone, and a conflict is left for writes that really cross.
"""

from __future__ import annotations

from typing import Any

from auditwatch.api.models import GROUP, HUNT_LABEL
from auditwatch.findings.aggregate import Aggregator


class PeerWrites:
    """Running detections' aggregators by (namespace, detection), for the findings watch."""

    def __init__(self) -> None:
        self._aggregators: dict[tuple[str, str], Aggregator] = {}

    def follow(self, namespace: str, detection: str, aggregator: Aggregator) -> None:
        self._aggregators[namespace, detection] = aggregator

    def forget(self, namespace: str, detection: str, aggregator: Aggregator) -> None:
        """Stop handing writes to ``aggregator`` (a generation that ended; the next may follow already)."""
        if self._aggregators.get((namespace, detection)) is aggregator:
            del self._aggregators[namespace, detection]

    def seen(self, obj: dict[str, Any]) -> bool:
        """A finding as the watch shows it: True when a running detection took it in."""
        meta = obj.get("metadata") or {}
        labels = meta.get("labels") or {}
        if HUNT_LABEL in labels:  # a hunt's finding: no detection's aggregator counts into it
            return False
        detection = labels.get(f"{GROUP}/detection", "")
        aggregator = self._aggregators.get((meta.get("namespace", ""), detection))
        return aggregator is not None and aggregator.observe(obj)
