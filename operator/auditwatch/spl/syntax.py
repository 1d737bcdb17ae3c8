"""The syntax tree of a parsed search: a ``Query`` of commands, as plain immutable values.

Search expressions are a small tree: ``Compare`` / ``In`` / ``Keyword`` leaves under ``And``, ``Or``
and ``Not``. Commands run left to right; ``Stats`` is the one aggregating command and splits the
pipeline into the per-event part before it and the per-row part after it. The tree says what the
search is; ``engine.pipeline`` decides how to run it (as sqlglot keeps expressions apart from its
planner). ``walk`` visits every node, ``renamer`` is the one statement of rename's semantics.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import FrozenInstanceError
from typing import Any, ClassVar, TypeVar, dataclass_transform


@dataclass_transform(frozen_default=True)
class Value:
    """Base of the Query's classes: what ``@dataclass(frozen=True)`` gives them (``__init__`` from the
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


class And(Value):
    items: tuple[Any, ...]  # Expr in searches, WhereExpr in where


class Or(Value):
    items: tuple[Any, ...]


class Not(Value):
    item: Any


Expr = Compare | In | Keyword | And | Or | Not


class Search(Value):
    expr: Expr


class FillNull(Value):
    """``fillnull [value=V] [fields]``. With no fields it fills the fields the later commands read: Splunk
    fills only fields that some result has, which drops every row of a ``stats ... BY user.uid`` over
    anonymous requests; filling them is what ESCU's rules intend (``auditwatch lint`` says so)."""

    value: str = "0"
    fields: tuple[str, ...] = ()


class Agg(Value):
    """One stats function: ``count``, ``count(f)``, ``values(f)``, ``dc(f)``, ``min(f)``, ``max(f)``."""

    func: str
    field: str | None
    name: str


class Stats(Value):
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
    """``where <expr>``: eval semantics (case-sensitive, no wildcards, numbers compare as numbers)."""

    expr: WhereExpr


WhereExpr = WhereCompare | And | Or | Not


class Convert(Value):
    """``convert [timeformat="..."] ctime(f) [as g] ...``: epoch seconds -> formatted time (UTC)."""

    timeformat: str
    fields: tuple[tuple[str, str], ...]  # (field, output name)


class IpLocation(Value):
    """``iplocation field``: City, Country, Region, lat, lon from a MaxMind-format database, which the
    engine binds when it builds its steps (the search names none)."""

    field: str


Command = Search | FillNull | Stats | Rename | Where | Convert | IpLocation


class Query(Value):
    """A compiled search. ``commands[0]`` is always the base ``Search``."""

    commands: tuple[Command, ...]
    source: str = ""  # the search text, for messages; not compared
    _compared: ClassVar[tuple[str, ...]] = ("commands",)

    @property
    def base(self) -> Search:
        first = self.commands[0]
        assert isinstance(first, Search)
        return first

    @property
    def stats(self) -> Stats | None:
        return next((c for c in self.commands if isinstance(c, Stats)), None)

    def output_fields(self) -> list[str] | None:
        """The fields of a result row, in order, or None when rows are whole events (no stats)."""
        stats = self.stats
        if stats is None:
            return None
        fields = [*stats.by, *(a.name for a in stats.aggs)]
        for cmd in self.commands[self.commands.index(stats) + 1 :]:
            if isinstance(cmd, Rename):
                fields = renamed(fields, cmd)
            elif isinstance(cmd, Convert):
                fields += [out for _, out in cmd.fields if out not in fields]
        return fields


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
        if isinstance(node, Compare | In):
            fields.add(node.field)
        elif isinstance(node, Operand) and node.is_field:
            fields.add(node.value)
    return fields


def command_fields(cmd: Command) -> set[str]:
    """The field names a command reads."""
    if isinstance(cmd, Search | Where):
        return expr_fields(cmd.expr)
    if isinstance(cmd, Convert):
        return {f for f, _ in cmd.fields}
    if isinstance(cmd, IpLocation):
        return {cmd.field}
    if isinstance(cmd, Stats):
        return set(cmd.by) | {a.field for a in cmd.aggs if a.field}
    if isinstance(cmd, Rename):
        return {old for old, _ in cmd.pairs}
    return set(cmd.fields)
