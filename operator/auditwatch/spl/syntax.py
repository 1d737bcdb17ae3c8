"""The syntax tree of a parsed search: a ``Query`` of commands.

SPL's commands are the IR's steps (ir/plan.py: ``Filter`` for ``search``, ``Aggregate`` for
``stats``, ``Rename``, ``Where``, ``Convert``, ``IpLocation``, ``FillNull``) in the order written, so
lint can look at the search as its author wrote it; ``lower.plan`` turns it into a ``Plan``.
"""

from __future__ import annotations

from typing import ClassVar

from auditwatch.ir.plan import Aggregate, Filter, Step, Value

Command = Step | Aggregate


class Query(Value):
    """A parsed search. ``commands[0]`` is always the base search (a ``Filter``)."""

    commands: tuple[Command, ...]
    source: str = ""  # the search text, for messages; not compared
    _compared: ClassVar[tuple[str, ...]] = ("commands",)

    @property
    def base(self) -> Filter:
        first = self.commands[0]
        assert isinstance(first, Filter)
        return first

    @property
    def stats(self) -> Aggregate | None:
        return next((c for c in self.commands if isinstance(c, Aggregate)), None)
