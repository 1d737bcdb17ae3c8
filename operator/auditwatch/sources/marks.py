"""What tails whose positions exist only between chunks share (CloudWatch ranges, Azure blob lines): where
the next chunk starts, and the positions yielded, so that the position to resume from at a seq is the
newest one at or before it."""

from __future__ import annotations

import dataclasses
from collections import deque
from typing import Any, Generic, TypeVar

from auditwatch.sources import Position

P = TypeVar("P", bound=Position)


class MarkedTail(Generic[P]):
    """``at``: where the next chunk starts (a dataclass with a ``seq``); the positions yielded, oldest first."""

    def __init__(self, start: P) -> None:
        self.at = start
        self._marks: deque[P] = deque([start])

    def position(self, seq: int) -> P | None:
        """The newest position at or before ``seq``, if known."""
        for mark in reversed(self._marks):
            if mark.seq <= seq:
                return mark
        return None

    def forget(self, seq: int) -> None:
        """Drop the positions no resume at ``seq`` or later needs."""
        marks = self._marks
        while len(marks) > 1 and marks[1].seq <= seq:
            marks.popleft()

    def seq_at(self, position: Any) -> int | None:
        """This tail's seq at ``position`` (where another tail of the source is), if it is where this one's
        next chunk starts."""
        at: Any = self.at
        return at.seq if type(position) is type(at) and dataclasses.replace(position, seq=at.seq) == at else None

    def _move(self, position: P) -> None:
        """Go on from ``position`` (after a chunk, or to the next blob); one remembered at the same seq
        (nothing read in between) is replaced."""
        self.at = position
        if self._marks and self._marks[-1].seq == position.seq:
            self._marks.pop()
        self._marks.append(position)
