"""The CloudWatch source against a real CloudWatch Logs API (moto's server on loopback, a fault proxy in
front): every audit event read exactly once through paging, empty pages, throttling, new streams,
late arrivals and restarts from checkpoints; AWS refusals named in the source's error."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from auditwatch.api.models import CloudWatchSource, Source
from auditwatch.api.settings import Settings
from auditwatch.runtime.readers import Readers
from auditwatch.sources.cloudwatch import CloudWatchPosition, CloudWatchTail, LogGroup, Timing
from awslogs import REGION, FaultProxy, LogGroupWriter, aws_env, moto_server
from factory import checkpoint
from spooling import until

STREAMS = ["kube-apiserver-audit-0a1b", "kube-apiserver-audit-2c3d", "kube-apiserver-audit-4e5f"]


@pytest.fixture(scope="module")
def moto() -> Iterator[str]:
    with moto_server() as url:
        yield url


@pytest.fixture
def proxy(moto: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultProxy]:
    proxy = FaultProxy(moto)
    for name, value in aws_env(proxy.url).items():
        monkeypatch.setenv(name, value)
    yield proxy
    proxy.close()


@pytest.fixture
def logs(moto: str, request: pytest.FixtureRequest) -> LogGroupWriter:
    writer = LogGroupWriter(moto, f"/aws/eks/{re.sub(r'[^-_A-Za-z0-9]', '-', request.node.name)[:60]}/cluster")
    writer.create_group()
    return writer


def spec(group: str, **changes: Any) -> CloudWatchSource:
    values = {"logGroup": group, "region": REGION, "pollInterval": "1s", "promptWithin": "2s", "maxLateness": "30s",
              "sweepInterval": "2s", "settleDelay": "0s"} | changes  # fmt: skip
    return CloudWatchSource(**values)


def now_ms() -> int:
    return round(time.time() * 1000)


def audit(audit_id: str, extra: str = "") -> str:
    return json.dumps({"kind": "Event", "apiVersion": "audit.k8s.io/v1", "auditID": audit_id, "verb": "get",
                       "user": {"username": "system:anonymous"}, "note": extra})  # fmt: skip


class Reader:
    """What a detection does with its source: reads chunks, checkpoints at a line start (a finding not yet
    written holds it back); each ``running()`` starts a new tail from the saved position, as an operator
    SIGKILLed and started again does."""

    def __init__(self, source: CloudWatchSource, rng: random.Random) -> None:
        self.source, self.rng = source, rng
        self.group = LogGroup(source.region, source.logGroup, rate=20)
        self.lines: dict[int, bytes] = {}  # seq -> line: what every read gave at that seq
        self.saved: CloudWatchPosition | None = None
        self.tail: CloudWatchTail | None = None

    def ids(self) -> list[str]:
        return [json.loads(line)["auditID"] for _, line in sorted(self.lines.items())]

    async def read(self, start: CloudWatchPosition) -> None:
        tail = self.tail = CloudWatchTail(self.group, self.source.logStreamPrefix, Timing.of(self.source), start)
        async for chunk in tail.chunks():
            starts, offset = [], 0
            for line in chunk.data.splitlines(keepends=True):
                seq = chunk.seq + offset
                assert self.lines.setdefault(seq, line) == line, f"seq {seq} read as two different lines"
                starts.append(seq)
                offset += len(line)
            hold = self.rng.choice([*starts, chunk.seq + len(chunk.data)])
            self.saved = checkpoint(tail, hold) or self.saved

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        # Where it starts is taken now, before the caller puts events: taken when the task first ran, after
        # slow first puts (a cold moto server under load), it was past the events' stamps (a CI failure).
        start = self.saved or CloudWatchPosition.starting(self.source, now_ms())
        task = asyncio.create_task(self.read(start))
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def test_every_event_once_through_pages_throttles_late_arrivals_and_restarts(
    proxy: FaultProxy, logs: LogGroupWriter
) -> None:
    source = spec(logs.group)
    reader = Reader(source, random.Random(7))
    expected: list[str] = []

    def put(stream: str, ids: list[str], delay_ms: int = 0) -> None:
        stamp = now_ms() - delay_ms
        logs.put(stream, [(stamp + i % 3, audit(a)) for i, a in enumerate(ids)])
        expected.extend(ids)

    proxy.page_limit, proxy.empty_pages = 7, True
    async with reader.running():
        put(STREAMS[0], [f"a{i}" for i in range(20)])
        put(STREAMS[1], [f"b{i}" for i in range(20)])
        logs.put("kube-apiserver-9f8e", [(now_ms(), audit("not-audit"))])  # the API server's own log
        await until(lambda: len(set(reader.ids())) >= 20, 30, "the first events")
        proxy.throttle = 3
        put(STREAMS[2], [f"c{i}" for i in range(15)])  # a stream appearing mid-run
        put(STREAMS[0], [f"late{i}" for i in range(10)], delay_ms=12_000)  # stamped before what was read
        logs.put(STREAMS[1], [(now_ms(), audit("cut", "x" * 50) + "[Truncated...]")])
        logs.put(STREAMS[1], [(now_ms() - 45_000, audit("too-late"))])
        await until(lambda: len(set(reader.ids())) >= 45, 30, "events after the throttles")
    for round_ in range(3):  # SIGKILL and restart from the checkpoint, events written while it was down
        put(STREAMS[round_], [f"down{round_}-{i}" for i in range(8)])
        put(STREAMS[(round_ + 1) % 3], [f"downlate{round_}-{i}" for i in range(4)], delay_ms=8_000)
        async with reader.running():
            await until(lambda: set(expected) <= set(reader.ids()), 40, "every event")
    async with reader.running():  # a last look: nothing more may come
        await asyncio.sleep(5)

    ids = reader.ids()
    assert sorted(ids) == sorted(expected), "each event exactly once, none other"
    assert reader.tail is not None and reader.group.throttled == 3
    assert proxy.calls, "paged through the proxy"


async def test_truncated_events_are_counted_apart(proxy: FaultProxy, logs: LogGroupWriter) -> None:
    reader = Reader(spec(logs.group), random.Random(1))
    async with reader.running():
        logs.put(
            STREAMS[0],
            [(now_ms(), audit("whole")), (now_ms() + 1, audit("cut-one", "y" * 80)[:100] + "[Truncated...]")],
        )
        await until(lambda: reader.tail is not None and reader.tail.truncated == 1, 20, "the truncated event")
    assert reader.ids() == ["whole"]
    assert reader.tail is not None and reader.tail.last_truncated == "cut-one"


@pytest.mark.parametrize(
    ("refusal", "says"),
    [
        ("AccessDeniedException", "may not call logs:FilterLogEvents on log group"),
        ("UnrecognizedClientException", "refused the operator's credentials"),
    ],
)
async def test_refusals_are_named(proxy: FaultProxy, logs: LogGroupWriter, refusal: str, says: str) -> None:
    reader = Reader(spec(logs.group), random.Random(2))
    proxy.refuse = refusal
    async with reader.running():
        await until(lambda: reader.tail is not None and bool(reader.tail.error), 20, "the error")
        assert reader.tail is not None and says in reader.tail.error and not reader.tail.ready
        proxy.refuse = ""
        logs.put(STREAMS[0], [(now_ms(), audit("after"))])
        await until(lambda: reader.ids() == ["after"], 30, "reading once allowed")
        assert reader.tail.ready and not reader.tail.error


async def test_a_missing_log_group_says_audit_logging_may_be_off(proxy: FaultProxy) -> None:
    reader = Reader(spec("/aws/eks/nowhere/cluster"), random.Random(3))
    async with reader.running():
        await until(lambda: reader.tail is not None and bool(reader.tail.error), 20, "the error")
    assert reader.tail is not None
    assert "/aws/eks/nowhere/cluster in us-west-2 does not exist" in reader.tail.error
    assert "audit logging" in reader.tail.error


async def test_detections_on_one_log_group_share_one_reader(proxy: FaultProxy, logs: LogGroupWriter) -> None:
    """Two detections, the second added later from an earlier saved position: each reads every event once,
    and once the second has caught up the log group is called as for one reader (polling every 2 s and
    sweeping every 4 s: 0.75 calls a second; two readers would make 1.5)."""
    readers = Readers(Settings(cloudwatch_calls_per_second=4))
    source = Source(name="eks", cloudwatch=spec(logs.group, pollInterval="2s", sweepInterval="4s"))
    first = readers.subscribe(source, None, None)
    got: dict[str, list[str]] = {"first": [], "second": []}

    async def consume(name: str, sub: Any) -> None:
        async for delivery in sub.chunks():
            got[name] += [json.loads(line)["auditID"] for line in delivery.data.splitlines()]
            checkpoint(sub, delivery.seq + len(delivery.data))

    tasks = [asyncio.create_task(consume("first", first))]
    try:
        logs.put(STREAMS[0], [(now_ms(), audit(f"x{i}")) for i in range(5)])
        await until(lambda: len(got["first"]) == 5, 30, "the first detection's events")
        saved = checkpoint(first, first.shared.tail.at.seq)  # type: ignore[union-attr]
        assert saved is not None
        from auditwatch.api.models import SourceStatus

        earlier = CloudWatchPosition(saved.prompt - 4000, saved.late - 4000, 0)
        second = readers.subscribe(source, SourceStatus(name="eks", cloudwatch=earlier.status()), None)
        tasks.append(asyncio.create_task(consume("second", second)))
        await until(lambda: second.joined_at is not None, 30, "the second detection joining the shared reader")
        logs.put(STREAMS[1], [(now_ms(), audit(f"y{i}")) for i in range(5)])
        await until(lambda: len(got["first"]) == 10 and len(got["second"]) == 10, 30, "both detections' events")
        calls, started = readers.log_groups[REGION, logs.group].calls, time.monotonic()
        await asyncio.sleep(8)
        assert readers.log_groups[REGION, logs.group].calls - calls <= (time.monotonic() - started) * 0.75 + 2
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    assert (
        sorted(got["first"])
        == sorted(got["second"])
        == sorted([f"x{i}" for i in range(5)] + [f"y{i}" for i in range(5)])
    )
    assert len(readers.shared) == 0


def test_scan_reads_a_log_group_directly(proxy: FaultProxy, logs: LogGroupWriter, tmp_path: Any) -> None:
    """`auditwatch scan ... cloudwatch://REGION/GROUP?since=1h`: the rows the same events give as a file."""
    import subprocess
    import sys

    from factory import SEED, event, line

    events = [event(ips=[f"10.1.0.{i % 4}"]) for i in range(30)] + [event(username="bob", groups=["dev"])]
    logs.put(STREAMS[0], [(now_ms() - 60_000 + i, line(e).decode().strip()) for i, e in enumerate(events[:20])])
    logs.put(STREAMS[1], [(now_ms() - 30_000 + i, line(e).decode().strip()) for i, e in enumerate(events[20:])])
    logs.put("kube-apiserver-0a1b", [(now_ms(), line(event(ips=["10.9.9.9"])).decode().strip())])  # not audit
    plain = tmp_path / "plain.log"
    plain.write_bytes(b"".join(line(e) for e in events))
    proxy.page_limit = 7

    def scan(*logs_: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "auditwatch", "scan", "--detection", str(SEED), *logs_],
                              capture_output=True, text=True, check=False, env={**os.environ})  # fmt: skip

    direct = scan(f"cloudwatch://{REGION}{logs.group}?since=1h")
    assert direct.returncode == 0, direct.stderr
    assert direct.stdout == scan(str(plain)).stdout != ""
    assert f"{len(events)} events in 5 calls (0 throttled)" in direct.stderr  # 31 events, 7 a page
    missing = scan(f"cloudwatch://{REGION}/aws/eks/nowhere/cluster?since=1h")
    assert missing.returncode == 2 and "/aws/eks/nowhere/cluster in us-west-2 does not exist" in missing.stderr
