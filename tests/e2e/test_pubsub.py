"""GKE without GKE: the local control plane's real audit log published to Pub/Sub (Google's emulator) as a
Log Router sink publishes GKE's entries, and the seed detection, with only its source changed, read by
two operator replicas sharing the subscription: each anonymous request counted once through SIGKILLs,
messages another consumer gives back (redelivery) and the two replicas' shares, as `scan` counts the
file; a missing subscription named in SourcesReady."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import (
    NAMESPACE,
    ROOT,
    Api,
    Forwarder,
    Operator,
    counted_through_kills,
    installed,
    scan_counts,
    wait_for,
)

from auditwatch.devcluster import DevCluster
from gcp import PROJECT, Topic, gke_entry, pubsub_emulator

SEED = "kubernetes-aws-detect-suspicious-kubectl-calls"
SHARDS = ("gke-0", "gke-1")
ACK_DEADLINE = 30  # a killed replica restarts well within it, and acknowledges again what it had spooled


@pytest.fixture(scope="module")
def gke(monkeypatch_module: pytest.MonkeyPatch) -> Iterator[tuple[DevCluster, str]]:
    with pubsub_emulator() as host, installed("gke") as c:
        monkeypatch_module.setenv("PUBSUB_EMULATOR_HOST", host)
        yield c, host


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as mp:
        yield mp


class Sink(Forwarder):
    """Publishes every line kube-apiserver writes to its audit log as the entry GKE writes for it, as a Log
    Router sink does; and, as another consumer of the subscription that fails, takes messages now and then
    and gives them back (a nack: Pub/Sub delivers them again)."""

    def __init__(self, audit_dir: Path, topic: Topic, subscription: str) -> None:
        super().__init__(audit_dir)
        self.topic, self.subscription = topic, subscription
        self.published = self.given_back = self.passes = 0

    def forward(self, lines: list[bytes]) -> None:
        self.topic.publish([json.dumps(gke_entry(json.loads(line))).encode() for line in lines])
        self.published += len(lines)
        self.passes += 1
        if self.passes % 4 == 0:
            self._give_back()

    def _give_back(self) -> None:
        taken = self.topic.pending(self.subscription)[:20]
        if taken:
            path = self.topic.subscriber.subscription_path(PROJECT, self.subscription)
            self.topic.subscriber.modify_ack_deadline(
                subscription=path, ack_ids=[m.ack_id for m in taken], ack_deadline_seconds=0
            )
            self.given_back += len(taken)


def replica(c: DevCluster, host: str, i: int, workdir: Path) -> Operator:
    """A replica of the GKE install: its pod's name as its shard, Pub/Sub sources only, its own spool."""
    (workdir / f"r{i}").mkdir(exist_ok=True)
    args = ["--shard", SHARDS[i], "--sources", "pubsub", "--webhook-listen", "",
            "--pubsub-spool", str(workdir / f"spool-{i}")]  # fmt: skip
    return Operator(workdir / f"r{i}", args, c.operator_kubeconfig, {"PUBSUB_EMULATOR_HOST": host})


def seed_on(subscription: str) -> dict[str, Any]:
    """The seed detection as shipped, reading the subscription instead of the log file."""
    obj = yaml.safe_load((ROOT / "manifests/detections" / f"{SEED}.yaml").read_text())
    pubsub = {"project": PROJECT, "subscription": subscription, "maxMessages": 100}
    obj["spec"]["sources"] = [{"name": "gke-audit", "pubsub": pubsub}]
    return obj


def test_the_seed_detection_over_pubsub_counts_as_scan_counts_the_file_through_kills_and_two_replicas(gke, tmp_path):
    c, host = gke
    topic = Topic("gke-audit", ACK_DEADLINE)
    topic.subscription("auditwatch")
    replicas = [replica(c, host, i, tmp_path) for i in range(2)]

    with Sink(c.audit_dir, topic, "auditwatch") as sink:
        try:
            sources, by_key, published = counted_through_kills(
                c, seed_on("auditwatch"), replicas, SHARDS, sink, "e2e-gke", tmp_path / "published", 3 * ACK_DEADLINE
            )
            assert sink.given_back > 0
            assert all(s["pubsub"]["messages"] > 0 and not s["lastError"] for s in sources), sources
        finally:
            for op in replicas:
                op.stop()

    # The same detection over the file as it was published, by `scan`: the same rows, summed by finding key.
    seed_file = ROOT / "manifests/detections" / f"{SEED}.yaml"
    assert by_key == scan_counts(seed_file, sorted(published.glob("audit*.log")), ["user", "src_ip"])


def test_a_subscription_that_does_not_exist_is_named(gke, tmp_path):
    c, host = gke
    api, op = Api(c), replica(c, host, 0, tmp_path)
    obj = seed_on("not-created")
    obj["metadata"]["name"] = "gke-missing"
    op.start()
    try:
        api.apply(obj)

        def sources_ready() -> dict[str, Any]:
            conds = api.get("auditdetection", "gke-missing").get("status", {}).get("conditions", [])
            return next((c for c in conds if c["type"] == "SourcesReady"), {})

        cond = wait_for(lambda: "does not exist" in sources_ready().get("message", "") and sources_ready(),
                        timeout=60, what=lambda: f"SourcesReady=False: {sources_ready()}")  # fmt: skip
        assert cond["status"] == "False" and cond["reason"] == "SourceUnavailable"
        assert f"subscription projects/{PROJECT}/subscriptions/not-created does not exist" in cond["message"]
    finally:
        c.kubectl("delete", "auditdetection", "gke-missing", "-n", NAMESPACE, "--timeout=60s")  # its finalizer: kopf's
        op.stop()
