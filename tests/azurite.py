"""A real Azure Storage blob service on loopback for the tests: Azurite, Microsoft's emulator (npm), and the
append blobs an AKS diagnostic setting writes to a storage account.

Azurite serves the Blob REST API as Azure does; clients reach it with its well-known account key in a
connection string (``AZURE_STORAGE_CONNECTION_STRING``, as the operator takes one). It is installed from
npm into the tests' cache on first use.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from auditwatch.devcluster.binaries import cache_dir
from auditwatch.devcluster.cluster import free_port

VERSION = "3.35.0"
ACCOUNT = "devstoreaccount1"
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="  # Azurite's own
CLUSTER = ("resourceId=/SUBSCRIPTIONS/00000000-0000-0000-0000-000000000000/RESOURCEGROUPS/E2E/PROVIDERS/"
           "MICROSOFT.CONTAINERSERVICE/MANAGEDCLUSTERS/E2E/")  # fmt: skip


def azurite_binary() -> Path:
    """azurite-blob, installed from npm into the cache once."""
    prefix = cache_dir() / f"azurite-{VERSION}"
    binary = prefix / "node_modules/.bin/azurite-blob"
    if not binary.exists():
        subprocess.run(["npm", "install", "--prefix", str(prefix), "--no-audit", "--no-fund", "--silent",
                        f"azurite@{VERSION}"], check=True)  # fmt: skip
    return binary


@contextmanager
def azurite() -> Iterator[str]:
    """Azurite's blob service on 127.0.0.1 with its own data directory; yields its connection string."""
    port, data = free_port(), tempfile.mkdtemp(prefix="auditwatch-azurite-")
    log = open(Path(data) / "azurite.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([str(azurite_binary()), "--blobHost", "127.0.0.1", "--blobPort", str(port),
                             "--location", data, "--skipApiVersionCheck", "--loose"],
                            stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (Path(data) / "azurite.log").read_text()
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                assert time.monotonic() < deadline, "Azurite did not start in 60 s"
                time.sleep(0.2)
        endpoint = f"http://127.0.0.1:{port}/{ACCOUNT}"
        yield f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={KEY};BlobEndpoint={endpoint};"
    finally:
        proc.terminate()
        proc.wait()
        log.close()
        shutil.rmtree(data, ignore_errors=True)


def hour_blob(hour: float, cluster: str = CLUSTER) -> str:
    """The name of the blob AKS writes the records of ``hour`` (seconds since the epoch) to."""
    t = datetime.fromtimestamp(hour, UTC)
    return f"{cluster}y={t:%Y}/m={t:%m}/d={t:%d}/h={t:%H}/m=00/PT1H.json"


def record(event: dict[str, Any]) -> bytes:
    """The diagnostic record line AKS writes for an audit Event (category kube-audit)."""
    return json.dumps({
        "time": event.get("stageTimestamp", ""), "resourceId": CLUSTER.removeprefix("resourceId=").rstrip("/"),
        "category": "kube-audit", "operationName": "Microsoft.ContainerService/managedClusters/diagnosticLogs/Read",
        "properties": {"log": json.dumps(event), "stream": "stdout", "pod": "kube-apiserver-abc"},
    }).encode() + b"\n"  # fmt: skip


class Archive:
    """An AKS diagnostic archive: the container, and appends to the hourly blobs."""

    def __init__(self, connection: str, container: str = "insights-logs-kube-audit") -> None:
        from azure.storage.blob import ContainerClient

        self.client = ContainerClient.from_connection_string(connection, container)
        self.client.create_container()
        self.url = self.client.url.rsplit("/", 1)[0]

    def append(self, blob: str, data: bytes) -> None:
        client = self.client.get_blob_client(blob)
        if not client.exists():
            client.create_append_blob()
        client.append_block(data)
