"""What the Sigma and Falco front ends share: their error, and a rule's finding policy."""

from __future__ import annotations

from dataclasses import dataclass, field

from auditwatch.errors import AuditwatchError, Location
from auditwatch.ir.plan import Plan

# A finding's risk score for a severity: the middle of Splunk ES's band for it (rules/escu.severity).
RISK = {"informational": 10, "low": 30, "medium": 50, "high": 70, "critical": 90}


class RuleError(AuditwatchError, ValueError):
    """A rule that cannot be run: the message names the rule and what in it (a field, an operator)."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message, Location(field=field))


@dataclass(frozen=True)
class Translated:
    """A rule as the operator runs it: its plan, and what the finding policy defaults to."""

    plan: Plan
    severity: str
    message: str  # with $field$ tokens
    group_by: list[str]
    notes: list[str] = field(default_factory=list)  # what lint should say: a macro that disables the rule
