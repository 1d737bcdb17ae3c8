"""Reading audit logs as chunks of whole lines: plain files, gzip files and stdin."""

from __future__ import annotations

import gzip
import sys
from collections.abc import Iterator
from typing import BinaryIO

CHUNK = 1 << 20
GZIP_MAGIC = b"\x1f\x8b"


def open_log(path: str) -> BinaryIO:
    """Open a log for reading; ``-`` is stdin; gzip is recognised by its magic bytes."""
    if path == "-":
        raw: BinaryIO = sys.stdin.buffer
        head = raw.peek(2)[:2] if hasattr(raw, "peek") else b""
    else:
        raw = open(path, "rb")  # noqa: SIM115 - the caller closes it
        head = raw.read(2)
        raw.seek(0)
    if head == GZIP_MAGIC:
        return gzip.GzipFile(fileobj=raw)  # type: ignore[return-value]
    return raw


def iter_chunks(stream: BinaryIO, size: int = CHUNK) -> Iterator[bytes]:
    """Chunks of ``stream`` that end at a newline; the last may end without one."""
    carry = b""
    while True:
        block = stream.read(size)
        if not block:
            break
        cut = block.rfind(b"\n")
        if cut < 0:
            carry += block
            continue
        yield carry + block[: cut + 1]
        carry = block[cut + 1 :]
    if carry:
        yield carry
