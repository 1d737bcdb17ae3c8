"""Retiring the parts of shards that are gone, and handing a part back to a shard that returns.

A shard's part of a finding (aggregate.py) and of its detection's status outlives its replica: when a
control-plane node is replaced on an upgrade, its successor comes with a new name, and the parts pile up
to the 64 a status holds (about 21 rolling upgrades of three nodes). A shard gone long enough (no
Lease, runtime/retire.py) has each part moved into ``status.retired``, in one merge patch under the
object's resourceVersion; the retired count is in the total, so no count changes.

The latest ``MAX_RETIRED`` retired parts are kept whole. A shard that comes back under its name (a node
made again with its name) takes its part back with its checkpoints and positions, and so counts
nothing twice: its replica's next write moves the part out of ``retired`` (``reclaim_finding``,
``reclaim_detection``), which also undoes a retirement that crossed the shard's return. A shard
retired before ``MAX_RETIRED`` others is in the totals only.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import ValidationError

from auditwatch.api.models import MAX_RETIRED, FindingPart, RetiredParts, RetiredShards, ShardStatus
from auditwatch.times import utc_now


def retired_parts(status: dict[str, Any]) -> RetiredParts:
    """A finding's retired parts, as read (none when unreadable: written by another version)."""
    try:
        return RetiredParts.model_validate(status.get("retired") or {})
    except ValidationError:
        return RetiredParts()


def retired_shards(status: dict[str, Any]) -> RetiredShards:
    """A detection's retired shards, as read (none when unreadable: written by another version)."""
    try:
        return RetiredShards.model_validate(status.get("retired") or {})
    except ValidationError:
        return RetiredShards()


def retire_finding(status: dict[str, Any], gone: Iterable[str]) -> dict[str, Any] | None:
    """The merge patch of a finding's ``status`` that moves the parts of the ``gone`` shards into its
    retired parts; None when it has none of them."""
    parts = status.get("shards") or {}
    moving = {s: FindingPart.model_validate(parts[s]) for s in gone if s in parts}
    if not moving:
        return None
    retired = retired_parts(status)
    kept = {**retired.shards, **moving}
    newest = set(sorted(kept, key=lambda s: (kept[s].lastSeen, s), reverse=True)[:MAX_RETIRED])
    first = [t for t in (retired.firstSeen, *(p.firstSeen for p in moving.values())) if t]
    return {
        "shards": dict.fromkeys(moving),
        "retired": {
            "count": retired.count + sum(p.count for p in moving.values()),
            "firstSeen": min(first, default=""),
            "lastSeen": max([retired.lastSeen, *(p.lastSeen for p in moving.values())]),
            "shards": {
                s: kept[s].model_dump(mode="json") if s in newest else None
                for s in kept
                if s in moving or s not in newest
            },
        },
    }


def reclaim_finding(retired: RetiredParts, shard: str) -> dict[str, Any] | None:
    """The patch of a finding's retired parts that takes ``shard``'s part out (its replica counts it
    again as its own); None when there it has none."""
    part = retired.shards.get(shard)
    if part is None:
        return None
    return {"count": max(0, retired.count - part.count), "shards": {shard: None}}


def retire_detection(status: dict[str, Any], gone: Iterable[str]) -> dict[str, Any] | None:
    """The merge patch of a detection's ``status`` that moves the ``gone`` shards' parts (positions,
    counters) into its retired shards; None when it has none of them."""
    parts = status.get("shards") or {}
    moving: dict[str, ShardStatus] = {}
    for shard in gone:
        if shard in parts:
            try:
                moving[shard] = ShardStatus.model_validate(parts[shard])
            except ValidationError:  # written by another version: retired with no counters to keep
                moving[shard] = ShardStatus()
    if not moving:
        return None
    retired = retired_shards(status)
    counters = retired.counters
    for part in moving.values():
        counters = counters.plus(part.counters)
    now = utc_now()
    when = {**retired.retiredAt, **dict.fromkeys(moving, now)}
    newest = set(sorted(when, key=lambda s: (when[s], s), reverse=True)[:MAX_RETIRED])
    kept = {**retired.shards, **moving}
    dropped = [s for s in when if s not in newest]
    return {
        "shards": dict.fromkeys(moving),
        "retired": {
            "counters": counters.model_dump(),
            "shards": {
                **{s: kept[s].model_dump(mode="json", exclude_unset=True) for s in moving if s in newest},
                **dict.fromkeys(dropped),
            },
            "retiredAt": {**{s: now for s in moving if s in newest}, **dict.fromkeys(dropped)},
        },
    }


def reclaim_detection(retired: RetiredShards, shard: str) -> tuple[ShardStatus, dict[str, Any]] | None:
    """``shard``'s retired part of a detection's status, and the patch of the retired shards that takes it
    out; None when there it has none."""
    part = retired.shards.get(shard)
    if part is None:
        return None
    patch = {
        "counters": retired.counters.plus(part.counters, -1).model_dump(),
        "shards": {shard: None},
        "retiredAt": {shard: None},
    }
    return part, patch
