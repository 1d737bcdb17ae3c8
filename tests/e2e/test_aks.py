"""AKS without AKS: the local control plane's real audit log sent where an AKS diagnostic setting sends it,
and the seed detection, with only its source changed, counting each anonymous request once through
SIGKILLs, as `scan` counts the file:

- archived to a storage account (Azurite): hourly append blobs of kube-audit records, read by the AKS
  install's one replica;
- streamed to an event hub (a real Kafka broker speaking the protocol of Event Hubs' Kafka endpoint):
  events of kube-audit records over four partitions, read by the Event Hubs install's two replicas
  sharing the partitions; a hub that does not exist named in SourcesReady."""

from __future__ import annotations

import json
import shutil
import time
from collections import defaultdict
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
    anonymous_with_agent,
    counted_through_kills,
    counts_by_key,
    installed,
    ready,
    scan_counts,
    scrape,
    total,
    traffic,
    wait_for,
)

from auditwatch.devcluster import DevCluster
from auditwatch.devcluster.cluster import free_port
from auditwatch.times import epoch_ms
from azurite import CLUSTER, Archive, azurite, hour_blob, record
from kafka import create_hub, hub_body, kafka_broker, send

SEED = "kubernetes-aws-detect-suspicious-kubectl-calls"


SHARDS = ("aks-0", "aks-1")


@pytest.fixture(scope="module")
def aks() -> Iterator[tuple[DevCluster, str]]:
    with azurite() as connection, installed("aks") as c:
        yield c, connection


@pytest.fixture(scope="module")
def broker() -> Iterator[str]:
    with kafka_broker() as running:
        yield running.address


class Diagnostics(Forwarder):
    """Appends every line kube-apiserver writes to its audit log, as AKS's diagnostic setting does: a
    kube-audit record a line, in the blob of the event's hour, in batches."""

    def __init__(self, audit_dir: Path, archive: Archive) -> None:
        super().__init__(audit_dir, pace=0.5)
        self.archive = archive

    def forward(self, lines: list[bytes]) -> None:
        by_blob: dict[str, list[bytes]] = defaultdict(list)
        for line in lines:
            event = json.loads(line)
            by_blob[hour_blob(epoch_ms(event["stageTimestamp"]) // 1000)].append(record(event))
        for blob, records in sorted(by_blob.items()):
            self.archive.append(blob, b"".join(records))


def test_the_seed_detection_over_the_storage_archive_counts_as_scan_counts_the_file_through_kills(aks, tmp_path):
    c, connection = aks
    api, archive = Api(c), Archive(connection)
    (tmp_path / "op").mkdir()
    op = Operator(tmp_path / "op", ["--sources", "azureBlob", "--webhook-listen", ""], c.operator_kubeconfig,
                  {"AZURE_STORAGE_CONNECTION_STRING": connection})  # fmt: skip
    seed = yaml.safe_load((ROOT / "manifests/aks/seed-detection.yaml").read_text())
    source = seed["spec"]["sources"][0]["azureBlob"]
    source |= {"accountUrl": archive.url, "prefix": CLUSTER, "pollInterval": "1s", "settleDelay": "5s", "start": "1h"}

    with Diagnostics(c.audit_dir, archive) as diagnostics:
        try:
            op.start()
            api.apply(seed)
            wait_for(lambda: ready(api, SEED).get("status") == "True", timeout=60, what="the seed Ready")
            with traffic(api, "e2e-aks", c.admin_token):
                for pause in (2.5, 4.0):
                    time.sleep(pause)
                    op.kill()  # mid-blob at times: read again from the checkpoint, the findings skip what they have
                    time.sleep(2)
                    op.start()
                time.sleep(3)
            assert diagnostics.caught_up()
            expected = len(api.audit_events(anonymous_with_agent()))
            published = Path(shutil.copytree(c.audit_dir, tmp_path / "published"))
            wait_for(lambda: total(api, SEED) == expected, timeout=60,
                     what=lambda: f"the count {total(api, SEED)} == {expected}; {op.log()[-3000:]}")  # fmt: skip
            time.sleep(3)  # and no more: nothing counted twice
            assert total(api, SEED) == expected > 100
            status = api.get("auditdetection", SEED)["status"]
            [read] = status["shards"]["default"]["sources"]
            assert read["azureBlob"]["blob"].startswith(CLUSTER) and read["azureBlob"]["apiCalls"] > 0
            assert not read["lastError"]
            by_key = counts_by_key(api, SEED, ["user", "src_ip"])
            c.kubectl("delete", "auditdetection", SEED, "-n", NAMESPACE, "--timeout=60s")
        finally:
            op.stop()
    seed_file = ROOT / "manifests/detections" / f"{SEED}.yaml"
    assert by_key == scan_counts(seed_file, sorted(published.glob("audit*.log")), ["user", "src_ip"])


class Stream(Forwarder):
    """Sends every line kube-apiserver writes to its audit log to an event hub, as AKS's diagnostic setting
    streams it: events of up to 20 kube-audit records, spread over the hub's partitions."""

    def __init__(self, audit_dir: Path, broker: str, hub: str) -> None:
        super().__init__(audit_dir)
        self.broker, self.hub, self.sent = broker, hub, 0

    def forward(self, lines: list[bytes]) -> None:
        events = [json.loads(line) for line in lines]
        bodies = [hub_body(events[i : i + 20]) for i in range(0, len(events), 20)]
        if bodies:  # every partition in turn, across passes: each replica gets its share while the traffic runs
            send(self.broker, self.hub, bodies, first=self.sent)
            self.sent += len(bodies)


def hub_replica(c: DevCluster, broker: str, i: int, workdir: Path, metrics_port: int = 0) -> Operator:
    """A replica of the Event Hubs install: its pod's name as its shard (a static member of the consumer
    group), eventHub sources only, its own spool."""
    (workdir / f"r{i}").mkdir(exist_ok=True)
    args = ["--shard", SHARDS[i], "--sources", "eventHub", "--webhook-listen", "",
            "--eventhub-spool", str(workdir / f"spool-{i}")]  # fmt: skip
    if metrics_port:
        args += ["--metrics-listen", f"127.0.0.1:{metrics_port}"]
    return Operator(workdir / f"r{i}", args, c.operator_kubeconfig, {"EVENTHUB_KAFKA_BROKER": broker})


def seed_on_hub(hub: str, name: str = SEED) -> dict[str, Any]:
    """The Event Hubs install's seed detection (the AKS seed, its source patched), reading ``hub`` from the
    start of what it retains."""
    obj = yaml.safe_load((ROOT / "manifests/aks/seed-detection.yaml").read_text())
    obj["spec"]["sources"] = yaml.safe_load((ROOT / "manifests/aks-eventhubs/seed-eventhub.yaml").read_text())["spec"][
        "sources"
    ]
    obj["metadata"]["name"] = name
    obj["spec"]["sources"][0]["eventHub"] |= {"hub": hub, "start": "earliest", "maxRecords": 50}
    return obj


def test_the_seed_detection_over_event_hubs_counts_as_scan_counts_the_file_through_kills_and_two_replicas(
    aks, broker, tmp_path
):
    c, _ = aks
    create_hub(broker, "kube-audit", partitions=4)
    port = free_port()
    replicas = [hub_replica(c, broker, i, tmp_path, port if i == 0 else 0) for i in range(2)]

    with Stream(c.audit_dir, broker, "kube-audit") as stream:
        try:
            sources, by_key, published = counted_through_kills(
                c, seed_on_hub("kube-audit"), replicas, SHARDS, stream, "e2e-eventhubs", tmp_path / "published"
            )
            assert all(s["eventHub"]["records"] > 0 and not s["lastError"] for s in sources), sources
            owned = [set(s["eventHub"]["partitions"]) for s in sources]
            assert not owned[0] & owned[1] and owned[0] | owned[1] == {"0", "1", "2", "3"}, owned
            metrics, hub = scrape(port), {("hub", "eventhub:aks-audit.servicebus.windows.net/kube-audit")}
            assert metrics[("auditwatch_eventhub_events_total", frozenset(hub | {("result", "spooled")}))] > 0
            assert metrics[("auditwatch_eventhub_lag_records", frozenset(hub))] >= 0
        finally:
            for op in replicas:
                op.stop()
    seed_file = ROOT / "manifests/detections" / f"{SEED}.yaml"
    assert by_key == scan_counts(seed_file, sorted(published.glob("audit*.log")), ["user", "src_ip"])


def test_an_event_hub_that_does_not_exist_is_named(aks, broker, tmp_path):
    c, _ = aks
    api, op = Api(c), hub_replica(c, broker, 0, tmp_path)
    op.start()
    try:
        api.apply(seed_on_hub("not-created", name="aks-missing"))

        def sources_ready() -> dict[str, Any]:
            conds = api.get("auditdetection", "aks-missing").get("status", {}).get("conditions", [])
            return next((c for c in conds if c["type"] == "SourcesReady"), {})

        cond = wait_for(lambda: "does not exist" in sources_ready().get("message", "") and sources_ready(),
                        timeout=60, what=lambda: f"SourcesReady=False: {sources_ready()}")  # fmt: skip
        assert cond["status"] == "False" and cond["reason"] == "SourceUnavailable"
        assert "event hub not-created in aks-audit.servicebus.windows.net" in cond["message"]
    finally:
        c.kubectl("delete", "auditdetection", "aks-missing", "-n", NAMESPACE, "--timeout=60s")
        op.stop()
