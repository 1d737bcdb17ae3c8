"""Retiring a gone shard's parts of one detection's findings and status (findings/retire.py says why).

One replica retires (``ShardLeases.retires``): a shard in the detection's status that it has seen
without a Lease for ``retire_shards_seconds`` has its part of every finding of the detection moved
first, then its part of the detection's status, so a replica stopped in between finds the shard in
the status again and finishes. Each move is one PATCH under the object's resourceVersion, through the
write budget: an object another replica wrote meanwhile (409) is read again.
"""

from __future__ import annotations

import logging
from typing import Any

from auditwatch.findings.aggregate import Aggregator
from auditwatch.findings.retire import retire_detection, retire_finding
from auditwatch.kube.client import ApiException, Kube
from auditwatch.runtime.shards import ShardLeases

Logger = logging.Logger | logging.LoggerAdapter[Any]
MAX_CONFLICTS = 10


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
    moved = 0
    for obj in await kube.list_findings(namespace, name):
        moved += await _retire_finding(kube, obj, gone, aggregator)
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


async def _retire_finding(kube: Kube, obj: dict[str, Any], gone: list[str], aggregator: Aggregator) -> int:
    """Move the gone shards' parts of one finding (1 when it had some); the object as written goes to the
    aggregator, so this replica's next write of it holds."""
    meta = obj["metadata"]
    for _ in range(MAX_CONFLICTS):
        patch = retire_finding(obj.get("status") or {}, gone)
        if patch is None:
            return 0
        body: dict[str, Any] = {"metadata": {"resourceVersion": meta["resourceVersion"]}, "status": patch}
        try:
            written = await kube.patch_finding(meta["namespace"], meta["name"], body.copy)
        except ApiException as exc:
            if exc.status == 404:
                return 0
            if exc.status != 409:
                raise
            obj = await kube.get_finding(meta["namespace"], meta["name"])
            meta = obj["metadata"]
            continue
        aggregator.observe(written)
        return 1
    return 0
