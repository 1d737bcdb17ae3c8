"""The positions a tail has yielded, for sources whose positions exist only between chunks (CloudWatch
ranges, Azure blob lines): the position to resume from at a seq is the newest one at or before it."""

from __future__ import annotations

from collections import deque
from typing import Generic, TypeVar

from auditwatch.sources import Position

P = TypeVar("P", bound=Position)


class Marks(Generic[P]):
    """Positions yielded, oldest first (the start included)."""

    def __init__(self, start: P) -> None:
        self._marks: deque[P] = deque([start])

    def add(self, position: P) -> None:
        """Remember the position after a chunk; one at the same seq (nothing read in between) is replaced."""
        if self._marks and self._marks[-1].seq == position.seq:
            self._marks.pop()
        self._marks.append(position)

    def at(self, seq: int) -> P | None:
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
