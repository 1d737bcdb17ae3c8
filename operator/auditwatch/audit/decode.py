"""audit.k8s.io/v1 Events from JSON text, and their Splunk field view.

A line holds one Event, or an ``EventList`` (the webhook backend's batches; its items may lack
``kind``/``apiVersion``). Anything else is malformed: counted and skipped by the caller, never fatal.

Flattening follows Splunk's JSON extraction: nested keys join with ``.``, an array adds ``{}`` to its
key (``sourceIPs{}``, ``user.groups{}``, ``spec.containers{}.image``), keys that contain dots stay
whole, and every value becomes a string (``403`` -> ``"403"``, ``true`` -> ``"true"``). A field is a
list of values; several values make it multivalue. ``null``, ``{}`` and ``[]`` make no field.
"""

from __future__ import annotations

from datetime import datetime
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
    """Splunk's field view of one event; with ``only``, just those fields (reading nothing else)."""
    out: Record = {}
    if only is None:
        _walk(event, "", out)
    else:
        _walk_trie(event, _trie(only), out)
    return out


def _walk(value: Any, key: str, out: Record) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _walk(v, f"{key}.{k}" if key else k, out)
    elif isinstance(value, list):
        for v in value:
            _walk(v, f"{key}{{}}", out)
    elif value is not None:
        out.setdefault(key, []).append(value if isinstance(value, str) else scalar(value))


class _Node:
    """A trie of JSON paths: object keys, ``{}`` for array items, and the field a path ends in."""

    __slots__ = ("children", "field", "items")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.items: _Node | None = None
        self.field: str | None = None


@lru_cache(maxsize=64)
def _trie(names: frozenset[str]) -> _Node:
    """Every way each name can be read: ``a.b`` is key ``a`` then ``b``, or the one key ``a.b``."""
    root = _Node()
    for name in names:
        _insert(root, name, name)
    return root


def _insert(node: _Node, rest: str, name: str) -> None:
    if not rest:
        node.field = name
        return
    if rest.startswith("{}"):
        after = rest[2:]
        if after and not after.startswith((".", "{}")):
            return  # flattening never makes such a name: the field can never exist
        node.items = node.items or _Node()
        _insert(node.items, after.removeprefix("."), name)
        return
    cuts = [i for i, c in enumerate(rest) if i and (c == "." or rest.startswith("{}", i))] + [len(rest)]
    for i in cuts:
        child = node.children.setdefault(rest[:i], _Node())
        _insert(child, rest[i + 1 :] if rest[i : i + 1] == "." else rest[i:], name)


def _walk_trie(value: Any, node: _Node, out: Record) -> None:
    if isinstance(value, dict):
        for key, child in node.children.items():  # the few keys wanted, not every key of the event
            v = value.get(key)
            if v is not None:
                _walk_trie(v, child, out)
    elif isinstance(value, list):
        if node.items is not None:
            for v in value:
                _walk_trie(v, node.items, out)
    elif node.field is not None and value is not None:
        out.setdefault(node.field, []).append(value if isinstance(value, str) else scalar(value))


def epoch_seconds(stamp: str) -> float | None:
    """An audit timestamp (RFC 3339, ``...Z``) in seconds since the epoch, or None when it is not one."""
    try:
        return datetime.fromisoformat(stamp).timestamp()
    except ValueError:
        return None


def scalar(value: bool | int | float) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    return str(value)
