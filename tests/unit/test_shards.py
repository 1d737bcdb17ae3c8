"""Shard liveness from Leases: live, silent, gone, and what a detection's SourcesReady says of each."""

import asyncio

import pytest

from auditwatch.api.models import ShardStatus, SourceStatus
from auditwatch.kube.client import ApiException
from auditwatch.runtime.shards import LABEL, ShardLeases, lease_name, unread

ERROR = ShardStatus(sources=[SourceStatus(name="apiserver-log", lastError="permission denied")])
FINE = ShardStatus(sources=[SourceStatus(name="apiserver-log")])


class Leases:
    """The Lease calls, in memory; a list call sees what was renewed."""

    def __init__(self):
        self.bodies, self.fail = {}, None

    async def renew_lease(self, namespace, body):
        if self.fail:
            raise self.fail
        name = body["metadata"]["name"]
        version = int(self.bodies.get(name, {}).get("metadata", {}).get("resourceVersion", 0)) + 1
        self.bodies[name] = {**body, "metadata": {**body["metadata"], "resourceVersion": str(version)}}

    async def list_leases(self, namespace, label):
        return [(b["spec"]["holderIdentity"], b["metadata"]["resourceVersion"]) for b in self.bodies.values()
                if label in b["metadata"]["labels"]]  # fmt: skip


def test_a_shard_is_live_while_its_lease_changes_silent_after_and_gone_without_one():
    leases = ShardLeases(Leases(), "auditwatch", "cp-0", None, lease_seconds=40)
    assert leases.liveness("cp-1") == "unknown" and leases.liveness("cp-0") == "live"  # not listed yet
    leases.observe([("cp-0", "1"), ("cp-1", "5")], now=100.0)
    assert leases.liveness("cp-1", now=139.0) == "live"  # first seen: given a lease time to show it renews
    leases.observe([("cp-0", "2"), ("cp-1", "6")], now=130.0)
    assert leases.liveness("cp-1", now=169.0) == "live"
    leases.observe([("cp-0", "3"), ("cp-1", "6")], now=160.0)  # cp-1 not renewed since 130
    assert leases.liveness("cp-1", now=171.0) == "silent" and leases.liveness("cp-0", now=171.0) == "live"
    assert leases.ages(now=171.0) == {"cp-0": 11.0, "cp-1": 41.0}  # the metric's figures
    leases.observe([("cp-0", "4")], now=190.0)  # its Pod deleted, the Lease with it
    assert leases.liveness("cp-1", now=191.0) == "gone" and leases.liveness("cp-2", now=191.0) == "gone"


def test_sources_ready_names_a_silent_shard_and_leaves_out_a_gone_one():
    leases = ShardLeases(Leases(), "auditwatch", "cp-0", None, lease_seconds=40)
    parts = {"cp-0": FINE, "cp-1": FINE, "cp-2": ERROR}
    assert unread(parts, None) == ["cp-2/apiserver-log: permission denied"]  # no Leases known: all count
    leases.observe([("cp-0", "1"), ("cp-1", "1")], now=0.0)  # the first listing, long ago
    [silent] = unread(parts, leases)  # cp-1 silent; cp-2 gone, its error left out
    assert silent.startswith("cp-1: its replica has not renewed Lease auditwatch-shard-cp-1 since 20")
    assert silent.endswith("Z: its audit log is not being read")
    assert unread({"default": ERROR}, None) == ["apiserver-log: permission denied"]  # one replica: no shard named


@pytest.mark.asyncio
async def test_a_replica_renews_its_lease_owned_by_its_pod_and_reads_the_others():
    api = Leases()
    await api.renew_lease("auditwatch", {"metadata": {"name": lease_name("cp-1"), "labels": {LABEL: "true"}},
                                         "spec": {"holderIdentity": "cp-1"}})  # fmt: skip
    leases = ShardLeases(api, "auditwatch", "cp-0", ("auditwatch-x7k2p", "pod-uid"), lease_seconds=4)
    task = asyncio.create_task(leases.run())
    await asyncio.sleep(0.1)
    body = api.bodies[lease_name("cp-0")]
    assert body["metadata"]["ownerReferences"] == [{"apiVersion": "v1", "kind": "Pod", "name": "auditwatch-x7k2p",
                                                    "uid": "pod-uid"}]  # fmt: skip
    assert body["spec"]["holderIdentity"] == "cp-0" and body["spec"]["leaseDurationSeconds"] == 4
    assert leases.liveness("cp-1") == "live" and leases.liveness("cp-2") == "gone"
    await asyncio.sleep(1.1)  # renewed every lease time / 4
    assert body is not api.bodies[lease_name("cp-0")] and int(api.bodies[lease_name("cp-0")]["metadata"][
        "resourceVersion"]) >= 2  # fmt: skip
    for api.fail in (ApiException(status=403, reason="Forbidden"), ConnectionRefusedError(111, "refused")):
        await asyncio.sleep(1.1)  # RBAC taken away, the API server out of reach: logged, and renewing goes on
        assert not task.done()
    api.fail = None
    renewed = api.bodies[lease_name("cp-0")]
    await asyncio.sleep(1.1)
    assert api.bodies[lease_name("cp-0")] is not renewed
    task.cancel()


def test_a_lease_name_fits_whatever_the_shard():
    assert lease_name("cp-0") == "auditwatch-shard-cp-0"
    assert len(lease_name("n" * 253)) <= 253 and lease_name("n" * 253) != lease_name("n" * 252)
