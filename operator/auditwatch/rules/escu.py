"""``auditwatch import-escu``: Splunk ESCU detection YAML -> AuditDetection manifests, search verbatim.

What maps where:
- ``search`` -> ``spec.search`` unchanged; the macros it calls come along in ``spec.macros`` from the
  ESCU macro files, except the data-source macros (``kube_audit``, ``aws_cloudwatchlogs_eks``: here
  the detection's own sources) and ``*_filter`` (``search *`` by default);
- ``rba.message`` (or the older ``tags.message``) -> ``spec.finding.message``; the risk score
  (``rba.risk_objects[].score``, or ``tags.risk_score``) -> ``riskScore``, and severity from the score
  as Splunk ES buckets it (80 critical, 60 high, 40 medium, 20 low, else informational);
- the risk and threat objects (or ``tags.observable``) that are output fields -> ``groupBy``;
- description, how to implement, known false positives -> annotations; id, version, MITRE ATT&CK
  techniques and analytic stories -> labels.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from auditwatch.errors import AuditwatchError
from auditwatch.spl import plan_search
from auditwatch.spl.macros import default_macro
from auditwatch.spl.tokens import Kind, tokenize

AUDIT_LOG = "/var/log/kubernetes/audit/audit.log"
DATA_SOURCE_MACROS = {"kube_audit", "aws_cloudwatchlogs_eks"}
ALIASES = {"user": "user.username", "src_ip": "sourceIPs{}"}
NAMESPACE = "auditwatch"


class EscuImportError(AuditwatchError, ValueError):
    """An ESCU file that cannot be imported; the message names the file and the field."""


def severity(score: int) -> str:
    for bound, name in ((80, "critical"), (60, "high"), (40, "medium"), (20, "low")):
        if score >= bound:
            return name
    return "informational"


def slug(text: str, limit: int = 63) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit].rstrip("-")


def load_macros(directory: Path) -> dict[str, str]:
    """ESCU macro files -> spec.macros entries (``name`` or ``name(arg, ...)`` -> definition)."""
    macros: dict[str, str] = {}
    for path in sorted(directory.glob("*.yml")):
        doc = yaml.safe_load(path.read_text())
        if isinstance(doc, dict) and "name" in doc and "definition" in doc:
            args = doc.get("arguments") or []
            key = f"{doc['name']}({', '.join(args)})" if args else doc["name"]
            macros[key] = str(doc["definition"])
    return macros


def import_detection(path: Path, macros: dict[str, str]) -> dict[str, Any]:
    """One ESCU detection file -> one AuditDetection object."""
    doc = yaml.safe_load(path.read_text())
    for field in ("name", "id", "search"):
        if not isinstance(doc, dict) or not doc.get(field):
            raise EscuImportError(f"{path}: missing `{field}`")
    search = doc["search"].strip()
    used = _macros_used(search, macros)
    outputs = plan_search(search, used).output_fields()
    rba, tags = doc.get("rba") or {}, doc.get("tags") or {}
    message = rba.get("message") or tags.get("message") or ""
    if message.strip().lower() in ("", "tbd"):
        message = doc["name"]
    score = max([int(o.get("score", 0)) for o in rba.get("risk_objects") or []] or [int(tags.get("risk_score") or 0)])
    objects = [o["field"] for o in (rba.get("risk_objects") or []) + (rba.get("threat_objects") or [])]
    objects = objects or [o["name"] for o in tags.get("observable") or []]
    group_by = [_output_name(o, outputs) for o in objects]
    group_by = [g for g in dict.fromkeys(group_by) if g][:8]
    eks = "aws_cloudwatchlogs_eks" in search
    source = (
        {"name": "eks-audit", "cloudwatch": {"logGroup": "/aws/eks/CLUSTER/cluster", "region": "us-east-1"}}
        if eks
        else {"name": "apiserver-log", "file": {"path": AUDIT_LOG}}
    )
    labels = {"escu.splunk.com/id": str(doc["id"]), "escu.splunk.com/version": str(doc.get("version", ""))}
    for technique in tags.get("mitre_attack_id") or []:
        labels[f"mitre-attack.escu.splunk.com/{technique}"] = "true"
    for story in tags.get("analytic_story") or []:
        labels[f"story.escu.splunk.com/{slug(story)}"] = "true"
    annotations = {"escu.splunk.com/name": doc["name"]}
    for key, field in (
        ("description", "description"),
        ("how-to-implement", "how_to_implement"),
        ("known-false-positives", "known_false_positives"),
    ):
        if doc.get(field):
            annotations[f"escu.splunk.com/{key}"] = " ".join(str(doc[field]).split())
    if eks:
        annotations["escu.splunk.com/source"] = "EKS audit logs in CloudWatch Logs: set logGroup and region"
    return {
        "apiVersion": "auditwatch.io/v1alpha1",
        "kind": "AuditDetection",
        "metadata": {"name": slug(doc["name"]), "namespace": NAMESPACE, "labels": labels, "annotations": annotations},
        "spec": {
            "search": search,
            **({"macros": used} if used else {}),
            "sources": [source],
            "finding": {
                "groupBy": group_by,
                "message": message,
                "riskScore": min(score, 100),
                "severity": severity(score),
            },
        },
    }


def render(obj: dict[str, Any], origin: str, command: str = "import-escu") -> str:
    header = f"# Imported by `auditwatch {command}` from {origin}. Regenerate rather than edit.\n"
    return header + yaml.safe_dump(obj, sort_keys=False, width=100, allow_unicode=True)


def _macros_used(search: str, macros: dict[str, str]) -> dict[str, str]:
    """The ESCU macros a search calls, recursively, without the ones that have defaults here."""
    used: dict[str, str] = {}
    pending = [search]
    while pending:
        for tok in tokenize(pending.pop()):
            if tok.kind is not Kind.MACRO:
                continue
            name = tok.text.split("(", 1)[0].strip()
            if name in DATA_SOURCE_MACROS or (default_macro(name) and name.endswith("_filter")):
                continue
            for key, body in macros.items():
                if key.split("(", 1)[0] == name and key not in used:
                    used[key] = body
                    pending.append(body)
    return used


def _output_name(field: str, outputs: list[str] | None) -> str:
    if outputs is None or field in outputs:
        return field
    alias = ALIASES.get(field)
    return alias if alias in outputs else ""
