"""Which shards are being read: each sharded replica renews a Lease, and every replica reads them all.

A replica with a shard (``--shard``) holds the Lease ``auditwatch-shard-<shard>`` in its own namespace,
renewed every quarter of ``shard_lease_seconds`` (40 s), as a kubelet renews its node's Lease. The
renewals bypass the write budget: a replica busy writing findings must not look dead. Knowing its Pod
(the downward API's POD_NAME and POD_UID), the replica makes the Pod the Lease's owner, so the Lease
goes with the Pod (the garbage collector deletes it):

- *live*: the Lease changed within ``shard_lease_seconds``, as this replica has seen it (its own clock:
  the nodes' clocks may differ, so a Lease's renewTime is not compared with it);
- *silent*: the Lease stopped changing while its Pod stays (a crash loop, a node down or cut off from
  the API): that shard's audit log is not being read, and every detection says so in SourcesReady;
- *gone*: no Lease (the Pod deleted: a node removed, a StatefulSet scaled down): the shard's counted
  parts stay in findings and counters, its last errors no longer hold SourcesReady False.

A replica that has not listed the Leases yet, or may not, knows nothing and holds nobody silent or gone.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from typing import Literal

from auditwatch.api.models import DEFAULT_SHARD, GROUP, ShardStatus
from auditwatch.kube.client import ApiException, Kube
from auditwatch.times import utc_now

PREFIX = "auditwatch-shard-"
LABEL = f"{GROUP}/shard-lease"

logger = logging.getLogger(__name__)
Liveness = Literal["live", "silent", "gone", "unknown"]


def lease_name(shard: str) -> str:
    """The shard's Lease: its name after the prefix, hashed when that would be too long for a name."""
    name = PREFIX + shard
    return name if len(name) <= 253 else PREFIX + hashlib.sha256(shard.encode()).hexdigest()[:16]


class ShardLeases:
    """This replica's Lease, renewed, and every shard's liveness as the Leases show it."""

    def __init__(
        self, kube: Kube, namespace: str, shard: str, owner: tuple[str, str] | None, lease_seconds: float
    ) -> None:
        self.kube, self.namespace, self.shard, self.owner = kube, namespace, shard, owner
        self.lease_seconds = lease_seconds
        # shard -> the Lease's resourceVersion, when this replica saw it change (monotonic, and UTC to tell);
        # None until listed
        self._seen: dict[str, tuple[str, float, str]] | None = None
        self._gone: dict[str, float] = {}  # shard -> when this replica first saw it without a Lease
        self._failing = ""

    def liveness(self, shard: str, now: float | None = None) -> Liveness:
        if shard == self.shard:
            return "live"
        if self._seen is None:
            return "unknown"
        if shard not in self._seen:
            return "gone"
        _, changed, _ = self._seen[shard]
        now = time.monotonic() if now is None else now
        return "live" if now - changed <= self.lease_seconds else "silent"

    def gone_for(self, shard: str, now: float | None = None) -> float:
        """Seconds this replica has seen ``shard`` without a Lease (0 while it has one, or before the
        first listing): since start-up at most, so a restart makes the shard wait again."""
        now = time.monotonic() if now is None else now
        if self.liveness(shard, now) != "gone":
            self._gone.pop(shard, None)
            return 0.0
        return now - self._gone.setdefault(shard, now)

    def retires(self, now: float | None = None) -> bool:
        """Whether this replica retires gone shards (runtime/retire.py): the live shard with the smallest
        name, as every replica sees the Leases, so that one replica does it."""
        if self._seen is None:
            return False
        live = [s for s in [*self._seen, self.shard] if self.liveness(s, now) == "live"]
        return min(live) == self.shard

    def ages(self, now: float | None = None) -> dict[str, float]:
        """Seconds since this replica saw each shard's Lease change (none before the first listing)."""
        now = time.monotonic() if now is None else now
        return {shard: now - changed for shard, (_, changed, _) in (self._seen or {}).items()}

    def silent_since(self, shard: str) -> str:
        """When this replica last saw the shard's Lease change (UTC)."""
        assert self._seen is not None
        return self._seen[shard][2]

    async def run(self) -> None:
        """Renew this shard's Lease and read all of them, every quarter of the lease time, until cancelled."""
        while True:
            try:
                await self.kube.renew_lease(self.namespace, self._body())
                self.observe(await self.kube.list_leases(self.namespace, LABEL))
                self._failing = ""
            except Exception as exc:  # the API refusing or out of reach: try again next time, never give up
                why = f"{exc.status} {exc.reason}" if isinstance(exc, ApiException) else repr(exc)
                if self._failing != why:
                    logger.warning("shard lease %s/%s: %s", self.namespace, lease_name(self.shard), why)
                self._failing = why
            await asyncio.sleep(self.lease_seconds / 4)

    def observe(self, leases: list[tuple[str, str]], now: float | None = None) -> None:
        """Take a listing of the Leases, (holder, resourceVersion) each: one that changed since the last
        listing was renewed now."""
        now = time.monotonic() if now is None else now
        seen: dict[str, tuple[str, float, str]] = {}
        for shard, version in leases:
            before = (self._seen or {}).get(shard)
            seen[shard] = before if before is not None and before[0] == version else (version, now, utc_now())
        self._seen = seen

    def _body(self) -> dict[str, object]:
        meta: dict[str, object] = {
            "name": lease_name(self.shard),
            "namespace": self.namespace,
            "labels": {LABEL: "true"},
        }
        if self.owner is not None:
            name, uid = self.owner
            meta["ownerReferences"] = [{"apiVersion": "v1", "kind": "Pod", "name": name, "uid": uid}]
        spec = {
            "holderIdentity": self.shard,
            "leaseDurationSeconds": round(self.lease_seconds),
            "renewTime": utc_now(fraction=True),
        }
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta, "spec": spec}


def unread(parts: dict[str, ShardStatus], leases: ShardLeases | None) -> list[str]:
    """What keeps audit events from being read, shard by shard: the sources' errors, and a shard whose
    replica is silent; a gone shard's last errors are left out."""
    problems = []
    for shard, part in sorted(parts.items()):
        liveness = leases.liveness(shard) if leases is not None else "unknown"
        if liveness == "gone":
            continue
        if liveness == "silent":
            assert leases is not None
            problems.append(
                f"{shard}: its replica has not renewed Lease {lease_name(shard)} since "
                f"{leases.silent_since(shard)}: its audit log is not being read"
            )
        shown = "" if shard == DEFAULT_SHARD else f"{shard}/"  # a shard's name when there are shards to tell apart
        problems += [f"{shown}{s.name}: {s.lastError}" for s in part.sources if s.lastError]
    return problems
