"""A Query made executable: the per-event stage, stats aggregation, and the per-row stage.

``stats count BY f1 .. fn`` gives one row per combination of BY values: a multivalue field gives a
row per distinct value, an event missing a BY field adds no row, and duplicate events count. Rows
come out sorted by their BY values, as Splunk's stats orders them.
"""

from __future__ import annotations

import itertools
import operator
import os
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from auditwatch.audit.decode import Record
from auditwatch.engine.match import compile_expr, compile_where, ordered
from auditwatch.spl.syntax import (
    Command,
    Convert,
    Expr,
    FillNull,
    IpLocation,
    Keyword,
    Query,
    Rename,
    Search,
    Stats,
    Where,
    command_fields,
    renamed,
    renamer,
)

NO_GEOIP = (
    "iplocation needs a MaxMind-format database (GeoLite2-City or compatible): `auditwatch scan --geoip-db FILE`, "
    "`auditwatch run --geoip-db FILE`, or $AUDITWATCH_GEOIP_DB"
)

Step = Callable[[Record], Record | None]
_first = operator.itemgetter(0)
Key = tuple[str, ...]
OutputRow = dict[str, Any]


class EngineError(ValueError):
    """A query the engine cannot run with what it was given: a database ``iplocation`` needs."""


def geoip_problem(query: Query, geoip_db: str | None) -> str | None:
    """Why ``query`` cannot run with ``geoip_db``, or None (no ``iplocation``, or a readable file)."""
    if not any(isinstance(c, IpLocation) for c in query.commands):
        return None
    if not geoip_db:
        return NO_GEOIP
    if not os.path.isfile(geoip_db) or not os.access(geoip_db, os.R_OK):
        return f"iplocation: cannot read the MaxMind database {geoip_db}"
    return None


class Pipeline:
    """Executes a Query over flattened events; ``geoip_db`` is the database ``iplocation`` reads."""

    def __init__(self, query: Query, geoip_db: str | None = None) -> None:
        problem = geoip_problem(query, geoip_db)
        if problem:
            raise EngineError(problem)
        cmds = query.commands
        split = next((i for i, c in enumerate(cmds) if isinstance(c, Stats)), len(cmds))
        post = cmds[split + 1 :]
        self.stats: Stats | None = query.stats
        self._pre = _compile_stage(cmds[:split], cmds[split:], geoip_db)
        self._post = _compile_stage(post, (), geoip_db)
        self.needs_raw = any(isinstance(c, Search) and _has_keyword(c.expr) for c in cmds[:split])
        self.int_fields = _int_fields(self.stats, post)
        self._post_reads: set[str] = set().union(*map(command_fields, post))
        # When the per-row commands only rename, every row has the same shape: (output key, column
        # index in BY values + aggregates), so rows are built without running the commands.
        self._layout: list[tuple[str, int]] | None = None
        if self.stats is not None and all(isinstance(c, Rename) or c == Search(Keyword("*")) for c in post):
            names = [*self.stats.by, *(a.name for a in self.stats.aggs)]
            template = _run(self._post, {n: [str(i)] for i, n in enumerate(names)})
            assert template is not None
            self._layout = [(k, int(v[0])) for k, v in template.items()]
        # The event fields the query reads, or None when rows are whole events (no stats).
        self.fields: set[str] | None = (
            set().union(*map(command_fields, cmds[: split + 1])) if self.stats is not None else None
        )
        # Splunk's metadata fields the query reads: _time (the request's time) and source (the log).
        self.metadata = {"_time", "source"} & set().union(*map(command_fields, cmds))

    @property
    def count_only(self) -> bool:
        """True when the only aggregate is a plain count, so each event's rows can be summed."""
        return self.stats is not None and all(a.func == "count" and a.field is None for a in self.stats.aggs)

    @property
    def row_local(self) -> bool:
        """True when the per-row commands read no aggregate (``where count > 5`` does)."""
        return self.stats is not None and not (self._post_reads & {a.name for a in self.stats.aggs})

    def event(self, record: Record) -> Record | None:
        """The per-event commands: the record after them, or None when it is filtered out."""
        return _run(self._pre, record)

    def group_keys(self, record: Record) -> list[Key]:
        """The stats groups one event falls in."""
        assert self.stats is not None
        columns = list(map(record.get, self.stats.by))
        if not all(columns):  # a BY field missing (None) or without values
            return []
        if max(map(len, columns), default=1) == 1:  # type: ignore[arg-type]
            return [tuple(map(_first, columns))]  # type: ignore[arg-type]
        return list(itertools.product(*(dict.fromkeys(v) for v in columns)))  # type: ignore[arg-type]

    def row(self, key: Key, states: list[Any]) -> OutputRow | None:
        """One stats row, from its BY values and aggregate states, through the per-row commands, as
        output (counts as integers); None when those commands drop it."""
        assert self.stats is not None
        aggs = self.stats.aggs
        if self._layout is not None:
            columns = [*key, *map(_output, (a.func for a in aggs), states)]
            return {k: columns[i] for k, i in self._layout if columns[i] != []}  # no values: absent, as in Splunk
        record: Record = dict(zip(self.stats.by, ([v] for v in key), strict=True))
        record.update((a.name, _final(a.func, s)) for a, s in zip(aggs, states, strict=True))
        out = _run(self._post, record)
        return None if out is None else self.output(out)

    def event_rows(self, record: Record) -> list[OutputRow]:
        """For a count-only stats: the rows one event adds, each with count 1 (streaming mode)."""
        assert self.count_only and self.stats is not None
        ones = [1] * len(self.stats.aggs)
        return [r for key in self.group_keys(record) if (r := self.row(key, ones)) is not None]

    def output(self, record: Record) -> OutputRow:
        """A row as Splunk shows it: a field without values (``values(x)`` of none) is absent."""
        return {k: self._value(k, v) for k, v in record.items() if k != "_raw" and v}

    def _value(self, key: str, values: list[str]) -> Any:
        return int(values[0]) if key in self.int_fields else values[0] if len(values) == 1 else list(values)


class Table:
    """The stats table of a batch run: groups -> aggregate states."""

    def __init__(self, pipeline: Pipeline) -> None:
        assert pipeline.stats is not None
        self.pipeline = pipeline
        self.aggs = pipeline.stats.aggs
        self.groups: dict[Key, list[Any]] = {}
        self.events: dict[Key, int] = {}  # events per group, whatever the aggregates

    def add(self, record: Record) -> None:
        events, groups = self.events, self.groups
        for key in self.pipeline.group_keys(record):
            state = groups.get(key)
            if state is None:
                state = groups[key] = [_initial(a.func) for a in self.aggs]
                events[key] = 1
            else:
                events[key] += 1
            for i, agg in enumerate(self.aggs):
                state[i] = _update(agg.func, state[i], record.get(agg.field, []) if agg.field else None)

    def state(self) -> tuple[dict[Key, list[Any]], dict[Key, int]]:
        """What another process needs to merge this table (picklable)."""
        return self.groups, self.events

    def merge(self, state: tuple[dict[Key, list[Any]], dict[Key, int]]) -> None:
        """Fold in the state of another reader's table of the same query."""
        groups, events = state
        shared = self.groups.keys() & groups.keys()
        combined = {
            k: [_combine(a.func, m, t) for a, m, t in zip(self.aggs, self.groups[k], groups[k], strict=True)]
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


def _initial(func: str) -> Any:
    return set() if func in ("values", "dc") else 0 if func == "count" else None


def _update(func: str, state: Any, vals: list[str] | None) -> Any:
    if func == "count":
        return state + 1 if vals is None else state + len(vals)
    if not vals:
        return state
    if func in ("values", "dc"):
        state.update(vals)
        return state
    sign = -1 if func == "min" else 1
    for v in vals:
        if state is None or ordered(v, state) * sign > 0:
            state = v
    return state


def _combine(func: str, mine: Any, theirs: Any) -> Any:
    if func == "count":
        return mine + theirs
    if func in ("values", "dc"):
        return mine | theirs
    return mine if theirs is None else _update(func, mine, [theirs])


def _output(func: str, state: Any) -> Any:
    """An aggregate's output value: counts as integers, one value as a string, several as a list."""
    if func == "count":
        return state
    if func == "dc":
        return len(state)
    values = _final(func, state)
    return values[0] if len(values) == 1 else values


def _final(func: str, state: Any) -> list[str]:
    if func == "values":
        return sorted(state)
    if func == "dc":
        return [str(len(state))]
    if func == "count":
        return [str(state)]
    return [] if state is None else [state]


def _compile_stage(cmds: Iterable[Command], later: Iterable[Command], geoip_db: str | None) -> list[Step]:
    cmds, later = list(cmds), list(later)
    steps: list[Step] = []
    for i, cmd in enumerate(cmds):
        if isinstance(cmd, Search):
            if (step := _search_step(cmd)) is not None:
                steps.append(step)
        elif isinstance(cmd, FillNull):
            fields = cmd.fields or tuple(sorted(set().union(*map(command_fields, cmds[i + 1 :] + later))))
            steps.append(_fillnull_step(fields, cmd.value))
        elif isinstance(cmd, Rename):
            steps.append(_rename_step(cmd))
        elif isinstance(cmd, Where):
            steps.append(_where_step(cmd))
        elif isinstance(cmd, Convert):
            steps.append(_convert_step(cmd))
        elif isinstance(cmd, IpLocation):
            assert geoip_db is not None  # checked by Pipeline
            steps.append(_iplocation_step(cmd, geoip_db))
        else:
            raise AssertionError(f"{type(cmd).__name__} cannot run per event")
    return steps


def _search_step(cmd: Search) -> Step | None:
    if cmd.expr == Keyword("*"):
        return None  # `search *`, as the *_filter macros are by default
    pred = compile_expr(cmd.expr)
    return lambda r: r if pred(r) else None


def _fillnull_step(fields: tuple[str, ...], value: str) -> Step:
    def step(r: Record) -> Record:
        for f in fields:
            if f not in r:
                r[f] = [value]
        return r

    return step


def _rename_step(cmd: Rename) -> Step:
    return renamer(cmd)


def _where_step(cmd: Where) -> Step:
    predicate = compile_where(cmd.expr)
    return lambda r: r if predicate(r) else None


def _convert_step(cmd: Convert) -> Step:
    def step(r: Record) -> Record:
        for field, out in cmd.fields:
            values = r.get(field)
            if values:
                r[out] = [_ctime(v, cmd.timeformat) for v in values]
        return r

    return step


def _ctime(value: str, timeformat: str) -> str:
    try:
        return datetime.fromtimestamp(float(value), UTC).strftime(timeformat)
    except (ValueError, OverflowError, OSError):
        return value  # as Splunk's convert: what is not a time stays as it is


def _iplocation_step(cmd: IpLocation, geoip_db: str) -> Step:
    import maxminddb  # here: importing it costs 30 ms of every scan's start-up, and few searches need it

    try:
        reader = maxminddb.open_database(geoip_db)
    except (OSError, ValueError) as exc:  # maxminddb's InvalidDatabaseError is a ValueError
        raise EngineError(f"iplocation: cannot read the MaxMind database {geoip_db}: {exc}") from None

    def step(r: Record) -> Record:
        values = r.get(cmd.field)
        if not values:
            return r
        try:
            found = reader.get(values[0])
        except ValueError:
            return r  # not an IP address
        if isinstance(found, dict):
            r.update(_geo_fields(found))
        return r

    return step


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


def _run(steps: list[Step], record: Record) -> Record | None:
    for step in steps:
        out = step(record)
        if out is None:
            return None
        record = out
    return record


def _has_keyword(expr: Expr) -> bool:
    """A bare keyword that reads the raw event text (``*`` alone matches anything without reading it)."""
    return any(isinstance(n, Keyword) and n.value.strip("*") for n in expr.walk())


def _int_fields(stats: Stats | None, post: Iterable[Command]) -> set[str]:
    names = {a.name for a in stats.aggs if a.func in ("count", "dc")} if stats else set()
    for cmd in post:
        if isinstance(cmd, Rename):
            names = set(renamed(names, cmd))
    return names
