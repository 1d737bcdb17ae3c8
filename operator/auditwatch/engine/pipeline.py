"""The streaming executor of a Plan: the per-event steps, the aggregate, and the per-row steps.

An aggregate gives one row per combination of BY values: a multivalue field gives a row per distinct
value, an event missing a BY field adds no row, and duplicate events count. Rows come out sorted by
their BY values, as Splunk's stats orders them. What to run is the plan's; what it reads and how its
rows are shaped is the planner's (ir/planner.py): this module only runs them.
"""

from __future__ import annotations

import itertools
import operator
import os
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from auditwatch.audit.decode import Record
from auditwatch.engine.aggregates import AGGREGATES
from auditwatch.engine.match import compile_expr, compile_where
from auditwatch.errors import AuditwatchError
from auditwatch.ir.plan import (
    Convert,
    FillNull,
    Filter,
    IpLocation,
    Keyword,
    Plan,
    Rename,
    Step,
    Where,
    renamer,
)
from auditwatch.ir.planner import needs

NO_GEOIP = (
    "iplocation needs a MaxMind-format database (GeoLite2-City or compatible): `auditwatch scan --geoip-db FILE`, "
    "`auditwatch run --geoip-db FILE`, or $AUDITWATCH_GEOIP_DB"
)

RecordStep = Callable[[Record], Record | None]
_first = operator.itemgetter(0)
Key = tuple[str, ...]
OutputRow = dict[str, Any]


class EngineError(AuditwatchError, ValueError):
    """A plan the engine cannot run with what it was given: a database ``iplocation`` needs."""


def geoip_problem(plan: Plan, geoip_db: str | None) -> str | None:
    """Why ``plan`` cannot run with ``geoip_db``, or None (no ``iplocation``, or a readable file). The one
    check: validation (the operator, lint) and scan ask it before they run a plan."""
    if not any(isinstance(s, IpLocation) for s in (*plan.steps, *plan.row_steps)):
        return None
    if not geoip_db:
        return NO_GEOIP
    if not os.path.isfile(geoip_db) or not os.access(geoip_db, os.R_OK):
        return f"iplocation: cannot read the MaxMind database {geoip_db}"
    return None


class Pipeline:
    """Executes a Plan over flattened events; ``geoip_db`` is the database ``iplocation`` reads."""

    def __init__(self, plan: Plan, geoip_db: str | None = None) -> None:
        self.plan = plan
        self.needs = needs(plan)
        self.aggregate = plan.aggregate
        self.functions = [AGGREGATES[a.func] for a in plan.aggregate.aggs] if plan.aggregate else []
        self._pre = _compile(plan.steps, geoip_db)
        self._post = _compile(plan.row_steps, geoip_db)

    @property
    def count_only(self) -> bool:
        """True when the only aggregate is a plain count, so each event's rows can be summed."""
        return self.needs.count_only

    @property
    def row_local(self) -> bool:
        """True when the per-row steps read no aggregate (``where count > 5`` does)."""
        return self.needs.row_local

    def event(self, record: Record) -> Record | None:
        """The per-event steps: the record after them, or None when it is filtered out."""
        return _run(self._pre, record)

    def group_keys(self, record: Record) -> list[Key]:
        """The groups one event falls in."""
        assert self.aggregate is not None
        columns = list(map(record.get, self.aggregate.by))
        if not all(columns):  # a BY field missing (None) or without values
            return []
        if max(map(len, columns), default=1) == 1:  # type: ignore[arg-type]
            return [tuple(map(_first, columns))]  # type: ignore[arg-type]
        return list(itertools.product(*(dict.fromkeys(v) for v in columns)))  # type: ignore[arg-type]

    def row(self, key: Key, states: list[Any]) -> OutputRow | None:
        """One row, from its BY values and aggregate states, through the per-row steps, as output
        (counts as integers); None when those steps drop it."""
        assert self.aggregate is not None
        functions, layout = self.functions, self.needs.layout
        if layout is not None:
            columns = [*key, *(f.output(s) for f, s in zip(functions, states, strict=True))]
            return {k: columns[i] for k, i in layout if columns[i] != []}  # no values: absent, as in Splunk
        record: Record = dict(zip(self.aggregate.by, ([v] for v in key), strict=True))
        record.update((a.name, f.final(s)) for a, f, s in zip(self.aggregate.aggs, functions, states, strict=True))
        out = _run(self._post, record)
        return None if out is None else self.output(out)

    def event_rows(self, record: Record) -> list[OutputRow]:
        """For a count-only aggregate: the rows one event adds, each with count 1 (streaming mode)."""
        assert self.count_only and self.aggregate is not None
        ones = [1] * len(self.aggregate.aggs)
        return [r for key in self.group_keys(record) if (r := self.row(key, ones)) is not None]

    def output(self, record: Record) -> OutputRow:
        """A row as Splunk shows it: a field without values (``values(x)`` of none) is absent."""
        return {k: self._value(k, v) for k, v in record.items() if k != "_raw" and v}

    def _value(self, key: str, values: list[str]) -> Any:
        return int(values[0]) if key in self.needs.int_fields else values[0] if len(values) == 1 else list(values)


class Table:
    """The stats table of a batch run: groups -> aggregate states."""

    def __init__(self, pipeline: Pipeline) -> None:
        assert pipeline.aggregate is not None
        self.pipeline = pipeline
        self.aggs = pipeline.aggregate.aggs
        self.functions = pipeline.functions
        self.groups: dict[Key, list[Any]] = {}
        self.events: dict[Key, int] = {}  # events per group, whatever the aggregates

    def add(self, record: Record) -> None:
        events, groups = self.events, self.groups
        for key in self.pipeline.group_keys(record):
            state = groups.get(key)
            if state is None:
                state = groups[key] = [f.initial() for f in self.functions]
                events[key] = 1
            else:
                events[key] += 1
            for i, (agg, function) in enumerate(zip(self.aggs, self.functions, strict=True)):
                state[i] = function.update(state[i], record.get(agg.field, []) if agg.field else None)

    def state(self) -> tuple[dict[Key, list[Any]], dict[Key, int]]:
        """What another process needs to merge this table (picklable)."""
        return self.groups, self.events

    def merge(self, state: tuple[dict[Key, list[Any]], dict[Key, int]]) -> None:
        """Fold in the state of another reader's table of the same query."""
        groups, events = state
        shared = self.groups.keys() & groups.keys()
        combined = {
            k: [f.combine(m, t) for f, m, t in zip(self.functions, self.groups[k], groups[k], strict=True)]
            for k in shared
        }
        counts = {k: self.events[k] + events[k] for k in shared}
        self.groups.update(groups)  # the groups only they saw, in bulk
        self.groups.update(combined)
        self.events.update(events)
        self.events.update(counts)

    def row(self, key: Key) -> OutputRow | None:
        """A group's row through the per-row commands, or None when they filter it out."""
        return self.pipeline.row(key, self.groups[key])

    def rows(self) -> list[OutputRow]:
        return [row for key in sorted(self.groups) if (row := self.row(key)) is not None]


def _compile(steps: Iterable[Step], geoip_db: str | None) -> list[RecordStep]:
    compiled: list[RecordStep] = []
    for step in steps:
        if isinstance(step, Filter):
            if step.expr != Keyword("*"):  # `search *`, as the *_filter macros are by default
                compiled.append(_keep(compile_expr(step.expr)))
        elif isinstance(step, FillNull):
            compiled.append(_fillnull_step(step.fields, step.value))
        elif isinstance(step, Rename):
            compiled.append(renamer(step))
        elif isinstance(step, Where):
            compiled.append(_keep(compile_where(step.expr)))
        elif isinstance(step, Convert):
            compiled.append(_convert_step(step))
        else:
            compiled.append(_iplocation_step(step, geoip_db))
    return compiled


def _keep(test: Callable[[Record], bool]) -> RecordStep:
    return lambda r: r if test(r) else None


def _fillnull_step(fields: tuple[str, ...], value: str) -> RecordStep:
    def step(r: Record) -> Record:
        for f in fields:
            if f not in r:
                r[f] = [value]
        return r

    return step


def _convert_step(cmd: Convert) -> RecordStep:
    def step(r: Record) -> Record:
        for field, out in cmd.fields:
            values = r.get(field)
            if values:
                r[out] = [ctime(v, cmd.timeformat) for v in values]
        return r

    return step


def ctime(value: str, timeformat: str) -> str:
    """Epoch seconds as ``convert ctime`` formats them (UTC); what is not a time stays as it is."""
    try:
        return datetime.fromtimestamp(float(value), UTC).strftime(timeformat)
    except (ValueError, OverflowError, OSError):
        return value  # as Splunk's convert: what is not a time stays as it is


def _iplocation_step(cmd: IpLocation, geoip_db: str | None) -> RecordStep:
    locate = geo_lookup(geoip_db)

    def step(r: Record) -> Record:
        values = r.get(cmd.field)
        if values:
            r.update(locate(values[0]))
        return r

    return step


def geo_lookup(geoip_db: str | None) -> Callable[[str], Record]:
    """City, Country, Region, lat, lon of an address (those the database has; none for what is not an
    address), from a MaxMind-format database, as Splunk's iplocation."""
    if not geoip_db:
        raise EngineError(NO_GEOIP)
    import maxminddb  # here: importing it costs 30 ms of every scan's start-up, and few searches need it

    try:
        reader = maxminddb.open_database(geoip_db)
    except (OSError, ValueError) as exc:  # maxminddb's InvalidDatabaseError is a ValueError
        raise EngineError(f"iplocation: cannot read the MaxMind database {geoip_db}: {exc}") from None

    def locate(address: str) -> Record:
        try:
            found = reader.get(address)
        except ValueError:
            return {}  # not an IP address
        return _geo_fields(found) if isinstance(found, dict) else {}

    return locate


def _geo_fields(found: dict[str, Any]) -> Record:
    """City, Country, Region, lat, lon from a GeoIP2/GeoLite2 City record, as Splunk's iplocation."""

    def name(entry: Any) -> str | None:
        return entry.get("names", {}).get("en") if isinstance(entry, dict) else None

    location = found.get("location") or {}
    fields = {
        "City": name(found.get("city")),
        "Country": name(found.get("country")),
        "Region": name((found.get("subdivisions") or [None])[0]),
        "lat": location.get("latitude"),
        "lon": location.get("longitude"),
    }
    return {k: [str(v)] for k, v in fields.items() if v is not None}


def _run(steps: list[RecordStep], record: Record) -> Record | None:
    for step in steps:
        out = step(record)
        if out is None:
            return None
        record = out
    return record
