"""The operator's settings: one typed object, made from `auditwatch run`'s options, passed to the runtime.

`auditwatch lint` takes the options that decide whether a detection can run (the webhook's,
``--geoip-db``, ``--allow-path``, ``--detection-namespace``) so that its verdict is the operator's.
Intervals have the defaults the README states; tests shorten them here rather than patching module
constants.
"""

from __future__ import annotations

import os
import tempfile
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from auditwatch.api.defaults import AUDIT_LOG_DIRS
from auditwatch.api.models import DEFAULT_SHARD, SOURCE_KINDS, ShardName, SourceKind

Seconds = Annotated[float, Field(gt=0)]


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    namespaces: tuple[str, ...] = ()  # watched namespaces; empty: the whole cluster
    # Which audit log this replica reads (findings/aggregate.py): a node's name in a DaemonSet, a webhook
    # replica's pod name. Stable across restarts: its positions and finding parts are kept under it.
    shard: ShardName = Field(default_factory=lambda: os.environ.get("AUDITWATCH_SHARD") or DEFAULT_SHARD)
    # A sharded replica renews its shard's Lease every quarter of this; one not renewed for this long is
    # silent (runtime/shards.py). The Lease goes with this replica's Pod, named by the downward API.
    shard_lease_seconds: Annotated[float, Field(ge=4)] = 40.0
    # A shard without a Lease (its Pod deleted: a node replaced) for this long has its parts of findings
    # and of detections' status moved into their retired totals (runtime/retire.py), so that the 64
    # shards a status holds are not used up by nodes long gone.
    retire_shards_seconds: Annotated[float, Field(ge=1)] = 3600.0
    pod: tuple[str, str] | None = Field(
        default_factory=lambda: (
            (os.environ["POD_NAME"], os.environ["POD_UID"])
            if os.environ.get("POD_NAME") and os.environ.get("POD_UID")
            else None
        )
    )
    # The operator's own namespace: its shards' Leases, and where detections run by default.
    own_namespace: str = Field(default_factory=lambda: os.environ.get("POD_NAMESPACE") or "auditwatch")
    # Namespaces whose detections run ("*": all). A detection reads the whole cluster's audit trail and
    # publishes what it matches in its own namespace, so by default only the operator's own namespace.
    detection_namespaces: tuple[str, ...] = Field(default_factory=lambda data: (data["own_namespace"],))
    liveness: str = "http://0.0.0.0:8080/healthz"  # kopf's liveness endpoint; '' turns it off
    metrics_listen: str = ""  # HOST:PORT of the Prometheus endpoint (/metrics); '' (the default): none
    webhook_listen: str = "0.0.0.0:8081"  # HOST:PORT of the audit webhook server; '' turns it off
    # Accepted batches are appended here (one directory per webhook path) before the API server gets its
    # 200; detections tail them. An emptyDir survives container restarts, a hostPath pod replacement too.
    webhook_spool: str = Field(default_factory=lambda: os.path.join(tempfile.gettempdir(), "auditwatch-webhook"))
    # Who may POST audit batches: clients with a certificate the CA signed (mTLS; optionally only
    # these common names), and/or a bearer token read from a file (a mounted Secret). TLS is served
    # with the certificate and key. Without either way of authenticating, the webhook server stays
    # off unless webhook_insecure (tests and experiments: anyone can feed events then).
    webhook_tls_cert: str | None = None
    webhook_tls_key: str | None = None
    webhook_client_ca: str | None = None
    webhook_client_names: tuple[str, ...] = ()
    webhook_token_file: str | None = None
    webhook_insecure: bool = False
    # A batch for a path no detection reads is answered 503 (kube-apiserver keeps it and retries) this long
    # after the server starts, while the detections are still being started; 404 after (it drops it).
    webhook_startup_seconds: Annotated[float, Field(ge=0)] = 60.0
    geoip_db: str | None = Field(default_factory=lambda: os.environ.get("AUDITWATCH_GEOIP_DB") or None)
    allow_paths: tuple[str, ...] = AUDIT_LOG_DIRS  # file sources may only read below these directories
    # The kinds of source this install reads. Every replica reads its own file and webhook share; a
    # cloudwatch source is the whole cluster's and must be read by one replica only (the EKS install).
    source_kinds: tuple[SourceKind, ...] = SOURCE_KINDS
    # Where the node's file system is, when not at / (a node's root mounted elsewhere; the local HA control
    # plane's nodes): file sources' paths and allow_paths are read below it.
    host_root: str = ""
    # Each shared reader's chunks are evaluated in a worker process of its own (engine/worker.py), so that
    # evaluation holds neither the event loop nor the GIL that writes and watches need; off: on the loop.
    evaluation_worker: bool = True
    poll_seconds: Seconds = 0.1  # a file tail at the end of its file looks again after this long
    flush_seconds: Seconds = 0.25  # due findings are written this often
    status_seconds: Seconds = 1.0  # a detection's status is written at most this often
    expire_seconds: Seconds = 60.0  # findings past their TTL are looked for this often
    finding_write_seconds: Seconds = 1.0  # at most one write per finding per this long
    finding_event_seconds: Seconds = 60.0  # at most one FindingUpdated Event per finding per this long
    # Every API write waits for one budget (kube/budget.py).
    write_qps: Annotated[float, Field(gt=0)] = 50.0  # chosen from bench/write_cost_bench.py (kube/budget.py)
    write_burst: Annotated[int, Field(ge=1)] = 100
    write_concurrency: Annotated[int, Field(ge=1, le=64)] = 4
    # Mirror each detection's findings into an OpenReports Report (findings/report.py), at most this often.
    reports: bool = False
    report_seconds: Seconds = 10.0
    # FilterLogEvents calls per log group, however many detections read it: the API's quota is per
    # account and region and shared with every other consumer (5/s by AWS's knowledge center).
    cloudwatch_calls_per_second: Annotated[float, Field(gt=0, le=25)] = 1.0
    # Messages pulled from a Pub/Sub subscription are appended here (one directory per subscription) before
    # they are acknowledged; detections tail them. A StatefulSet's volume keeps it across pod replacement.
    pubsub_spool: str = Field(default_factory=lambda: os.path.join(tempfile.gettempdir(), "auditwatch-pubsub"))
    # Likewise the records fetched from an event hub, before their offsets are committed.
    eventhub_spool: str = Field(default_factory=lambda: os.path.join(tempfile.gettempdir(), "auditwatch-eventhub"))

    @field_validator("webhook_listen", "metrics_listen")
    @classmethod
    def host_port(cls, value: str, info: Any) -> str:
        if value:
            _, sep, port = value.rpartition(":")
            if not sep or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"{info.field_name} {value!r} is not HOST:PORT")
        return value

    @model_validator(mode="after")
    def webhook_tls_pairs(self) -> Settings:
        if (self.webhook_tls_cert is None) != (self.webhook_tls_key is None):
            raise ValueError("webhook_tls_cert and webhook_tls_key go together")
        if self.webhook_client_ca and not self.webhook_tls_cert:
            raise ValueError("webhook_client_ca needs TLS: give webhook_tls_cert and webhook_tls_key")
        return self

    def namespace_refused(self, namespace: str) -> str:
        """Why detections in ``namespace`` do not run, or '' when they do."""
        if "*" in self.detection_namespaces or namespace in self.detection_namespaces:
            return ""
        return (
            f"the operator runs detections only in {', '.join(self.detection_namespaces)}: a detection reads "
            "the whole cluster's audit trail (auditwatch run --detection-namespace)"
        )

    @property
    def sharded(self) -> bool:
        """One of several replicas, each reading its own audit log: it renews a Lease (runtime/shards.py) and
        watches the findings the others write (findings/peers.py)."""
        return self.shard != DEFAULT_SHARD

    @property
    def webhook_off(self) -> str:
        """Why the webhook server does not run, or '' when it does."""
        if not self.webhook_listen:
            return "the operator runs without its webhook server (auditwatch run --webhook-listen)"
        if not (self.webhook_client_ca or self.webhook_token_file or self.webhook_insecure):
            return (
                "the webhook server is off: no way to authenticate the API server is configured "
                "(auditwatch run --webhook-client-ca or --webhook-token-file)"
            )
        return ""

    @property
    def webhook_address(self) -> tuple[str, int] | None:
        """(host, port) of the webhook server, or None when it is off."""
        if self.webhook_off:
            return None
        host, _, port = self.webhook_listen.rpartition(":")
        return host or "0.0.0.0", int(port)
