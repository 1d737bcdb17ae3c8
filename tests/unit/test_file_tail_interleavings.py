"""No line lost or read twice, whatever happens between the tail's reads: appends, rotations by rename
and restarts from a checkpoint, interleaved at every point where the tail touches the file system."""

import asyncio
import os
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from auditwatch.sources.file import FileTail
from factory import checkpoint


class Log:
    """The writer's side, as kube-apiserver does it: append lines; rotate = rename, then a new file."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "audit.log"
        self.path.touch()
        self.lines: list[bytes] = []
        self.rotations = 0

    def apply(self, op: tuple[str, int]) -> None:
        kind, n = op
        if kind == "append":
            new = [b"line-%d" % (len(self.lines) + i) for i in range(n)]
            with open(self.path, "ab") as f:
                f.write(b"".join(x + b"\n" for x in new))
            self.lines += new
        else:
            self.rotations += 1
            os.rename(self.path, self.path.with_name(f"audit-2026-11-27T10-00-{self.rotations:04d}.000.log"))
            self.path.touch()


class InterleavedTail(FileTail):
    """A tail before each of whose reads and stats the next batch of file operations runs."""

    def __init__(self, log: Log, batches: list[list[tuple[str, int]]], start=None) -> None:
        super().__init__(str(log.path), start=start, poll_seconds=0.001)
        self.log, self.batches = log, batches

    def _run_next_batch(self) -> None:
        if self.batches:
            for op in self.batches.pop(0):
                self.log.apply(op)

    def _read_at(self, fd: int, at: int) -> bytes:
        self._run_next_batch()
        return super()._read_at(fd, at)

    def _state(self, inode: int, position: int) -> str:
        self._run_next_batch()
        return super()._state(inode, position)


ops = st.one_of(st.tuples(st.just("append"), st.integers(1, 3)), st.tuples(st.just("rotate"), st.just(0)))
batches = st.lists(st.lists(ops, max_size=3), max_size=25)


async def read_all(directory: Path, plan: list[list[tuple[str, int]]], restarts: list[bool]) -> tuple[Log, list]:
    log = Log(directory)
    read: list[tuple[bytes, int]] = []  # (line, seq of its start)

    async def reader() -> None:
        tail, expected_seq = InterleavedTail(log, plan), 0
        while True:
            chunks = tail.chunks()
            async for chunk in chunks:
                assert chunk.seq == expected_seq, "chunks run on without a gap or an overlap"
                start = chunk.seq
                for line in chunk.data.splitlines(keepends=True):
                    read.append((line.rstrip(b"\n"), start))
                    start += len(line)
                expected_seq = chunk.seq + len(chunk.data)
                if restarts and restarts.pop(0):
                    break  # a restart from where the lines read so far end
            await chunks.aclose()
            tail = InterleavedTail(log, plan, start=checkpoint(tail, expected_seq))

    task = asyncio.create_task(reader())
    deadline = asyncio.get_running_loop().time() + 5
    while plan or len(read) < len(log.lines):  # every operation done and every line read
        assert not task.done(), task.exception()
        assert asyncio.get_running_loop().time() < deadline, f"read {len(read)} of {len(log.lines)} lines"
        await asyncio.sleep(0.002)
    await asyncio.sleep(0.02)  # and nothing read twice after that
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return log, read


@settings(max_examples=150, deadline=None)
@given(plan=batches, restarts=st.lists(st.booleans(), max_size=30))
def test_every_line_is_read_once_in_order(plan, restarts):
    with tempfile.TemporaryDirectory() as directory:
        log, read = asyncio.run(read_all(Path(directory), plan, restarts))
    assert [line for line, _ in read] == log.lines, f"read {[x for x, _ in read]}, wrote {log.lines}"
