"""Tailing the kube-apiserver log backend's file, with positions that survive restarts and rotation.

A position is ``(file, inode, offset, seq)``: ``seq`` counts every byte read from the source across
rotations, so it only grows, and findings record the ``seq`` their counts include (exactly-once,
see ``findings/aggregate.py``). Handled as kube-apiserver and logrotate do things:

- rotation by rename (kube-apiserver renames ``audit.log`` to ``audit-<timestamp>.log`` and creates a
  new ``audit.log``): the old file is read to its end, then the new one from its start;
- copytruncate: the file shrinks below our offset, so we start again at 0;
- a partial last line: held back until its newline arrives;
- a file that does not exist yet: ``ready`` is False with the reason, and we keep trying;
- a line longer than ``max_line``: counted in ``long_lines`` and skipped.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

READ_SIZE = 1 << 20
POLL_SECONDS = 0.1


@dataclass(frozen=True)
class Position:
    file: str
    inode: int
    offset: int
    seq: int


@dataclass(frozen=True)
class Chunk:
    """Whole lines read from one file; ``seq`` is the source's seq at ``data[0]``."""

    data: bytes
    file: str
    inode: int
    offset: int
    seq: int

    def position(self, end: int) -> Position:
        """The position just after ``data[:end]``."""
        return Position(self.file, self.inode, self.offset + end, self.seq + end)


class FileTail:
    def __init__(self, path: str, max_line: int = 4 << 20, start: Position | None = None) -> None:
        self.path = Path(path)
        self.max_line = max_line
        self.start = start
        self.ready = False
        self.error = ""
        self.long_lines = 0
        self.lag_bytes = 0
        self.skipped_bytes = 0  # bytes lost when a saved position's file no longer exists

    async def chunks(self) -> AsyncIterator[Chunk]:
        """Chunks of whole lines, forever (cancel the task to stop)."""
        fd, name, inode, offset, seq, follow = await self._open_start()
        pending = b""
        dropping = False  # inside a line longer than max_line
        try:
            while True:
                data = await asyncio.to_thread(os.pread, fd, READ_SIZE, offset + len(pending))
                if data:
                    buf = pending + data
                    cut = buf.rfind(b"\n") + 1
                    if dropping:
                        nl = buf.find(b"\n")
                        if nl < 0:
                            offset, seq, pending = offset + len(buf), seq + len(buf), b""
                            continue
                        offset, seq, buf, dropping = offset + nl + 1, seq + nl + 1, buf[nl + 1 :], False
                        cut = buf.rfind(b"\n") + 1
                    if cut == 0:
                        pending = buf
                        if len(pending) > self.max_line:
                            self.long_lines += 1
                            offset, seq, pending, dropping = (
                                offset + len(pending),
                                seq + len(pending),
                                b"",
                                True,
                            )
                        continue
                    lines, pending = buf[:cut], buf[cut:]
                    lines = self._drop_long(lines)
                    yield Chunk(lines, name, inode, offset, seq)
                    offset, seq = offset + cut, seq + cut
                    continue
                # End of this file for now.
                if follow:  # an older, rotated file: finish it, then the next one
                    if pending:
                        yield Chunk(pending + b"\n", name, inode, offset, seq)
                        offset, seq, pending = offset + len(pending), seq + len(pending), b""
                    os.close(fd)
                    name = follow.pop(0)
                    fd, inode, offset = await self._wait_open(name)
                    continue
                rotated = await asyncio.to_thread(self._rotated, inode, offset + len(pending), fd)
                if rotated == "renamed":
                    follow = [str(self.path)]
                    continue  # reads what is left of the renamed file first, via `follow`
                if rotated == "truncated":
                    offset, pending = 0, b""
                    continue
                self.lag_bytes = 0
                await asyncio.sleep(POLL_SECONDS)
        finally:
            os.close(fd)

    def _drop_long(self, lines: bytes) -> bytes:
        """Remove complete lines longer than max_line (counted)."""
        if len(lines) <= self.max_line:
            return lines
        kept = []
        for line in lines.splitlines(keepends=True):
            if len(line) > self.max_line:
                self.long_lines += 1
                kept.append(b"\n")  # keeps offsets: an empty line is skipped by the evaluator
            else:
                kept.append(line)
        return b"".join(kept)

    def _rotated(self, inode: int, position: int, fd: int) -> str:
        """'renamed', 'truncated' or '' for the live file, whose inode and size we compare."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return ""  # renamed, new file not created yet: keep reading the old one
        if st.st_ino != inode:
            return "renamed"
        if st.st_size < position:
            return "truncated"
        self.lag_bytes = st.st_size - position
        return ""

    async def _open_start(self) -> tuple[int, str, int, int, int, list[str]]:
        """Open where the saved position says, or the live file from its start."""
        start = self.start
        if start is not None:
            files = [*self._rotated_siblings(), self.path]
            for i, candidate in enumerate(files):
                try:
                    st = os.stat(candidate)
                except FileNotFoundError:
                    continue
                if st.st_ino == start.inode and st.st_size >= start.offset:
                    fd = os.open(candidate, os.O_RDONLY)
                    self.ready, self.error = True, ""
                    return (
                        fd,
                        str(candidate),
                        start.inode,
                        start.offset,
                        start.seq,
                        [str(f) for f in files[i + 1 :]],
                    )
            self.error = (
                f"saved position in {start.file} (inode {start.inode}) is gone; reading {self.path} from its start"
            )
        fd, inode, offset = await self._wait_open(str(self.path))
        return fd, str(self.path), inode, offset, start.seq if start else 0, []

    async def _wait_open(self, name: str) -> tuple[int, int, int]:
        while True:
            try:
                fd = os.open(name, os.O_RDONLY)
            except FileNotFoundError:
                self.ready = False
                self.error = f"{name} does not exist yet"
                await asyncio.sleep(1)
                continue
            except PermissionError as exc:
                self.ready = False
                self.error = f"{name}: {exc.strerror}"
                await asyncio.sleep(5)
                continue
            self.ready = True
            if self.error.endswith("does not exist yet"):
                self.error = ""
            return fd, os.fstat(fd).st_ino, 0

    def _rotated_siblings(self) -> list[Path]:
        """kube-apiserver's rotated files (``audit-<timestamp>.log``), oldest first."""
        stem, suffix = self.path.stem, self.path.suffix
        return sorted(p for p in self.path.parent.glob(f"{stem}-*{suffix}") if p != self.path)
