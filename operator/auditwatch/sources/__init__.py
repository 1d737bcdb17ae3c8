"""Audit-log sources: async iterators of chunks of whole lines, each with the position it came from."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from auditwatch.sources.file import Chunk


class Source(Protocol):
    """What the detection runtime reads and reports: FileTail and WebhookFeed."""

    ready: bool
    error: str
    long_lines: int
    lag_bytes: int

    def chunks(self) -> AsyncIterator[Chunk]: ...
