"""Audit events in what users export them in, besides one per line: found by content, unwrapped to lines.

A file of lines is audit JSON lines; or lines with a prefix before each Event, taken off:
``oc adm node-logs`` output (a node name) or a CloudWatch Logs export task's objects (the event's
timestamp, as ``aws logs create-export-task`` writes ``<prefix>/<task>/<stream>/000000.gz``); or
something else, which ``line_shape`` describes so that ``scan`` can say so.

``scan`` reads a file as audit JSON lines unless its first line is not a whole audit Event or EventList
but starts a JSON value: then the file is a *document* (pretty-printed JSON, an array, concatenated
objects) and is read whole, every value in it unwrapped:

- an audit Event; an EventList (its items), as ``kubectl get --raw`` or the webhook backend give them;
- CloudWatch Logs, as EKS users have its events at hand: the output of ``aws logs filter-log-events``
  and ``get-log-events`` (``{"events": [{"message": ...}]}``); subscription-filter payloads
  (``{"messageType": "DATA_MESSAGE", "logEvents": [...]}``, gzip-compressed, and concatenated as
  Firehose writes them to S3); Kinesis and Firehose records carrying them base64-encoded
  (``{"Records": [{"kinesis": {"data": ...}}]}``, ``{"records": [{"data": ...}]}``);
- GKE: Cloud Logging audit entries (``protoPayload`` of type AuditLog; audit/gke.py maps them);
- AKS: diagnostic settings records (``{"records": [{"category": "kube-audit", "properties": {"log": ...}}]}``
  from Event Hubs; one record a line in a storage account's blobs: audit/azure.py);
- a list of any of these.

A message is one audit Event as EKS writes it; one ending in ``[Truncated...]`` (CloudWatch cuts events
over its size limit) stays a malformed line, counted and named.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import json
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from auditwatch.audit.azure import record_log
from auditwatch.audit.gke import audit_event as gke_audit_event
from auditwatch.audit.gke import is_gke_entry

BOM = b"\xef\xbb\xbf"
AUDIT_KINDS = ("Event", "EventList")
AUDIT = "audit"
# What comes before each Event on a line, by what writes it: the prefix, and what the file is read as.
PREFIXES = {
    # `oc adm node-logs --role=master --path=kube-apiserver/audit.log`: a node name, a space, an Event
    "oc adm node-logs output": re.compile(rb"^[A-Za-z0-9][-A-Za-z0-9.]{0,252} (?=\{)", re.MULTILINE),
    # a CloudWatch Logs export task: the log event's timestamp (RFC 3339, UTC), a space, its message
    "a CloudWatch Logs export": re.compile(rb"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z (?=\{)", re.MULTILINE),
}


def is_document(head: bytes) -> bool:
    """Whether a file starting with ``head`` must be read whole and unwrapped (not one event per line)."""
    text = head.removeprefix(BOM).lstrip()
    if not text.startswith((b"{", b"[")):
        return False
    first = text.split(b"\n", 1)[0]
    try:
        value = orjson.loads(first)
    except orjson.JSONDecodeError:
        return True  # a value over several lines, or several values on the first
    return not _is_audit(value)


def line_shape(head: bytes) -> str:
    """What the lines of a file starting with ``head`` are: AUDIT; a key of PREFIXES (audit Events after
    that prefix); or, when they are JSON but no audit Event, what they look like; "" when nothing is known."""
    audit = 0
    prefixed: dict[str, int] = {}
    other: dict[str, Any] | None = None
    for line in head.removeprefix(BOM).split(b"\n")[:-1][:20]:
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError:
            for name, prefix in PREFIXES.items():
                if (match := prefix.match(line)) and _is_audit(_loads(line[match.end() :])):
                    prefixed[name] = prefixed.get(name, 0) + 1
            continue
        audit += _is_audit(value)
        other = other or (value if isinstance(value, dict) else None)
    if audit:
        return AUDIT
    if prefixed:
        return max(prefixed, key=prefixed.__getitem__)
    if other is not None:
        keys = ", ".join(sorted(other)[:6])
        return f"its lines are JSON but none is an audit Event (they have keys such as {keys})"
    return ""


def _loads(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return None


@dataclass
class Unwrapped:
    """What a document held: audit JSON lines, and what else was found in it."""

    lines: list[bytes] = field(default_factory=list)
    shapes: set[str] = field(default_factory=set)  # the envelopes met: "CloudWatch subscription payload"...
    other: int = 0  # values that are no audit event and no envelope known here
    other_keys: tuple[str, ...] = ()  # the first such object's keys, to say what the file holds

    def data(self) -> bytes:
        return b"".join(line + b"\n" for line in self.lines)


def unwrap(data: bytes) -> Unwrapped:
    """The audit events in a document; raises ValueError when it is not JSON."""
    found = Unwrapped()
    for value in _values(data.removeprefix(BOM)):
        _unwrap(value, found)
    return found


def _values(data: bytes) -> Iterator[Any]:
    """The JSON values in ``data``, one after another (whitespace or nothing between them)."""
    text = data.decode("utf-8")
    decoder = json.JSONDecoder()
    at = 0
    while True:
        while at < len(text) and text[at].isspace():
            at += 1
        if at == len(text):
            return
        value, at = decoder.raw_decode(text, at)
        yield value


def _is_audit(value: Any) -> bool:
    return isinstance(value, dict) and (value.get("kind") in AUDIT_KINDS or "auditID" in value)


def _unwrap(value: Any, found: Unwrapped) -> None:
    if isinstance(value, list):
        for item in value:
            _unwrap(item, found)
    elif isinstance(value, dict) and value.get("kind") == "EventList" and isinstance(value.get("items"), list):
        for item in value["items"]:
            found.lines.append(orjson.dumps(item))  # items may lack kind: they are Events by where they are
    elif _is_audit(value):
        found.lines.append(orjson.dumps(value))
    elif is_gke_entry(value):
        found.shapes.add("GKE audit log entries")
        found.lines.append(orjson.dumps(gke_audit_event(value)))
    elif isinstance(value, dict) and isinstance(value.get("events"), list):
        found.shapes.add("CloudWatch Logs events (aws logs filter-log-events / get-log-events)")
        _messages(value["events"], found)
    elif isinstance(value, dict) and "messageType" in value:
        found.shapes.add("CloudWatch Logs subscription payloads")
        if value["messageType"] == "DATA_MESSAGE":  # CONTROL_MESSAGE: CloudWatch checking the destination
            _messages(value.get("logEvents") or [], found)
    elif isinstance(value, dict) and isinstance(value.get("Records"), list):
        found.shapes.add("Kinesis records")
        for record in value["Records"]:
            _payload((record.get("kinesis") or {}).get("data"), found)
    elif (log := record_log(value)) is not None:  # AKS: a storage account's blobs, one record a line
        found.shapes.add("Azure diagnostic records")
        found.lines.append(message_line(log)[:-1])
    elif isinstance(value, dict) and isinstance(value.get("records"), list):
        for record in value["records"]:
            if (log := record_log(record)) is not None:  # AKS: diagnostic settings to Event Hubs
                found.shapes.add("Azure diagnostic records")
                found.lines.append(message_line(log)[:-1])
            elif isinstance(record, dict) and "data" in record:
                found.shapes.add("Firehose records")
                _payload(record["data"], found)
            else:
                found.other += 1
    else:
        found.other += 1
        if isinstance(value, dict) and not found.other_keys:
            found.other_keys = tuple(sorted(value)[:6])


def _messages(events: list[Any], found: Unwrapped) -> None:
    for event in events:
        message = event.get("message") if isinstance(event, dict) else None
        if isinstance(message, str):
            found.lines.append(message_line(message)[:-1])
        else:
            found.other += 1


def message_line(message: str) -> bytes:
    """A CloudWatch message (one audit Event as EKS writes it) as one line, newline included."""
    return message.rstrip("\r\n").replace("\n", " ").encode() + b"\n"


def _payload(data: Any, found: Unwrapped) -> None:
    """A base64 record: a gzip-compressed subscription payload (or plain JSON)."""
    try:
        raw = base64.b64decode(data or "", validate=True)
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        for value in _values(raw):
            _unwrap(value, found)
    except (binascii.Error, OSError, EOFError, zlib.error, ValueError):
        found.other += 1
