"""Reading EKS audit events from CloudWatch Logs: nothing lost, nothing read twice, late arrivals too.

EKS writes each audit Event as one log event (one-line JSON) in the streams ``kube-apiserver-audit-*``
of ``/aws/eks/<cluster>/cluster``, "within a few minutes, best effort": an event can become readable
after others stamped later than it. FilterLogEvents selects by event timestamp only and its tokens
expire, so a position is two times, not a token, and every event is read by exactly one of two passes,
decided by the event alone, by its *delay* (ingestion time minus timestamp):

- **prompt** (delay <= promptWithin): read in timestamp order. The events stamped in ``[a, b]`` are
  read once the clock is past ``b + promptWithin + settleDelay``: every prompt one is ingested and
  readable by then. The position's ``prompt`` is then ``b + 1``.
- **late** (promptWithin < delay <= maxLateness): a sweep every sweepInterval reads the events
  ingested in ``(S, S + sweep]``, asking for the timestamps they must have,
  ``[S - maxLateness + 1, S + sweep - promptWithin - 1]``. The position's ``late`` is then ``S + sweep``.
- **too late** (delay > maxLateness): counted (``tooLate``) when a sweep sees one, not read.

A range is read whole (every page; an empty page may still carry a token) and sorted by (timestamp,
ingestion time, event id), so what it yields depends on the log group only, not on paging or on when
it was read. Prompt ranges partition time, and the sweep ``(S, S + sweep]`` comes right after the
prompt range that ends at ``S + sweep``: the bytes that follow a position are the same on every read.
So ``seq`` (bytes yielded, one line per event) means the same after a restart, which the findings'
exactly-once protocol (findings/aggregate.py) relies on. A position exists only where a range, or a
part of a prompt range cut between two timestamps, ends; a checkpoint inside one goes back to its
start, and a restart reads that range again (findings skip what they already count).

Calls go through ``LogGroup``: at most ``rate`` a second per log group, however many tails read it,
and a ThrottlingException pauses them all, backing off with jitter.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from auditwatch.api.models import CloudWatchSource, CloudWatchStatus
from auditwatch.audit.envelopes import message_line
from auditwatch.errors import AuditwatchError
from auditwatch.sources import Chunk
from auditwatch.sources.marks import MarkedTail
from auditwatch.times import epoch_ms, parse_duration, point_in_time

CHUNK_BYTES = 1 << 20  # a prompt range is yielded in chunks of about this size, cut between timestamps
MAX_RANGE_MS = 60_000  # a prompt range spans at most this much time: what is read is held until sorted
TRUNCATED = "[Truncated...]"
THROTTLED = {
    "ThrottlingException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "ServiceUnavailableException",
    "LimitExceededException",
    "InternalFailure",
    "ServiceUnavailable",
}
AUDIT_ID = re.compile(r'"auditID"\s*:\s*"([^"]{1,64})"')


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass(frozen=True)
class Timing:
    """A source's intervals, in milliseconds."""

    poll: int
    prompt: int
    late: int
    sweep: int
    settle: int

    @classmethod
    def of(cls, spec: CloudWatchSource) -> Timing:
        def ms(text: str) -> int:
            return round(parse_duration(text) * 1000)

        return cls(
            ms(spec.pollInterval),
            ms(spec.promptWithin),
            ms(spec.maxLateness),
            ms(spec.sweepInterval),
            ms(spec.settleDelay),
        )


@dataclass(frozen=True)
class CloudWatchPosition:
    """Prompt events stamped before ``prompt`` and late events ingested up to ``late`` are read (ms)."""

    prompt: int
    late: int
    seq: int

    def status(self) -> dict[str, Any]:
        """The CloudWatchStatus fields of this position."""
        return {"promptThrough": iso(self.prompt), "lateThrough": iso(self.late)}

    @classmethod
    def saved(cls, status: CloudWatchStatus | None, seq: int) -> CloudWatchPosition | None:
        """The position a detection's status recorded for a CloudWatch source, if any."""
        if status is None or not status.promptThrough or not status.lateThrough:
            return None
        return cls(epoch_ms(status.promptThrough), epoch_ms(status.lateThrough), seq)

    @classmethod
    def starting(cls, spec: CloudWatchSource, now_ms: int) -> CloudWatchPosition:
        """Where a new detection starts (spec.start), at a sweep boundary at or before it."""
        at = point_in_time(spec.start, now_ms)  # the spec's validator accepted it
        sweep = Timing.of(spec).sweep
        at -= at % sweep
        return cls(at, at, 0)


class CloudWatchError(AuditwatchError):
    """An AWS answer that reading cannot go on past (access, missing log group, credentials, network)."""


class LogGroup:
    """One log group's FilterLogEvents calls: at most ``rate`` a second whoever asks, counted; a throttle
    pauses every caller for a backoff that doubles (up to 30 s) with jitter, and is retried."""

    def __init__(self, region: str, name: str, rate: float) -> None:
        self.region, self.name, self.interval = region, name, 1.0 / rate
        self.calls = self.throttled = 0
        self._next = 0.0  # monotonic time of the next call allowed
        self._backoff = 0.0
        self._lock = asyncio.Lock()
        self._client: Any = None

    async def pages(self, start: int, end: int, prefix: str) -> AsyncGenerator[list[dict[str, Any]], None]:
        """The events stamped in ``[start, end]`` of the streams named ``prefix``..., page by page (an
        empty page may still have a token: the range is done only when there is none)."""
        token: str | None = None
        while True:
            page = await self.page(start, end, prefix, token)
            # AWS filters by prefix already; moto does not
            yield [e for e in page.get("events", ()) if str(e.get("logStreamName", "")).startswith(prefix)]
            token = page.get("nextToken")
            if not token:
                return

    async def page(self, start: int, end: int, prefix: str, token: str | None) -> dict[str, Any]:
        """One page of events stamped in ``[start, end]``."""
        args: dict[str, Any] = {"logGroupName": self.name, "startTime": start, "endTime": end, "interleaved": True}
        if prefix:
            args["logStreamNamePrefix"] = prefix
        if token:
            args["nextToken"] = token
        while True:
            async with self._lock:
                await asyncio.sleep(max(0.0, self._next - time.monotonic()))
                self._next = time.monotonic() + self.interval
                if self._client is None:
                    self._client = await asyncio.to_thread(_client, self.region)
            self.calls += 1
            try:
                answer: dict[str, Any] = await asyncio.to_thread(self._client.filter_log_events, **args)
            except Exception as exc:
                code = _code(exc)
                if code not in THROTTLED:
                    raise CloudWatchError(self._explain(code, exc)) from exc
                self.throttled += 1
                self._backoff = min(30.0, max(1.0, self._backoff * 2))
                self._next = time.monotonic() + self._backoff * random.uniform(0.5, 1.0)
                continue
            self._backoff = 0.0
            return answer

    def _explain(self, code: str, exc: Exception) -> str:
        where = f"log group {self.name} in {self.region}"
        if code == "AccessDeniedException":
            return (
                f"AccessDenied: the operator's AWS identity may not call logs:FilterLogEvents on {where} "
                f"(grant manifests/eks/iam-policy.json to its role): {exc}"
            )
        if code == "ResourceNotFoundException":
            return (
                f"{where} does not exist: is the cluster's audit logging enabled? (aws eks "
                f'update-cluster-config --logging \'{{"clusterLogging":[{{"types":["audit"],'
                f'"enabled":true}}]}}\')'
            )
        if code in {
            "UnrecognizedClientException",
            "InvalidSignatureException",
            "ExpiredTokenException",
            "NoCredentialsError",
            "InvalidClientTokenId",
        }:
            return (
                f"AWS refused the operator's credentials for {where} ({code}): with IRSA, is the "
                f"ServiceAccount annotated with the role ARN? {exc}"
            )
        return f"{where}: {code}: {exc}"


def _client(region: str) -> Any:
    """A CloudWatch Logs client: credentials and endpoint from the standard AWS chain (IRSA, EKS Pod
    Identity, environment, instance role; AWS_ENDPOINT_URL). Retries are ours, to count throttles."""
    import boto3  # imported when a CloudWatch source is first read: the other sources never pay for it
    from botocore.config import Config

    config = Config(retries={"total_max_attempts": 1, "mode": "standard"}, connect_timeout=5, read_timeout=30)
    return boto3.session.Session().client("logs", region_name=region, config=config)


def _code(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", type(exc).__name__))
    return type(exc).__name__


@dataclass(frozen=True)
class _Event:
    timestamp: int
    ingested: int
    event_id: str
    message: str


class CloudWatchTail(MarkedTail[CloudWatchPosition]):
    """The audit events of one log group's streams (``prefix``), from ``start``, forever."""

    def __init__(
        self, group: LogGroup, prefix: str, timing: Timing, start: CloudWatchPosition, clock: Any = time.time
    ) -> None:
        super().__init__(start)
        self.group, self.prefix, self.timing, self.clock = group, prefix, timing, clock
        self.origin = f"{group.region}:{group.name}"  # Splunk's ``source``, as its AWS add-on names it
        self.ready = False
        self.error = ""
        self.long_lines = self.lag_bytes = 0  # a file's figures: never for CloudWatch
        self.truncated = self.too_late = 0
        self.last_truncated = ""
        self.newest = 0  # ms: the newest event timestamp read
        self.idle_chunks = False  # yield an empty chunk while nothing is ready to read

    def details(self) -> dict[str, Any]:
        """The CloudWatchStatus fields that describe this read besides its position."""
        return {
            "newestEvent": iso(self.newest) if self.newest else "",
            "lagSeconds": max(0, round(self.clock() - self.at.prompt / 1000)),
            "apiCalls": self.group.calls,
            "throttled": self.group.throttled,
            "truncated": self.truncated,
            "lastTruncated": self.last_truncated,
            "tooLate": self.too_late,
        }

    async def chunks(self) -> AsyncIterator[Chunk]:
        failures = 0
        while True:
            step = self._next_range(round(self.clock() * 1000))
            if step is None:
                if self.idle_chunks:
                    yield Chunk(b"", self.at.seq, self.origin)
                await asyncio.sleep(min(0.25, self.timing.poll / 1000))
                continue
            late, start, end = step
            try:
                events = await self._read(late, start, end)
            except CloudWatchError as exc:
                self.ready, self.error = False, str(exc)
                failures += 1
                await asyncio.sleep(min(60.0, self.timing.poll / 1000 * 2**failures))
                continue
            self.ready, self.error, failures = True, "", 0
            for chunk in self._yield(late, events, end):
                yield chunk

    def _next_range(self, now: int) -> tuple[bool, int, int] | None:
        """(late?, first and last timestamp to ask for) of what can be read now, or None."""
        at, t = self.at, self.timing
        if at.prompt >= at.late + t.sweep:  # the prompt pass reached the end of the next sweep
            if now < at.late + t.sweep + t.settle:
                return None
            return True, at.late - t.late + 1, at.late + t.sweep - t.prompt - 1
        edge = (now - t.prompt - t.settle) // t.poll * t.poll  # prompt events stamped before it are readable
        end = min(edge, at.late + t.sweep, at.prompt + MAX_RANGE_MS)
        return (False, at.prompt, end - 1) if end > at.prompt else None

    async def _read(self, late: bool, start: int, end: int) -> list[_Event]:
        """Every event of the range that this pass reads, sorted; counts the truncated and too late."""
        t, sweep_from = self.timing, self.at.late
        kept: list[_Event] = []
        too_late = 0
        async for page in self.group.pages(start, end, self.prefix):
            for raw in page:
                event = _Event(raw["timestamp"], raw["ingestionTime"], str(raw["eventId"]), raw["message"])
                delay = event.ingested - event.timestamp
                if late:
                    if not sweep_from < event.ingested <= sweep_from + t.sweep or delay <= t.prompt:
                        continue
                    if delay > t.late:
                        too_late += 1
                        continue
                elif delay > t.prompt:
                    continue
                kept.append(event)
        kept.sort(key=lambda e: (e.timestamp, e.ingested, e.event_id))
        self.too_late += too_late  # once the whole range is read: a failed read is read again
        return kept

    def _yield(self, late: bool, events: list[_Event], end: int) -> list[Chunk]:
        """The range's chunks, each ending where a position can be taken; the position after the range."""
        at, chunks = self.at, []
        lines: list[bytes] = []
        size = 0
        for i, event in enumerate(events):
            if event.message.endswith(TRUNCATED):
                self.truncated += 1
                found = AUDIT_ID.search(event.message)
                self.last_truncated = found.group(1) if found else ""
            else:
                line = message_line(event.message)
                lines.append(line)
                size += len(line)
            self.newest = max(self.newest, event.timestamp)
            following = events[i + 1].timestamp if i + 1 < len(events) else None
            if not late and size >= CHUNK_BYTES and following is not None and following > event.timestamp:
                chunks.append(self._chunk(b"".join(lines), CloudWatchPosition(following, at.late, 0)))
                lines, size = [], 0
        after = (
            CloudWatchPosition(at.prompt, at.late + self.timing.sweep, 0)
            if late
            else CloudWatchPosition(end + 1, at.late, 0)
        )
        chunks.append(self._chunk(b"".join(lines), after))
        return [c for c in chunks if c.data]

    def _chunk(self, data: bytes, after: CloudWatchPosition) -> Chunk:
        """Move to ``after`` (its seq: past ``data``) and remember it as a position."""
        seq = self.at.seq
        self._move(CloudWatchPosition(after.prompt, after.late, seq + len(data)))
        return Chunk(data, seq, self.origin)
