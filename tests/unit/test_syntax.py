"""The IR's value classes: what frozen dataclasses would give, without their start-up cost."""

from dataclasses import FrozenInstanceError

import pytest

from auditwatch.ir.plan import Compare, FillNull, Filter, expr_fields, renamed
from auditwatch.spl import parse_search
from auditwatch.spl.syntax import Query


def test_plan_values_behave_as_frozen_dataclasses():
    a = Compare("verb", "=", "get")
    assert a == Compare(field="verb", op="=", value="get") and hash(a) == hash(Compare("verb", "=", "get"))
    assert a != Compare("verb", "=", "list") and a != ("verb", "=", "get")
    assert repr(a) == "Compare(field='verb', op='=', value='get')"
    assert FillNull().value == "0" and FillNull(fields=("a",)).fields == ("a",)
    assert Query((Filter(a),), source="x") == Query((Filter(a),), source="y")  # the source text is not compared
    with pytest.raises(FrozenInstanceError):
        a.op = "!="
    with pytest.raises(TypeError, match="missing argument 'value'"):
        Compare("verb", "=")
    with pytest.raises(TypeError, match="unexpected or repeated argument 'op'"):
        Compare("verb", "=", "get", op="=")


def test_walk_visits_every_node_parents_first_and_renamer_states_rename_once():
    query = parse_search('a=1 (b=2 OR NOT c IN ("x")) | rename a as b, d as e | where f > 3')
    kinds = [type(n).__name__ for n in query.walk()]
    assert kinds[:2] == ["Query", "Filter"] and kinds.count("Compare") == 2 and "In" in kinds
    assert expr_fields(query.commands[0].expr) == {"a", "b", "c"} and expr_fields(query.commands[2].expr) == {"f"}
    # `rename a as b` drops the old b; the others keep their places.
    assert renamed(["a", "b", "c", "d"], query.commands[1]) == ["b", "c", "e"]
