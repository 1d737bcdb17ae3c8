"""The Query's value classes: what frozen dataclasses would give, without their start-up cost."""

from dataclasses import FrozenInstanceError

import pytest

from auditwatch.spl.syntax import Compare, FillNull, Query, Search


def test_plan_values_behave_as_frozen_dataclasses():
    a = Compare("verb", "=", "get")
    assert a == Compare(field="verb", op="=", value="get") and hash(a) == hash(Compare("verb", "=", "get"))
    assert a != Compare("verb", "=", "list") and a != ("verb", "=", "get")
    assert repr(a) == "Compare(field='verb', op='=', value='get')"
    assert FillNull().value == "0" and FillNull(fields=("a",)).fields == ("a",)
    assert Query((Search(a),), source="x") == Query((Search(a),), source="y")  # the source text is not compared
    with pytest.raises(FrozenInstanceError):
        a.op = "!="
    with pytest.raises(TypeError, match="missing argument 'value'"):
        Compare("verb", "=")
    with pytest.raises(TypeError, match="unexpected or repeated argument 'op'"):
        Compare("verb", "=", "get", op="=")
