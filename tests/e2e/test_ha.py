"""An HA control plane: three kube-apiservers on one etcd, each writing its own audit log on its own
"node", and one operator replica per node, each run as its DaemonSet pod would be (its node's name as
its shard, the node's log at the path the seed detection names, the install's RBAC, no capabilities).
The seed detection, as shipped, must count every anonymous request to any API server exactly once."""

import contextlib
import itertools
import json
import os
import socket
import threading
import time
from pathlib import Path

import pytest
from conftest import (
    AGENT_SEARCH,
    NAMESPACE,
    ROOT,
    Api,
    Operator,
    anonymous_with_agent,
    detection,
    installed,
    ready,
    scrape,
    total,
    wait_for,
)

from auditwatch.devcluster.cluster import free_port

SEED = "kubernetes-aws-detect-suspicious-kubectl-calls"
SHARDS = ("cp-0", "cp-1", "cp-2")


@pytest.fixture(scope="module")
def ha():
    # Every API server's webhook backend sends to one address: a Service, here a TCP proxy (Spread).
    with installed("ha", apiservers=3, webhook_port=free_port()) as c:
        yield c


def replica(ha, i, log_dir, args=(), env=None):
    """The DaemonSet pod on node cp-i: its shard is the node's name, it sees the node's audit directory at
    its own path, and it talks to the API through another API server (as through the Service VIP)."""
    log_dir.mkdir(exist_ok=True)
    args = ["--shard", SHARDS[i], "--host-root", str(ha.nodes[i]), "--webhook-listen", "", *args]
    kubeconfig = ha.kubeconfig_for((i + 1) % 3, ha.operator_kubeconfig)
    return Operator(log_dir, args, kubeconfig, env, no_capabilities=True)


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
        wait_for(lambda: seed_status(api)["shards"]["cp-0"]["sources"][0]["file"]["offset"] > 0, what="the log read")
    finally:
        os.chown(log, 0, 0)
        op.stop()


def test_every_anonymous_request_to_any_api_server_counts_once_through_kills_and_an_outage(ha, tmp_path):
    api = Api(ha)
    ha.kubectl("apply", "-f", str(ROOT / "manifests/detections" / f"{SEED}.yaml"))
    replicas = [replica(ha, i, tmp_path / f"r{i}") for i in range(3)]
    for op in replicas:
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
        per_node = [len(api.audit_events(anonymous_with_agent(), directory=d)) for d in ha.audit_dirs]
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

        def summary_and_parts():
            detection = seed_status(api)
            return detection["counters"]["matched"], sum(detection["shards"][s]["counters"]["matched"] for s in SHARDS)

        # The detection's counters are the sum each replica last saw of the others' parts: eventually the sum
        # of the parts, once each replica has seen the others' last writes (within a status interval or two).
        wait_for(lambda: len(set(summary_and_parts())) == 1, timeout=30, what=lambda: f"{summary_and_parts()}")
    finally:
        stop.set()
        for op in replicas:
            op.stop()
        with contextlib.suppress(Exception):
            ha.start_process(ha.apiserver(2))


def test_replicas_taking_turns_write_over_each_others_latest_writes(ha, tmp_path):
    """Each replica watches the findings (as the install's RBAC lets it), so that its next write carries
    the object's current resourceVersion: replicas counting in turn are never refused (409). Without the
    watch, every turn after the second would be: the writer knew the object only as of its last write."""
    api, agent = Api(ha), "e2e-ha-turns"
    replicas = [replica(ha, i, tmp_path / f"r{i}") for i in range(2)]
    for op in replicas:
        op.start()
    try:
        api.apply(detection(agent, AGENT_SEARCH.format(agent=agent), Path("/var/log/kubernetes/audit/audit.log"),
                            group_by=["user"]))  # fmt: skip
        status = lambda: api.get("auditdetection", agent).get("status", {})  # noqa: E731
        wait_for(lambda: set(status().get("shards", {})) >= set(SHARDS[:2]), timeout=60, what="both shards")
        for turn in range(4):  # cp-0 counts, then cp-1, cp-0, cp-1: requests to API server i are in node i's log
            for n in range(10):
                api.request(f"/version?turn={turn}&n={n}", agent, server=turn % 2)
            _counted(api, agent, len(api.audit_events(anonymous_with_agent(agent))))
            time.sleep(2)  # the watch has brought the write to the other replica (milliseconds, as a rule)
    finally:
        for op in replicas:
            op.stop()  # a replica that stops writes its status last: every conflict it met is counted
    [finding] = api.findings(agent)
    assert all(finding["status"]["shards"][s]["count"] > 0 for s in SHARDS[:2])
    conflicts = {s: status()["shards"][s]["writes"].get("conflicts", 0) for s in SHARDS[:2]}
    assert conflicts == {"cp-0": 0, "cp-1": 0}, (conflicts, [op.log() for op in replicas])


def test_a_silent_replica_is_named_until_its_pod_is_gone(ha, tmp_path):
    """Each replica renews its shard's Lease, owned by its Pod. One killed while its Pod stays (a crash
    loop, a node down) makes SourcesReady False, naming the shard; its Pod deleted (a node removed), the
    garbage collector takes the Lease along, the shard is gone and its counted part stays."""
    api, agent, pod = Api(ha), "e2e-ha-lease", "auditwatch-cp-1"
    ha.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": pod, "namespace": NAMESPACE},
        "spec": {"serviceAccountName": "auditwatch", "automountServiceAccountToken": False,
                 "containers": [{"name": "operator", "image": "auditwatch"}]},  # never scheduled: an owner only
    }))  # fmt: skip
    uid = ha.kubectl("get", "pod", "-n", NAMESPACE, pod, "-o", "jsonpath={.metadata.uid}").stdout
    lease, metrics = ["--shard-lease-seconds", "8"], free_port()
    replicas = [replica(ha, 0, tmp_path / "r0", [*lease, "--metrics-listen", f"127.0.0.1:{metrics}"]),
                replica(ha, 1, tmp_path / "r1", lease, {"POD_NAME": pod, "POD_UID": uid})]  # fmt: skip

    def lease_age(shard):
        return scrape(metrics).get(("auditwatch_shard_lease_age_seconds", frozenset({("shard", shard)})))

    for op in replicas:
        op.start()

    def sources_ready():
        conds = {c["type"]: c for c in api.get("auditdetection", agent).get("status", {}).get("conditions", [])}
        return conds.get("SourcesReady", {})

    try:
        api.apply(detection(agent, AGENT_SEARCH.format(agent=agent), Path("/var/log/kubernetes/audit/audit.log"),
                            group_by=["user"]))  # fmt: skip
        wait_for(lambda: sources_ready().get("status") == "True", timeout=60, what=lambda: f"ready: {sources_ready()}")
        for n in range(10):
            api.request(f"/version?lease={n}", agent, server=1)  # into cp-1's log
        _counted(api, agent, len(api.audit_events(anonymous_with_agent(agent))))
        replicas[1].kill()
        silent = "cp-1: its replica has not renewed Lease auditwatch-shard-cp-1 since "
        wait_for(lambda: silent in sources_ready().get("message", ""), timeout=60,
                 what=lambda: f"cp-1 silent: {sources_ready()}")  # fmt: skip
        assert sources_ready()["status"] == "False" and sources_ready()["message"].startswith(silent)
        assert lease_age("cp-1") > 8 and lease_age("cp-0") < 8  # what Prometheus would alert on
        ha.kubectl("delete", "pod", "-n", NAMESPACE, pod, "--wait")
        wait_for(lambda: sources_ready().get("status") == "True", timeout=60, what=lambda: f"gone: {sources_ready()}")
        assert ha.kubectl("get", "lease", "-n", NAMESPACE, "auditwatch-shard-cp-1", check=False).returncode != 0
        assert lease_age("cp-1") is None
        [finding] = api.findings(agent)
        assert finding["status"]["shards"]["cp-1"]["count"] == finding["status"]["count"] > 0
    finally:
        for op in replicas:
            op.stop()
        ha.kubectl("delete", "pod", "-n", NAMESPACE, pod, "--ignore-not-found")


def test_a_shard_gone_long_enough_is_retired_and_back_under_its_name_counts_nothing_twice(ha, tmp_path):
    """A node replaced (its Pod deleted, so its Lease) is retired after --retire-shards-after by the live
    replica with the smallest shard name: its parts of the finding and of the status move into their
    retired totals, the count unchanged. A node made again under the same name takes its parts back
    (positions and checkpoints) and counts nothing twice, only what came after."""
    api, agent, pod = Api(ha), "e2e-ha-retire", "auditwatch-cp-1"

    def owner():
        ha.kubectl("apply", "-f", "-", input=json.dumps({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": pod, "namespace": NAMESPACE},
            "spec": {"serviceAccountName": "auditwatch", "automountServiceAccountToken": False,
                     "containers": [{"name": "operator", "image": "auditwatch"}]},  # never scheduled: an owner
        }))  # fmt: skip
        return {"POD_NAME": pod, "POD_UID": ha.kubectl("get", "pod", "-n", NAMESPACE, pod, "-o",
                                                       "jsonpath={.metadata.uid}").stdout}  # fmt: skip

    args = ["--shard-lease-seconds", "8", "--retire-shards-after", "4"]
    replicas = [replica(ha, 0, tmp_path / "r0", args), replica(ha, 1, tmp_path / "r1", args, owner())]
    for op in replicas:
        op.start()
    try:
        api.apply(detection(agent, AGENT_SEARCH.format(agent=agent), Path("/var/log/kubernetes/audit/audit.log"),
                            group_by=["user"]))  # fmt: skip
        wait_for(lambda: set(api.get("auditdetection", agent).get("status", {}).get("shards", {})) >= {"cp-0", "cp-1"},
                 timeout=60, what="both shards")  # fmt: skip
        for n in range(10):
            api.request(f"/version?retire={n}", agent, server=1)  # into cp-1's log
        counted = len(api.audit_events(anonymous_with_agent(agent)))
        _counted(api, agent, counted)
        replicas[1].stop()
        ha.kubectl("delete", "pod", "-n", NAMESPACE, pod, "--wait")  # the node gone: its Lease with it

        def retired():
            status = api.get("auditdetection", agent).get("status", {})
            [finding] = api.findings(agent)
            return "cp-1" not in status["shards"] and "cp-1" not in finding["status"]["shards"] and finding

        finding = wait_for(retired, timeout=60, what=lambda: f"cp-1 retired: {api.findings(agent)}")
        assert finding["status"]["count"] == finding["status"]["retired"]["count"] == counted
        status = api.get("auditdetection", agent)["status"]
        assert status["retired"]["shards"]["cp-1"]["sources"][0]["seq"] > 0  # where cp-1 would resume
        assert status["counters"]["matched"] == counted  # the retired counters are in the total

        replicas[1] = replica(ha, 1, tmp_path / "r1-back", args, owner())  # a new node, the same name
        replicas[1].start()
        for n in range(5):
            api.request(f"/version?back={n}", agent, server=1)
        now_counted = len(api.audit_events(anonymous_with_agent(agent)))
        assert now_counted > counted
        _counted(api, agent, now_counted)

        def reclaimed():
            [finding] = api.findings(agent)
            return "cp-1" not in finding["status"].get("retired", {}).get("shards", {}) and finding

        finding = wait_for(reclaimed, timeout=30, what=lambda: f"cp-1 back: {api.findings(agent)}")
        assert finding["status"]["shards"]["cp-1"]["count"] == finding["status"]["count"] == now_counted
        assert finding["status"]["retired"]["count"] == 0
        time.sleep(3)  # nothing counted twice later either
        assert total(api, agent) == now_counted
    finally:
        for op in replicas:
            op.stop()
        ha.kubectl("delete", "pod", "-n", NAMESPACE, pod, "--ignore-not-found")


class Spread:
    """A TCP proxy that spreads connections over backends in turn, as a Service's virtual IP does (TLS
    passes through: each replica serves the webhook's certificate); a backend that refuses is skipped,
    as an endpoint that is not ready is."""

    def __init__(self, port, backends):
        self.backends, self.turn = backends, itertools.count()
        self.connections = [0] * len(backends)
        self.server = socket.create_server(("127.0.0.1", port))
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client):
        start = next(self.turn)
        for i in (start + k for k in range(len(self.backends))):
            index = i % len(self.backends)
            try:
                upstream = socket.create_connection(("127.0.0.1", self.backends[index]), timeout=5)
            except OSError:
                continue
            self.connections[index] += 1
            upstream.settimeout(None)
            threading.Thread(target=_pump, args=(upstream, client), daemon=True).start()
            _pump(client, upstream)
            return
        client.close()

    def close(self):
        self.server.close()


def _pump(src, dst):
    with contextlib.suppress(OSError):
        while data := src.recv(65536):
            dst.sendall(data)
    for sock in (src, dst):
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def test_webhook_batches_spread_over_two_receivers_count_once(ha, tmp_path):
    """Two webhook replicas behind one address (each with its own spool and shard, as a StatefulSet's pods):
    each batch reaches one of them, and the detection's count is the sum of both parts."""
    api, agent = Api(ha), "e2e-ha-webhook"
    ports = [free_port(), free_port()]
    receivers = []
    for i, port in enumerate(ports):
        args = [a for a in ha.operator_webhook_args() if not a.startswith(("--webhook-listen", "--webhook-spool"))]
        args += [f"--webhook-listen=127.0.0.1:{port}", f"--webhook-spool={tmp_path / f'spool-{i}'}",
                 "--shard", f"auditwatch-{i}"]  # fmt: skip
        (tmp_path / f"r{i}").mkdir()
        receivers.append(Operator(tmp_path / f"r{i}", args, ha.operator_kubeconfig))
    spread = None
    body = detection(agent, AGENT_SEARCH.format(agent=agent), Path("/unused"), group_by=["user"])
    body["spec"]["sources"] = [{"name": "apiserver", "webhook": {"path": "/audit"}}]
    try:
        for op in receivers:
            op.start()
        api.apply(body)
        shards = {"auditwatch-0", "auditwatch-1"}  # each has subscribed its spool once its part is in the status
        status = lambda: api.get("auditdetection", agent).get("status", {})  # noqa: E731
        wait_for(lambda: set(status().get("shards", {})) == shards, timeout=60, what=lambda: f"both shards: {status()}")
        assert ready(api, agent).get("status") == "True"
        # Only now, both listening: a receiver up first would take every API server's kept-alive connection.
        spread = Spread(ha.webhook_port, ports)
        for n in range(300):
            api.request(f"/version?n={n}", agent, server=n % 3)
            time.sleep(0.01)
        expected = len(api.audit_events(anonymous_with_agent(agent)))
        wait_for(lambda: total(api, agent) == expected, timeout=90,
                 what=lambda: f"count == {expected}: {total(api, agent)}, parts {_parts(api, agent)}, connections "
                 f"{spread.connections}")  # fmt: skip
        time.sleep(3)  # batches still on their way would show now
        [finding] = api.findings(agent)
        parts = finding["status"]["shards"]
        assert total(api, agent) == expected and sum(p["count"] for p in parts.values()) == expected
        assert set(parts) == {"auditwatch-0", "auditwatch-1"} and all(p["count"] > 0 for p in parts.values()), (
            parts,
            spread.connections,
        )
        assert all(spread.connections), spread.connections
    finally:
        if spread:
            spread.close()
        for op in receivers:
            op.stop()


def _counted(api, name, expected):
    wait_for(lambda: total(api, name) == expected, timeout=60, what=lambda: f"count == {expected}: {_parts(api, name)}")


def _parts(api, name):
    return {f["metadata"]["name"]: {s: p["count"] for s, p in f["status"].get("shards", {}).items()}
            for f in api.findings(name)}  # fmt: skip
