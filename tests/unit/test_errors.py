"""One error base: every layer's errors say where the problem is, the same way."""

import pytest

from auditwatch.api.manifest import ManifestError, rule_spec
from auditwatch.engine.aggregates import AGGREGATES
from auditwatch.engine.match import _TESTS
from auditwatch.errors import AuditwatchError, Location
from auditwatch.ir.plan import AGG_FUNCS, TEST_OPS
from auditwatch.spl import SPLError, parse_search


def test_a_location_prints_file_field_line_and_column_in_one_order():
    error = AuditwatchError("bad value", Location("d.yaml", "spec.search", line=3, column=7))
    assert str(error) == "d.yaml: spec.search: bad value at line 3, column 7"
    assert str(AuditwatchError("bad")) == "bad"


def test_at_adds_what_the_caller_knows_and_keeps_what_the_error_knew():
    with pytest.raises(SPLError) as caught:
        parse_search("a=1 | stats count BY")
    placed = caught.value.at("d.yaml", "spec.search")
    assert isinstance(placed, SPLError) and placed.column == caught.value.column == 21
    assert str(placed) == "d.yaml: spec.search: stats BY: expected a field name, got end of search at column 21"
    assert placed.at("other.yaml").location.file == "d.yaml"


def test_a_manifest_error_names_its_file_and_field(tmp_path):
    bad = tmp_path / "d.yaml"
    bad.write_text("kind: AuditDetection\nspec: {search: ''}\n")
    with pytest.raises(ManifestError) as caught:
        rule_spec(bad)
    assert caught.value.location == Location(str(bad), "spec.search")
    assert str(caught.value) == f"{bad}: spec.search: must be a non-empty string"
    bad.write_text("kind: AuditDetection\nspec: {search: x, sigma: y}\n")
    with pytest.raises(ManifestError, match="spec: sets exactly one of search, sigma, falco"):
        rule_spec(bad)
    bad.write_text("kind: AuditDetection\nspec: {falco: text}\n")
    with pytest.raises(ManifestError, match=r"spec\.falco: must be a mapping"):
        rule_spec(bad)


def test_a_second_stats_is_refused_where_it_is():
    with pytest.raises(SPLError, match="only one stats command per search is supported at column 21"):
        parse_search("a=1 | stats count | stats count BY x")


def test_every_aggregate_function_of_the_ir_has_one_implementation():
    assert set(AGGREGATES) == set(AGG_FUNCS)


def test_every_test_operator_of_the_ir_has_one_implementation():
    assert {*_TESTS, "exists"} == set(TEST_OPS)  # exists reads no value: the matcher answers it itself
