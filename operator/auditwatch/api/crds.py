"""CustomResourceDefinitions generated from the pydantic models: ``auditwatch crds`` writes ``crds/``.

pydantic's JSON Schema becomes a structural OpenAPI v3 schema: ``$ref`` inlined, ``anyOf [X, null]``
turned into ``X`` with ``nullable``, ``const`` into a one-value ``enum``, and the keywords Kubernetes
rejects or ignores (``title``, ``additionalProperties: false``, ``$defs``, ``propertyNames``: map keys
such as shard names are checked by the operator's models only, ``patternProperties`` becoming
``additionalProperties``) dropped.
"""

from __future__ import annotations

from typing import Any

import yaml
from pydantic import BaseModel

from auditwatch.api.models import GROUP, VERSION, AuditDetection, DetectionFinding

DROP = {"title", "$defs", "discriminator", "propertyNames"}


def structural(schema: dict[str, Any], defs: dict[str, Any] | None = None) -> dict[str, Any]:
    """A structural OpenAPI v3 schema from a pydantic JSON Schema."""
    defs = schema.get("$defs", {}) if defs is None else defs
    if "$ref" in schema:
        target = defs[schema["$ref"].rsplit("/", 1)[-1]]
        extra = {k: v for k, v in schema.items() if k != "$ref"}
        return structural({**target, **extra}, defs)
    if "anyOf" in schema:
        options = [o for o in schema["anyOf"] if o.get("type") != "null"]
        if len(options) == 1:
            rest = {k: v for k, v in schema.items() if k != "anyOf"}
            inner = structural({**options[0], **rest}, defs)
            inner["nullable"] = True
            if rest.get("default", ...) is None:
                inner.pop("default")
            return inner
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in DROP or (key == "additionalProperties" and value is False):
            continue
        if key == "const":
            out["enum"] = [value]
        elif key == "properties":
            out[key] = {k: structural(v, defs) for k, v in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = structural(value, defs)
        elif key == "patternProperties":  # a map with constrained keys: Kubernetes has maps, not key patterns
            [values] = value.values()
            out["additionalProperties"] = structural(values, defs)
        else:
            out[key] = value
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    return out


def _schema(model: type[BaseModel]) -> dict[str, Any]:
    schema = structural(model.model_json_schema(mode="serialization"))
    props = schema["properties"]
    props["metadata"] = {"type": "object"}
    for key in ("apiVersion", "kind"):
        props[key] = {"type": "string"}
    return {"type": "object", "properties": props, "required": ["spec"]}


def _crd(
    model: type[BaseModel], plural: str, short: list[str], columns: list[dict[str, Any]], status: bool = True
) -> dict[str, Any]:
    """A CRD of ``model``; with ``status``, its status is a subresource (written apart from the spec)."""
    kind = model.__name__
    version: dict[str, Any] = {"name": VERSION, "served": True, "storage": True}
    version["schema"] = {"openAPIV3Schema": _schema(model)}
    if status:
        version["subresources"] = {"status": {}}
    version["additionalPrinterColumns"] = columns
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": short,
                "categories": ["auditwatch"],
            },
            "versions": [version],
        },
    }


def crds() -> dict[str, dict[str, Any]]:
    """File name -> CRD object."""
    return {
        "auditwatch.io_auditdetections.yaml": _crd(
            AuditDetection,
            "auditdetections",
            ["detection", "detections", "ad"],
            [
                {"name": "Ready", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].status'},
                {"name": "Reason", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].reason'},
                {"name": "Matched", "type": "integer", "jsonPath": ".status.counters.matched"},
                {"name": "Findings", "type": "integer", "jsonPath": ".status.counters.findings"},
                {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
            ],
        ),
        "auditwatch.io_detectionfindings.yaml": _crd(
            DetectionFinding,
            "detectionfindings",
            ["finding", "findings", "df"],
            [
                {"name": "Detection", "type": "string", "jsonPath": ".spec.detection"},
                {"name": "User", "type": "string", "jsonPath": ".spec.key.user", "description": "who"},
                {"name": "Source IP", "type": "string", "jsonPath": ".spec.key.src_ip", "description": "from where"},
                {"name": "Count", "type": "integer", "jsonPath": ".status.count", "description": "how many"},
                {"name": "Severity", "type": "string", "jsonPath": ".spec.severity"},
                {"name": "First Seen", "type": "date", "jsonPath": ".status.firstSeen", "description": "since when"},
                {"name": "Last Seen", "type": "date", "jsonPath": ".status.lastSeen"},
                {"name": "Written", "type": "date", "jsonPath": ".status.writtenAt", "priority": 1},
                {"name": "Message", "type": "string", "jsonPath": ".spec.message", "priority": 1},
                {
                    "name": "Technique",
                    "type": "string",
                    "jsonPath": ".spec.mitre",
                    "priority": 1,
                    "description": "MITRE ATT&CK",
                },
            ],
            # No status subresource: a finding is created with its count in one write (as Events and
            # PolicyReports carry theirs in the body), and each later write is one PATCH of the object.
            # Only auditwatch writes findings (the operator, a hunt): a status apart from the spec buys nothing.
            status=False,
        ),
    }


def render(crd: dict[str, Any]) -> str:
    header = "# Generated by `auditwatch crds` from operator/auditwatch/api/models.py. Do not edit.\n"
    return header + yaml.safe_dump(crd, sort_keys=False, width=120)
