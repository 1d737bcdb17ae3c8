"""``auditwatch lint``: what a detection will do that its author probably did not mean.

Each diagnostic has a code, so that a GitOps step can be strict about some and not others:

- ``never-set``: a BY field that the events the search keeps can never carry. The seed rule's
  ``user.uid``: Kubernetes sets no uid for ``system:anonymous``, so in Splunk ``fillnull`` (which only
  fills fields seen in some result) cannot fill it and ``stats ... BY user.uid`` drops every row.
  auditwatch's ``fillnull`` fills it with "0" and the rule works as intended; without a ``fillnull``
  before ``stats``, no row can ever come out (an error then).
- ``unknown-field``: a field no audit event has and no command makes (``apiGroup`` for
  ``objectRef.apiGroup``); the message suggests the closest known name.
- ``no-prefilter``: no literal the prefilter can require, so every line is parsed (slow).
- ``unbounded-key``: the finding key has a per-request field (a timestamp, the audit ID), so there will
  be a finding per request until ``maxFindings`` is reached.
- ``key-not-output``: a ``groupBy`` field the search does not output: every row gets an empty key.
- ``never-matches``: a condition that can never hold as written: a Falco rule a macro switches off
  (``k8s_audit_never_true``), a number field tested against text (Sigma's ``responseStatus.code: ALLOW``).
- ``not-logged``: a field the search reads that a source does not carry: GKE's entries (a ``pubsub``
  source) have no ``requestURI``, ``user.uid``... (audit/gke.py), so it reads as empty there.

SPL's searches are linted as written (their commands); Sigma and Falco rules through their plan.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from auditwatch.audit.decode import is_derived
from auditwatch.audit.fields import EVENT_FIELDS, FREE_FORM
from auditwatch.audit.gke import NOT_LOGGED
from auditwatch.engine.prefilter import derive
from auditwatch.ir.plan import (
    IPLOCATION_FIELDS,
    Aggregate,
    And,
    Compare,
    Convert,
    FillNull,
    Filter,
    In,
    IpLocation,
    Plan,
    Rename,
    Step,
    Test,
    step_fields,
)
from auditwatch.spl.syntax import Query

METADATA = {"_time", "source", "_raw"}
PER_REQUEST = {"requestReceivedTimestamp", "stageTimestamp", "auditID", "_time"}
NEVER_SET_FILLED = (
    "`stats ... BY user.uid`: Kubernetes sets no uid for system:anonymous, so in Splunk, where fillnull "
    'fills only fields some result has, this BY drops every row; auditwatch\'s fillnull fills it with "0", '
    "as the rule intends"
)
NEVER_SET_EMPTY = (
    "`stats ... BY user.uid` over anonymous requests: Kubernetes sets no uid for system:anonymous, so no row "
    "can ever come out; add `| fillnull` before stats"
)
ANONYMOUS = {("user.username", "system:anonymous"), ("user.groups{}", "system:unauthenticated")}


class Level(StrEnum):
    ERROR = "error"  # the detection cannot produce what it says: it does not run
    WARNING = "warning"


@dataclass(frozen=True)
class Diagnostic:
    level: Level
    code: str
    message: str

    @property
    def error(self) -> bool:
        return self.level is Level.ERROR

    def __str__(self) -> str:
        return f"{self.level}[{self.code}]: {self.message}"


NUMBERS = {"responseStatus.code", "responseStatus.details.retryAfterSeconds"}


def lint(
    plan: Plan,
    group_by: list[str] | None = None,
    query: Query | None = None,
    notes: Sequence[str] = (),
    source_kinds: Sequence[str] = (),
) -> list[Diagnostic]:
    """Everything worth saying about a detection (its plan, an SPL search as written, what a Sigma or
    Falco front end ``notes``, and what its sources' kinds cannot give it), errors first."""
    found = _never_set(query) if query else []
    found += _unknown_fields(query.commands if query else plan.steps)
    found += [Diagnostic(Level.WARNING, "never-matches", note) for note in notes] + _text_for_numbers(plan)
    if derive(plan) is None:
        found.append(
            Diagnostic(
                Level.WARNING,
                "no-prefilter",
                "the base search requires no literal text, so the "
                "prefilter cannot skip lines: every line is parsed (about 7x slower)",
            )
        )
    found += _key_problems(plan, group_by or [])
    if "pubsub" in source_kinds:
        found += _not_logged(plan)
    return sorted(found, key=lambda d: not d.error)


def _not_logged(plan: Plan) -> list[Diagnostic]:
    """Fields the search reads from events that GKE's audit entries do not carry."""
    read = set().union(*map(step_fields, [*plan.steps, *([plan.aggregate] if plan.aggregate else [])]))
    found = []
    for field, what in NOT_LOGGED.items():
        if names := sorted(f for f in read if f == field or f.startswith((field + ".", field + "{"))):
            found.append(
                Diagnostic(
                    Level.WARNING,
                    "not-logged",
                    f"{', '.join(names)} {what} (a pubsub source reads them)",
                )
            )
    return found


def _never_set(query: Query) -> list[Diagnostic]:
    stats = query.stats
    if stats is None or "user.uid" not in stats.by or not _requires_anonymous(query):
        return []
    before = query.commands[: query.commands.index(stats)]
    if any(isinstance(c, FillNull) and (not c.fields or "user.uid" in c.fields) for c in before):
        return [Diagnostic(Level.WARNING, "never-set", NEVER_SET_FILLED)]
    return [Diagnostic(Level.ERROR, "never-set", NEVER_SET_EMPTY)]


def _requires_anonymous(query: Query) -> bool:
    expr = query.base.expr
    terms = expr.items if isinstance(expr, And) else (expr,)  # the terms every kept event satisfies
    for term in terms:
        if isinstance(term, Compare) and term.op == "=" and (term.field, term.value.lower()) in ANONYMOUS:
            return True
        if isinstance(term, In) and any((term.field, v.lower()) in ANONYMOUS for v in term.values):
            return True
    return False


def _text_for_numbers(plan: Plan) -> list[Diagnostic]:
    """A test every kept event must pass that compares a number field with text only."""
    first = plan.steps[0] if plan.steps else None
    expr = first.expr if isinstance(first, Filter) else None
    terms = expr.items if isinstance(expr, And) else (expr,)
    return [
        Diagnostic(
            Level.WARNING,
            "never-matches",
            f"{t.field} is a number: {', '.join(map(repr, t.values))} never equals it, so nothing matches",
        )
        for t in terms
        if isinstance(t, Test) and t.op == "eq" and t.field in NUMBERS and not any(v.isdigit() for v in t.values)
    ]


def _unknown_fields(commands: Sequence[Step | Aggregate]) -> list[Diagnostic]:
    made: set[str] = set(METADATA)
    found = []
    stats_seen = False
    for cmd in commands:
        for field in sorted(step_fields(cmd) - made):
            if stats_seen or field in EVENT_FIELDS or field.startswith(FREE_FORM) or is_derived(field):
                continue
            close = difflib.get_close_matches(field, EVENT_FIELDS, n=1, cutoff=0.5)
            close += [f for f in sorted(EVENT_FIELDS) if f.endswith("." + field)][:1]
            hint = f"; did you mean {close[-1]}?" if close else ""
            found.append(Diagnostic(Level.WARNING, "unknown-field", f"no audit event has a field {field!r}{hint}"))
        if isinstance(cmd, Rename):
            made |= {new for _, new in cmd.pairs}
        elif isinstance(cmd, IpLocation):
            made |= set(IPLOCATION_FIELDS)
        elif isinstance(cmd, Convert):
            made |= {out for _, out in cmd.fields}
        elif isinstance(cmd, Aggregate):
            stats_seen = True  # after stats the fields are the rows'
    return found


def _key_problems(plan: Plan, group_by: list[str]) -> list[Diagnostic]:
    found = []
    outputs = plan.output_fields()
    for field in group_by:
        if outputs is not None and field not in outputs:
            outputs_text = ", ".join(outputs)
            found.append(
                Diagnostic(
                    Level.WARNING,
                    "key-not-output",
                    f"finding.groupBy {field!r} is not an output "
                    f"field of the search ({outputs_text}): every row gets an empty key",
                )
            )
        if field in PER_REQUEST:
            found.append(
                Diagnostic(
                    Level.WARNING,
                    "unbounded-key",
                    f"finding.groupBy {field!r} differs for every "
                    "request: one finding per request, until maxFindings is reached",
                )
            )
    return found
