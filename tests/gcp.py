"""A real Pub/Sub server on loopback for the tests: Google's emulator (the Google Cloud CLI's
``gcloud beta emulators pubsub start``, a Java server), and GKE's audit log entries to publish to it.

The emulator serves the Pub/Sub API over gRPC as Google does, without credentials; clients find it
through ``PUBSUB_EMULATOR_HOST``, as the operator does. ``gke_entry`` writes an audit Event as GKE's
Cloud Logging entry records it, which a Log Router sink publishes to a topic.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from auditwatch.devcluster.cluster import free_port

PROJECT = "auditwatch-test"
AUDIT_LOG = "type.googleapis.com/google.cloud.audit.AuditLog"
GRPC_CODE = {200: 0, 201: 0, 400: 3, 401: 16, 403: 7, 404: 5, 409: 6, 422: 3, 429: 8, 500: 13, 503: 14, 504: 4}


@contextmanager
def pubsub_emulator() -> Iterator[str]:
    """The Pub/Sub emulator on 127.0.0.1 with its own data directory; yields its host:port."""
    gcloud = shutil.which("gcloud")
    assert gcloud, "the Google Cloud CLI (gcloud) with its Pub/Sub emulator is needed: README, Tests"
    port, data = free_port(), tempfile.mkdtemp(prefix="auditwatch-pubsub-emulator-")
    log = open(Path(data) / "emulator.log", "wb")  # noqa: SIM115
    args = [gcloud, "beta", "emulators", "pubsub", "start", f"--host-port=127.0.0.1:{port}", f"--project={PROJECT}",
            f"--data-dir={data}", "--quiet"]  # fmt: skip
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, (Path(data) / "emulator.log").read_text()
            assert time.monotonic() < deadline, "the Pub/Sub emulator did not start in 90 s"
            if "Server started" in (Path(data) / "emulator.log").read_text(errors="replace"):
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            time.sleep(0.3)
        yield f"127.0.0.1:{port}"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # gcloud and the Java server it started
        proc.wait()
        log.close()
        shutil.rmtree(data, ignore_errors=True)


class Topic:
    """A topic and subscriptions of it on the emulator (``PUBSUB_EMULATOR_HOST`` set), and publishing."""

    def __init__(self, name: str, ack_deadline: int = 10) -> None:
        from google.cloud import pubsub_v1

        self.publisher, self.subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
        self.path = self.publisher.topic_path(PROJECT, name)
        self.publisher.create_topic(name=self.path)
        self.ack_deadline = ack_deadline

    def subscription(self, name: str) -> str:
        path = self.subscriber.subscription_path(PROJECT, name)
        self.subscriber.create_subscription(name=path, topic=self.path, ack_deadline_seconds=self.ack_deadline)
        return path

    def pending(self, subscription: str) -> list[Any]:
        """Messages a subscription would deliver now (pulled, not acknowledged: they come again later)."""
        from google.api_core.exceptions import DeadlineExceeded

        try:
            answer = self.subscriber.pull(
                subscription=self.subscriber.subscription_path(PROJECT, subscription), max_messages=100, timeout=3
            )
        except DeadlineExceeded:
            return []
        return list(answer.received_messages)

    def publish(self, messages: list[bytes]) -> None:
        for future in [self.publisher.publish(self.path, data) for data in messages]:
            future.result()


def gke_entry(event: dict[str, Any]) -> dict[str, Any]:
    """The Cloud Logging entry GKE writes for an audit Event (what audit/gke.py maps back)."""
    ref = event.get("objectRef") or {}
    group = ref.get("apiGroup") or "core"
    parts = [group, ref.get("apiVersion", "v1")]
    if ref.get("namespace"):
        parts += ["namespaces", ref["namespace"]]
    parts += [p for p in (ref.get("resource"), ref.get("name"), ref.get("subresource")) if p]
    method = f"io.k8s.{group}.{ref.get('apiVersion', 'v1')}.{ref.get('resource', 'nonresource')}.{event['verb']}"
    code = (event.get("responseStatus") or {}).get("code", 200)
    return {
        "insertId": event["auditID"],
        "operation": {"id": event["auditID"], "producer": "k8s.io", "first": True, "last": True},
        "protoPayload": {
            "@type": AUDIT_LOG,
            "authenticationInfo": {"principalEmail": event["user"]["username"]},
            "methodName": method,
            "requestMetadata": {
                "callerIp": (event.get("sourceIPs") or [""])[0],
                "callerSuppliedUserAgent": event.get("userAgent", ""),
            },
            "resourceName": "/".join(parts),
            "serviceName": "k8s.io",
            "status": {"code": GRPC_CODE.get(code, 2)},
        },
        "resource": {"type": "k8s_cluster", "labels": {"cluster_name": "e2e", "location": "europe-west1"}},
        "labels": event.get("annotations") or {},
        "timestamp": event["stageTimestamp"],
        "logName": f"projects/{PROJECT}/logs/cloudaudit.googleapis.com%2Fdata_access",
    }
