"""Whether a detection can run, and why not: the one verdict the operator and `auditwatch lint` share.

The operator puts the verdict on the detection's conditions (``Ready``, ``LintClean``); lint prints
it. Both take the same settings (is the webhook server on, which GeoIP database), so a detection lint
passes is one the operator runs, and one lint refuses gets ``Ready=False`` with the same reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from auditwatch.api.models import AuditDetectionSpec, StatusReason, problems
from auditwatch.api.models import Source as SourceSpec
from auditwatch.api.settings import Settings
from auditwatch.engine.pipeline import geoip_problem
from auditwatch.errors import AuditwatchError, Location
from auditwatch.frontend.common import RuleError
from auditwatch.ir.plan import Plan
from auditwatch.rules.language import rule_plan
from auditwatch.rules.lint import Diagnostic, lint
from auditwatch.sources.paths import allowed
from auditwatch.spl import Query, SPLError


@dataclass(frozen=True)
class Problem:
    """Something that keeps the detection from running: the condition's reason, and the error with the
    field it is about (``message``: as the Ready condition and lint print it)."""

    reason: StatusReason
    error: AuditwatchError

    @classmethod
    def at(cls, reason: StatusReason, field: str, text: str) -> Problem:
        return cls(reason, AuditwatchError(text, Location(field=field)))

    @property
    def message(self) -> str:
        return str(self.error)

    def __str__(self) -> str:
        return f"error[{self.reason}]: {self.message}"


@dataclass(frozen=True)
class Verdict:
    spec: AuditDetectionSpec | None = None
    query: Query | None = None  # an SPL search as written
    plan: Plan | None = None  # what the executors run
    problems: tuple[Problem, ...] = ()
    diagnostics: tuple[Diagnostic, ...] = ()  # lint's, errors first

    @property
    def errors(self) -> list[Problem]:
        """Everything that keeps it from running, lint's errors included (as ``LintError``)."""
        field = f"spec.{self.spec.language}" if self.spec else "spec.search"
        lint_errors = [Problem.at(StatusReason.LINT_ERROR, field, str(d)) for d in self.diagnostics if d.error]
        return [*self.problems, *lint_errors]

    @property
    def ready(self) -> bool:
        return not self.errors

    @property
    def reason(self) -> StatusReason:
        """The ``Ready`` condition's reason."""
        errors = self.errors
        return errors[0].reason if errors else StatusReason.RUNNING

    @property
    def message(self) -> str:
        return "; ".join(e.message for e in self.errors)

    @property
    def warnings(self) -> str:
        return "; ".join(str(d) for d in self.diagnostics if not d.error)


def validate(spec: Mapping[str, Any], settings: Settings, namespace: str | None = None) -> Verdict:
    """The verdict on an AuditDetection's ``spec`` in ``namespace`` (None: not known, as for a manifest
    without one) under the operator's ``settings``."""
    if namespace is not None and (refused := settings.namespace_refused(namespace)):
        return Verdict(problems=(Problem.at(StatusReason.NAMESPACE_NOT_ALLOWED, "metadata.namespace", refused),))
    try:
        model = AuditDetectionSpec.model_validate(dict(spec))
    except ValidationError as exc:
        return Verdict(problems=(Problem(StatusReason.INVALID_SPEC, AuditwatchError(problems(exc, prefix="spec."))),))
    try:
        planned = rule_plan(model.model_dump())
    except (SPLError, RuleError) as exc:
        return Verdict(model, problems=(Problem(StatusReason.INVALID_SEARCH, exc),))
    found: list[Problem] = []
    if missing := geoip_problem(planned.plan, settings.geoip_db):
        found.append(Problem.at(StatusReason.INVALID_SEARCH, planned.field, missing))
    found += [p for source in model.sources if (p := _source_problem(source, settings))]
    notes = planned.translated.notes if planned.translated else []
    kinds = [source.kind for source in model.sources]
    diagnostics = lint(planned.plan, model.finding.groupBy, planned.query, notes, kinds)
    return Verdict(model, planned.query, planned.plan, tuple(found), tuple(diagnostics))


def _source_problem(source: SourceSpec, settings: Settings) -> Problem | None:
    """Why the operator cannot read ``source``, or None."""
    where = f"spec.sources[{source.name}]"
    if source.kind not in settings.source_kinds:
        return Problem.at(
            StatusReason.UNSUPPORTED_SOURCE,
            where,
            "this install reads only "
            f"{', '.join(settings.source_kinds)} sources (auditwatch run --sources): a cloudwatch source "
            "is read by the EKS install (manifests/eks), a pubsub source by the GKE install (manifests/gke), an "
            "azureBlob source by the AKS install (manifests/aks), an eventHub source by the AKS Event Hubs "
            "install (manifests/aks-eventhubs), file and webhook sources by the DaemonSet or the webhook "
            "StatefulSet",
        )
    if source.webhook is not None and settings.webhook_off:
        return Problem.at(StatusReason.UNSUPPORTED_SOURCE, where, settings.webhook_off)
    if source.file is not None and not allowed(source.file.path, settings.allow_paths):
        return Problem.at(
            StatusReason.PATH_NOT_ALLOWED,
            f"{where}.file.path",
            f"{source.file.path} is not inside a "
            f"directory the operator may read ({', '.join(settings.allow_paths)}; auditwatch run "
            "--allow-path)",
        )
    return None
