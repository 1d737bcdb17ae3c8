"""A spool: what a source received and acknowledged, kept as lines before anything is evaluated.

The webhook and Pub/Sub sources acknowledge what they receive only once it is appended to a spool
(and fsynced), and every detection reading them tails that spool as a file (``FileTail``), so they
count exactly once across restarts as a file source does. ``Recent`` is the bounded memory of what
was spooled, by which a delivery repeated upstream (a retried batch, a redelivered message) is dropped.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from collections.abc import Hashable, Iterable, Iterator
from pathlib import Path
from typing import Any

SPOOL_FILE_BYTES = 64 << 20  # a spool file is rotated past this size
SPOOL_FILES = 8  # rotated spool files kept (a detection further behind loses the oldest)
REPEAT_WINDOW = 200_000  # keys remembered to drop repeated deliveries


class Spool:
    """Lines appended durably to ``<directory>/audit.log``; rotated by size, the oldest files removed."""

    def __init__(self, directory: Path, file_bytes: int = SPOOL_FILE_BYTES, files: int = SPOOL_FILES) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.file_bytes, self.files = file_bytes, files
        self.file = directory / "audit.log"
        self._f = open(self.file, "ab")  # noqa: SIM115 - open as long as the source is read
        self._size = self._f.tell()
        self._lock = threading.Lock()  # appended to from several worker threads

    def append(self, line: bytes) -> None:
        """Write ``line`` durably (blocking: run it in a thread), whole and after the lines before it."""
        with self._lock:
            if self._size and self._size + len(line) > self.file_bytes:
                self._rotate()
            self._f.write(line)
            self._f.flush()
            os.fsync(self._f.fileno())
            self._size += len(line)

    def close(self) -> None:
        self._f.close()

    def _rotate(self) -> None:
        """As kube-apiserver rotates its log: rename to ``audit-<time>.log``, start a new file."""
        self._f.close()
        stamp = time.strftime("%Y-%m-%dT%H-%M-%S", time.gmtime()) + f".{time.time_ns() // 1_000_000 % 1000:03d}"
        self.file.rename(self.file.with_name(f"audit-{stamp}.log"))
        self._f, self._size = open(self.file, "ab"), 0  # noqa: SIM115
        for old in sorted(self.file.parent.glob("audit-*.log"))[: -self.files]:
            old.unlink()


def newest_lines(directory: Path) -> Iterator[bytes]:
    """The lines of a spool's newest two files, oldest first: what was spooled last, to remember it by."""
    for path in sorted(directory.glob("audit*.log"), key=lambda p: p.stat().st_mtime)[-2:]:
        yield from path.read_bytes().splitlines()


def event_key(event: dict[str, Any]) -> str:
    """What an audit Event delivered again is known by: its ``auditID`` and ``stage``."""
    return f"event:{event.get('auditID')}@{event.get('stage', '')}"


class Recent:
    """The last ``size`` keys seen: ``seen(key)`` says whether one came before and remembers it."""

    def __init__(self, size: int = REPEAT_WINDOW) -> None:
        self.size = size
        self._keys: OrderedDict[Hashable, None] = OrderedDict()

    def seen(self, key: Hashable) -> bool:
        if key in self._keys:
            return True
        self._keys[key] = None
        if len(self._keys) > self.size:
            self._keys.popitem(last=False)
        return False

    def forget(self, keys: Iterable[Hashable]) -> None:
        """Forget keys remembered for a delivery that was not kept after all (the spool not written)."""
        for key in keys:
            self._keys.pop(key, None)
