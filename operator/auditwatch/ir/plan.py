"""The rule IR: what a detection means, whatever language it was written in, as plain immutable values.

Front ends (``spl``; Sigma and Falco next) produce a ``Plan``; executors run it (``engine``: the
streaming one now, SQL next); ``planner`` derives from a plan what executors need to know of it
(fields read, the prefilter's literals, the shape of result rows).

A plan is three stages: ``steps`` run on each event in order and may drop it, the optional
``aggregate`` groups the events that pass into rows, and ``row_steps`` run on each row. Without an
aggregate, each event that passes is a row. Records are Splunk's: flattened field names (``.``
between keys, ``{}`` after an array) -> a list of string values.

Predicates are a small tree: ``Compare`` / ``In`` / ``Test`` / ``Keyword`` leaves under ``And``, ``Or`` and
``Not``, with search semantics (values compared case-insensitively, ``*`` a wildcard, a CIDR value
matching addresses in it, a multivalue field matching when any value does, ``field!=v`` needing the
field while ``NOT field=v`` keeps events without it). ``Where`` conditions have eval semantics
(case-sensitive, no wildcards, numbers as numbers, a field's first value). ``walk`` visits every
node, ``renamer`` is the one statement of rename's semantics.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import FrozenInstanceError
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, dataclass_transform

if TYPE_CHECKING:
    import ipaddress


@dataclass_transform(frozen_default=True)
class Value:
    """Base of the IR's classes: what ``@dataclass(frozen=True)`` gives them (``__init__`` from the
    annotated fields in order, defaults, ``==`` and ``hash`` by class and fields, ``repr``, no
    assignment), without generating code per class: dataclasses took 9 ms of every scan's start-up
    to make these 17 classes."""

    __slots__ = ()
    _fields: ClassVar[tuple[str, ...]] = ()
    _compared: ClassVar[tuple[str, ...]] = ()  # the fields == and hash look at (default: all)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        annotations = inspect.get_annotations(cls)  # this class's own, as strings (from __future__)
        cls._fields = tuple(n for n, t in annotations.items() if not str(t).startswith("ClassVar"))
        if "_compared" not in cls.__dict__:
            cls._compared = cls._fields

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        cls = type(self)
        if len(args) > len(cls._fields):
            raise TypeError(f"{cls.__name__}() takes {len(cls._fields)} arguments, got {len(args)}")
        values = dict(zip(cls._fields, args, strict=False))  # fewer args: the rest by name or default
        for name, value in kwargs.items():
            if name not in cls._fields or name in values:
                raise TypeError(f"{cls.__name__}() got an unexpected or repeated argument {name!r}")
            values[name] = value
        for name in cls._fields:
            if name in values:
                object.__setattr__(self, name, values[name])
            elif not hasattr(cls, name):  # a class attribute is the field's default
                raise TypeError(f"{cls.__name__}() missing argument {name!r}")

    def _key(self) -> tuple[Any, ...]:
        return tuple(getattr(self, n) for n in self._compared)

    def __eq__(self, other: object) -> bool:
        return self._key() == other._key() if type(other) is type(self) else NotImplemented  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{n}={getattr(self, n)!r}' for n in self._fields)})"

    def __setattr__(self, name: str, value: Any) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")

    def walk(self) -> Iterator[Value]:
        """This node and every node under it, depth first, parents before children."""
        yield self
        for name in self._fields:
            child = getattr(self, name)
            for item in child if isinstance(child, tuple) else (child,):
                if isinstance(item, Value):
                    yield from item.walk()


class Compare(Value):
    """``field <op> value``; op is one of = != < <= > >=. ``value`` keeps its ``*`` wildcards."""

    field: str
    op: str
    value: str


class In(Value):
    """``field IN (v1, v2, ...)``: true when any value of the field matches any listed value."""

    field: str
    values: tuple[str, ...]


class Keyword(Value):
    """A bare term: matches the raw event text, case-insensitively, ``*`` as wildcard."""

    value: str


class Test(Value):
    """A test of a field's values meaning exactly what a rule language's operator says (Sigma's modifiers,
    Falco's operators), where search's ``Compare`` reads ``*`` and CIDRs into its values: ``op`` is one of
    ``TEST_OPS``, each value taken literally except a ``glob``'s (``*`` any text, ``?`` one character,
    ``\\`` makes the next one plain) and a ``regex`` (RE2 syntax, found anywhere in the value).
    Case-sensitive unless ``fold``. True when some value of the field passes against some of ``values``;
    with ``every``, when the field has values and each one passes (Falco's ``in`` over a list). A missing
    field passes no test; ``exists`` (no values) passes when the field has a value."""

    field: str
    op: str
    values: tuple[str, ...] = ()
    fold: bool = False
    every: bool = False


TEST_OPS = ("eq", "contains", "startswith", "endswith", "glob", "regex", "exists")


def glob_parts(pattern: str) -> list[str]:
    """A ``Test`` glob as parts: ``*`` and ``?`` the wildcards, anything else (after ``\\``) plain text."""
    parts: list[str] = []
    chars = iter(pattern)
    for ch in chars:
        if ch == "\\":
            parts.append(next(chars, "\\"))
        elif ch in "*?":
            parts.append(ch * 2)  # "**" and "??" are wildcards: a plain star is "*"
        else:
            parts.append(ch)
    return parts


class And(Value):
    items: tuple[Any, ...]  # Expr in searches, WhereExpr in where


class Or(Value):
    items: tuple[Any, ...]


class Not(Value):
    item: Any


Expr = Compare | In | Test | Keyword | And | Or | Not
ALWAYS, NEVER = Keyword("*"), Not(Keyword("*"))  # the conditions that keep every event, and none


class Filter(Value):
    """Keep the events (or rows) ``expr`` matches, with search semantics."""

    expr: Expr


class FillNull(Value):
    """Give each of ``fields`` that a record lacks the one value ``value``. In a plan the fields are
    named; SPL's ``fillnull`` without fields is resolved by its front end (spl/lower.py)."""

    value: str = "0"
    fields: tuple[str, ...] = ()


class Agg(Value):
    """One aggregate function, by its name in ``AGG_FUNCS``, over ``field`` (None: over events), output as
    ``name``. Executors keep one implementation per function (engine/aggregates.py)."""

    func: str
    field: str | None
    name: str


AGG_FUNCS = ("count", "values", "dc", "min", "max")


class Aggregate(Value):
    """Group the events into rows: one per combination of ``by`` values, with ``aggs`` computed over it."""

    aggs: tuple[Agg, ...]
    by: tuple[str, ...]


class Rename(Value):
    pairs: tuple[tuple[str, str], ...]


class Operand(Value):
    """A ``where`` operand: a field name, or a literal (a number, or a "double-quoted" string)."""

    value: str
    is_field: bool


class WhereCompare(Value):
    left: Operand
    op: str
    right: Operand


class Where(Value):
    """Keep what ``expr`` holds for, with eval semantics (case-sensitive, no wildcards, numbers compare as
    numbers, a field's first value stands for it, a missing field compares false)."""

    expr: WhereExpr


WhereExpr = WhereCompare | And | Or | Not


class Convert(Value):
    """Epoch seconds in each ``field`` -> that time formatted (UTC, strftime's ``timeformat``) as ``output
    name``; what is not a time stays as it is (SPL's ``convert ctime``)."""

    timeformat: str
    fields: tuple[tuple[str, str], ...]  # (field, output name)


class IpLocation(Value):
    """City, Country, Region, lat, lon of the address in ``field``, from a MaxMind-format database that the
    executor binds (the rule names none), as SPL's ``iplocation``."""

    field: str


Step = Filter | FillNull | Rename | Where | Convert | IpLocation


class Plan(Value):
    """A detection as executors run it: per-event ``steps``, an optional ``aggregate``, per-row
    ``row_steps``. Each ``FillNull`` names its fields (a front end resolves an empty list)."""

    steps: tuple[Step, ...]
    aggregate: Aggregate | None = None
    row_steps: tuple[Step, ...] = ()
    text: str = ""  # the rule as written, for messages; not compared
    _compared: ClassVar[tuple[str, ...]] = ("steps", "aggregate", "row_steps")

    def output_fields(self) -> list[str] | None:
        """The fields of a result row, in order, or None when rows are whole events (no aggregate)."""
        if self.aggregate is None:
            return None
        fields = [*self.aggregate.by, *(a.name for a in self.aggregate.aggs)]
        for step in self.row_steps:
            if isinstance(step, Rename):
                fields = renamed(fields, step)
            elif isinstance(step, Convert):
                fields += [out for _, out in step.fields if out not in fields]
        return fields


def never(plan: Plan) -> bool:
    """Whether the plan keeps no event whatever it reads (a Falco rule its macros switch off)."""
    return any(step == Filter(NEVER) for step in plan.steps)


def within(plan: Plan, since: float | None, until: float | None) -> Plan:
    """``plan`` over the events whose ``_time`` (epoch seconds) is in ``[since, until)``, as Splunk's
    earliest and latest (None: unbounded): a Where after the leading filters, which keep their prefilter."""
    tests = tuple(
        WhereCompare(Operand("_time", True), op, Operand(f"{bound:.6f}", False))
        for op, bound in ((">=", since), ("<", until))
        if bound is not None
    )
    if not tests:
        return plan
    lead = next((i for i, step in enumerate(plan.steps) if not isinstance(step, Filter)), len(plan.steps))
    steps = (*plan.steps[:lead], Where(tests[0] if len(tests) == 1 else And(tests)), *plan.steps[lead:])
    return Plan(steps, plan.aggregate, plan.row_steps, plan.text)


IPLOCATION_FIELDS = ("City", "Country", "Region", "lat", "lon")
T = TypeVar("T")


def renamer(rename: Rename) -> Callable[[Mapping[str, T]], dict[str, T]]:
    """The fields after ``rename``, for a record (or names mapped to anything): a field keeps its
    position under its new name, and a renamed field replaces a field that had its new name
    (``rename a as b`` drops the old ``b``). Made once per command, applied per event or row."""
    mapping = dict(rename.pairs)
    targets = set(mapping.values())
    return lambda fields: {mapping.get(k, k): v for k, v in fields.items() if k not in targets or k in mapping}


def renamed(names: Iterable[str], rename: Rename) -> list[str]:
    """Field names after ``rename``."""
    return list(renamer(rename)(dict.fromkeys(names)))


def expr_fields(expr: Expr | WhereExpr) -> set[str]:
    """The field names an expression reads."""
    fields: set[str] = set()
    for node in expr.walk():
        if isinstance(node, Compare | In | Test):
            fields.add(node.field)
        elif isinstance(node, Operand) and node.is_field:
            fields.add(node.value)
    return fields


def step_fields(cmd: Step | Aggregate) -> set[str]:
    """The field names a step (or the aggregate) reads."""
    if isinstance(cmd, Filter | Where):
        return expr_fields(cmd.expr)
    if isinstance(cmd, Convert):
        return {f for f, _ in cmd.fields}
    if isinstance(cmd, IpLocation):
        return {cmd.field}
    if isinstance(cmd, Aggregate):
        return set(cmd.by) | {a.field for a in cmd.aggs if a.field}
    if isinstance(cmd, Rename):
        return {old for old, _ in cmd.pairs}
    return set(cmd.fields)


def parse_cidr(pattern: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    """The network a search value names (``10.0.0.0/8``), matched by address rather than as text."""
    if "/" not in pattern or "*" in pattern:
        return None
    import ipaddress  # here: importing it costs every scan 3 ms of start-up, and few searches need it

    try:
        return ipaddress.ip_network(pattern, strict=False)
    except ValueError:
        return None
