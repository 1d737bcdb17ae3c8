"""One reader per source: subscribers share a tail, catch up from their own positions, keep exact seqs."""

import asyncio
import os

import pytest

from auditwatch.api.models import Source, SourceStatus
from auditwatch.api.settings import Settings
from auditwatch.engine.worker import Recipe
from auditwatch.runtime.readers import Readers
from auditwatch.sources import file as file_source
from auditwatch.spl import plan_search
from corpus import SHIPPED, detection_plan, generated_events, lines_of
from factory import checkpoint

pytestmark = pytest.mark.asyncio


async def stop(task: asyncio.Task, sub) -> None:
    """Stop a reader; the last one out waits for the shared tail to stop (its worker process killed)."""
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    shared = sub.shared._task
    if not sub.shared.subscribers and shared is not None:
        await asyncio.gather(shared, return_exceptions=True)


class Collector:
    """Reads a subscription in the background: (line, own seq after it) pairs, as a detection counts them."""

    def __init__(self, sub) -> None:
        self.sub = sub
        self.lines: list[tuple[bytes, int]] = []
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for d in self.sub.chunks():
            pos = 0
            for line in d.data.splitlines(keepends=True):
                pos += len(line)
                self.lines.append((line.rstrip(b"\n"), d.seq + pos))

    async def wait(self, n: int) -> list[bytes]:
        for _ in range(500):
            if len(self.lines) >= n:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)  # and nothing more arrives
        return [line for line, _ in self.lines]

    async def stop(self) -> None:
        await stop(self.task, self.sub)


@pytest.fixture
def opened(monkeypatch):
    """Counts the file tails the readers open."""
    count = []
    real = file_source.FileTail.__init__

    def counting(self, *args, **kwargs):
        count.append(args[0])
        real(self, *args, **kwargs)

    monkeypatch.setattr(file_source.FileTail, "__init__", counting)
    return count


def saved(position: file_source.FilePosition) -> SourceStatus:
    """The status a detection saves for a file source at ``position``."""
    return SourceStatus(name="log", seq=position.seq, file=position.status())


def source(path) -> Source:
    return Source.model_validate({"name": "log", "file": {"path": str(path)}})


def append(path, lines) -> None:
    with open(path, "ab") as f:
        f.write(b"".join(line + b"\n" for line in lines))


def readers() -> Readers:
    return Readers(Settings(poll_seconds=0.01, allow_paths=("/",)))


async def test_detections_reading_one_file_share_one_tail_and_each_sees_every_line(tmp_path, opened):
    log = tmp_path / "audit.log"
    append(log, [b"a1", b"a2"])
    r = readers()
    first, second = Collector(r.subscribe(source(log), None, None)), Collector(r.subscribe(source(log), None, None))
    assert await first.wait(2) == [b"a1", b"a2"]
    assert await second.wait(2) == [b"a1", b"a2"]
    append(log, [b"b1"])
    assert await first.wait(3) == await second.wait(3) == [b"a1", b"a2", b"b1"]
    assert first.lines == second.lines  # the same seqs: both started at the file's start
    # One shared tail; the second caught up on a private one, then joined it.
    assert second.sub.joined_at is not None and len(r.shared) == 1 and opened == [str(log)] * 2
    await first.stop()
    await second.stop()
    assert r.shared == {}  # the last one out stops the tail


async def test_a_detection_added_later_catches_up_from_its_own_position_without_refeeding_the_others(tmp_path):
    log = tmp_path / "audit.log"
    append(log, [b"x%d" % i for i in range(1000)])
    r = readers()
    early = Collector(r.subscribe(source(log), None, None))
    await early.wait(1000)
    late = Collector(r.subscribe(source(log), None, None))
    append(log, [b"y%d" % i for i in range(1000)])
    expected = [b"x%d" % i for i in range(1000)] + [b"y%d" % i for i in range(1000)]
    assert await late.wait(2000) == expected
    assert await early.wait(2000) == expected  # each line once
    assert late.lines == early.lines
    await early.stop()
    await late.stop()


async def test_a_subscriber_resumes_exactly_from_its_checkpoint_before_and_after_the_join(tmp_path):
    log = tmp_path / "audit.log"
    append(log, [b"line%03d" % i for i in range(100)])
    r = readers()
    anchor = Collector(r.subscribe(source(log), None, None))  # keeps the shared tail running throughout
    await anchor.wait(100)
    sub = r.subscribe(source(log), None, None)
    reader = Collector(sub)
    await reader.wait(100)
    append(log, [b"more%03d" % i for i in range(50)])
    await reader.wait(150)
    assert sub.joined_at is not None
    for index in (10, 99, 120, 149):  # before the join, at its end, after it
        _, seq = reader.lines[index]
        position = checkpoint(sub, seq)
        assert position is not None and position.seq == seq
        assert position.inode == os.stat(log).st_ino
        assert position.offset == len(b"".join(x + b"\n" for x, _ in reader.lines[: index + 1]))
    await reader.stop()
    # A restart of that detection (a new generation) from its last checkpoint reads only what follows.
    resumed = Collector(r.subscribe(source(log), saved(position), None))
    append(log, [b"last"])
    assert await resumed.wait(1) == [b"last"]
    assert resumed.lines == [(b"last", position.seq + 5)]
    assert await anchor.wait(151) == [x for x, _ in reader.lines] + [b"last"]  # undisturbed
    await resumed.stop()
    await anchor.stop()


async def test_a_detection_ahead_of_the_shared_tail_skips_what_it_already_read(tmp_path):
    log = tmp_path / "audit.log"
    append(log, [b"old%d" % i for i in range(10)])
    r = readers()
    behind = r.subscribe(source(log), None, None)  # starts the shared tail at the file's start
    position = file_source.FilePosition(str(log), os.stat(log).st_ino, os.path.getsize(log), 7000)
    ahead = Collector(r.subscribe(source(log), saved(position), None))
    slow = Collector(behind)
    append(log, [b"new"])
    assert await ahead.wait(1) == [b"new"]
    assert ahead.lines == [(b"new", 7004)]
    assert len(await slow.wait(11)) == 11
    await ahead.stop()
    await slow.stop()


async def test_a_broken_source_fails_every_subscriber(tmp_path):
    log = tmp_path / "audit.log"
    append(log, [b"a"])
    r = readers()
    sub = r.subscribe(source(log), None, None)
    reader = Collector(sub)
    await reader.wait(1)
    shared = r.shared[next(iter(r.shared))]

    async def broken():
        raise OSError("disk gone")
        yield  # pragma: no cover

    shared.tail.chunks = broken  # the shared task is past its start; restart it on a failing tail
    shared._task = asyncio.create_task(shared._run())
    with pytest.raises(OSError, match="disk gone"):
        await asyncio.wait_for(reader.task, 5)
    assert shared.broken
    again = Collector(r.subscribe(source(log), None, None))  # a new shared tail replaces the broken one
    assert await again.wait(1) == [b"a"]
    await again.stop()


async def test_a_status_saved_before_positions_had_sub_objects_resumes_where_it_stopped(tmp_path):
    """An upgrade: the old operator saved its file position at the top of the source status."""
    log = tmp_path / "audit.log"
    append(log, [b"old%d" % i for i in range(10)])
    flat = {"name": "log", "file": str(log), "inode": os.stat(log).st_ino, "offset": 25, "seq": 520, "lagBytes": 3}
    status = SourceStatus.model_validate(flat)
    assert status.file is not None and (status.file.path, status.file.offset, status.seq) == (str(log), 25, 520)
    resumed = Collector(readers().subscribe(source(log), status, None))
    assert await resumed.wait(5) == [b"old%d" % i for i in range(5, 10)]  # 5 bytes a line: 5 were read
    assert resumed.lines[0][1] == 525  # the seq runs on from the saved one
    await resumed.stop()


class Matcher:
    """Reads a subscription as a detection does: the worker's matches, else its own evaluation."""

    def __init__(self, sub, recipe) -> None:
        self.sub, self.evaluator = sub, recipe.evaluator()
        self.records: list[tuple[int, dict]] = []
        self.read, self.by_worker, self.here = 0, 0, 0
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for d in self.sub.chunks():
            if d.evaluated is not None:
                self.by_worker += 1
                found = d.evaluated.records
            else:
                self.here += 1
                found = list(self.evaluator.records(d.data, d.origin, d.decoded))
            self.records += [(d.seq + start, record) for start, _, record in found]
            self.read = d.seq + len(d.data)

    async def wait(self, size: int) -> None:
        for _ in range(1000):
            if self.read >= size:
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"read {self.read} of {size} bytes")

    async def stop(self) -> None:
        await stop(self.task, self.sub)


@pytest.mark.parametrize("worker", [True, False])
async def test_each_subscriber_gets_its_own_matches_and_one_that_joins_later_evaluates_what_it_catches_up(
    tmp_path, worker
):
    log = tmp_path / "audit.log"
    data = lines_of(generated_events(5, 6000), 5)
    third, two_thirds = (data.index(b"\n", len(data) * k // 3) + 1 for k in (1, 2))
    log.write_bytes(data[:third])
    r = Readers(Settings(poll_seconds=0.01, allow_paths=("/",), evaluation_worker=worker))
    seed, gets = Recipe(detection_plan(SHIPPED[0])), Recipe(plan_search("verb=get | stats count BY user.username"))
    early = Matcher(r.subscribe(source(log), None, seed), seed)
    await early.wait(third)
    late = Matcher(r.subscribe(source(log), None, gets), gets)
    for end in (two_thirds, len(data)):  # the late one catches up on its own, then joins
        with open(log, "ab") as f:
            f.write(data[f.tell() : end])
        await early.wait(end)
        await late.wait(end)
    for matcher, recipe in ((early, seed), (late, gets)):
        expected = [(start, record) for start, _, record in recipe.evaluator().records(data, str(log))]
        assert matcher.records == expected and expected
    assert late.here > 0 and late.sub.joined_at is not None
    assert (early.by_worker > 0 and late.by_worker > 0) == worker and (early.here == 0) == worker
    await early.stop()
    await late.stop()
