"""Audit-log sources: async iterators of chunks of whole lines, each source with its own positions.

Every byte a source yields has a ``seq``: bytes read from that source in all, across rotations and
restarts, so it only grows. Findings record the ``seq`` their counts include (findings/aggregate.py).
A source turns a ``seq`` back into a position of its own kind (a file's inode and offset; a webhook
path is read from its spool file, so it has file positions too; a CloudWatch log group's are two
times), which the runtime stores in the detection's status and hands back on a restart. The position
for a ``seq`` may be at an earlier ``seq`` (its own): what is between is read again after a restart,
as the same bytes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class Chunk:
    """Whole lines read from a source; ``seq`` is the source's seq at ``data[0]``."""

    data: bytes
    seq: int
    origin: str  # Splunk's ``source``: the file or the webhook path the lines came from


class Position(Protocol):
    """Where a source resumes: ``seq``, and ``status()``, the fields of its kind's sub-object of the
    SourceStatus (a file's path, inode and offset; a log group's two times)."""

    @property
    def seq(self) -> int: ...

    def status(self) -> dict[str, Any]: ...


class Tail(Protocol):
    """A running read of one source (sources/file.py, sources/cloudwatch.py), as runtime/readers.py shares it."""

    ready: bool
    error: str
    long_lines: int
    lag_bytes: int
    idle_chunks: bool  # yield an empty chunk each time nothing is left to read for now

    @property
    def at(self) -> Position | None:
        """Where the next chunk starts."""

    def chunks(self) -> AsyncIterator[Chunk]: ...

    def position(self, seq: int) -> Position | None: ...

    def forget(self, seq: int) -> None: ...

    def seq_at(self, position: Any) -> int | None:
        """The seq this tail will give ``position`` (where another tail of the source is), if its next
        chunks start there or later in the same file; else None."""

    def details(self) -> dict[str, Any]:
        """Fields of the kind's SourceStatus sub-object that describe the read besides its position."""
