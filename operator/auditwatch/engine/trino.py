"""The SQL executor on Trino (and Athena, whose engine is Trino's): a plan's query over a table of raw
audit-log lines, as the archive already is (an Athena table over the S3 prefix, a Hive table over files).

The table has a column ``line``: one audit-log line each (Athena: ``ROW FORMAT ... LINES TERMINATED BY``
over the objects, see the README); ``"$path"`` (the object a line is in) stands for Splunk's ``source``.
The query is engine/sql.py's, with what Trino spells its own way: each line parsed once (``json_parse``)
into the JSON type; a field's values by ``json_extract`` over each run of keys (``$["key"]``) and a
``CAST(... AS ARRAY(JSON))`` at each ``{}``; scalars as text by ``CAST(... AS VARCHAR)``; ``_time`` from
``from_iso8601_timestamp_nanos``; CIDR values by ``contains(network, IPADDRESS)``; a row per BY value by
``CROSS JOIN UNNEST``. Trino runs no Python, so what needs a function of ours before ``stats`` (``convert
ctime``, ``iplocation``) is refused by name; after ``stats`` it runs here, on the rows, as for every engine.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterator
from typing import Any, cast

from sqlglot import exp

from auditwatch.audit.decode import MalformedLine, decode_line, json_paths, pointer_keys, splunk_time
from auditwatch.engine.pipeline import EngineError, OutputRow, Pipeline
from auditwatch.engine.sql import (
    JSON_LIST,
    TEXT,
    Compiler,
    _empty,
    _empty_json,
    _fn,
    _int,
    _is_null,
    _s,
    event_rows,
    group_rows,
)
from auditwatch.errors import AuditwatchError
from auditwatch.ir.plan import Plan

IPADDRESS = exp.DataType.build("ipaddress", dialect="trino")
FALSY = ("null", "false", "0", "0.0", '""', "[]", "{}")  # JSON values Python's `or` passes over
JAVA_EXPONENT = r"^(-?)(\d)(?:\.(\d+))?E(-?\d+)$"  # sign, first digit, the others, exponent
MAX_ARGUMENTS = 127  # Trino's limit is 254 per call
PATH = "$path"  # the hidden column of Hive and Athena tables: the file or object a line is in
NO_FUNCTION = {"aw_ctime": "convert ctime", "aw_geo": "iplocation"}


def render(plan: Plan, table: str, source_column: str = PATH) -> str:
    """The Trino (and Athena) query of ``plan`` over ``table`` (a column ``line``)."""
    return TrinoCompiler(plan, source_column).query(exp.to_table(table)).sql("trino", pretty=True)


class TrinoCompiler(Compiler):
    def __init__(self, plan: Plan, source_column: str = PATH) -> None:
        super().__init__(plan, decode=False)
        self.source_column = source_column
        self.sourced = False  # whether `source` is read: then the source column is

    def query(self, lines: exp.Expr) -> exp.Select:
        events = self.plan.aggregate is None  # rows are events: the lines that have one passing, numbered
        line, parsed_line = exp.column("line"), exp.column("j")
        env, where = self._event_steps(exp.column("doc"))
        self.sourced = self.sourced or events
        path = exp.column(exp.to_identifier(self.source_column, quoted=True))
        source = [exp.alias_(path, "source")] if self.sourced else []
        keep = ["source"] if self.sourced else []
        if events:  # a number per line, that identical lines stay apart (a table keeps no line order)
            source.append(exp.alias_(exp.Window(this=exp.RowNumber()), "ordinal"))
            keep += ["ordinal", "line"]
        parsed = (
            exp.select(*source, "line", exp.alias_(_fn("TRY", _fn("json_parse", line)), "j"))
            .from_(lines, copy=False)
            .where(self._line_test(line), copy=False)
        )
        docs, raws = self._documents(parsed_line, line)
        unnest = exp.Unnest(
            expressions=[docs, raws],
            alias=exp.TableAlias(
                this=exp.to_identifier("e"), columns=[exp.to_identifier("doc"), exp.to_identifier("raw")]
            ),
        )
        columns: list[str | exp.Expr] = [*keep, "doc", "raw"]
        if self.timed:
            columns.append(exp.alias_(self._time(exp.column("doc")), "t"))
        objects = (
            exp.select(*columns)
            .from_(parsed.subquery("parsed", copy=False), copy=False)
            .join(unnest, join_type="CROSS", copy=False)
            .where(exp.and_(exp.not_(_is_null(parsed_line)), _like_start(_fn("json_format", exp.column("doc")), "{")))
        )
        return self._rows(self._with_fields(objects), env, where)

    def _documents(self, parsed: exp.Expr, line: exp.Expr) -> tuple[exp.Expr, exp.Expr]:
        """The events of a line and their raw text, as audit/decode.decode_line tells them: an EventList's
        items when all are objects (else none), or the line's document (the raw text: the line)."""
        kind = _fn("json_extract_scalar", parsed, _s("$.kind"))
        items = _fn("json_extract", parsed, _s("$.items"))
        is_list = exp.or_(
            exp.EQ(this=kind, expression=_s("EventList")),
            exp.and_(exp.not_(_is_null(items)), _is_null(_fn("json_extract", parsed, _s("$.auditID")))),
        )
        listed = exp.TryCast(this=items, to=JSON_LIST)
        objects = _fn("all_match", listed, self._lambda(lambda x: _like_start(_fn("json_format", x), "{")))
        empty = _empty_json()
        docs = exp.If(
            this=is_list, true=exp.If(this=objects, true=listed, false=empty), false=exp.Array(expressions=[parsed])
        )
        raw_items = self._transform(listed, lambda x: _fn("json_format", x))
        empty_text = _empty()
        raws = exp.If(
            this=is_list,
            true=exp.If(this=objects, true=raw_items, false=empty_text),
            false=exp.Array(expressions=[line]),
        )
        return docs, raws

    def _field(self, doc: exp.Expr, name: str) -> exp.Expr:
        if name == "source":
            self.sourced = True
        return super()._field(doc, name)

    def _values(self, doc: exp.Expr, name: str) -> exp.Expr:
        """As the base's, with the JSON of every path gathered first and made text once: each lambda
        costs Trino a filter, and a name with many dots stands for many paths (192 for a pod's images)."""
        lists: list[exp.Expr] = []
        plain: list[exp.Expr] = []  # consecutive paths without {}: one ARRAY[...] (at most 127 elements)
        for path in json_paths(name):
            if None in path:
                lists += [exp.Array(expressions=plain)] if plain else []
                plain = []
                lists.append(self._array_items(doc, path))
            else:
                plain.append(_extract(doc, cast(tuple[str, ...], path)))
                if len(plain) == MAX_ARGUMENTS:
                    lists.append(exp.Array(expressions=plain))
                    plain = []
        lists += [exp.Array(expressions=plain)] if plain else []
        if not lists:
            return _empty()
        texts = self._transform(self._concat(lists), _scalar_text)
        return self._filter(texts, lambda v: exp.not_(_is_null(v)))

    def _pointer_text(self, doc: exp.Expr, pointer: str) -> exp.Expr:
        path = "$" + "".join(f"[{k}]" if k.isdigit() else f'["{k}"]' for k in pointer_keys(pointer))
        found = _fn("json_extract", doc, _s(path))
        formatted = _fn("json_format", found)
        return exp.Case(
            ifs=[
                exp.If(this=exp.or_(_is_null(found), exp.EQ(this=formatted, expression=_s("null"))), true=_empty()),
                exp.If(this=_like_start(formatted, '"'), true=exp.Array(expressions=[exp.Cast(this=found, to=TEXT)])),
            ],
            default=exp.Array(expressions=[formatted]),
        )

    def _array_items(self, doc: exp.Expr, path: tuple[str | None, ...]) -> exp.Expr:
        """The JSON values at a path with ``{}``: each array's items (none for what is no array)."""
        runs: list[tuple[str, ...]] = [()]
        for key in path:
            if key is None:
                runs.append(())
            else:
                runs[-1] += (key,)
        values: exp.Expr = exp.Array(expressions=[_extract(doc, runs[0])])
        for run in runs[1:]:
            values = exp.Flatten(
                this=self._transform(
                    values, lambda x: exp.Coalesce(this=exp.TryCast(this=x, to=JSON_LIST), expressions=[_empty_json()])
                )
            )
            if run:
                values = self._transform(values, lambda x, run=run: _extract(x, run))  # type: ignore[misc]
        return values

    def _time(self, doc: exp.Expr) -> exp.Expr:
        received, stage = (_extract(doc, (key,)) for key in ("requestReceivedTimestamp", "stageTimestamp"))
        falsy = exp.or_(
            _is_null(received), exp.In(this=_fn("json_format", received), expressions=[_s(v) for v in FALSY])
        )
        chosen = exp.If(this=falsy, true=stage, false=received)
        text = exp.If(this=_like_start(_fn("json_format", chosen), '"'), true=exp.Cast(this=chosen, to=TEXT))
        seconds = _fn("to_unixtime", _fn("TRY", _fn("from_iso8601_timestamp_nanos", text)))
        return exp.If(this=_is_null(seconds), true=exp.Null(), false=_fn("format", _s("%.6f"), seconds))

    def _raw_text(self, doc: exp.Expr) -> exp.Expr:
        return exp.column("raw")

    def _has(self, text: exp.Expr, literal: str) -> exp.Expr:
        return exp.GT(this=_fn("strpos", text, _s(literal)), expression=_int(0))

    def _in_network(self, values: exp.Expr, network: str) -> exp.Expr:
        address = lambda v: _fn("TRY", exp.Cast(this=v, to=IPADDRESS))  # noqa: E731
        return self._any(
            values, lambda v: exp.Coalesce(this=_fn("contains", _s(network), address(v)), expressions=[exp.false()])
        )

    def _concat(self, lists: list[exp.Expr]) -> exp.Expr:
        """Lists joined, as nested concat() calls: Trino takes at most 254 arguments in one."""
        join = super()._concat
        while len(lists) > MAX_ARGUMENTS:
            lists = [join(lists[i : i + MAX_ARGUMENTS]) for i in range(0, len(lists), MAX_ARGUMENTS)]
        return join(lists)

    def _first(self, values: exp.Expr) -> exp.Expr:
        return _fn("element_at", values, _int(1))

    def _each(self, events: exp.Select, i: int) -> exp.Select:
        unnest = exp.Unnest(
            expressions=[exp.column(f"b{i}")],
            alias=exp.TableAlias(this=exp.to_identifier(f"u{i}"), columns=[exp.to_identifier(f"k{i}")]),
        )
        return exp.select("*").from_(events.subquery(f"by{i}", copy=False)).join(unnest, join_type="CROSS")

    def _call(self, name: str, *args: exp.Expr) -> exp.Expr:
        command = NO_FUNCTION.get(name, name)
        raise EngineError(f"trino: {command} before stats needs a function Trino does not have: put it after stats, "
                          "or use --engine duckdb")  # fmt: skip


def _line_time(line: str) -> str:
    """The ``_time`` of a line's first event (or ""), that a source's events come in time order."""
    try:
        events = decode_line(line.encode())
    except MalformedLine:
        return ""
    return (splunk_time(events[0]) or "").rjust(24, "0") if events else ""


def _extract(json: exp.Expr, keys: tuple[str, ...]) -> exp.Expr:
    """The JSON at ``keys`` below ``json`` (NULL when missing): Trino's JSON path, each key bracketed."""
    if not keys:
        return json
    return _fn("json_extract", json, _s("$" + "".join(f'["{k}"]' for k in keys)))


def _scalar_text(value: exp.Expr) -> exp.Expr:
    """A JSON scalar as the streaming engine writes it (a string as it is, a number as Python's ``str``
    does); NULL for what is no scalar (an object, an array, null)."""
    text = _fn("TRY", exp.Cast(this=value, to=TEXT))
    java = _fn("regexp_like", text, _s(JAVA_EXPONENT))
    number = exp.not_(_like_start(_fn("json_format", value), '"'))
    return exp.If(this=exp.and_(java, number), true=_python_float(text), false=text)


def _python_float(java: exp.Expr) -> exp.Expr:
    """Java's ``Double.toString`` in scientific notation (``1.25E-5``; the same shortest digits as Python
    since JDK 19) written as Python's ``repr``: positional for exponents -4 to 15, else ``1.25e-05``."""
    sign, lead, fraction, exponent = (_fn("regexp_extract", java, _s(JAVA_EXPONENT), _int(i)) for i in (1, 2, 3, 4))
    fraction = _fn("regexp_replace", fraction, _s("0+$"), _s(""))
    digits = exp.DPipe(this=lead, expression=fraction)
    e = exp.Cast(this=exponent, to=exp.DataType.build("bigint"))
    size = _fn("length", digits)
    below_one = exp.DPipe(
        this=_s("0."),
        expression=_fn("lpad", digits, exp.Sub(this=size, expression=exp.Sub(this=e, expression=_int(1))), _s("0")),
    )
    whole = _fn(
        "rpad",
        _fn("substr", digits, _int(1), exp.Add(this=e, expression=_int(1))),
        exp.Add(this=e, expression=_int(1)),
        _s("0"),
    )
    rest = exp.Coalesce(
        this=_fn("nullif", _fn("substr", digits, exp.Add(this=e, expression=_int(2))), _s("")), expressions=[_s("0")]
    )
    positional = exp.If(
        this=exp.LT(this=e, expression=_int(0)),
        true=below_one,
        false=exp.DPipe(this=exp.DPipe(this=whole, expression=_s(".")), expression=rest),
    )
    mantissa = exp.If(
        this=exp.EQ(this=fraction, expression=_s("")),
        true=lead,
        false=exp.DPipe(this=exp.DPipe(this=lead, expression=_s(".")), expression=fraction),
    )
    power = exp.DPipe(
        this=exp.If(this=exp.LT(this=e, expression=_int(0)), true=_s("e-"), false=_s("e+")),
        expression=_fn("format", _s("%02d"), _fn("abs", e)),  # lpad would cut 300 to 30
    )
    scientific = exp.DPipe(this=mantissa, expression=power)
    in_range = exp.and_(exp.GTE(this=e, expression=_int(-4)), exp.LT(this=e, expression=_int(16)))
    return exp.DPipe(this=sign, expression=exp.If(this=in_range, true=positional, false=scientific))


def _like_start(text: exp.Expr, char: str) -> exp.Expr:
    return exp.EQ(this=_fn("substr", text, _int(1), _int(1)), expression=_s(char))


class TrinoError(AuditwatchError):
    """What the Trino server (or the way to it) refused: no server, no table, no permission."""


class Trino:
    """A Trino server (``http[s]://[user@]host:port``, the ``trino`` client), running a hunt over a table."""

    def __init__(self, url: str) -> None:
        import trino  # here: only a Trino hunt needs the client

        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise TrinoError(f"trino: {url}: expected http[s]://[USER@]HOST:PORT")
        self.url = url
        self.connection = trino.dbapi.connect(
            host=parts.hostname,
            port=parts.port or (443 if parts.scheme == "https" else 8080),
            user=parts.username or "auditwatch",
            http_scheme=parts.scheme,
        )

    def rows(
        self, plan: Plan, table: str, geoip_db: str | None = None, source_column: str = PATH
    ) -> Iterator[OutputRow]:
        """The plan's rows over ``table``, as the streaming engine gives them."""
        query = TrinoCompiler(plan, source_column).query(exp.to_table(table)).sql("trino")
        cursor: Any = self.connection.cursor()
        try:
            cursor.execute(query)
            found = cursor.fetchall()
        except Exception as exc:  # the client's errors name Trino's: a missing table, no server
            raise TrinoError(f"trino: {self.url}: {getattr(exc, 'message', None) or exc}") from None
        if plan.aggregate is None:  # a table keeps no line order: each source's events in time order
            ordered = sorted((row[0], _line_time(row[2]), row[2]) for row in found)
            yield from event_rows(plan, geoip_db, ((source, line) for source, _, line in ordered))
            return
        yield from group_rows(plan, Pipeline(plan, geoip_db), (tuple(row) for row in found))
