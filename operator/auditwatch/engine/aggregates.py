"""The aggregate functions of the streaming executor, one class each, in one table by IR name.

Each keeps a state per group: ``initial()`` makes it, ``update`` folds in one event's values of the
field (None for a function over events, such as a plain ``count``), ``combine`` merges the state of
another reader of the same data, ``output`` is the value a row shows (counts as integers, one value
as a string, several as a list) and ``final`` the values a per-row step reads. As sqlglot keeps an
``AggFunc`` subclass per function. ``min``/``max`` order values as Splunk documents: numbers before
text (``splunk_order``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from auditwatch.engine.match import number


class Function:
    """An aggregate whose state is its one extreme value or None (``min``, ``max``), in Splunk's order:
    numbers (compared as numbers) before text (compared as text); equal numbers written differently
    (``1``, ``1.0``) by their text. A total order, so the result does not depend on the order events
    arrive in (a SQL engine's groups have none)."""

    pick: ClassVar[Callable[..., Any]] = max

    @staticmethod
    def initial() -> Any:
        return None

    @classmethod
    def update(cls, state: Any, values: list[str] | None) -> Any:
        candidates = [*(values or ()), *(() if state is None else (state,))]
        return cls.pick(candidates, key=splunk_order) if candidates else state

    @classmethod
    def combine(cls, mine: Any, theirs: Any) -> Any:
        return mine if theirs is None else cls.update(mine, [theirs])

    @classmethod
    def output(cls, state: Any) -> Any:
        values = cls.final(state)
        return values[0] if len(values) == 1 else values

    @staticmethod
    def final(state: Any) -> list[str]:
        return [] if state is None else [state]


def splunk_order(value: str) -> tuple[int, float, str]:
    """The sort key of a value for ``min`` and ``max``: numbers first, by number, then text."""
    n = number(value)
    return (1, 0.0, value) if n is None or n != n else (0, n, value)  # NaN is no number to order by


class Max(Function):
    pick = max


class Min(Function):
    pick = min


class Count(Function):
    """Events (``count``) or values of a field (``count(f)``): duplicates count."""

    @staticmethod
    def initial() -> Any:
        return 0

    @classmethod
    def update(cls, state: Any, values: list[str] | None) -> Any:
        return state + 1 if values is None else state + len(values)

    @classmethod
    def combine(cls, mine: Any, theirs: Any) -> Any:
        return mine + theirs

    @classmethod
    def output(cls, state: Any) -> Any:
        return state

    @staticmethod
    def final(state: Any) -> list[str]:
        return [str(state)]


class Values(Function):
    """The distinct values, output in lexicographic order (as Splunk's ``values``)."""

    @staticmethod
    def initial() -> Any:
        return set()

    @classmethod
    def update(cls, state: Any, values: list[str] | None) -> Any:
        if values:
            state.update(values)
        return state

    @classmethod
    def combine(cls, mine: Any, theirs: Any) -> Any:
        return mine | theirs

    @staticmethod
    def final(state: Any) -> list[str]:
        return sorted(state)


class DistinctCount(Values):
    """How many distinct values (``dc``)."""

    @classmethod
    def output(cls, state: Any) -> Any:
        return len(state)

    @staticmethod
    def final(state: Any) -> list[str]:
        return [str(len(state))]


AGGREGATES: dict[str, type[Function]] = {
    "count": Count,
    "values": Values,
    "dc": DistinctCount,
    "min": Min,
    "max": Max,
}
