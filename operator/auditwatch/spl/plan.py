"""The Plan: what a compiled search does, as plain dataclasses the engine executes.

Search expressions are a small tree: ``Compare`` / ``In`` / ``Keyword`` leaves under ``And``, ``Or``
and ``Not``. Commands run left to right; ``Stats`` is the one aggregating command and splits the
pipeline into the per-event part before it and the per-row part after it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Compare:
    """``field <op> value``; op is one of = != < <= > >=. ``value`` keeps its ``*`` wildcards."""

    field: str
    op: str
    value: str


@dataclass(frozen=True)
class In:
    """``field IN (v1, v2, ...)``: true when any value of the field matches any listed value."""

    field: str
    values: tuple[str, ...]


@dataclass(frozen=True)
class Keyword:
    """A bare term: matches the raw event text, case-insensitively, ``*`` as wildcard."""

    value: str


@dataclass(frozen=True)
class And:
    items: tuple[Any, ...]  # Expr in searches, WhereExpr in where


@dataclass(frozen=True)
class Or:
    items: tuple[Any, ...]


@dataclass(frozen=True)
class Not:
    item: Any


Expr = Compare | In | Keyword | And | Or | Not


@dataclass(frozen=True)
class Search:
    expr: Expr


@dataclass(frozen=True)
class FillNull:
    """``fillnull [value=V] [fields]``; with no fields, the fields later commands use (see DESIGN.md)."""

    value: str = "0"
    fields: tuple[str, ...] = ()


@dataclass(frozen=True)
class Agg:
    """One stats function: ``count``, ``count(f)``, ``values(f)``, ``dc(f)``, ``min(f)``, ``max(f)``."""

    func: str
    field: str | None
    name: str


@dataclass(frozen=True)
class Stats:
    aggs: tuple[Agg, ...]
    by: tuple[str, ...]


@dataclass(frozen=True)
class Rename:
    pairs: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Operand:
    """A ``where`` operand: a field name, or a literal (a number, or a "double-quoted" string)."""

    value: str
    is_field: bool


@dataclass(frozen=True)
class WhereCompare:
    left: Operand
    op: str
    right: Operand


@dataclass(frozen=True)
class Where:
    """``where <expr>``: eval semantics (case-sensitive, no wildcards, numbers compare as numbers)."""

    expr: WhereExpr


WhereExpr = WhereCompare | And | Or | Not


@dataclass(frozen=True)
class Convert:
    """``convert [timeformat="..."] ctime(f) [as g] ...``: epoch seconds -> formatted time (UTC)."""

    timeformat: str
    fields: tuple[tuple[str, str], ...]  # (field, output name)


@dataclass(frozen=True)
class IpLocation:
    """``iplocation field``: City, Country, Region, lat, lon from a MaxMind-format database."""

    field: str
    database: str


Command = Search | FillNull | Stats | Rename | Where | Convert | IpLocation


@dataclass(frozen=True)
class Plan:
    """A compiled search. ``commands[0]`` is always the base ``Search``."""

    commands: tuple[Command, ...]
    source: str = field(default="", compare=False)

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
                mapping = dict(cmd.pairs)
                targets = set(mapping.values())
                fields = [mapping.get(f, f) for f in fields if f not in targets or f in mapping]
            elif isinstance(cmd, Convert):
                fields += [out for _, out in cmd.fields if out not in fields]
        return fields


IPLOCATION_FIELDS = ("City", "Country", "Region", "lat", "lon")


def expr_fields(expr: Expr | WhereExpr) -> set[str]:
    """The field names an expression reads."""
    if isinstance(expr, Compare | In):
        return {expr.field}
    if isinstance(expr, WhereCompare):
        return {o.value for o in (expr.left, expr.right) if o.is_field}
    if isinstance(expr, Keyword):
        return set()
    if isinstance(expr, Not):
        return expr_fields(expr.item)
    return set().union(*(expr_fields(i) for i in expr.items))


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
