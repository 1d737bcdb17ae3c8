"""audit.k8s.io/v1 Events from JSON text, and their Splunk field view.

A line holds one Event, or an ``EventList`` (the webhook backend's batches; its items may lack
``kind``/``apiVersion``). Anything else is malformed: counted and skipped by the caller, never fatal.

Flattening follows Splunk's JSON extraction: nested keys join with ``.``, an array adds ``{}`` to its
key (``sourceIPs{}``, ``user.groups{}``, ``spec.containers{}.image``), keys that contain dots stay
whole, and every value becomes a string (``403`` -> ``"403"``, ``true`` -> ``"true"``). A field is a
list of values; several values make it multivalue. ``null``, ``{}`` and ``[]`` make no field.

Two kinds of name read what flattening cannot (the Falco front end's fields need them): a JSON pointer
(RFC 6901, ``/requestObject/spec/tls``, ``/requestObject/ephemeralContainers/0/name``) is the one value
there, a string as itself and anything else as compact JSON text (``null``: no value); and
``requestURI?NAME`` is the first value of the query parameter NAME of the request's URI.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable
from datetime import datetime
from functools import lru_cache
from typing import Any, cast

import orjson

from auditwatch.errors import AuditwatchError

Record = dict[str, list[str]]


class MalformedLine(AuditwatchError, ValueError):
    """A line that is not an audit Event or EventList (bad JSON, truncated, wrong shape)."""


def decode_line(line: bytes | memoryview) -> list[dict[str, Any]]:
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
    return flattener(only)(event)


def flattener(
    only: frozenset[str] | None = None, also: frozenset[str] = frozenset()
) -> Callable[[dict[str, Any]], Record]:
    """``flatten`` with ``only`` bound, for a caller that flattens many events; with every field (``only``
    None), ``also`` names the JSON pointers and query parameters wanted besides."""
    names = also if only is None else only
    derived = [(name, deriver(name)) for name in sorted(names) if is_derived(name)]
    extract = _flatten_all if only is None else _extractor(only.difference(name for name, _ in derived))
    if not derived:
        return extract

    def with_derived(event: dict[str, Any]) -> Record:
        out = extract(event)
        for name, derive in derived:
            if (value := derive(event)) is not None:
                out[name] = [value]
        return out

    return with_derived


QUERY_PARAM = "requestURI?"


def is_derived(name: str) -> bool:
    """A JSON pointer or a query parameter, not a flattened name."""
    return name.startswith(("/", QUERY_PARAM))


def deriver(name: str) -> Callable[[dict[str, Any]], str | None]:
    """The value of a JSON pointer or query parameter name in an event, or None."""
    if name.startswith(QUERY_PARAM):
        param = name[len(QUERY_PARAM) :]

        def query_param(event: dict[str, Any]) -> str | None:
            uri = event.get("requestURI")
            found = urllib.parse.parse_qs(urllib.parse.urlsplit(uri).query).get(param) if isinstance(uri, str) else None
            return found[0] if found else None

        return query_param
    keys = pointer_keys(name)

    def at_pointer(event: dict[str, Any]) -> str | None:
        value: Any = event
        for key in keys:
            if isinstance(value, dict):
                value = value.get(key)
            elif isinstance(value, list) and key.isdigit() and int(key) < len(value):
                value = value[int(key)]
            else:
                return None
        if value is None:
            return None
        return value if isinstance(value, str) else orjson.dumps(value).decode()

    return at_pointer


def pointer_keys(pointer: str) -> list[str]:
    """The keys of a JSON pointer (``~1`` is ``/``, ``~0`` is ``~``)."""
    return [k.replace("~1", "/").replace("~0", "~") for k in pointer.split("/")[1:]]


def _flatten_all(event: dict[str, Any]) -> Record:
    out: Record = {}
    _walk(event, "", out)
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


def _trie(names: frozenset[str]) -> _Node:
    """Every way each name can be read: ``a.b`` is key ``a`` then ``b``, or the one key ``a.b``."""
    root = _Node()
    for name in names:
        _insert(root, name, name)
    return root


def json_paths(name: str) -> list[tuple[str | None, ...]]:
    """Every JSON path a flattened field name can stand for, as the trie reads it: object keys, and None
    for an array's items (``a.b{}``: keys ``a``, ``b``, items; or the key ``a.b``, items)."""
    found: list[tuple[str | None, ...]] = []

    def walk(node: _Node, path: tuple[str | None, ...]) -> None:
        if node.field is not None:
            found.append(path)
        for key, child in node.children.items():
            walk(child, (*path, key))
        if node.items is not None:
            walk(node.items, (*path, None))

    walk(_trie(frozenset([name])), ())
    return found


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


@lru_cache(maxsize=64)
def _extractor(names: frozenset[str]) -> Callable[[Any], Record]:
    """``flatten(event, names)`` as one generated function: the trie's walk unrolled into nested
    ``if``s and ``for``s, with no call per value (three times faster than walking the trie)."""
    lines = ["def extract(v0):", "    out = {}"]
    _emit(_trie(names), 0, 1, lines)
    lines.append("    return out")
    namespace: dict[str, Any] = {"scalar": scalar}
    exec(compile("\n".join(lines), f"<flatten {sorted(names)}>", "exec"), namespace)
    return cast(Callable[[Any], Record], namespace["extract"])


def _emit(node: _Node, depth: int, indent: int, lines: list[str]) -> None:
    """The code taking value ``v<depth>`` (never None) through ``node``."""
    pad, v, w = "    " * indent, f"v{depth}", f"v{depth + 1}"
    if node.children:
        lines.append(f"{pad}if isinstance({v}, dict):")
        for key, child in node.children.items():
            lines += [f"{pad}    {w} = {v}.get({key!r})", f"{pad}    if {w} is not None:"]
            _emit(child, depth + 1, indent + 2, lines)
    if node.items is not None:
        lines += [f"{pad}if isinstance({v}, list):", f"{pad}    for {w} in {v}:", f"{pad}        if {w} is not None:"]
        _emit(node.items, depth + 1, indent + 3, lines)
    if node.field is not None:
        field = repr(node.field)
        lines += [
            f"{pad}if {v}.__class__ is str or not isinstance({v}, (dict, list)):",
            f"{pad}    {w} = {v} if {v}.__class__ is str else scalar({v})",
            f"{pad}    if {field} in out:",
            f"{pad}        out[{field}].append({w})",
            f"{pad}    else:",
            f"{pad}        out[{field}] = [{w}]",
        ]
    if not (node.children or node.items is not None or node.field is not None):
        lines.append(f"{pad}pass")


def splunk_time(event: dict[str, Any]) -> str | None:
    """Splunk's ``_time`` of an event: epoch seconds of the request (received, else the stage's time)."""
    stamp = event.get("requestReceivedTimestamp") or event.get("stageTimestamp")
    seconds = epoch_seconds(stamp) if isinstance(stamp, str) else None
    return None if seconds is None else f"{seconds:.6f}"


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
