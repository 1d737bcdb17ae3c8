"""Audit-log sources: async iterators of chunks of whole lines, each source with its own positions.

Every byte a source yields has a ``seq``: bytes read from that source in all, across rotations and
restarts, so it only grows. Findings record the ``seq`` their counts include (findings/aggregate.py).
A source turns a ``seq`` back into a position of its own kind (a file's inode and offset; a webhook
path is read from its spool file, so it has file positions too), which the runtime stores in the
detection's status and hands back on a restart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class Chunk:
    """Whole lines read from a source; ``seq`` is the source's seq at ``data[0]``."""

    data: bytes
    seq: int
    origin: str  # Splunk's ``source``: the file or the webhook path the lines came from


class Position(Protocol):
    """Where a source resumes; ``status()`` gives the SourceStatus fields that record it."""

    @property
    def seq(self) -> int: ...

    def status(self) -> dict[str, Any]: ...
