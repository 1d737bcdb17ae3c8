"""What executors need to know of a plan, derived from the plan alone (never from a rule language).

``Needs`` is worked out once per plan: the event fields the per-event stage and the aggregate read
(the decoder flattens only those), Splunk's metadata fields read, whether the raw line is read, the
output fields that are integers, the row layout when the per-row steps only rename, and the
prefilter's literals.

The prefilter's literals (``literals``): a line can only match the plan's leading filters when it
contains one of them, so lines without any are never JSON-parsed. Soundness rests on three facts:

1. A required term ``field=value`` can only match when the field value contains every literal run of
   ``value`` (the text between wildcards), compared with ``str.lower``. We take the longest run made
   of "safe" ASCII characters, which JSON writes as themselves.
2. In the raw line a value's characters appear as themselves or as ``\\uXXXX`` escapes; the prefilter
   (engine/prefilter.py) looks for both.
3. ``OR`` needs a literal from each branch (any one may appear); ``AND`` needs only one of its parts;
   ``NOT``, ``!=``, ``<``/``>``, CIDR values and short wildcards give no literal, so no prefilter.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from auditwatch.ir.plan import (
    And,
    Compare,
    Expr,
    Filter,
    In,
    Keyword,
    Not,
    Or,
    Plan,
    Rename,
    Test,
    glob_parts,
    parse_cidr,
    renamed,
    renamer,
    step_fields,
)

# Printable ASCII that JSON encoders write as itself; '/' may be written '\/', and Go writes <>& as \u00XX.
SAFE = frozenset(chr(c) for c in range(0x20, 0x7F)) - set('"\\/<>&*')
MIN_LITERAL = 3
METADATA = frozenset({"_time", "source"})  # Splunk's: the request's time, and the log it was read from
INTEGER_AGGS = frozenset({"count", "dc"})
EVERY_EVENT = frozenset({"stage", "/stage", "level", "/level", "kind", "apiVersion"})  # few values, on every event

Need = frozenset[str] | None  # any one of these literals must appear; None: no constraint


@dataclass(frozen=True)
class Needs:
    fields: frozenset[str] | None  # event fields read through the aggregate; None: rows are whole events
    metadata: frozenset[str]  # of METADATA, those the plan reads
    raw: bool  # a per-event filter reads the raw line (a bare keyword)
    int_fields: frozenset[str]  # output fields that are integers (counts)
    layout: tuple[tuple[str, int], ...] | None  # (output field, column in BY values + aggregates) when
    # every row has the same shape (the per-row steps only rename): rows are built without running them
    count_only: bool  # the only aggregates are plain counts: each event's rows can be summed
    row_local: bool  # the per-row steps read no aggregate (``where count > 5`` does)
    literals: frozenset[str] | None  # the prefilter's: a line without any of them cannot match


def needs(plan: Plan) -> Needs:
    agg = plan.aggregate
    every = [*plan.steps, *([agg] if agg else []), *plan.row_steps]
    read = set().union(*map(step_fields, every))
    row_reads = set().union(*map(step_fields, plan.row_steps))
    agg_names = {a.name for a in agg.aggs} if agg else set()
    return Needs(
        fields=frozenset().union(*map(step_fields, [*plan.steps, agg])) if agg else None,
        metadata=METADATA & read,
        raw=any(isinstance(s, Filter) and _has_keyword(s.expr) for s in plan.steps),
        int_fields=_int_fields(plan),
        layout=_layout(plan),
        count_only=agg is not None and all(a.func == "count" and a.field is None for a in agg.aggs),
        row_local=agg is not None and not (row_reads & agg_names),
        literals=literals(plan),
    )


def literals(plan: Plan) -> frozenset[str] | None:
    """Literals one of which every line the plan's first filter keeps contains (None: none known)."""
    first = plan.steps[0] if plan.steps else None
    return _need(first.expr) if isinstance(first, Filter) else None


def recorded_fields(plan: Plan, group_by: list[str]) -> tuple[str, ...] | None:
    """What a finding records of its rows: an aggregate's output (None), or, when rows are whole events,
    the key and the fields the plan names (never the rest of the event: request bodies, tokens)."""
    if plan.aggregate is not None:
        return None
    named = set().union(*map(step_fields, [*plan.steps, *plan.row_steps])) - {"_raw"}
    return tuple(dict.fromkeys([*group_by, *sorted(named)]))


def _layout(plan: Plan) -> tuple[tuple[str, int], ...] | None:
    agg = plan.aggregate
    if agg is None or not all(isinstance(s, Rename) or s == Filter(Keyword("*")) for s in plan.row_steps):
        return None
    columns = {name: i for i, name in enumerate([*agg.by, *(a.name for a in agg.aggs)])}
    for step in plan.row_steps:
        if isinstance(step, Rename):
            columns = renamer(step)(columns)
    return tuple(columns.items())


def _int_fields(plan: Plan) -> frozenset[str]:
    agg = plan.aggregate
    names = [a.name for a in agg.aggs if a.func in INTEGER_AGGS] if agg else []
    for step in plan.row_steps:
        if isinstance(step, Rename):
            names = renamed(names, step)
    return frozenset(names)


def _has_keyword(expr: Expr) -> bool:
    """A bare keyword that reads the raw event text (``*`` alone matches anything without reading it)."""
    return any(isinstance(n, Keyword) and n.value.strip("*") for n in expr.walk())


def _need(expr: Expr) -> Need:
    if isinstance(expr, Compare):
        return _literal(expr.value) if expr.op == "=" and parse_cidr(expr.value) is None else None
    if isinstance(expr, In):
        return _union([None if parse_cidr(v) else _literal(v) for v in expr.values])
    if isinstance(expr, Test):
        return _test_need(expr)
    if isinstance(expr, Keyword):
        return _literal(expr.value)
    if isinstance(expr, Not):
        return None
    needs = [_need(i) for i in expr.items]
    if isinstance(expr, Or):
        return _union(needs)
    assert isinstance(expr, And)
    # The longest literal, but not one of a field every event has from a few values (Falco's rules test
    # the stage first: "ResponseComplete" is in most lines) while another literal is known.
    known = [(n, _everywhere(i)) for n, i in zip(needs, expr.items, strict=True) if n]
    return max(known, key=lambda k: (not k[1], min(map(len, k[0])), -len(k[0])), default=(None, False))[0]


def _everywhere(expr: Expr) -> bool:
    return isinstance(expr, Compare | In | Test) and expr.field in EVERY_EVENT


def _test_need(test: Test) -> Need:
    """A literal of each value the test passes with: text compared as written (a glob's wildcards cut it)."""
    if test.op in ("regex", "exists") or (test.field.startswith("/") and any(c in "{[" for c in "".join(test.values))):
        return None  # a JSON pointer's object or list is written anew, not as the line has it
    if test.op == "glob":  # its wildcards as search's, which cut a literal
        return _union([_literal("".join("*" if p in ("**", "??") else p for p in glob_parts(v))) for v in test.values])
    return _union([_literal(v) for v in test.values])


def _union(needs: list[Need]) -> Need:
    if not needs or any(not n for n in needs):
        return None
    return frozenset().union(*needs)  # type: ignore[arg-type]


def _literal(pattern: str) -> Need:
    runs = re.split("[^" + re.escape("".join(sorted(SAFE))) + "]+", pattern.lower())
    best = max(runs, key=len)
    return frozenset([best]) if len(best) >= MIN_LITERAL else None
