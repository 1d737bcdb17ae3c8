"""AKS without AKS: the local control plane's real audit log archived to a storage account (Azurite) as an
AKS diagnostic setting archives it, hourly append blobs of kube-audit records, and the seed detection,
with only its source changed, read by the AKS install's one replica: each anonymous request counted once
through SIGKILLs, as `scan` counts the file."""

from __future__ import annotations

import json
import shutil
import threading
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
    AuditFollower,
    Operator,
    anonymous_with_agent,
    counts_by_key,
    installed,
    ready,
    scan_counts,
    total,
    traffic,
    wait_for,
)

from auditwatch.devcluster import DevCluster
from auditwatch.times import epoch_ms
from azurite import CLUSTER, Archive, azurite, hour_blob, record

SEED = "kubernetes-aws-detect-suspicious-kubectl-calls"


@pytest.fixture(scope="module")
def aks() -> Iterator[tuple[DevCluster, str]]:
    with azurite() as connection, installed("aks") as c:
        yield c, connection


class Diagnostics:
    """Appends every line kube-apiserver writes to its audit log, as AKS's diagnostic setting does: a
    kube-audit record a line, in the blob of the event's hour, in batches."""

    def __init__(self, audit_dir: Path, archive: Archive) -> None:
        self.follower, self.archive = AuditFollower(audit_dir), archive
        self.idle = threading.Event()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            by_blob: dict[str, list[bytes]] = defaultdict(list)
            for line in self.follower.new_lines():
                event = json.loads(line)
                by_blob[hour_blob(epoch_ms(event["stageTimestamp"]) // 1000)].append(record(event))
            for blob, records in sorted(by_blob.items()):
                self.archive.append(blob, b"".join(records))
            (self.idle.clear if by_blob else self.idle.set)()
            self.stop.wait(0.5)

    def caught_up(self) -> bool:
        self.idle.clear()
        return self.idle.wait(10)

    def __enter__(self) -> Diagnostics:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        self.thread.join()


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
