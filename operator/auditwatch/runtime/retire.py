"""Retiring a gone shard's parts of one detection's findings and status (findings/retire.py says why).

One replica retires (``ShardLeases.retires``): a shard in the detection's status that it has seen
without a Lease for ``retire_shards_seconds`` has its part of every finding of the detection moved
first, then, once no finding holds a part of it, its part of the detection's status: a replica
stopped in between, or a finding other replicas kept writing, finds the shard in the status again
next time. Each move is one PATCH under the object's resourceVersion, through the
write budget: an object another replica wrote meanwhile (409) is read again.
"""

from __future__ import annotations

import functools
from typing import Any, Literal

from auditwatch.findings.aggregate import Aggregator, newer
from auditwatch.findings.retire import retire_detection, retire_finding
from auditwatch.findings.writer import MAX_CONFLICTS
from auditwatch.kube.client import ApiException, Kube
from auditwatch.runtime.services import Logger
from auditwatch.runtime.shards import ShardLeases


async def retire_gone_shards(
    kube: Kube, body: dict[str, Any], leases: ShardLeases, after: float, aggregator: Aggregator, logger: Logger
) -> list[str]:
    """Retire the detection's shards gone for ``after`` seconds, if this replica is the one to; returns them."""
    status = body.get("status") or {}
    gone = [s for s in status.get("shards") or {} if leases.gone_for(s) >= after]
    if not gone or not leases.retires():
        return []
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    outcomes = [await _retire_finding(kube, obj, gone, aggregator) for obj in await kube.list_findings(namespace, name)]
    if "kept" in outcomes:  # the status keeps the shards until no finding has a part of them
        logger.info(
            "shard(s) %s of %s/%s: findings written meanwhile, retired next time", ", ".join(gone), namespace, name
        )
        return []
    moved = outcomes.count("moved")
    version, written = meta["resourceVersion"], False
    for _ in range(MAX_CONFLICTS):  # every replica writes the status each second: read it again on a conflict
        patch = retire_detection(status, gone)
        if patch is None:
            break
        try:
            await kube.patch_detection_status(namespace, name, patch, resource_version=version)
            written = True
            break
        except ApiException as exc:
            if exc.status != 409:
                raise
            fresh = await kube.get_detection(namespace, name)
            status, version = fresh.get("status") or {}, fresh["metadata"]["resourceVersion"]
    else:
        return []  # the next round tries again
    if moved or written:  # else kopf's view of the detection was behind: retired already
        logger.info("retired shard(s) %s of %s/%s: %d finding part(s) moved", ", ".join(gone), namespace, name, moved)
    return gone


async def _retire_finding(
    kube: Kube, obj: dict[str, Any], gone: list[str], aggregator: Aggregator
) -> Literal["moved", "none", "kept"]:
    """Move the gone shards' parts of one finding: "moved", "none" (it had none, or is gone), or "kept"
    (other replicas' writes won every attempt). The object as written goes to the aggregator, so this
    replica's next write of it holds."""
    meta = obj["metadata"]
    for _ in range(MAX_CONFLICTS):
        if retire_finding(obj.get("status") or {}, gone) is None:
            return "none"
        try:
            move = functools.partial(_move, obj, gone, aggregator)
            written = await kube.patch_finding(meta["namespace"], meta["name"], move)
        except ApiException as exc:
            if exc.status == 404:
                return "none"
            if exc.status != 409:
                raise
            obj = await kube.get_finding(meta["namespace"], meta["name"])
            meta = obj["metadata"]
            continue
        aggregator.observe(written)
        return "moved"
    return "kept"


def _move(obj: dict[str, Any], gone: list[str], aggregator: Aggregator) -> dict[str, Any]:
    """The move's PATCH, made when the write budget lets it go: from the finding as this replica holds it
    then (the findings watch keeps it current, so the precondition mostly holds while the other
    replicas write it every second), else as listed."""
    meta = obj["metadata"]
    status, version = obj.get("status") or {}, meta["resourceVersion"]
    held = aggregator.findings.get(meta["name"])
    if held is not None and held.uid == meta["uid"] and newer(held.resource_version, version):
        status = {"shards": held.others, "retired": held.retired.model_dump(mode="json")}
        version = held.resource_version
    return {"metadata": {"resourceVersion": version}, "status": retire_finding(status, gone) or {}}
