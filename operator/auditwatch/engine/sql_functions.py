"""The functions a compiled query calls that SQL engines lack, as Python: the streaming engine's own code.

Each engine registers the ones its query names (``Compiled.functions``) with the signature given here
(argument and return types as SQL types), so what they compute is what the streaming engine computes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from auditwatch.audit.decode import MalformedLine, decode_line, flattener, splunk_time
from auditwatch.engine.evaluate import add_metadata
from auditwatch.engine.match import value_test
from auditwatch.engine.pipeline import ctime, geo_lookup

Signature = tuple[Callable[..., Any], list[str], str]  # function, argument types, return type


def python_functions(names: set[str], geoip_db: str | None, decoded: list[str]) -> dict[str, Signature]:
    """The functions of ``names``; ``decoded``: the fields ``aw_decode`` gives, in order."""
    made: dict[str, Callable[[], Signature]] = {
        "aw_cidr": lambda: (_cidr, ["VARCHAR[]", "VARCHAR"], "BOOLEAN"),
        "aw_time": lambda: (_time, ["VARCHAR", "VARCHAR"], "VARCHAR"),
        "aw_ctime": lambda: (_ctime, ["VARCHAR[]", "VARCHAR"], "VARCHAR[]"),
        "aw_geo": lambda: (_geo(geoip_db), ["VARCHAR", "VARCHAR"], "VARCHAR"),
        "aw_decode": lambda: (event_decoder(decoded), ["VARCHAR", "VARCHAR"], "ARRAY<ARRAY<ARRAY<VARCHAR>>>"),
    }
    return {name: made[name]() for name in names}


def event_decoder(fields: list[str]) -> Callable[[str | None, str | None], list[list[list[str]]]]:
    """A line -> for each of its events, the values of ``fields`` in order ([] when absent): decoded,
    flattened and given Splunk's metadata as ``scan`` does; a malformed line has no events."""
    flatten, wanted = flattener(frozenset(fields)), set(fields)

    def decode(source: str | None, line: str | None) -> list[list[list[str]]]:
        try:
            events = decode_line((line or "").encode())
        except MalformedLine:
            return []
        out = []
        for event in events:
            record = flatten(event)
            add_metadata(record, event, source or "", wanted)
            if "_raw" in wanted:
                record["_raw"] = [line or ""] if len(events) == 1 else [orjson.dumps(event).decode()]
            out.append([record.get(f, []) for f in fields])
        return out

    return decode


_tests: dict[str, Callable[[str], bool]] = {}
_lookups: dict[str | None, Callable[[str], Any]] = {}


def _cidr(values: list[str] | None, network: str) -> bool:
    """Some value is an address in ``network``."""
    test = _tests.get(network) or _tests.setdefault(network, value_test(network))
    return any(map(test, values or ()))


def _ctime(values: list[str] | None, timeformat: str) -> list[str]:
    return [ctime(v, timeformat) for v in values or ()]


def _geo(geoip_db: str | None) -> Callable[[str | None, str], str | None]:
    """Opened here, where a database that cannot be read is an error, and again where the function runs
    (a Spark worker: the open database is no value to send it)."""
    _lookup(geoip_db)

    def geo(address: str | None, name: str) -> str | None:
        values = _lookup(geoip_db)(address).get(name) if address is not None else None
        return values[0] if values else None

    return geo


def _lookup(geoip_db: str | None) -> Callable[[str], Any]:
    """The process's open database (a module function: Spark sends it by name, never the database)."""
    return _lookups.get(geoip_db) or _lookups.setdefault(geoip_db, geo_lookup(geoip_db))


def _time(received: str | None, stage: str | None) -> str | None:
    """``_time`` from the JSON texts of an event's two timestamps."""
    stamps = {"requestReceivedTimestamp": received, "stageTimestamp": stage}
    return splunk_time({k: orjson.loads(v) for k, v in stamps.items() if v is not None})
