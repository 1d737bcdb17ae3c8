"""Tailing the audit log file: positions, rotation by rename, copytruncate, partial and long lines."""

import asyncio
import os

import pytest

from auditwatch.sources.file import FilePosition
from auditwatch.sources.file import FileTail as _FileTail
from factory import checkpoint

pytestmark = pytest.mark.asyncio


def FileTail(path, max_line=4 << 20, start=None):
    return _FileTail(path, max_line, start, poll_seconds=0.01)


class Reader:
    """Runs a tail in the background and collects (line, seq after it, file) triples."""

    def __init__(self, tail: FileTail) -> None:
        self.tail = tail
        self.lines: list[tuple[bytes, int, str]] = []
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for chunk in self.tail.chunks():
            pos = 0
            for line in chunk.data.splitlines(keepends=True):
                pos += len(line)
                self.lines.append((line.rstrip(b"\n"), chunk.seq + pos, chunk.origin))

    async def wait(self, n: int, timeout: float = 5) -> list[bytes]:
        for _ in range(int(timeout / 0.01)):
            if len(self.lines) >= n:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)  # and nothing more arrives
        return [line for line, _, _ in self.lines]

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


def write(path, *lines, end=b"\n"):
    with open(path, "ab") as f:
        f.write(b"\n".join(lines) + end)


async def test_reads_from_the_start_and_holds_back_a_partial_line(tmp_path):
    log = tmp_path / "audit.log"
    write(log, b"a", b"b")
    with open(log, "ab") as f:
        f.write(b"par")
    r = Reader(FileTail(str(log)))
    assert await r.wait(2) == [b"a", b"b"]
    with open(log, "ab") as f:
        f.write(b"tial\nc\n")
    assert await r.wait(4) == [b"a", b"b", b"partial", b"c"]
    assert [seq for _, seq, _ in r.lines] == [2, 4, 12, 14]  # byte offsets after each line
    await r.stop()


async def test_resumes_at_a_saved_position(tmp_path):
    log = tmp_path / "audit.log"
    write(log, b"one", b"two", b"three")
    r = Reader(FileTail(str(log), start=FilePosition(str(log), os.stat(log).st_ino, 8, 108)))
    assert await r.wait(1) == [b"three"]
    assert r.lines[0][1] == 108 + 6
    await r.stop()


async def test_rotation_by_rename_finishes_the_old_file_then_follows_the_new(tmp_path):
    log = tmp_path / "audit.log"
    write(log, b"1", b"2")
    r = Reader(FileTail(str(log)))
    await r.wait(2)
    write(log, b"3")  # written just before the rename: must not be lost
    os.rename(log, tmp_path / "audit-2026-11-27T10-00-00.000.log")
    write(log, b"4", b"5")
    assert await r.wait(5) == [b"1", b"2", b"3", b"4", b"5"]
    seqs = [seq for _, seq, _ in r.lines]
    assert seqs == sorted(seqs) and len(set(seqs)) == 5
    assert r.lines[-1][2] == str(log)
    await r.stop()


async def test_restart_inside_a_rotated_file_reads_its_rest_then_the_live_file(tmp_path):
    log = tmp_path / "audit.log"
    write(log, b"old1", b"old2")
    inode = os.stat(log).st_ino
    os.rename(log, tmp_path / "audit-2026-11-27T10-00-00.000.log")
    write(log, b"new1")
    r = Reader(FileTail(str(log), start=FilePosition(str(log), inode, 5, 5)))
    assert await r.wait(2) == [b"old2", b"new1"]
    await r.stop()


async def test_copytruncate_starts_again_at_zero(tmp_path):
    log = tmp_path / "audit.log"
    write(log, b"aaaa", b"bbbb")
    r = Reader(FileTail(str(log)))
    await r.wait(2)
    with open(log, "r+b") as f:
        f.truncate(0)
    write(log, b"c")
    assert await r.wait(3) == [b"aaaa", b"bbbb", b"c"]
    await r.stop()


async def test_a_missing_file_is_reported_then_read_once_it_appears(tmp_path):
    log = tmp_path / "audit.log"
    tail = FileTail(str(log))
    r = Reader(tail)
    await asyncio.sleep(0.05)
    assert not tail.ready and tail.error == f"{log} does not exist yet"
    write(log, b"x")
    assert await r.wait(1, timeout=3) == [b"x"]
    assert tail.ready and tail.error == ""
    await r.stop()


async def test_lines_longer_than_the_maximum_are_counted_and_skipped(tmp_path):
    log = tmp_path / "audit.log"
    write(log, b"short", b"y" * 5000, b"after")
    tail = FileTail(str(log), max_line=1024)
    r = Reader(tail)
    lines = await r.wait(3)
    assert [line for line in lines if line.strip()] == [b"short", b"after"]
    assert tail.long_lines == 1
    assert r.lines[-1][1] == os.path.getsize(log)  # the skipped line keeps the later lines' seq true
    assert checkpoint(tail, r.lines[-1][1]) == FilePosition(str(log), os.stat(log).st_ino, r.lines[-1][1],
                                                            r.lines[-1][1])  # fmt: skip
    await r.stop()


async def test_a_long_partial_line_is_dropped_up_to_its_newline(tmp_path):
    log = tmp_path / "audit.log"
    with open(log, "ab") as f:
        f.write(b"z" * 3000)
    tail = FileTail(str(log), max_line=1024)
    r = Reader(tail)
    await asyncio.sleep(0.1)
    write(log, b"z" * 10, b"next")
    assert [line for line in await r.wait(1) if line.strip()] == [b"next"]
    assert tail.long_lines == 1
    await r.stop()


async def test_several_rotations_while_the_reader_was_busy_skip_no_file(tmp_path):
    log = tmp_path / "audit.log"
    write(log, b"x1")
    r = Reader(FileTail(str(log)))
    await r.wait(1)
    # No await in between: the reader cannot run until three files have been rotated out.
    write(log, b"x2")
    os.rename(log, tmp_path / "audit-2026-11-27T10-00-00.000.log")
    write(log, b"y1", b"y2")
    os.rename(log, tmp_path / "audit-2026-11-27T10-00-01.000.log")
    write(log, b"z1")
    os.rename(log, tmp_path / "audit-2026-11-27T10-00-02.000.log")
    write(log, b"live")
    assert await r.wait(6) == [b"x1", b"x2", b"y1", b"y2", b"z1", b"live"]
    await r.stop()


async def test_a_rotated_file_ending_without_a_newline_counts_its_newline_in_seq(tmp_path):
    log = tmp_path / "audit.log"
    with open(log, "wb") as f:
        f.write(b"ab\ncd")  # the last line never got its newline
    r = Reader(FileTail(str(log)))
    await r.wait(1)
    os.rename(log, tmp_path / "audit-2026-11-27T10-00-00.000.log")
    write(log, b"ef")
    assert await r.wait(3) == [b"ab", b"cd", b"ef"]
    assert [seq for _, seq, _ in r.lines] == [3, 6, 9]  # the chunks' seqs run on without a gap or overlap
    await r.stop()


async def test_checkpoints_name_the_file_and_offset_of_a_seq_across_a_rotation(tmp_path):
    log = tmp_path / "audit.log"
    with open(log, "wb") as f:
        f.write(b"ab\ncd")  # the rotated file's last line has no newline
    old_inode = os.stat(log).st_ino
    tail = FileTail(str(log))
    chunks = tail.chunks()
    assert (await anext(chunks)).data == b"ab\n"
    os.rename(log, tmp_path / "audit-2026-11-27T10-00-00.000.log")
    write(log, b"ef")
    assert (await anext(chunks)).data == b"cd\n"  # the old file is finished, with a newline of our own
    assert checkpoint(tail, 3) == FilePosition(str(log), old_inode, 3, 3)
    # After the synthetic newline the position stays at the end of what the old file has.
    assert checkpoint(tail, 6) == FilePosition(str(log), old_inode, 5, 6)
    assert (await anext(chunks)).data == b"ef\n"
    new_inode = os.stat(log).st_ino
    assert checkpoint(tail, 6) == FilePosition(str(log), new_inode, 0, 6)  # the newest place of a seq
    assert checkpoint(tail, 9) == FilePosition(str(log), new_inode, 3, 9)
    assert checkpoint(tail, 1) is None  # forgotten: a checkpoint only moves forward
    await chunks.aclose()


async def test_a_file_swapped_for_a_symlink_out_of_the_allowed_directories_is_not_opened(tmp_path):
    logs, secrets = tmp_path / "logs", tmp_path / "secrets"
    logs.mkdir()
    secrets.mkdir()
    (secrets / "token").write_bytes(b"secret\n")
    (logs / "audit.log").symlink_to(secrets / "token")  # made after the detection was admitted
    tail = _FileTail(str(logs / "audit.log"), poll_seconds=0.01, allow=(str(logs),))
    r = Reader(tail)
    await asyncio.sleep(0.1)
    assert r.lines == [] and not tail.ready
    assert tail.error == f"{logs / 'audit.log'}: resolves outside the directories the operator may read"
    await r.stop()
