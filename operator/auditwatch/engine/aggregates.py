"""The aggregate functions of the streaming executor, one class each, in one table by IR name.

Each keeps a state per group: ``initial()`` makes it, ``update`` folds in one event's values of the
field (None for a function over events, such as a plain ``count``), ``combine`` merges the state of
another reader of the same data, ``output`` is the value a row shows (counts as integers, one value
as a string, several as a list) and ``final`` the values a per-row step reads. As sqlglot keeps an
``AggFunc`` subclass per function. ``min``/``max`` compare as Splunk does: numbers as numbers when
both are numbers, text otherwise.
"""

from __future__ import annotations

from typing import Any, ClassVar

from auditwatch.engine.match import ordered


class Function:
    """An aggregate whose state is its one extreme value or None (``min``, ``max``)."""

    sign: ClassVar[int] = 1

    @staticmethod
    def initial() -> Any:
        return None

    @classmethod
    def update(cls, state: Any, values: list[str] | None) -> Any:
        for v in values or ():
            if state is None or ordered(v, state) * cls.sign > 0:
                state = v
        return state

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


class Max(Function):
    sign = 1


class Min(Function):
    sign = -1


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
