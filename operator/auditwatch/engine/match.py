"""Search expressions compiled to predicates over a Record (field -> list of string values).

Splunk's semantics, as its search reference documents them: values compare case-insensitively
(``str.lower``), ``*`` is a wildcard, a multivalue field matches when any value does, ``field!=v``
needs the field to exist while ``NOT field=v`` also keeps events without it, a value written as a
CIDR range matches IP addresses in it, and ``<``/``>`` compare numerically when both sides are
numbers, as text otherwise.
A bare keyword matches the raw event text (``_raw``) as a case-insensitive substring.
A ``Test`` (Sigma's and Falco's operators) takes its values literally, case-sensitively unless it folds
case (ir/plan.py says exactly); its regular expressions run on RE2, in time linear in the text.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from auditwatch.audit.decode import Record
from auditwatch.ir.plan import And, Compare, Expr, In, Keyword, Not, Operand, Test, WhereCompare, glob_parts, parse_cidr

if TYPE_CHECKING:
    import ipaddress

Predicate = Callable[[Record], bool]
ValueTest = Callable[[str], bool]


def compile_expr(expr: Expr) -> Predicate:
    """A predicate for ``expr``."""
    if isinstance(expr, Compare):
        return _compare(expr)
    if isinstance(expr, In):
        return _matches(expr.field, expr.values)
    if isinstance(expr, Test):
        return _test(expr)
    if isinstance(expr, Keyword):
        return _keyword(expr.value)
    if isinstance(expr, Not):
        inner = compile_expr(expr.item)
        return lambda r: not inner(r)
    if isinstance(expr, And):
        expr = And(tuple(i for i in expr.items if i != Keyword("*")))
        if len(expr.items) == 1:
            return compile_expr(expr.items[0])
    parts = [compile_expr(i) for i in expr.items]
    return _all_of(parts) if isinstance(expr, And) else _any_of(parts)


def _all_of(parts: list[Predicate]) -> Predicate:
    """``all(...)`` as a loop, here and in ``_any_of``: no generator object made per event."""

    def all_of(r: Record) -> bool:
        for p in parts:  # noqa: SIM110
            if not p(r):
                return False
        return True

    return all_of


def _any_of(parts: list[Predicate]) -> Predicate:
    def any_of(r: Record) -> bool:
        for p in parts:  # noqa: SIM110
            if p(r):
                return True
        return False

    return any_of


def _matches(field: str, patterns: tuple[str, ...]) -> Predicate:
    """Some value of ``field`` matches one of ``patterns``. Plain patterns (no wildcard, no CIDR) are
    one set lookup per lower-cased value, in C: the base searches of most detections are only these."""
    is_plain = {p: "*" not in p and parse_cidr(p) is None for p in patterns}
    plain = frozenset(p.lower() for p in patterns if is_plain[p])
    others = [value_test(p) for p in patterns if not is_plain[p]]
    if not others:
        return lambda r: not plain.isdisjoint(map(str.lower, r.get(field, ())))
    return _any_value(field, lambda v: v.lower() in plain or any(t(v) for t in others))


def glob_test(pattern: str) -> ValueTest:
    """Does a whole text match ``pattern``, ``*`` standing for any text? Compare lower-cased text.

    In linear time whatever the pattern: the text must start with the piece before the first ``*``
    and end with the piece after the last, and each piece between is taken at its leftmost place
    after the one before (with only ``*`` as a wildcard, the leftmost place is never worse). A
    backtracking regular expression takes time polynomial in the text's length with the number of
    ``*``s: ``*a*a*a*a*a*b`` over 200 characters took 74 s, with every detection on one event loop.
    """
    pieces = pattern.split("*")
    if len(pieces) == 1:
        return lambda text: text == pattern
    head, *middle, tail = pieces
    middle = [p for p in middle if p]
    fixed = len(head) + len(tail)

    def test(text: str) -> bool:
        if len(text) < fixed or not text.startswith(head) or not text.endswith(tail):
            return False
        at, stop = len(head), len(text) - len(tail)
        for piece in middle:
            found = text.find(piece, at, stop)
            if found < 0:
                return False
            at = found + len(piece)
        return True

    return test


def value_test(pattern: str) -> ValueTest:
    """A test of one field value against a search value (wildcards, CIDR, case-insensitive)."""
    net = parse_cidr(pattern)
    if net is not None:
        return lambda v: _in_network(v, net)
    low = pattern.lower()
    if "*" not in low:
        return lambda v: v.lower() == low
    glob = glob_test(low)
    return lambda v: glob(v.lower())


def _compare(expr: Compare) -> Predicate:
    field, op = expr.field, expr.op
    if op == "=":
        return _matches(field, (expr.value,))
    if op == "!=":
        test = value_test(expr.value)
        return lambda r: bool(vals := r.get(field, [])) and not any(test(v) for v in vals)
    order = _ORDER[op]
    return _any_value(field, lambda v: order(ordered(v, expr.value)))


_ORDER: dict[str, Callable[[int], bool]] = {
    "<": lambda c: c < 0,
    "<=": lambda c: c <= 0,
    ">": lambda c: c > 0,
    ">=": lambda c: c >= 0,
}


def ordered(left: str, right: str) -> int:
    """-1, 0 or 1: numeric order when both are numbers, else order of the text."""
    a, b = number(left), number(right)
    if a is not None and b is not None:
        return (a > b) - (a < b)
    return (left > right) - (left < right)


def number(text: str) -> float | None:
    """``text`` as a number, as Splunk's comparisons read one (Python's float), or None."""
    try:
        return float(text)
    except ValueError:
        return None


def _any_value(field: str, test: ValueTest) -> Predicate:
    return lambda r: any(map(test, r.get(field, ())))


def _test(expr: Test) -> Predicate:
    field = expr.field
    if expr.op == "exists":
        return lambda r: bool(r.get(field))
    lower = expr.fold and expr.op != "regex"  # a regex folds case itself
    one = _TESTS[expr.op]([v.lower() for v in expr.values] if lower else list(expr.values), expr.fold)
    test: ValueTest = (lambda v: one(v.lower())) if lower else one
    if expr.every:
        return lambda r: bool(vals := r.get(field, [])) and all(map(test, vals))
    return _any_value(field, test)


def _eq(values: list[str], fold: bool) -> ValueTest:
    return frozenset(values).__contains__


def _contains(values: list[str], fold: bool) -> ValueTest:
    return lambda v: any(x in v for x in values)


def _startswith(values: list[str], fold: bool) -> ValueTest:
    prefixes = tuple(values)
    return lambda v: v.startswith(prefixes)


def _endswith(values: list[str], fold: bool) -> ValueTest:
    suffixes = tuple(values)
    return lambda v: v.endswith(suffixes)


def _glob(values: list[str], fold: bool) -> ValueTest:
    tests = [glob_match(v) for v in values]
    return lambda v: any(t(v) for t in tests)


def _regex(values: list[str], fold: bool) -> ValueTest:
    import re2  # google-re2: linear time, whatever the pattern and the text

    options = re2.Options()
    options.case_sensitive = not fold
    patterns = [re2.compile(v, options) for v in values]
    return lambda v: any(p.search(v) is not None for p in patterns)


_TESTS: dict[str, Callable[[list[str], bool], ValueTest]] = {
    "eq": _eq,
    "contains": _contains,
    "startswith": _startswith,
    "endswith": _endswith,
    "glob": _glob,
    "regex": _regex,
}


def glob_match(pattern: str) -> ValueTest:
    """Does a whole text match a ``Test`` glob? Greedy with one step back to the last ``*``: time
    proportional to the text's length times the pattern's at worst, never exponential."""
    parts = glob_parts(pattern)

    def test(text: str) -> bool:
        p = t = 0
        star, mark = -1, 0
        while t < len(text):
            if p < len(parts) and (parts[p] == "??" or parts[p] == text[t]):
                p, t = p + 1, t + 1
            elif p < len(parts) and parts[p] == "**":
                star, mark, p = p, t, p + 1
            elif star >= 0:
                p, mark = star + 1, mark + 1
                t = mark
            else:
                return False
        return all(part == "**" for part in parts[p:])

    return test


def _keyword(pattern: str) -> Predicate:
    if pattern.strip("*") == "":
        return lambda r: True
    glob = glob_test(f"*{pattern.lower()}*")  # a keyword is found anywhere in the text
    return lambda r: any(glob(v.lower()) for v in r.get("_raw", ()))


def _in_network(value: str, net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bool:
    import ipaddress  # imported by parse_cidr already

    try:
        return ipaddress.ip_address(value) in net
    except ValueError:
        return False


def compile_where(expr: Any) -> Predicate:
    """A ``where`` condition: eval semantics, so text compares case-sensitively and without wildcards,
    numbers as numbers, a field's first value stands for it, and a missing field compares false."""
    if isinstance(expr, WhereCompare):
        left, right, op = expr.left, expr.right, expr.op

        def compare(r: Record) -> bool:
            a, b = _operand(left, r), _operand(right, r)
            if a is None or b is None:
                return False
            c = ordered(a, b)
            return c == 0 if op == "=" else c != 0 if op == "!=" else _ORDER[op](c)

        return compare
    if isinstance(expr, Not):
        inner = compile_where(expr.item)
        return lambda r: not inner(r)
    parts = [compile_where(i) for i in expr.items]
    return _all_of(parts) if isinstance(expr, And) else _any_of(parts)


def _operand(operand: Operand, record: Record) -> str | None:
    if not operand.is_field:
        return operand.value
    values = record.get(operand.value)
    return values[0] if values else None
