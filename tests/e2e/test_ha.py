"""An HA control plane: three kube-apiservers on one etcd, each writing its own audit log on its own
"node", and one operator replica per node, each run as its DaemonSet pod would be (its node's name as
its shard, the node's log at the path the seed detection names, the install's RBAC, no capabilities).
The seed detection, as shipped, must count every anonymous request to any API server exactly once."""

import contextlib
import json
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import pytest
from conftest import ROOT, Api, Operator, ready, total, wait_for

from auditwatch.devcluster import DevCluster

SEED = "kubernetes-aws-detect-suspicious-kubectl-calls"
SHARDS = ("cp-0", "cp-1", "cp-2")


@pytest.fixture(scope="module")
def ha():
    workdir = Path(tempfile.mkdtemp(prefix="auditwatch-ha-"))
    try:
        with DevCluster(workdir=workdir, apiservers=3) as c:
            c.kubectl("apply", "--server-side", "-k", str(ROOT / "crds"))
            c.kubectl("wait", "--for=condition=Established", "crd/auditdetections.auditwatch.io",
                      "crd/detectionfindings.auditwatch.io")  # fmt: skip
            c.kubectl("apply", "-k", str(ROOT / "manifests"))
            yield c
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def replica(ha, i, log_dir):
    """The DaemonSet pod on node cp-i: its shard is the node's name, it sees the node's audit directory at
    its own path, and it talks to the API through another API server (as through the Service VIP)."""
    args = ["--shard", SHARDS[i], "--host-root", str(ha.nodes[i]), "--webhook-listen", ""]
    kubeconfig = ha.kubeconfig_for((i + 1) % 3, ha.operator_kubeconfig)
    return Operator(log_dir, args, kubeconfig, no_capabilities=True)


def anonymous(ev):
    user = ev.get("user", {})
    return user.get("username") == "system:anonymous" and "system:unauthenticated" in (user.get("groups") or [])


def seed_status(api):
    return api.get("auditdetection", SEED).get("status", {})


def test_a_log_the_operator_may_not_read_is_named_with_its_owner_and_mode(ha, tmp_path):
    """Without capabilities, a process reads a 0600 file only as its owner: owned by another uid, the log
    is refused and SourcesReady says why; owned by the operator's uid (0, as the install runs it), read."""
    api = Api(ha)
    log = ha.nodes[0] / "var/log/kubernetes/audit/audit.log"
    assert log.stat().st_mode & 0o777 == 0o600 and log.stat().st_uid == 0  # as kube-apiserver creates it
    os.chown(log, 65532, 65532)
    op = replica(ha, 0, tmp_path)
    op.start()
    try:
        ha.kubectl("apply", "-f", str(ROOT / "manifests/detections" / f"{SEED}.yaml"))

        def refused():
            conds = {c["type"]: c for c in seed_status(api).get("conditions", [])}
            cond = conds.get("SourcesReady", {})
            return cond.get("status") == "False" and cond["message"]

        message = wait_for(refused, timeout=60, what="SourcesReady=False")
        assert (f"cp-0/apiserver-log: {log}: permission denied: owner uid 65532 gid 65532, mode 0600; the operator "
                "runs as uid 0 gid 0") in message  # fmt: skip
        os.chown(log, 0, 0)
        wait_for(lambda: not refused() and ready(api, SEED).get("status") == "True", timeout=60, what="read")
        wait_for(lambda: seed_status(api)["shards"]["cp-0"]["sources"][0]["offset"] > 0, what="the log read")
    finally:
        os.chown(log, 0, 0)
        op.stop()


def test_every_anonymous_request_to_any_api_server_counts_once_through_kills_and_an_outage(ha, tmp_path):
    api = Api(ha)
    ha.kubectl("apply", "-f", str(ROOT / "manifests/detections" / f"{SEED}.yaml"))
    replicas = [replica(ha, i, tmp_path / f"r{i}") for i in range(3)]
    for i, op in enumerate(replicas):
        (tmp_path / f"r{i}").mkdir()
        op.start()
    stop = threading.Event()

    def traffic():
        n = 0
        while not stop.is_set():
            server = n % 3
            api.request(f"/version?ha={n}", "e2e-ha", server=server)  # anonymous
            api.request("/api", "e2e-ha", token=ha.admin_token, server=server)  # authenticated: not counted
            n += 1
            time.sleep(0.02)

    try:
        wait_for(lambda: set(seed_status(api).get("shards", {})) >= set(SHARDS), timeout=60, what="every shard")
        thread = threading.Thread(target=traffic)
        thread.start()
        try:
            time.sleep(3)
            replicas[1].kill()  # SIGKILL under load: its counted-but-unwritten part is read again
            time.sleep(2)
            replicas[1].start()
            time.sleep(2)
            ha.stop_process(ha.apiserver(2))  # an API server down: no log lines on cp-2, cp-1 cannot write
            time.sleep(10)
            ha.start_process(ha.apiserver(2))
            time.sleep(3)
        finally:
            stop.set()
            thread.join()
        per_node = [len(_events(api, d)) for d in ha.audit_dirs]
        assert all(per_node), per_node

        def parts():
            [finding] = api.findings(SEED)
            return finding["status"]

        wait_for(lambda: [parts()["shards"].get(s, {}).get("count") for s in SHARDS] == per_node, timeout=120,
                 what=lambda: f"parts == {per_node}: {parts()}")  # fmt: skip
        time.sleep(3)  # and no more: nothing counted twice
        status = parts()
        assert [status["shards"][s]["count"] for s in SHARDS] == per_node and status["count"] == sum(per_node)
        assert total(api, SEED) == sum(per_node) and len(api.findings(SEED)) == 1
        events = [e for e in api.events(SEED) if e["reason"] == "FindingCreated"]
        assert len(events) == 1 and events[0].get("count", 1) == 1  # one replica created it, one Event
        detection = seed_status(api)
        assert detection["counters"]["matched"] == sum(detection["shards"][s]["counters"]["matched"] for s in SHARDS)
    finally:
        stop.set()
        for op in replicas:
            op.stop()
        with contextlib.suppress(Exception):
            ha.start_process(ha.apiserver(2))


def _events(api, directory):
    """Anonymous audit events in one node's logs (current and rotated)."""
    found = []
    for path in directory.glob("audit*.log"):
        for line in path.read_bytes().splitlines():
            with contextlib.suppress(ValueError):
                if anonymous(ev := json.loads(line)):
                    found.append(ev)
    return found
