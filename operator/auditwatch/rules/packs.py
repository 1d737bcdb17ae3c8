"""``auditwatch import-sigma`` and ``import-falco``: published Sigma and Falco rules -> AuditDetection
manifests, each rule as published (``spec.sigma``) or as Falco resolves it (``spec.falco``).

Sigma: the rule's YAML verbatim; ``level`` -> severity (and the risk score in its band), ``tags`` ->
MITRE ATT&CK labels (``attack.t1611`` -> ``mitre-attack.sigmahq.io/t1611``, tactics as
``tactic.sigmahq.io/<tactic>``), title, description, author, references, false positives and the
rule's link as annotations (the Detection Rule License asks that the author and link stay with it).
Falco: each enabled ``k8s_audit`` rule of the files read in order (frontend/falco_rules.py), with the
macros and lists it uses; ``priority`` -> severity, ``output`` -> message and key, ``desc`` and
``tags`` -> annotations and labels. A rule that cannot run is listed with the reason, not written.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from auditwatch.frontend import falco, sigma
from auditwatch.frontend.common import RISK, RuleError, Translated
from auditwatch.frontend.falco_rules import SOURCE, load_files
from auditwatch.rules.escu import AUDIT_LOG, NAMESPACE, slug

SOURCES = [{"name": "apiserver-log", "file": {"path": AUDIT_LOG}}]


def _manifest(name: str, labels: dict[str, str], annotations: dict[str, str], rule: dict[str, Any],
              translated: Translated) -> dict[str, Any]:  # fmt: skip
    return {
        "apiVersion": "auditwatch.io/v1alpha1",
        "kind": "AuditDetection",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": labels, "annotations": annotations},
        "spec": {
            **rule,
            "sources": SOURCES,
            "finding": {
                "groupBy": translated.group_by,
                "message": translated.message,
                "riskScore": RISK[translated.severity],
                "severity": translated.severity,
            },
        },
    }


def import_sigma(path: Path, link: str = "") -> dict[str, Any]:
    """One Sigma rule file -> one AuditDetection (``link``: where the file is published, + its name)."""
    text = path.read_text()
    try:
        rule = sigma.parse(text)
        translated = sigma.translate_rule(rule, text)
    except RuleError as exc:
        raise exc.at(str(path)) from None
    labels = {"sigmahq.io/id": str(rule.id)} if rule.id else {}
    if rule.status:
        labels["sigmahq.io/status"] = rule.status.name.lower()
    for tag in rule.tags:
        if tag.namespace == "attack" and tag.name[:1] in "tT" and tag.name[1:2].isdigit():
            labels[f"mitre-attack.sigmahq.io/{tag.name.lower()}"] = "true"
        elif tag.namespace == "attack":
            labels[f"tactic.sigmahq.io/{slug(tag.name)}"] = "true"
    annotations = {"sigmahq.io/title": rule.title}
    for key, value in (
        ("description", rule.description),
        ("author", rule.author),
        ("date", str(rule.date) if rule.date else ""),
        ("references", " ".join(rule.references or [])),
        ("known-false-positives", "; ".join(rule.falsepositives or [])),
        ("link", link + path.name if link else ""),
        ("license", "Detection Rule License (DRL) 1.1"),
    ):
        if value:
            annotations[f"sigmahq.io/{key}"] = " ".join(str(value).split())
    return _manifest("sigma-" + slug(rule.title, 57), labels, annotations, {"sigma": text}, translated)


def import_falco(paths: list[Path], link: str = "") -> tuple[list[dict[str, Any]], list[str]]:
    """Falco rules files, read in order -> an AuditDetection per enabled k8s_audit rule, and why each
    other rule was not imported."""
    ruleset = load_files([(str(p), p.read_text()) for p in paths])
    objects, skipped = [], []
    for rule in ruleset.rules.values():
        if not rule.enabled:
            skipped.append(f"{rule.name}: disabled (enabled: false)")
            continue
        if rule.source != SOURCE:
            skipped.append(f"{rule.name}: source {rule.source}: only k8s_audit rules read audit events")
            continue
        spec = ruleset.falco_rule(rule)
        try:
            translated = falco.translate(spec)
        except RuleError as exc:
            skipped.append(f"{rule.name}: {exc}")
            continue
        labels = {"falco.org/priority": rule.priority.lower()}
        labels |= {f"tag.falco.org/{slug(t)}": "true" for t in rule.tags if slug(t)}
        annotations = {"falco.org/rule": rule.name, "falco.org/description": " ".join(rule.desc.split())}
        if link:
            annotations["falco.org/link"] = link
        if translated.notes:
            annotations["falco.org/note"] = "; ".join(translated.notes)
        body = {k: v for k, v in asdict(spec).items() if v}
        objects.append(_manifest("falco-" + slug(rule.name, 57), labels, annotations, {"falco": body}, translated))
    return objects, skipped
