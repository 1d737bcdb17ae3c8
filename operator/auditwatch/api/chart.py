"""The Helm chart's values (charts/auditwatch), as a model: its ``values.schema.json`` is generated from
it, so a wrong value fails at ``helm install``, not in the pod. Values that become `auditwatch run`
options take the type and bounds of the setting they set (api/settings.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from auditwatch.api.models import Name, Source
from auditwatch.api.settings import Settings

CHART = Path("charts/auditwatch")


def _setting(name: str) -> Any:
    """A value typed and bounded as the operator's setting ``name``."""
    field = Settings.model_fields[name]
    return Annotated[field.annotation, *field.metadata]


class _Values(BaseModel):
    # A misspelt key fails, not silently ignored; strict, as the schema is ("yes" is no boolean there).
    model_config = ConfigDict(extra="forbid", strict=True)


class Image(_Values):
    repository: Annotated[str, Field(min_length=1)] = "auditwatch"
    tag: Annotated[str, Field(min_length=1, max_length=128)] = "0.1.0"
    pullPolicy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"


class WriteBudget(_Values):
    qps: _setting("write_qps") = 50  # type: ignore[valid-type]
    burst: _setting("write_burst") = 100  # type: ignore[valid-type]


Quantity = Annotated[str, Field(pattern=r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|k|M|G|T)?$")]


class CertManager(_Values):
    """The webhook's serving certificate issued by cert-manager into tlsSecret (issuer "": from a Secret)."""

    issuer: Name | Literal[""] = ""
    kind: Literal["Issuer", "ClusterIssuer"] = "Issuer"


class Webhook(_Values):
    tlsSecret: Name = "auditwatch-webhook-tls"
    clientCASecret: Name = "auditwatch-webhook-client-ca"
    clientNames: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)] = ["kube-apiserver"]
    serviceClusterIP: Annotated[str, Field(pattern=r"^[0-9a-fA-F.:]+$")] = "10.96.200.200"
    replicas: Annotated[int, Field(ge=1)] = 2
    spoolSize: Quantity = "1Gi"
    certManager: CertManager = CertManager()


class CloudWatch(_Values):
    roleArn: Annotated[str, Field(pattern=r"^(arn:aws[a-z-]*:iam::[0-9]{12}:role/.+)?$")] = ""
    callsPerSecond: _setting("cloudwatch_calls_per_second") = 1  # type: ignore[valid-type]


class PubSub(_Values):
    """Mode gke: Workload Identity's Google service account, the replicas and each one's spool."""

    serviceAccount: Annotated[str, Field(pattern=r"^([-a-z0-9]+@[-a-z0-9]+\.iam\.gserviceaccount\.com)?$")] = ""
    replicas: Annotated[int, Field(ge=1)] = 2
    spoolSize: Quantity = "1Gi"


class Azure(_Values):
    """Modes aks and aks-eventhubs: Workload Identity's client ID (a managed identity's)."""

    clientId: Annotated[str, Field(pattern=r"^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})?$")] = ""


class EventHub(_Values):
    """Mode aks-eventhubs: the replicas (members of the hub's consumer group) and each one's spool."""

    replicas: Annotated[int, Field(ge=1)] = 2
    spoolSize: Quantity = "1Gi"


class Detections(_Values):
    """The rule packs installed as AuditDetections in the release's namespace (from manifests/detections)."""

    seed: bool = True  # kubernetes-aws-detect-suspicious-kubectl-calls
    escu: bool = False  # the 17 Kubernetes detections of Splunk's ESCU pack
    # The sources every installed detection reads instead of the packs' own (the node's log file): the
    # mode's, e.g. an eventHub source in mode aks-eventhubs. Empty: as the packs have them.
    sources: Annotated[list[Source], Field(max_length=16)] = []


class Monitoring(_Values):
    """Metrics for Prometheus (--metrics-listen's port): annotations, or the Prometheus Operator's objects."""

    scrapeAnnotations: bool = False  # prometheus.io/scrape on the pods
    podMonitor: bool = False
    prometheusRule: bool = False  # the alerts an operator of auditwatch needs (README: Monitoring)
    grafanaDashboard: bool = False  # a ConfigMap labelled grafana_dashboard=1, for Grafana's sidecar


class ChartValues(_Values):
    """values.yaml: each key as the chart's templates read it."""

    model_config = ConfigDict(
        extra="forbid",
        # mode eks needs the role (JSON Schema's if/then, as the validator below says it)
        json_schema_extra={
            "if": {"properties": {"mode": {"const": "eks"}}, "required": ["mode"]},
            "then": {"properties": {"cloudwatch": {"properties": {"roleArn": {"minLength": 1}}}}},
        },
    )

    mode: Literal["nodes", "webhook", "eks", "gke", "aks", "aks-eventhubs"] = "nodes"
    image: Image = Image()
    resources: dict[str, dict[str, str | int]] = {
        "requests": {"cpu": "100m", "memory": "192Mi"},
        "limits": {"memory": "512Mi"},
    }
    nodeSelector: dict[str, str] = {}
    tolerations: list[dict[str, Any]] = []
    affinity: dict[str, Any] = {}
    writeBudget: WriteBudget = WriteBudget()
    metricsListen: Annotated[str, Field(pattern=r"^(.*:[0-9]{1,5})?$")] = "0.0.0.0:8082"
    detectionNamespaces: list[Name | Literal["*"]] = []
    webhook: Webhook = Webhook()
    cloudwatch: CloudWatch = CloudWatch()
    pubsub: PubSub = PubSub()
    azure: Azure = Azure()
    eventHub: EventHub = EventHub()
    allowPaths: list[Annotated[str, Field(pattern=r"^/")]] = []
    alertsSecret: Name | Literal[""] = ""
    reports: bool = False
    detections: Detections = Detections()
    monitoring: Monitoring = Monitoring()
    extraArgs: list[Annotated[str, Field(pattern=r"^--[a-z]")]] = []

    @model_validator(mode="after")
    def eks_role(self) -> ChartValues:
        if self.mode == "eks" and not self.cloudwatch.roleArn:
            raise ValueError("mode eks needs cloudwatch.roleArn (the IAM role of the ServiceAccount)")
        return self


def values_schema() -> str:
    """values.schema.json, as written."""
    schema = ChartValues.model_json_schema()
    schema.pop("title", None)
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"
