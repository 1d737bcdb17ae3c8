"""``auditwatch hunt --findings NAMESPACE``: a hunt's rows as DetectionFindings, beside the operator's.

A hunt finding is made as the operator makes its findings (one per value of ``spec.finding.groupBy``,
by the same Aggregator, with the detection's message, severity, risk score and MITRE techniques), and
differs in what tells it apart:
- its name carries the hunt, which is the detection and the range (``--since``/``--until`` as given
  resolved to seconds; an open end stays open), so hunting the same range again writes the same
  objects, and never an object of the operator's;
- it is labelled ``auditwatch.io/hunt: <hunt>`` (besides ``auditwatch.io/detection``), which the
  operator's list of its own findings excludes, and annotated with its range and engine;
- its status is written whole from the rows (``count``: the rows' ``count`` where they have one, else one
  per row), so a second hunt of the same range leaves the same counts, not double ones.
Hunt findings go with the AuditDetection of the same name in that namespace when there is one (an
ownerReference); else they stay until deleted: ``kubectl delete findings -l auditwatch.io/hunt=<hunt>``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from auditwatch.api.models import (
    GROUP,
    HUNT_LABEL,
    VERSION,
    AuditDetection,
    DetectionFinding,
    DetectionFindingSpec,
    ObjectMeta,
    detection_owner,
    mitre_techniques,
)
from auditwatch.engine.pipeline import OutputRow
from auditwatch.errors import AuditwatchError
from auditwatch.findings.aggregate import Aggregator
from auditwatch.ir.plan import Plan
from auditwatch.ir.planner import recorded_fields

SHARD = "hunt"


@dataclass(frozen=True)
class Hunt:
    """What a hunt is: its detection and range (epoch seconds, None: open), and the engine it ran on."""

    detection: AuditDetection
    since: float | None
    until: float | None
    engine: str

    @property
    def name(self) -> str:
        """The hunt's identity: a label value, and part of each finding's name."""
        text = f"{self.detection.metadata.name}|{self.since}|{self.until}"
        return hashlib.sha256(text.encode()).hexdigest()[:10]


class HuntFindings:
    """A hunt's rows, as they come, grouped into findings by the operator's Aggregator."""

    def __init__(self, hunt: Hunt, plan: Plan) -> None:
        self.hunt = hunt
        policy = hunt.detection.spec.finding
        self.aggregator = Aggregator(
            f"{hunt.detection.metadata.name}-hunt-{hunt.name}",  # names: <detection>-hunt-<hunt>-<key hash>
            policy.groupBy,
            policy.message,
            policy.maxFindings,
            recorded_fields(plan, policy.groupBy),
            SHARD,
        )
        self.rows = 0

    def add(self, row: OutputRow) -> None:
        count = row.get("count")
        events = count if isinstance(count, int) and not isinstance(count, bool) else 1
        self.aggregator.add(dict(row), SHARD, self.rows, self.rows + 1, "", events)
        self.rows += 1

    def bodies(self, namespace: str, owner: dict[str, Any] | None) -> list[dict[str, Any]]:
        """The DetectionFindings (metadata, spec and status) in ``namespace``."""
        hunt, meta = self.hunt, self.hunt.detection.metadata
        policy = hunt.detection.spec.finding
        annotations = {
            f"{GROUP}/hunt-since": _when(hunt.since),
            f"{GROUP}/hunt-until": _when(hunt.until),
            f"{GROUP}/hunt-engine": hunt.engine,
        }
        return [
            DetectionFinding(
                metadata=ObjectMeta(
                    name=finding.name,
                    namespace=namespace,
                    labels={f"{GROUP}/detection": meta.name, HUNT_LABEL: hunt.name},
                    annotations=annotations,
                    ownerReferences=[owner] if owner else [],
                ),
                spec=DetectionFindingSpec(
                    detection=meta.name,
                    key=finding.key,
                    message=finding.message,
                    severity=policy.severity,
                    riskScore=policy.riskScore,
                    mitre=mitre_techniques(meta.labels),
                ),
                status=finding.snapshot(),
            ).model_dump(mode="json", exclude_none=True)
            for finding in self.aggregator.findings.values()
        ]

    def write(self, namespace: str) -> tuple[int, int]:
        """Create or update the findings in ``namespace`` (kubeconfig or in-cluster credentials), each
        with its status written whole; (created, updated). HuntFindingsError names what was refused."""
        from kubernetes import client

        from auditwatch.kube.client import ApiException, load_config

        load_config()
        api = client.CustomObjectsApi()
        try:
            detection = api.get_namespaced_custom_object(
                GROUP, VERSION, namespace, "auditdetections", self.hunt.detection.metadata.name
            )
            owner: dict[str, Any] | None = detection_owner(detection["metadata"])
        except ApiException as exc:
            if exc.status != 404:
                raise HuntFindingsError(f"--findings {namespace}: {_refusal(exc)}") from None
            owner = None
        created = 0
        bodies = self.bodies(namespace, owner)
        for body in bodies:
            try:
                created += _put(api, namespace, body)
            except ApiException as exc:
                name = body["metadata"]["name"]
                raise HuntFindingsError(f"--findings {namespace}: {name}: {_refusal(exc)}") from None
        return created, len(bodies) - created


def _put(api: Any, namespace: str, body: dict[str, Any]) -> bool:
    """Create the finding with its status, or take the one of a hunt before and write its status whole
    (at the object's resourceVersion). True when created."""
    from auditwatch.kube.client import ApiException

    plural = "detectionfindings"
    try:
        api.create_namespaced_custom_object(GROUP, VERSION, namespace, plural, body)
        return True
    except ApiException as exc:
        if exc.status != 409:
            raise
    obj = api.get_namespaced_custom_object(GROUP, VERSION, namespace, plural, body["metadata"]["name"])
    obj["status"] = body["status"]
    api.replace_namespaced_custom_object(GROUP, VERSION, namespace, plural, obj["metadata"]["name"], obj)
    return False


class HuntFindingsError(AuditwatchError):
    """The cluster refused a hunt's findings (no CRD, no permission, no namespace)."""


def _refusal(exc: Any) -> str:
    try:
        message = json.loads(exc.body).get("message", "")
    except (TypeError, ValueError):
        message = ""
    return f"{exc.status} {exc.reason}" + (f": {message}" if message else "")


def _when(seconds: float | None) -> str:
    if seconds is None:
        return "open"
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
