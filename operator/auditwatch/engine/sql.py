"""A Plan compiled to SQL, as a sqlglot syntax tree rendered per dialect: the executor for archives.

The query reads a relation ``lines(source, line)`` of raw audit-log lines and gives, for a plan with an
aggregate, one row per group: its BY values ``k0..kn`` and each aggregate's state ``a0..am`` (a count,
or the distinct values a ``values``/``dc``/``min``/``max`` saw); ``group_rows`` turns those into rows
through the streaming engine's own per-row steps and output (engine/pipeline.py), so both engines
shape rows with one piece of code. For a plan without an aggregate (rows are whole events) it gives
the lines with an event that passes, in order, for the streaming engine to turn into rows.

Splunk's semantics, as the streaming engine has them (engine/match.py), in SQL:
- A field is a list of text values: every way its flattened name can be read as a JSON path (``a.b``
  is key ``a`` then ``b``, or the one key ``a.b``; ``{}`` every array item), scalars only, numbers and
  booleans as their text. Missing: the empty list.
- ``=`` and ``IN`` compare lower-cased text, ``*`` a wildcard (LIKE, escaped), a CIDR value through a
  function; any value of a multivalue field may match; ``!=`` needs the field; ``<``/``>`` compare as
  numbers when both sides are numbers. A bare keyword is a case-insensitive search of the raw text.
- A ``Test`` (Sigma's and Falco's operators) compares text as written (LIKE with its wildcards escaped,
  lower-cased on both sides when it folds case), a regular expression through the engine's own (RE2 in
  DuckDB; Java's in Spark, Joni's in Trino: the same for the syntax the rule packs use).
- A JSON pointer field is the value there as text: a string as itself, else JSON (Trino writes an
  object's keys sorted, so a test of it is portable when it looks for text within a key or a value).
- ``where`` compares first values, numbers as numbers, case-sensitively; a missing field is false.
- The aggregate groups by every combination of the BY fields' distinct values; an event missing one
  is in no group.
- The prefilter's literals are a test of the raw line before it is parsed.
What SQL does not have is a function the executor registers (engine/sql_functions.py): a CIDR test,
Splunk's ``_time``, ``convert ctime``, ``iplocation`` and (for Spark) the decoder, each the streaming
engine's own code.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlglot import exp

from auditwatch.audit.decode import QUERY_PARAM, is_derived, json_paths, pointer_keys
from auditwatch.engine.aggregates import AGGREGATES, Count, Function, Values
from auditwatch.engine.evaluate import Evaluator
from auditwatch.engine.match import number
from auditwatch.engine.pipeline import EngineError, OutputRow, Pipeline
from auditwatch.engine.prefilter import NON_ASCII_LOWERING_TO_ASCII, derive
from auditwatch.ir.plan import (
    IPLOCATION_FIELDS,
    Aggregate,
    And,
    Compare,
    Convert,
    Expr,
    FillNull,
    Filter,
    In,
    IpLocation,
    Keyword,
    Not,
    Operand,
    Or,
    Plan,
    Rename,
    Test,
    Where,
    WhereCompare,
    WhereExpr,
    glob_parts,
    parse_cidr,
    renamer,
    step_fields,
)

TEXT = exp.DataType.build("varchar")
TEXT_LIST = exp.DataType.build("array<varchar>")
JSON_LIST = exp.DataType.build("array<json>", dialect="duckdb")
DOUBLE = exp.DataType.build("double")
NOT_SCALAR = ("OBJECT", "ARRAY", "NULL")
LIST_KEYS = ("$.kind", "$.items", "$.auditID")  # what tells an EventList from an Event (audit/decode.py)


@dataclass
class Compiled:
    """A plan's query, and what its executor must provide and how to read its rows."""

    query: exp.Select
    functions: set[str] = field(default_factory=set)  # the functions of engine/sql_functions.py it calls
    aggregate: bool = True  # rows are groups (k0.., a0..); else (source, ordinal, line) of passing lines
    decoded: list[str] = field(default_factory=list)  # with decode: the fields aw_decode gives, in order


def compile_plan(plan: Plan, lines: exp.Expr, decode: bool = False) -> Compiled:
    """The query of ``plan`` over ``lines``, a relation with columns ``source`` and ``line`` (and
    ``ordinal``, the line's place in its source, for a plan without an aggregate).

    ``decode``: for an engine without JSON paths that reach into arrays (Spark), each candidate line is
    decoded by ``aw_decode(source, line)``, the streaming decoder itself: one element per event, each
    the values of ``Compiled.decoded`` fields in order. Else the engine's JSON functions read them."""
    c = Compiler(plan, decode)
    query = c.query(lines)
    return Compiled(query, c.functions, plan.aggregate is not None, list(c.decoded))


class Compiler:
    def __init__(self, plan: Plan, decode: bool) -> None:
        self.plan = plan
        self.decode = decode
        self.decoded: dict[str, int] = {}  # with decode: field -> its place in an event of aw_decode
        self.paths: dict[str, int] = {}  # JSON paths without a wildcard -> their place in column p
        self.functions: set[str] = set()
        self.timed = False  # whether _time is read: then the query computes it once per event
        self.columns: dict[str, tuple[str, exp.Expr]] = {}  # field -> (its column, its values)
        self._names = (f"x{i}" for i in itertools.count())  # lambda variables, unique in the query

    def query(self, lines: exp.Expr) -> exp.Select:
        line, doc = exp.column("line"), exp.column("doc")
        if self.decode:
            env, where = self._event_steps(doc)
            decoded = exp.Explode(this=self._call("aw_decode", exp.column("source"), line))
            candidates = (
                exp.select("source", "ordinal", "line")
                .from_(lines, copy=False)
                .where(self._line_test(line), copy=False)
            )
            objects = exp.select("source", "ordinal", "line", exp.alias_(decoded, "doc")).from_(
                candidates.subquery("lines", copy=False)
            )
            return self._rows(objects, env, where)
        env, where = self._event_steps(doc)
        # One parse of a line reads every path the plan needs without a wildcard and what tells an
        # EventList (its last three): all that most lines need. TRY: NULL for what is no JSON. The
        # prefilter inside the CASE, and no filter on p before the UNNEST: DuckDB would run the parse
        # for the filter and again for the projection (or before the prefilter).
        read = _text_array(*self.paths, *LIST_KEYS)
        parse = exp.Anonymous(this="TRY", expressions=[_fn("json_extract", line, read)])
        tested = exp.Case(ifs=[exp.If(this=self._line_test(line), true=parse)])
        parsed = exp.select("source", "ordinal", "line", exp.alias_(tested, "p")).from_(lines, copy=False)
        p, item = exp.column("p"), exp.column("item")
        head = [exp.Bracket(this=p, expressions=[_int(len(self.paths) + i)], offset=1) for i in (1, 2, 3)]
        # A row per event: an EventList's items (each parsed again), else the line itself (item NULL).
        each = exp.Case(
            ifs=[
                exp.If(this=exp.or_(_is_null(p), exp.not_(_is_object(line))), true=_empty_json()),
                exp.If(this=self._is_list(*head), true=self._items(line, head[1])),
            ],
            default=exp.Cast(this=exp.Array(expressions=[exp.Null()]), to=JSON_LIST),
        )
        split = exp.select("source", "ordinal", "line", "p", exp.alias_(exp.Explode(this=each), "item")).from_(
            parsed.subquery("lines", copy=False), copy=False
        )
        objects = exp.select(
            "source",
            "ordinal",
            "line",
            exp.alias_(exp.Coalesce(this=exp.Cast(this=item, to=TEXT), expressions=[line]), "doc"),
            exp.alias_(exp.If(this=_is_null(item), true=p, false=_fn("json_extract", item, read)), "p"),
        ).from_(split.subquery("events", copy=False), copy=False)
        if self.timed:  # _time once, in column t, however often it is read
            objects = exp.select("*", exp.alias_(self._time(doc), "t")).from_(objects.subquery("timed", copy=False))
        return self._rows(self._with_fields(objects), env, where)

    def _rows(self, objects: exp.Select, env: dict[str, exp.Expr], where: exp.Expr) -> exp.Select:
        """Groups (or passing lines) from the events of ``objects`` after the per-event steps."""
        plan = self.plan
        if plan.aggregate is None:
            passing = (
                exp.select("source", "ordinal", "line")
                .from_(objects.subquery("events", copy=False), copy=False)
                .where(where)
            )
            return passing.distinct(copy=False).order_by("source", "ordinal", copy=False)
        agg = plan.aggregate
        by = [exp.alias_(exp.ArrayDistinct(this=env[f]), f"b{i}") for i, f in enumerate(agg.by)]
        values = [exp.alias_(env[a.field], f"v{i}") for i, a in enumerate(agg.aggs) if a.field]
        kept = exp.and_(where, *(exp.GT(this=exp.ArraySize(this=env[f]), expression=_int(0)) for f in agg.by))
        columns = [*by, *values] or [exp.alias_(_int(1), "e")]  # `stats count` reads no field
        events: exp.Select = (
            exp.select(*columns).from_(objects.subquery("events", copy=False), copy=False).where(kept, copy=False)
        )
        for i in range(len(agg.by)):  # a row per combination of the BY fields' values
            events = self._each(events, i)
        keys = [exp.column(f"k{i}") for i in range(len(agg.by))]
        states = [exp.alias_(self._state(agg, i), f"a{i}") for i in range(len(agg.aggs))]
        return (
            exp.select(*keys, *states)
            .from_(events.subquery("rows", copy=False), copy=False)
            .group_by(*keys, copy=False)
        )

    def _each(self, events: exp.Select, i: int) -> exp.Select:
        """A row of ``events`` per value of its list ``b<i>``, the value as ``k<i>``."""
        return exp.select("*", exp.alias_(exp.Explode(this=exp.column(f"b{i}")), f"k{i}")).from_(
            events.subquery(f"by{i}", copy=False)
        )

    # -- per event -----------------------------------------------------------------------------
    def _is_list(self, kind: exp.Expr, items: exp.Expr, audit_id: exp.Expr) -> exp.Expr:
        """Whether a line is an EventList, as the streaming decoder tells one (audit/decode.decode_line)."""
        return exp.paren(
            exp.or_(
                exp.EQ(this=kind, expression=_s('"EventList"')),
                exp.and_(exp.not_(_is_null(items)), _is_null(audit_id)),
            )
        )

    def _items(self, line: exp.Expr, items: exp.Expr) -> exp.Expr:
        """An EventList's items (JSON), when they are all objects; else none."""
        each = _fn("json_extract", line, _s("$.items[*]"))
        all_objects = exp.and_(
            _starts(items, "["),
            exp.EQ(this=exp.ArraySize(this=self._filter(each, lambda v: exp.not_(_is_object(v)))), expression=_int(0)),
        )
        return exp.If(this=all_objects, true=each, false=_empty_json())

    def _line_test(self, line: exp.Expr) -> exp.Expr:
        """The prefilter as a test of the raw line: it has a literal, or a character escape that could
        spell one, or a non-ASCII character that lower-cases into one (engine/prefilter.py)."""
        prefilter = derive(self.plan)
        if prefilter is None:
            return exp.Not(this=_is_null(line))
        if not prefilter.literals:  # the plan keeps no event
            return exp.false()
        tests: list[exp.Expr] = [_like(line, f"*{lit}*", exp.ILike) for lit in prefilter.literals]
        tests.append(self._has(line, "\\u"))
        chars = set("".join(prefilter.literals))
        for special, ascii_ in NON_ASCII_LOWERING_TO_ASCII.items():
            if ascii_ in chars:
                tests.append(self._has(line, special))
        return exp.or_(*tests)

    def _event_steps(self, doc: exp.Expr) -> tuple[dict[str, exp.Expr], exp.Expr]:
        """The fields after the per-event steps (name -> list of values) and the condition they pass."""
        plan = self.plan
        read = set().union(*map(step_fields, [*plan.steps, *([plan.aggregate] if plan.aggregate else [])]))
        env = {name: self._field(doc, name) for name in sorted(read)}
        conditions: list[exp.Expr] = []
        for step in plan.steps:
            if isinstance(step, Filter):
                if step.expr != Keyword("*"):
                    conditions.append(self._predicate(step.expr, env, doc))
            elif isinstance(step, Where):
                conditions.append(self._where(step.expr, env))
            elif isinstance(step, FillNull):
                for name in step.fields:
                    values = env.get(name, _empty())
                    env[name] = exp.If(this=_is_empty(values), true=_text_list(step.value), false=values)
            elif isinstance(step, Rename):
                env = renamer(step)(env)
            elif isinstance(step, Convert):
                self._convert(step, env)
            elif isinstance(step, IpLocation):
                self._iplocation(step, env)
        return env, exp.and_(*conditions) if conditions else exp.true()

    def _convert(self, step: Convert, env: dict[str, exp.Expr]) -> None:
        fmt = _s(step.timeformat)
        for source, out in step.fields:
            values = env.get(source, _empty())
            converted = self._call("aw_ctime", values, fmt)  # over the list: Spark calls no function in a lambda
            env[out] = exp.If(this=_is_empty(values), true=env.get(out, _empty()), false=converted)

    def _iplocation(self, step: IpLocation, env: dict[str, exp.Expr]) -> None:
        address = self._first(env.get(step.field, _empty()))
        for name in IPLOCATION_FIELDS:
            found = self._call("aw_geo", address, _s(name))
            env[name] = exp.If(this=_is_null(found), true=env.get(name, _empty()), false=exp.Array(expressions=[found]))

    def _field(self, doc: exp.Expr, name: str) -> exp.Expr:
        """The values of a flattened field: Splunk's metadata, or every JSON path its name can stand for."""
        if self.decode:
            place = self.decoded.setdefault(name, len(self.decoded))
            return exp.Bracket(this=doc, expressions=[_int(place + 1)], offset=1)
        if name == "_time":
            self.timed = True
            return self._metadata(exp.column("t"))
        if name == "source":
            return exp.Array(expressions=[exp.column("source")])
        if name == "_raw":
            return exp.Array(expressions=[self._raw_text(doc)])
        if is_derived(name):
            if name.startswith(QUERY_PARAM):
                raise EngineError(f"{name!r}: a query parameter is read for a finding's output, not by a condition")
            return self._column(name, self._pointer_text(doc, name))
        return self._column(name, self._values(doc, name))

    def _pointer_text(self, doc: exp.Expr, pointer: str) -> exp.Expr:
        """The value at a JSON pointer as text (audit/decode.deriver): a string as itself, else its JSON.
        Read by the line's one parse, as a JSON path."""
        path = "$" + "".join(f"[{k}]" if k.isdigit() else f'."{k}"' for k in pointer_keys(pointer))
        place = self.paths.setdefault(path, len(self.paths))
        found = exp.Bracket(this=exp.column("p"), expressions=[_int(place + 1)], offset=1)
        kind = exp.Coalesce(this=_fn("json_type", found), expressions=[_s("NULL")])
        return exp.Case(
            ifs=[
                exp.If(this=exp.EQ(this=kind, expression=_s("NULL")), true=_empty()),
                exp.If(
                    this=exp.EQ(this=kind, expression=_s("VARCHAR")),
                    true=exp.Array(expressions=[_fn("json_extract_string", found, _s("$"))]),
                ),
            ],
            default=exp.Array(expressions=[exp.Cast(this=found, to=TEXT)]),
        )

    def _values(self, doc: exp.Expr, name: str) -> exp.Expr:
        """The values at every JSON path the name can stand for, as text, in order."""
        parts = [self._path_values(doc, path) for path in json_paths(name)]
        return self._concat(parts) if parts else _empty()

    def _column(self, name: str, values: exp.Expr) -> exp.Expr:
        """A field's values as a column of their own, computed once per event however often the steps
        name it (a filter, fillnull's test and value, a BY): engines do not share repeated lambdas."""
        column, _ = self.columns.setdefault(name, (f"f{len(self.columns)}", values))
        return exp.column(column)

    def _with_fields(self, objects: exp.Select) -> exp.Select:
        """``objects`` with a column per field read (``_column``)."""
        fields = [exp.alias_(values, column) for column, values in self.columns.values()]
        return exp.select("*", *fields).from_(objects.subquery("objects", copy=False), copy=False)

    def _metadata(self, value: exp.Expr) -> exp.Expr:
        return exp.If(this=_is_null(value), true=_empty(), false=exp.Array(expressions=[value]))

    def _path_values(self, doc: exp.Expr, path: tuple[str | None, ...]) -> exp.Expr:
        text = "$" + "".join("[*]" if key is None else '."' + key + '"' for key in path)
        if None not in path:  # one value (from the line's one parse), no lambda: the common case, made cheap
            place = self.paths.setdefault(text, len(self.paths))
            value = exp.Bracket(this=exp.column("p"), expressions=[_int(place + 1)], offset=1)
            kind = exp.Coalesce(this=_fn("json_type", value), expressions=[_s("NULL")])
            scalar = exp.Array(expressions=[_fn("json_extract_string", value, _s("$"))])
            not_scalar = exp.In(this=kind, expressions=[_s(t) for t in NOT_SCALAR])
            return exp.If(this=not_scalar, true=_empty(), false=exp.Cast(this=scalar, to=TEXT_LIST))
        found = _fn("json_extract", doc, _s(text))
        scalars = self._filter(
            exp.Coalesce(this=found, expressions=[exp.Array(expressions=[])]),
            lambda v: exp.not_(exp.In(this=_fn("json_type", v), expressions=[_s(t) for t in NOT_SCALAR])),
        )
        as_text = self._transform(scalars, lambda v: _fn("json_extract_string", v, _s("$")))
        return exp.Cast(this=as_text, to=TEXT_LIST)

    # -- search predicates ---------------------------------------------------------------------
    def _predicate(self, expr: Expr, env: dict[str, exp.Expr], doc: exp.Expr) -> exp.Expr:
        if isinstance(expr, And):
            parts = [self._predicate(i, env, doc) for i in expr.items if i != Keyword("*")]
            return exp.and_(*parts) if parts else exp.true()
        if isinstance(expr, Or):
            return exp.or_(*(self._predicate(i, env, doc) for i in expr.items))
        if isinstance(expr, Not):
            return exp.not_(exp.paren(self._predicate(expr.item, env, doc)))
        if isinstance(expr, Keyword):
            if not expr.value.strip("*"):
                return exp.true()
            if self.decode:
                return self._any(
                    self._field(doc, "_raw"), lambda v: _like(exp.Lower(this=v), f"*{expr.value.lower()}*")
                )
            return _like(exp.Lower(this=self._raw_text(doc)), f"*{expr.value.lower()}*")
        values = env.get(expr.field, _empty())
        if isinstance(expr, Test):
            return self._test(expr, values)
        if isinstance(expr, In) or expr.op in ("=", "!="):
            matching = self._matches(values, expr.values if isinstance(expr, In) else (expr.value,))
            if isinstance(expr, Compare) and expr.op == "!=":
                return exp.and_(exp.not_(_is_empty(values)), exp.not_(matching))
            return matching
        is_number = number(expr.value) is not None
        return self._any(values, lambda v: _ordered(v, _s(expr.value), expr.op, right_number=is_number))

    def _test(self, expr: Test, values: exp.Expr) -> exp.Expr:
        if expr.op == "exists":
            return exp.not_(_is_empty(values))
        lower = expr.fold and expr.op != "regex"  # a regex folds case itself
        patterns = [v.lower() for v in expr.values] if lower else list(expr.values)

        def passes(value: exp.Expr) -> exp.Expr:
            v = exp.Lower(this=value) if lower else value
            tests = [_value_test(expr.op, v, p, expr.fold) for p in patterns]
            return exp.paren(exp.or_(*tests)) if tests else exp.false()

        if expr.every:
            failing = self._filter(values, lambda v: exp.not_(passes(v)))
            return exp.and_(exp.not_(_is_empty(values)), exp.EQ(this=exp.ArraySize(this=failing), expression=_int(0)))
        return self._any(values, passes)

    def _matches(self, values: exp.Expr, patterns: Sequence[str]) -> exp.Expr:
        """Some value matches some search value: a network by address (a function over the whole list:
        Spark calls none inside a lambda), else lower-cased text with wildcards."""
        networks = [p for p in patterns if parse_cidr(p) is not None]
        texts = [p.lower() for p in patterns if parse_cidr(p) is None]
        tests: list[exp.Expr] = [self._in_network(values, n) for n in networks]
        if texts:
            tests.append(self._any(values, lambda v: exp.or_(*(_text_match(exp.Lower(this=v), p) for p in texts))))
        return exp.paren(exp.or_(*tests))

    def _where(self, expr: WhereExpr, env: dict[str, exp.Expr]) -> exp.Expr:
        if isinstance(expr, WhereCompare):
            left, right = self._operand(expr.left, env), self._operand(expr.right, env)
            compared = _ordered(left, right, expr.op)
            return exp.Coalesce(this=compared, expressions=[exp.false()])
        if isinstance(expr, Not):
            return exp.not_(exp.paren(self._where(expr.item, env)))
        parts = [self._where(i, env) for i in expr.items]
        return exp.and_(*parts) if isinstance(expr, And) else exp.or_(*parts)

    def _operand(self, operand: Operand, env: dict[str, exp.Expr]) -> exp.Expr:
        if not operand.is_field:
            return _s(operand.value)
        return self._first(env.get(operand.value, _empty()))

    # -- aggregate states ------------------------------------------------------------------------
    def _state(self, agg: Aggregate, i: int) -> exp.Expr:
        a = agg.aggs[i]
        if a.field is None:
            return exp.Count(this=exp.Star())
        values = exp.column(f"v{i}")
        if a.func == "count":
            return exp.Sum(this=exp.ArraySize(this=values))
        return exp.ArrayDistinct(this=exp.Flatten(this=exp.ArrayAgg(this=values)))

    # -- what engines spell differently (engine/trino.py overrides these) ---------------------
    def _time(self, doc: exp.Expr) -> exp.Expr:
        """Splunk's ``_time`` of an event (audit/decode.splunk_time), as text."""
        stamps = (_fn("json_extract", doc, _s(f"$.{key}")) for key in ("requestReceivedTimestamp", "stageTimestamp"))
        return self._call("aw_time", *(exp.Cast(this=s, to=TEXT) for s in stamps))

    def _raw_text(self, doc: exp.Expr) -> exp.Expr:
        return exp.Cast(this=doc, to=TEXT)

    def _has(self, text: exp.Expr, literal: str) -> exp.Expr:
        return exp.Contains(this=text, expression=_s(literal))

    def _in_network(self, values: exp.Expr, network: str) -> exp.Expr:
        return exp.EQ(this=self._call("aw_cidr", values, _s(network)), expression=exp.true())

    def _concat(self, lists: list[exp.Expr]) -> exp.Expr:
        return lists[0] if len(lists) == 1 else exp.ArrayConcat(this=lists[0], expressions=lists[1:])

    def _first(self, values: exp.Expr) -> exp.Expr:
        """A list's first value; NULL for an empty list."""
        return exp.Bracket(this=values, expressions=[_int(1)], offset=1)

    # -- helpers -------------------------------------------------------------------------------
    def _call(self, name: str, *args: exp.Expr) -> exp.Expr:
        self.functions.add(name)
        return exp.Anonymous(this=name, expressions=list(args))

    def _lambda(self, body: Callable[[exp.Expr], exp.Expr]) -> exp.Lambda:
        name = next(self._names)
        return exp.Lambda(this=body(exp.column(name)), expressions=[exp.to_identifier(name)])

    def _transform(self, values: exp.Expr, body: Callable[[exp.Expr], exp.Expr]) -> exp.Expr:
        return exp.Transform(this=values, expression=self._lambda(body))

    def _filter(self, values: exp.Expr, body: Callable[[exp.Expr], exp.Expr]) -> exp.Expr:
        return exp.ArrayFilter(this=values, expression=self._lambda(body))

    def _any(self, values: exp.Expr, body: Callable[[exp.Expr], exp.Expr]) -> exp.Expr:
        return exp.GT(this=exp.ArraySize(this=self._filter(values, body)), expression=_int(0))


def _ordered(left: exp.Expr, right: exp.Expr, op: str, right_number: bool | None = None) -> exp.Expr:
    """``left op right`` as ``engine.match.ordered`` compares: as numbers when both are, else as text."""
    make: Any = {"=": exp.EQ, "!=": exp.NEQ, "<": exp.LT, "<=": exp.LTE, ">": exp.GT, ">=": exp.GTE}[op]
    as_text = make(this=left, expression=right)
    if right_number is False:
        return as_text
    l_num, r_num = exp.TryCast(this=left, to=DOUBLE), exp.TryCast(this=right, to=DOUBLE)
    both = exp.and_(exp.not_(_is_null(l_num)), exp.not_(_is_null(r_num)))
    return exp.If(this=both, true=make(this=l_num, expression=r_num), false=as_text)


def _value_test(op: str, value: exp.Expr, pattern: str, fold: bool) -> exp.Expr:
    """One value against one ``Test`` value (already lower-cased when the test folds case)."""
    if op == "eq":
        return exp.EQ(this=value, expression=_s(pattern))
    if op == "regex":
        return exp.RegexpLike(this=value, expression=_s(("(?i)" if fold else "") + pattern))
    if op == "glob":
        return _like_parts(value, glob_parts(pattern))
    plain = list(pattern)
    parts = {"contains": ["**", *plain, "**"], "startswith": [*plain, "**"], "endswith": ["**", *plain]}[op]
    return _like_parts(value, parts)


def _like_parts(value: exp.Expr, parts: list[str], like: Any = exp.Like) -> exp.Expr:
    """``value`` LIKE a glob's parts (ir.plan.glob_parts): ``**`` any text, ``??`` one character, anything
    else itself (LIKE's own wildcards escaped)."""
    pattern = "".join(
        {"**": "%", "??": "_"}.get(p) or p.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") for p in parts
    )
    return exp.Escape(this=like(this=value, expression=_s(pattern)), expression=_s("\\"))


def _text_match(low: exp.Expr, pattern: str) -> exp.Expr:
    return exp.EQ(this=low, expression=_s(pattern)) if "*" not in pattern else _like(low, pattern)


def _like(value: exp.Expr, pattern: str, like: Any = exp.Like) -> exp.Expr:
    """``value`` matches a search pattern, where ``*`` is any text (LIKE, with its own wildcards escaped)."""
    return _like_parts(value, ["**" if c == "*" else c for c in pattern], like)


def _starts(text: exp.Expr, char: str) -> exp.Expr:
    """JSON text (never NULL-safe: NULL stays NULL) whose first character past whitespace is ``char``."""
    first = exp.Bracket(this=_fn("ltrim", text, _s(" \t\r\n")), expressions=[_int(1)], offset=1)
    return exp.EQ(this=first, expression=_s(char))


def _is_object(json_text: exp.Expr) -> exp.Expr:
    """Valid JSON text that is an object: it starts with ``{``."""
    return exp.Coalesce(this=_starts(json_text, "{"), expressions=[exp.false()])


def _text_array(*texts: str) -> exp.Expr:
    return exp.Array(expressions=[_s(t) for t in texts])


def _empty_json() -> exp.Expr:
    return exp.Cast(this=exp.Array(expressions=[]), to=JSON_LIST)


def _int(n: int) -> exp.Expr:
    return exp.Literal.number(n)


def _s(text: str) -> exp.Expr:
    return exp.Literal.string(text)


def _fn(name: str, *args: exp.Expr) -> exp.Expr:
    """A function call the dialects spell alike (DuckDB's JSON functions)."""
    return exp.Anonymous(this=name, expressions=list(args))


def _is_null(value: exp.Expr) -> exp.Expr:
    return exp.Is(this=value, expression=exp.Null())


def _empty() -> exp.Expr:
    return exp.Cast(this=exp.Array(expressions=[]), to=TEXT_LIST)


def _text_list(value: str) -> exp.Expr:
    return exp.Cast(this=exp.Array(expressions=[_s(value)]), to=TEXT_LIST)


def _is_empty(values: exp.Expr) -> exp.Expr:
    return exp.EQ(this=exp.Coalesce(this=exp.ArraySize(this=values), expressions=[_int(0)]), expression=_int(0))


def group_rows(plan: Plan, pipeline: Pipeline, groups: Iterable[Sequence[Any]]) -> Iterator[OutputRow]:
    """The rows of an aggregate plan from the query's groups (``k0..kn``, ``a0..am``), sorted by their BY
    values and made by the streaming engine's per-row steps from its own aggregate states."""
    assert plan.aggregate is not None
    width = len(plan.aggregate.by)
    functions = [AGGREGATES[a.func] for a in plan.aggregate.aggs]
    states = {tuple(g[:width]): [_state(f, s) for f, s in zip(functions, g[width:], strict=True)] for g in groups}
    for key in sorted(states):
        if (row := pipeline.row(key, states[key])) is not None:
            yield row


def event_rows(plan: Plan, geoip_db: str | None, lines: Iterable[tuple[str, str]]) -> Iterator[OutputRow]:
    """The rows of a plan without an aggregate (whole events) from the lines its query kept, as (source,
    line) in the order to give them: the streaming engine reads each source's lines, so both engines
    make an event's row with one piece of code."""
    evaluator = Evaluator(plan, use_prefilter=False, geoip_db=geoip_db)
    for source, group in itertools.groupby(lines, key=lambda found: found[0]):
        chunk = b"".join(line.encode() + b"\n" for _, line in group)
        yield from (evaluator.pipeline.output(r) for _, _, r in evaluator.records(chunk, origin=source))


def _state(function: type[Function], found: Any) -> Any:
    """An aggregate state from what the query found: a count, or the distinct values seen."""
    if function is Count:
        return int(found or 0)
    if issubclass(function, Values):
        return set(found or ())
    return function.update(function.initial(), list(found or ()))


def render(plan: Plan, engine: str) -> str:
    """The query ``engine`` (duckdb or spark) runs for ``plan``, over a view ``lines(source, ordinal, line)``."""
    return compile_plan(plan, exp.to_table("lines"), decode=engine == "spark").query.sql(engine, pretty=True)
