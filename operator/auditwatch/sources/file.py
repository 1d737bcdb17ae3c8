"""Tailing the kube-apiserver log backend's file, with positions that survive restarts and rotation.

A position is ``(file, inode, offset, seq)``: ``seq`` counts every byte read from the source across
rotations, so it only grows, and findings record the ``seq`` their counts include (exactly-once,
see ``findings/aggregate.py``). The tail remembers which file and offset each chunk it yielded came
from, until the runtime checkpoints past it. Handled as kube-apiserver and logrotate do things:

- rotation by rename (kube-apiserver renames ``audit.log`` to ``audit-<timestamp>.log`` and creates a
  new ``audit.log``): the old file is read to its end, then the new one from its start. The end is
  read again after the rename is seen: what was written between the last read and the rename
  would be lost otherwise (the cause of a rare failure of the rotation tests);
- copytruncate: the file shrinks below our offset, so we start again at 0;
- a partial last line: held back until its newline arrives;
- a file that does not exist yet: ``ready`` is False with the reason, and we keep trying;
- a line longer than ``max_line``: counted in ``long_lines`` and skipped.
"""

from __future__ import annotations

import asyncio
import errno
import os
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from auditwatch.api.models import FilePositionStatus
from auditwatch.sources import Chunk
from auditwatch.sources.paths import allowed

READ_SIZE = 1 << 20


@dataclass(frozen=True)
class FilePosition:
    file: str
    inode: int
    offset: int
    seq: int

    def status(self) -> dict[str, Any]:
        """The FilePositionStatus fields of this position."""
        return {"path": self.file, "inode": self.inode, "offset": self.offset}

    @classmethod
    def saved(cls, status: FilePositionStatus | None, seq: int) -> FilePosition | None:
        """The position a detection's status recorded for a file (or a webhook's spool), if any."""
        if status is None or not status.inode:
            return None
        return cls(status.path, status.inode, status.offset, seq)


@dataclass(frozen=True)
class _Segment:
    """A yielded chunk's place in its file: ``length`` bytes of the chunk from ``offset`` on."""

    seq: int
    length: int  # the chunk's bytes (a synthetic last newline included)
    in_file: int  # of them, the bytes that are in the file
    file: str
    inode: int
    offset: int


class FileTail:
    def __init__(
        self,
        path: str,
        max_line: int = 4 << 20,
        start: FilePosition | None = None,
        poll_seconds: float = 0.1,
        allow: tuple[str, ...] | None = None,
        origin: str | None = None,
    ) -> None:
        self.path = Path(path)
        self.origin = origin or str(path)  # Splunk's ``source`` of its lines, and the file its status shows
        self.allow = allow  # None: any file; else only files that resolve inside these directories
        self.max_line = max_line
        self.start = start
        self.poll_seconds = poll_seconds
        self.ready = False
        self.error = ""
        self.long_lines = 0
        self.lag_bytes = 0
        self.idle_chunks = False  # yield an empty chunk each time the end of the file is reached
        self.at: FilePosition | None = None  # where the next chunk starts, once a file is open
        self._segments: deque[_Segment] = deque()

    def position(self, seq: int) -> FilePosition | None:
        """The file position of ``seq``, if it is within the chunks yielded and not forgotten."""
        for seg in reversed(self._segments):
            if seg.seq <= seq <= seg.seq + seg.length:
                return FilePosition(seg.file, seg.inode, seg.offset + min(seq - seg.seq, seg.in_file), seq)
        return None

    def forget(self, seq: int) -> None:
        """Drop what is known of the chunks before ``seq`` (no position before it is asked for again)."""
        segments = self._segments
        while len(segments) > 1 and segments[0].seq + segments[0].length < seq:
            segments.popleft()

    def details(self) -> dict[str, Any]:
        return {"lagBytes": self.lag_bytes}

    def seq_at(self, position: Any) -> int | None:
        """The seq this tail will give the byte at ``position`` (a line start another tail of the same
        file reached), when this tail has not yielded it yet and is reading the same file; else None."""
        at = self.at
        if (
            at is None
            or not isinstance(position, FilePosition)
            or at.inode != position.inode
            or position.offset < at.offset
        ):
            return None
        return at.seq + position.offset - at.offset

    def _chunk(self, data: bytes, file: str, inode: int, offset: int, seq: int, in_file: int) -> Chunk:
        self._segments.append(_Segment(seq, len(data), in_file, file, inode, offset))
        self.at = FilePosition(file, inode, offset + in_file, seq + len(data))
        return Chunk(data, seq, file)

    async def chunks(self) -> AsyncIterator[Chunk]:
        """Chunks of whole lines, forever (cancel the task to stop)."""
        fd, name, inode, offset, seq = await self._open_start()
        self.at = FilePosition(name, inode, offset, seq)
        pending = b""
        dropping = False  # inside a line longer than max_line
        renamed = False  # the file was seen renamed away, and is being read to its end once more
        try:
            while True:
                data = await asyncio.to_thread(self._read_at, fd, offset + len(pending))
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
                            offset, seq, pending, dropping = offset + len(pending), seq + len(pending), b"", True
                        continue
                    lines, pending = buf[:cut], buf[cut:]
                    yield self._chunk(self._drop_long(lines), name, inode, offset, seq, cut)
                    offset, seq = offset + cut, seq + cut
                    continue
                # At the end of this file, for now.
                state = await asyncio.to_thread(self._state, inode, offset + len(pending))
                if state == "rotated" and not renamed:
                    # Lines may have been written after the read that found the end and before the
                    # rename (kube-apiserver closes the file, then renames it): read to the end again.
                    renamed = True
                    continue
                if state == "rotated":  # renamed away and closed: finish it, then the file written next
                    renamed = False
                    if pending:  # a last line without its newline: the newline counts as read, in seq too
                        yield self._chunk(pending + b"\n", name, inode, offset, seq, len(pending))
                        offset, seq, pending = offset + len(pending), seq + len(pending) + 1, b""
                    following = self._next_file(inode, fd)
                    os.close(fd)
                    fd = -1  # closed: a cancel while waiting must not close the number again (another's by then)
                    fd, inode, offset = await self._wait_open(following)
                    name = self.origin
                    self.at = FilePosition(name, inode, offset, seq)
                elif state == "truncated":
                    offset, pending = 0, b""
                    self.at = FilePosition(name, inode, offset, seq)
                else:
                    if self.idle_chunks:
                        yield Chunk(b"", seq, name)
                    await asyncio.sleep(self.poll_seconds)
        finally:
            if fd >= 0:
                os.close(fd)

    def _read_at(self, fd: int, at: int) -> bytes:
        """The next bytes of the open file (tests interleave file operations here and in ``_state``)."""
        return os.pread(fd, READ_SIZE, at)

    def _drop_long(self, lines: bytes) -> bytes:
        """Blank out complete lines longer than max_line (counted). Blanks keep every later line's
        offset and seq where they are in the file; the evaluator skips a blank line."""
        if len(lines) <= self.max_line:
            return lines
        kept = []
        for line in lines.split(b"\n"):
            if len(line) + 1 > self.max_line:
                self.long_lines += 1
                line = b" " * len(line)
            kept.append(line)
        return b"\n".join(kept)

    def _state(self, inode: int, position: int) -> str:
        """'rotated' when the live file is another one now, 'truncated' when it shrank, else ''."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return ""  # renamed, the new file not created yet: more may still come
        if st.st_ino != inode:
            return "rotated"
        if st.st_size < position:
            return "truncated"
        self.lag_bytes = st.st_size - position
        return ""

    def _next_file(self, inode: int, fd: int) -> str:
        """The file written after the one open on ``fd``: the oldest rotated file newer than it, else the
        live one. Several rotations may have happened while we were busy or down; none is skipped."""
        entries = []
        for path in self._rotated_siblings():
            try:
                st = os.stat(path)
            except FileNotFoundError:
                continue
            entries.append((st.st_mtime_ns, str(path), st.st_ino))
        # Order by modification time, then name (kube-apiserver's timestamped names sort in time order):
        # file times are coarse, two files rotated within one tick have the same one.
        current = next(((m, n) for m, n, i in entries if i == inode), (os.fstat(fd).st_mtime_ns, ""))
        later = [(m, n) for m, n, i in entries if i != inode and (m, n) > current]
        return min(later)[1] if later else str(self.path)

    async def _open_start(self) -> tuple[int, str, int, int, int]:
        """Open where the saved position says (the live file or a rotated one), or the live file's start."""
        start = self.start
        if start is not None:
            for candidate in [*self._rotated_siblings(), self.path]:
                try:
                    st = os.stat(candidate)
                except FileNotFoundError:
                    continue
                if st.st_ino == start.inode and st.st_size >= start.offset:
                    fd = self._open(candidate)
                    self.ready, self.error = True, ""
                    return fd, self.origin, start.inode, start.offset, start.seq
            self.error = (
                f"saved position in {start.file} (inode {start.inode}) is gone; reading {self.path} from its start"
            )
        fd, inode, offset = await self._wait_open(str(self.path))
        return fd, self.origin, inode, offset, start.seq if start else 0

    def _open(self, name: str | Path) -> int:
        """Open ``name`` for reading, unless it resolves outside the allowed directories (a symlink put
        there after the detection was admitted, say)."""
        if self.allow is not None and not allowed(str(name), self.allow):
            raise PermissionError(errno.EACCES, "resolves outside the directories the operator may read")
        return os.open(name, os.O_RDONLY)

    async def _wait_open(self, name: str) -> tuple[int, int, int]:
        refusal = ""  # why the file could not be opened yet: cleared once it can
        while True:
            try:
                fd = self._open(name)
            except FileNotFoundError:
                refusal = f"{name} does not exist yet"
            except PermissionError as exc:
                refusal = denied(name, exc)
            else:
                self.ready = True
                if refusal and self.error == refusal:
                    self.error = ""
                return fd, os.fstat(fd).st_ino, 0
            self.ready, self.error = False, refusal
            await asyncio.sleep(1)

    def _rotated_siblings(self) -> list[Path]:
        """kube-apiserver's rotated files (``audit-<timestamp>.log``), oldest first."""
        stem, suffix = self.path.stem, self.path.suffix
        return sorted(p for p in self.path.parent.glob(f"{stem}-*{suffix}") if p != self.path)


def denied(name: str, exc: PermissionError) -> str:
    """Why ``name`` cannot be opened, with what would let the operator read it."""
    if exc.filename is None:  # refused by the allowed directories, not by the file system
        return f"{name}: {exc.strerror}"
    try:
        st = os.stat(name)
    except OSError:
        return f"{name}: permission denied (its directory cannot be searched by uid {os.geteuid()})"
    return (
        f"{name}: permission denied: owner uid {st.st_uid} gid {st.st_gid}, mode {st.st_mode & 0o7777:04o}; "
        f"the operator runs as uid {os.geteuid()} gid {os.getegid()} (the file-reading install runs as uid 0 "
        "with every capability dropped: manifests/base)"
    )
