"""SPL's syntax tree -> the rule IR: the commands before ``stats`` run per event, those after per row.

A ``fillnull`` without fields fills the fields the commands after it read (those of the per-row stage
too, when it is before ``stats``): Splunk fills only fields that some result has, which drops every
row of a ``stats ... BY user.uid`` over anonymous requests; filling them is what ESCU's rules intend
(``auditwatch lint`` says so).
"""

from __future__ import annotations

from collections.abc import Sequence

from auditwatch.ir.plan import Aggregate, FillNull, Plan, Step, step_fields
from auditwatch.spl.syntax import Command, Query


def plan(query: Query) -> Plan:
    """The plan of a parsed search."""
    commands = query.commands
    split = next((i for i, c in enumerate(commands) if isinstance(c, Aggregate)), len(commands))
    aggregate = commands[split] if split < len(commands) else None
    assert aggregate is None or isinstance(aggregate, Aggregate)
    return Plan(_stage(commands[:split], commands[split:]), aggregate, _stage(commands[split + 1 :], ()), query.source)


def _stage(commands: Sequence[Command], later: Sequence[Command]) -> tuple[Step, ...]:
    steps: list[Step] = []
    for i, cmd in enumerate(commands):
        assert not isinstance(cmd, Aggregate)  # one stats per search (the parser refuses a second)
        if isinstance(cmd, FillNull) and not cmd.fields:
            after = [*commands[i + 1 :], *later]
            cmd = FillNull(cmd.value, tuple(sorted(set().union(*map(step_fields, after)))))
        steps.append(cmd)
    return tuple(steps)
