"""The Sigma front end: a SigmaHQ rule (its YAML as published), parsed by pySigma, as a Plan.

pySigma reads the rule and its condition (``1 of selection_*``, ``all of them``, ``not``, parentheses)
into a tree of field = value tests with the modifiers applied; each test becomes an IR leaf:

- a string: equal, case-insensitively (``Test`` eq, folded); with wildcards (``*``, ``?``: what
  ``contains``, ``startswith``, ``endswith`` and a value's own wildcards make) the same as a glob, or
  as ``contains``/``startswith``/``endswith`` when that is what the wildcards say; ``cased``: the same,
  case-sensitively;
- a number or a boolean: its text, as audit events flatten them (``403``, ``true``);
- ``re``: a regular expression (RE2, found anywhere in the value; the ``i``, ``m``, ``s`` flags);
- ``cidr``: the addresses in a network (search's CIDR match); ``lt``/``lte``/``gt``/``gte``: numbers;
- ``exists``, and ``null`` (the field is absent);
- a keyword (a value without a field): case-insensitive text anywhere in the event.
A value list is any-of, ``all`` makes it all-of. ``fieldref`` and placeholders (``expand``) are refused by
name, as are correlation rules, which are not run yet.

Field names are the audit Event's flattened names (``verb``, ``objectRef.resource``), with ``{}`` added
where the Event has a list (``sourceIPs`` -> ``sourceIPs{}``), and these names SigmaHQ's rules use that
the audit schema does not have (after pySigma-backend-elasticsearch's ``ecs_kubernetes`` pipeline,
pointed at the request rather than the response):

- ``apiGroup``, ``resource``, ``subresource``, ``namespace``, ``name``: ``objectRef.<name>``;
  ``username``: ``user.username``;
- ``hostPath``: each volume's host path, ``requestObject.spec.volumes{}.hostPath.path``;
- ``capabilities``: the capabilities any container (init and ephemeral ones too) adds,
  ``requestObject.spec.<containers>{}.securityContext.capabilities.add{}``;
- ``privileged``: any container's ``securityContext.privileged``.
"""

from __future__ import annotations

from typing import Any

from auditwatch.audit.fields import EVENT_FIELDS
from auditwatch.frontend.common import RISK, RuleError, Translated
from auditwatch.ir.plan import And, Compare, Expr, Filter, Keyword, Not, Or, Plan, Test

CONTAINER_LISTS = ("containers", "initContainers", "ephemeralContainers")
FIELD_MAP: dict[str, tuple[str, ...]] = {
    "apiGroup": ("objectRef.apiGroup",),
    "resource": ("objectRef.resource",),
    "subresource": ("objectRef.subresource",),
    "namespace": ("objectRef.namespace",),
    "name": ("objectRef.name",),
    "username": ("user.username",),
    "hostPath": ("requestObject.spec.volumes{}.hostPath.path",),
    "capabilities": tuple(f"requestObject.spec.{c}{{}}.securityContext.capabilities.add{{}}" for c in CONTAINER_LISTS),
    "privileged": tuple(f"requestObject.spec.{c}{{}}.securityContext.privileged" for c in CONTAINER_LISTS),
}
LOGSOURCE = ("kubernetes", "audit")
GROUP_BY = ["user.username", "sourceIPs{}"]


def audit_fields(name: str) -> tuple[str, ...]:
    """The audit Event fields a Sigma field name stands for."""
    if name in FIELD_MAP:
        return FIELD_MAP[name]
    return (f"{name}{{}}",) if f"{name}{{}}" in EVENT_FIELDS else (name,)


def parse(text: str) -> Any:
    """The pySigma rule in ``text`` (one YAML document), or a RuleError saying why not."""
    from sigma.collection import SigmaCollection
    from sigma.exceptions import SigmaError

    try:
        collection = SigmaCollection.from_yaml(text)
    except SigmaError as exc:
        raise RuleError(f"not a Sigma rule: {exc}") from None
    rules: list[Any] = list(collection.rules)
    for rule in rules:
        if type(rule).__name__ == "SigmaCorrelationRule":
            raise RuleError(
                f"{rule.title}: a correlation rule ({rule.type.name.lower()}): auditwatch runs "
                "single-event Sigma rules; correlations are not run yet"
            )
    if len(rules) != 1:
        raise RuleError(f"expected one Sigma rule, found {len(rules)} documents")
    rule = rules[0]
    if rule.errors:
        raise RuleError(f"{rule.title}: {rule.errors[0]}")
    logsource = (rule.logsource.product, rule.logsource.service)
    if logsource != LOGSOURCE:
        raise RuleError(
            f"{rule.title}: logsource product {logsource[0]!r}, service {logsource[1]!r}: only "
            "Kubernetes audit rules (product: kubernetes, service: audit) read audit events",
            field="logsource",
        )
    return rule


def translate(text: str) -> Translated:
    """A Sigma rule's plan and the finding policy its level, title and fields suggest."""
    return translate_rule(parse(text), text)


def translate_rule(rule: Any, text: str) -> Translated:
    """``translate`` of a rule ``parse`` gave from ``text``."""
    from sigma.exceptions import SigmaError

    try:
        trees = [condition.parsed for condition in rule.detection.parsed_condition]
    except SigmaError as exc:
        raise RuleError(f"{rule.title}: {exc}", field="detection.condition") from None
    expr = _expr(trees[0], rule.title) if len(trees) == 1 else Or(tuple(_expr(t, rule.title) for t in trees))
    level = rule.level.name.lower() if rule.level else "medium"
    return Translated(
        plan=Plan((Filter(expr),), text=text),
        severity=level if level in RISK else "medium",
        message=f"{rule.title}: $user.username$ from $sourceIPs{{}}$",
        group_by=list(GROUP_BY),
    )


def _expr(node: Any, title: str) -> Expr:
    from sigma.conditions import (
        ConditionAND,
        ConditionFieldEqualsValueExpression,
        ConditionNOT,
        ConditionOR,
        ConditionValueExpression,
    )

    if isinstance(node, ConditionAND):
        return And(tuple(_expr(a, title) for a in node.args))
    if isinstance(node, ConditionOR):
        return any_of([_expr(a, title) for a in node.args])
    if isinstance(node, ConditionNOT):
        return Not(_expr(node.args[0], title))
    if isinstance(node, ConditionFieldEqualsValueExpression):
        fields = audit_fields(node.field)
        leaves = [_leaf(field, node.value, title) for field in fields]
        return leaves[0] if len(leaves) == 1 else Or(tuple(leaves))
    if isinstance(node, ConditionValueExpression):
        return _keyword(node.value, title)
    raise RuleError(f"{title}: condition part {type(node).__name__} is not supported", field="detection.condition")


def any_of(items: list[Expr]) -> Expr:
    """``Or`` of ``items``, with the tests of one field by one operator made one test of all their values
    (a value list: one pass over the field's values, one literal set for the prefilter)."""
    merged: list[Expr] = []
    for item in items:
        last = merged[-1] if merged else None
        if (
            isinstance(item, Test)
            and isinstance(last, Test)
            and not item.every
            and not last.every
            and ((item.field, item.op, item.fold) == (last.field, last.op, last.fold))
        ):
            merged[-1] = Test(last.field, last.op, last.values + item.values, last.fold)
        else:
            merged.append(item)
    return merged[0] if len(merged) == 1 else Or(tuple(merged))


def _leaf(field: str, value: Any, title: str) -> Expr:
    from sigma import types

    if isinstance(value, types.SigmaString):  # SigmaCasedString is one
        return _string_test(field, value, fold=not isinstance(value, types.SigmaCasedString), title=title)
    if isinstance(value, types.SigmaBool):
        return Test(field, "eq", ("true" if value.boolean else "false",))
    if isinstance(value, types.SigmaNumber):
        return Test(field, "eq", (str(value.number),))
    if isinstance(value, types.SigmaNull):
        return Not(Test(field, "exists"))
    if isinstance(value, types.SigmaExists):
        return Test(field, "exists") if value.exists else Not(Test(field, "exists"))
    if isinstance(value, types.SigmaRegularExpression):
        flags = {f.name for f in value.flags}
        inline = "".join(c for c, name in (("m", "MULTILINE"), ("s", "DOTALL")) if name in flags)
        pattern = (f"(?{inline})" if inline else "") + str(value.regexp)
        return Test(field, "regex", (pattern,), fold="IGNORECASE" in flags)
    if isinstance(value, types.SigmaCIDRExpression):
        return (
            Or(tuple(Compare(field, "=", str(net)) for net in value.network))
            if isinstance(value.network, list)
            else Compare(field, "=", str(value.network))
        )
    if isinstance(value, types.SigmaCompareExpression):
        ops = {"LT": "<", "LTE": "<=", "GT": ">", "GTE": ">="}
        return Compare(field, ops[value.op.name], str(value.number.number))
    raise RuleError(
        f"{title}: field {field!r}: a {type(value).__name__} value (a field reference or a placeholder) "
        "is not supported",
        field="detection",
    )


def _glob_parts(field: str, value: Any, title: str) -> list[str]:
    """A Sigma string as glob parts (ir.plan.glob_parts): ``**``, ``??`` or one plain character."""
    from sigma.types import SpecialChars

    parts: list[str] = []
    for part in value.s:
        if part == SpecialChars.WILDCARD_MULTI:
            parts.append("**")
        elif part == SpecialChars.WILDCARD_SINGLE:
            parts.append("??")
        elif isinstance(part, str):
            parts += list(part)
        else:
            raise RuleError(f"{title}: field {field!r}: a placeholder value is not supported", field="detection")
    return parts


def _plain(parts: list[str]) -> str | None:
    return None if {"**", "??"} & set(parts) else "".join(parts)


def _string_test(field: str, value: Any, fold: bool, title: str) -> Test:
    """A Sigma string as the narrowest ``Test`` that means it."""
    parts = _glob_parts(field, value, title)
    if (text := _plain(parts)) is not None:
        return Test(field, "eq", (text,), fold=fold)
    if len(parts) > 2 and parts[0] == parts[-1] == "**" and (text := _plain(parts[1:-1])) is not None:
        return Test(field, "contains", (text,), fold=fold)
    if len(parts) > 1 and parts[-1] == "**" and (text := _plain(parts[:-1])) is not None:
        return Test(field, "startswith", (text,), fold=fold)
    if len(parts) > 1 and parts[0] == "**" and (text := _plain(parts[1:])) is not None:
        return Test(field, "endswith", (text,), fold=fold)
    glob = "".join(p[0] if p in ("**", "??") else ("\\" + p if p in "*?\\" else p) for p in parts)
    return Test(field, "glob", (glob,), fold=fold)


def _keyword(value: Any, title: str) -> Expr:
    """A value without a field: text anywhere in the event, case-insensitively (search's keyword)."""
    from sigma.types import SigmaNumber, SigmaString

    if isinstance(value, SigmaNumber):
        return Keyword(str(value.number))
    parts = _glob_parts("(keyword)", value, title) if isinstance(value, SigmaString) else ["??"]
    if "??" in parts or "*" in parts:
        raise RuleError(f"{title}: keyword {value!s}: a single-character wildcard or a plain * in a keyword "
                        "is not supported", field="detection")  # fmt: skip
    return Keyword("".join("*" if p == "**" else p for p in parts).strip("*") or "*")
