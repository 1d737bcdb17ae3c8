"""audit.k8s.io/v1 Events from JSON text, and their Splunk field view.

A line holds one Event, or an ``EventList`` (the webhook backend's batches; its items may lack
``kind``/``apiVersion``). Anything else is malformed: counted and skipped by the caller, never fatal.

Flattening follows Splunk's JSON extraction: nested keys join with ``.``, an array adds ``{}`` to its
key (``sourceIPs{}``, ``user.groups{}``, ``spec.containers{}.image``), keys that contain dots stay
whole, and every value becomes a string (``403`` -> ``"403"``, ``true`` -> ``"true"``). A field is a
list of values; several values make it multivalue. ``null``, ``{}`` and ``[]`` make no field.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import orjson

Record = dict[str, list[str]]


class MalformedLine(ValueError):
    """A line that is not an audit Event or EventList (bad JSON, truncated, wrong shape)."""


def decode_line(line: bytes) -> list[dict[str, Any]]:
    """The audit events in one line of text."""
    try:
        doc = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise MalformedLine(f"invalid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise MalformedLine(f"expected a JSON object, got {type(doc).__name__}")
    if doc.get("kind") == "EventList" or ("items" in doc and "auditID" not in doc):
        items = doc.get("items")
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise MalformedLine("EventList without a list of objects in 'items'")
        return items
    return [doc]


def flatten(event: dict[str, Any], only: frozenset[str] | None = None) -> Record:
    """Splunk's field view of one event; with ``only``, just those fields (skipping other subtrees)."""
    out: Record = {}
    _walk(event, "", out, None if only is None else _prefixes(only))
    return out


@lru_cache(maxsize=64)
def _prefixes(names: frozenset[str]) -> dict[str, bool]:
    """Every flattened key on the way to one of ``names`` -> whether it is one of them."""
    keep: dict[str, bool] = {}
    for name in names:
        for i, c in enumerate(name):
            if i and (c == "." or name.startswith("{}", i)):
                keep.setdefault(name[:i], False)
        keep[name] = True
    return keep


def _walk(value: Any, key: str, out: Record, keep: dict[str, bool] | None) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            sub = f"{key}.{k}" if key else k
            if keep is None or sub in keep:
                _walk(v, sub, out, keep)
    elif isinstance(value, list):
        sub = key + "{}"
        if keep is None or sub in keep:
            for v in value:
                _walk(v, sub, out, keep)
    elif value is not None and (keep is None or keep[key]):
        text = value if isinstance(value, str) else scalar(value)
        out.setdefault(key, []).append(text)


def scalar(value: bool | int | float) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    return str(value)
