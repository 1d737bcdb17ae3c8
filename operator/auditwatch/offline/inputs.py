"""What ``auditwatch scan`` reads, as chunks of audit JSON lines: files and CloudWatch log groups.

- A file (plain, gzip, or ``-`` for stdin) is audit JSON lines, read in chunks, unless it is a JSON
  document (pretty-printed, an array, CloudWatch exports...: audit/envelopes.py), read whole and unwrapped.
- ``cloudwatch://REGION/LOG_GROUP?since=24h`` reads a log group directly (``until``: an end, default
  now; ``prefix``: the streams, default ``kube-apiserver-audit``), a hunt without a cluster. The log
  group's name is the URL's path, which starts with ``/`` as EKS's do:
  ``cloudwatch://us-west-2/aws/eks/prod/cluster`` reads ``/aws/eks/prod/cluster``.
- ``azblob://ACCOUNT/CONTAINER/PREFIX?since=24h`` reads an AKS diagnostic archive's hourly blobs
  (``until``: an end, default now; ``AZURE_STORAGE_CONNECTION_STRING``, when set, names the endpoint).
- ``eventhub://NAMESPACE/HUB?since=24h`` reads what an event hub retains of that range (``until``: an end,
  default now) from every partition, without a consumer group: nothing is taken from the operator.
- ``pubsub://PROJECT/SUBSCRIPTION?drain=true`` pulls a subscription until it has nothing more to give
  (none for ``wait``, default 5s), acknowledging each batch once it is evaluated: reading it takes the
  messages away from whoever else reads it, so ``drain=true`` must say that is meant.
"""

from __future__ import annotations

import asyncio
import io
import time
import urllib.parse
from collections.abc import AsyncGenerator, Iterator
from dataclasses import dataclass
from typing import BinaryIO, TextIO, TypeVar, cast

import orjson

from auditwatch.audit.chunks import iter_chunks, open_log
from auditwatch.audit.envelopes import (
    AUDIT,
    BOM,
    PREFIXES,
    is_document,
    line_shape,
    message_line,
    unwrap,
)
from auditwatch.errors import AuditwatchError
from auditwatch.times import parse_duration, point_in_time

T = TypeVar("T")
HEAD = 64 << 10  # bytes looked at to tell lines from a document
CLOUDWATCH = "cloudwatch://"
PUBSUB = "pubsub://"
AZBLOB = "azblob://"
EVENTHUB = "eventhub://"
SERVICES = (CLOUDWATCH, PUBSUB, AZBLOB, EVENTHUB)  # addresses read from a service, not files


class InputError(AuditwatchError, ValueError):
    """An input that cannot be read as given (a bad cloudwatch:// or pubsub:// address, a refusal)."""


def splittable(path: str) -> bool:
    """Whether ``path`` is a plain file of lines, which readers may share by byte ranges."""
    if path == "-" or path.startswith(SERVICES):
        return False
    with open(path, "rb") as f:
        head = f.read(HEAD)
    return head[:2] != b"\x1f\x8b" and not is_document(head) and line_shape(head) not in PREFIXES


def chunks(
    path: str, start: int = 0, length: int | None = None, notes: TextIO | None = None
) -> Iterator[bytes | memoryview]:
    """Chunks of whole audit lines from ``path`` (from byte ``start``, ``length`` bytes, for a plain
    file of lines); what a document or log group turned out to hold is said on ``notes``."""
    if path.startswith(CLOUDWATCH):
        yield from _log_group(path, notes)
        return
    if path.startswith(PUBSUB):
        yield from _subscription(path, notes)
        return
    if path.startswith(AZBLOB):
        yield from _archive(path, notes)
        return
    if path.startswith(EVENTHUB):
        yield from _hub(path, notes)
        return
    with open_log(path) as stream:
        if start:
            stream.seek(start)
            yield from iter_chunks(stream, limit=length)
            return
        head = stream.read(HEAD)
        if not is_document(head):
            # A BOM (an editor's save on Windows) is no part of the first line.
            lines = iter_chunks(cast(BinaryIO, _Replay(head.removeprefix(BOM), stream)), limit=length)
            shape = line_shape(head)
            if prefix := PREFIXES.get(shape):
                _note(notes, f"{path}: read as {shape}: what comes before each event taken off")
                yield from (prefix.sub(b"", chunk) for chunk in lines)
                return
            if shape != AUDIT and shape:
                _note(notes, f"{path}: warning: {shape}: is it a Kubernetes audit log?")
            yield from lines
            return
        data = head + stream.read()
    try:
        found = unwrap(data)
    except ValueError:  # not JSON after all: lines, the malformed ones counted
        yield data
        return
    what = ", ".join(sorted(found.shapes)) or "JSON"
    other = f"; {found.other:,} values that are no audit event" if found.other else ""
    if found.other_keys:
        other += f" (keys such as {', '.join(found.other_keys)})"
    warning = "" if found.lines else "warning: "
    _note(
        notes,
        f"{path}: {warning}read as {what}: {len(found.lines):,} events{other}"
        + ("" if found.lines else ": is it a Kubernetes audit log?"),
    )
    yield found.data()


def _note(notes: TextIO | None, text: str) -> None:
    if notes is not None:
        notes.write(f"auditwatch: {text}\n")


def _progress(notes: TextIO | None, text: str) -> None:
    """A progress line, written over the last one, on a terminal only."""
    if notes is not None and notes.isatty():
        notes.write(f"\r{text}")
        notes.flush()


def _synced(items: AsyncGenerator[T], refused: type[Exception], prefix: str) -> Iterator[T]:
    """An async generator's items, for synchronous code, on an event loop of their own; ``refused``
    (a service's refusal) raised as an InputError, its message after ``prefix``."""
    loop = asyncio.new_event_loop()
    try:
        while True:
            try:
                yield loop.run_until_complete(anext(items))
            except StopAsyncIteration:
                return
            except refused as exc:
                raise InputError(f"{prefix}{exc}") from None
    finally:
        loop.run_until_complete(items.aclose())
        loop.close()


def _time_range(url: str, query: dict[str, str]) -> tuple[int, int]:
    """An address's ``since`` (default 24h ago) and ``until`` (default now), in ms."""
    now_ms = round(time.time() * 1000)
    try:
        return point_in_time(query.get("since", "24h"), now_ms), point_in_time(query.get("until", "0s"), now_ms)
    except ValueError:
        raise InputError(f"{url}: since and until are RFC 3339 times or durations such as 24h") from None


class _Replay(io.RawIOBase):
    """A stream whose first bytes were read already: they come again, then the rest."""

    def __init__(self, head: bytes, rest: BinaryIO) -> None:
        self.head, self.rest = head, rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        if self.head:
            n = min(len(buffer), len(self.head))
            buffer[:n] = self.head[:n]
            self.head = self.head[n:]
            return n
        return self.rest.readinto(buffer)  # type: ignore[attr-defined, no-any-return]


@dataclass(frozen=True)
class LogGroupRange:
    region: str
    group: str
    prefix: str
    start: int  # ms
    end: int


def parse_url(url: str, now: float | None = None) -> LogGroupRange:
    """A ``cloudwatch://`` address; InputError names what is wrong with it."""
    parts = urllib.parse.urlsplit(url)
    query = dict(urllib.parse.parse_qsl(parts.query))
    unknown = set(query) - {"since", "until", "prefix"}
    if not parts.netloc or not parts.path.strip("/") or unknown:
        raise InputError(
            f"{url}: expected cloudwatch://REGION/LOG_GROUP?since=24h (since, until, prefix)"
            + (f"; unknown: {', '.join(sorted(unknown))}" if unknown else "")
        )
    now_ms = round((time.time() if now is None else now) * 1000)

    def when(name: str, default: int) -> int:
        value = query.get(name)
        if value is None:
            return default
        try:
            return point_in_time(value, now_ms)
        except ValueError:
            raise InputError(f"{url}: {name}={value} is not an RFC 3339 time or a duration such as 24h") from None

    group = "/" + parts.path.lstrip("/")
    return LogGroupRange(
        parts.netloc,
        group,
        query.get("prefix", "kube-apiserver-audit"),
        when("since", now_ms - 24 * 3600 * 1000),
        when("until", now_ms),
    )


def _log_group(url: str, notes: TextIO | None, calls_per_second: float = 1.0) -> Iterator[bytes]:
    """The log group's events in the range, page by page, with progress on ``notes``."""
    from auditwatch.sources.cloudwatch import CloudWatchError, LogGroup, iso

    where = parse_url(url)
    group = LogGroup(where.region, where.group, calls_per_second)
    events = 0
    for page in _synced(group.pages(where.start, where.end, where.prefix), CloudWatchError, ""):
        events += len(page)
        if page:
            yield b"".join(message_line(e["message"]) for e in page)
            done = (page[-1]["timestamp"] - where.start) / max(1, where.end - where.start)
            _progress(notes, f"{url}: {events:,} events, through {iso(page[-1]['timestamp'])} ({done:.0%})")
    if notes is not None:
        notes.write(f"\r{url}: {events:,} events in {group.calls:,} calls ({group.throttled:,} throttled)\n")


def parse_pubsub(url: str) -> tuple[str, float]:
    """A ``pubsub://`` address: the subscription's path and how long to wait for more; InputError names
    what is wrong with it."""
    parts = urllib.parse.urlsplit(url)
    query = dict(urllib.parse.parse_qsl(parts.query))
    unknown = set(query) - {"drain", "wait"}
    subscription = parts.path.strip("/")
    if not parts.netloc or not subscription or "/" in subscription or unknown:
        raise InputError(
            f"{url}: expected pubsub://PROJECT/SUBSCRIPTION?drain=true (drain, wait)"
            + (f"; unknown: {', '.join(sorted(unknown))}" if unknown else "")
        )
    if query.get("drain") != "true":
        raise InputError(
            f"{url}: reading a subscription acknowledges its messages, taking them away from whoever else "
            "reads it (the operator): add ?drain=true if that is meant (a subscription made for this hunt)"
        )
    try:
        wait = parse_duration(query.get("wait", "5s"))
    except ValueError:
        raise InputError(f"{url}: wait={query['wait']} is not a duration such as 5s") from None
    return f"projects/{parts.netloc}/subscriptions/{subscription}", wait


def _subscription(url: str, notes: TextIO | None) -> Iterator[bytes]:
    """The audit events of a subscription's messages, batch by batch; each batch acknowledged once the
    next is asked for (evaluated), repeats dropped, what is no audit event counted."""
    from google.api_core import exceptions as gapi
    from google.cloud import pubsub_v1

    from auditwatch.sources.pubsub import event_of, refusal
    from auditwatch.sources.spool import Recent

    path, wait = parse_pubsub(url)
    client = pubsub_v1.SubscriberClient()  # Application Default Credentials; PUBSUB_EMULATOR_HOST
    recent, events, repeats, other = Recent(), 0, 0, 0
    while True:
        try:
            answer = client.pull(subscription=path, max_messages=1000, timeout=wait)
        except gapi.DeadlineExceeded:
            break
        except (gapi.GoogleAPICallError, OSError) as exc:
            raise InputError(f"{url}: {refusal(path, exc)}") from None
        if not answer.received_messages:
            break
        lines = []
        for r in answer.received_messages:
            try:
                event, key = event_of(bytes(r.message.data))
            except ValueError:
                other += 1
                continue
            if recent.seen(key or f"message:{r.message.message_id}"):
                repeats += 1
                continue
            lines.append(orjson.dumps(event) + b"\n")
        if lines:
            yield b"".join(lines)
        client.acknowledge(subscription=path, ack_ids=[r.ack_id for r in answer.received_messages])
        events += len(lines)
        _progress(notes, f"{url}: {events:,} events")
    if notes is not None:
        notes.write(f"\r{url}: {events:,} events, {repeats:,} repeats dropped, {other:,} messages no audit event\n")


def _archive(url: str, notes: TextIO | None) -> Iterator[bytes]:
    """The audit events of an AKS diagnostic archive's blobs for the hours in ``[since, until)``."""
    from auditwatch.sources.azureblob import Container, audit_lines, hour_of, hour_start

    parts = urllib.parse.urlsplit(url)
    query = dict(urllib.parse.parse_qsl(parts.query))
    container, _, prefix = parts.path.lstrip("/").partition("/")
    if not parts.netloc or not container or set(query) - {"since", "until"}:
        raise InputError(f"{url}: expected azblob://ACCOUNT/CONTAINER/PREFIX?since=24h (since, until)")
    since, until = (ms / 1000 for ms in _time_range(url, query))
    store = Container(f"https://{parts.netloc}.blob.core.windows.net", container)
    loop = asyncio.new_event_loop()
    events = dropped = 0
    try:
        try:
            blobs = loop.run_until_complete(store.blobs(prefix))
        except Exception as exc:  # the SDK's errors and the network's
            raise InputError(f"{url}: {store.explain(exc)}") from None
        chosen = [b for b in blobs if hour_start(since) <= hour_of(b.name) < until]
        for i, blob in enumerate(chosen):
            done = 0
            while done < blob.size and (data := loop.run_until_complete(store.lines(blob, done))):
                lines, skipped = audit_lines(data)
                done, events, dropped = done + len(data), events + lines.count(b"\n"), dropped + skipped
                if lines:
                    yield lines
            _progress(notes, f"{url}: {i + 1}/{len(chosen)} blobs, {events:,} events")
    finally:
        loop.run_until_complete(store.close())
        loop.close()
    if notes is not None:
        notes.write(f"\r{url}: {events:,} events from {len(chosen)} blobs ({dropped:,} lines no audit record)\n")


def _hub(url: str, notes: TextIO | None) -> Iterator[bytes]:
    """The audit events an event hub retains of ``[since, until)``, repeats (both kube-audit categories)
    dropped, what is no audit event counted."""
    from auditwatch.audit.azure import hub_events
    from auditwatch.sources.eventhub import HubError, retained
    from auditwatch.sources.spool import Recent, event_key

    parts = urllib.parse.urlsplit(url)
    query = dict(urllib.parse.parse_qsl(parts.query))
    hub = parts.path.strip("/")
    if not parts.netloc or not hub or "/" in hub or set(query) - {"since", "until"}:
        raise InputError(f"{url}: expected eventhub://NAMESPACE/HUB?since=24h (since, until)")
    since, until = _time_range(url, query)
    recent, events, repeats, other = Recent(), 0, 0, 0
    for bodies in _synced(retained(parts.netloc, hub, since, until), HubError, f"{url}: "):
        lines = []
        for body in bodies:
            for event, _ in hub_events(body):
                if event is None:
                    other += 1
                elif recent.seen(event_key(event)):
                    repeats += 1
                else:
                    lines.append(orjson.dumps(event) + b"\n")
        events += len(lines)
        if lines:
            yield b"".join(lines)
        _progress(notes, f"{url}: {events:,} events")
    if notes is not None:
        notes.write(f"\r{url}: {events:,} events, {repeats:,} repeats dropped, {other:,} records no audit event\n")
