"""A detection's rule, whichever language it is in (``spec.search``, ``spec.sigma``, ``spec.falco``), as the
plan the engines run: the one place that picks the front end, for the operator, lint, scan and hunt."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from auditwatch.frontend.common import RuleError, Translated
from auditwatch.ir.plan import Plan
from auditwatch.spl import Query, SPLError, parse_search, plan


@dataclass(frozen=True)
class Planned:
    plan: Plan
    field: str  # where the rule is: spec.search, spec.sigma or spec.falco
    query: Query | None = None  # SPL's search as written
    translated: Translated | None = None  # a Sigma or Falco rule's finding defaults and notes


def rule_field(spec: Mapping[str, Any]) -> str:
    """``spec.<language>`` of the one rule a spec sets (``spec.search`` when it sets none)."""
    return next((f"spec.{k}" for k in ("sigma", "falco") if spec.get(k) is not None), "spec.search")


def rule_plan(spec: Mapping[str, Any]) -> Planned:
    """The plan of a detection's rule (raises SPLError or RuleError placed at the rule's field)."""
    field = rule_field(spec)
    try:
        if field == "spec.sigma":
            from auditwatch.frontend import sigma

            translated = sigma.translate(str(spec["sigma"]))
            return Planned(translated.plan, field, translated=translated)
        if field == "spec.falco":
            from auditwatch.frontend import falco

            translated = falco.translate(falco.FalcoRule(**dict(spec["falco"])))
            return Planned(translated.plan, field, translated=translated)
        query = parse_search(str(spec.get("search") or ""), spec.get("macros") or {})
        return Planned(plan(query), field, query=query)
    except (SPLError, RuleError) as exc:
        raise exc.at(field=field) from None
    except TypeError as exc:  # spec.falco with a key FalcoRule does not take
        raise RuleError(str(exc)).at(field=field) from None
