"""Fuzzing: whatever a detection author writes or a log holds, the parser, the macro expander and the
audit decoder either give a result or say what is wrong; nothing else escapes, and nothing hangs
(each example has a time bound: a hang guard, not a speed test)."""

import json
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from auditwatch.audit.decode import MalformedLine, decode_line, flatten
from auditwatch.engine.evaluate import Evaluator
from auditwatch.spl import Query, SPLError, parse_search, plan_search
from factory import SEED, seed_search

BOUND = settings(max_examples=200, deadline=timedelta(seconds=2))
WORDS = ["search", "stats", "count", "BY", "by", "rename", "as", "AS", "where", "fillnull", "value", "IN", "OR",
         "AND", "NOT", "iplocation", "convert", "ctime", "timeformat", "values", "dc", "min", "max",
         "user.username", "sourceIPs{}", "*", "system:anonymous", "10.0.0.0/8", "`m`", "`m(x)`", "`kube_audit`",
         "`x_filter`"]  # fmt: skip
PUNCTUATION = ["|", "=", "!=", "<", ">=", "(", ")", ",", '"', "'", "`", "\\", " ", "\n", "$"]
spl = st.lists(st.sampled_from(WORDS + PUNCTUATION) | st.text(max_size=4), max_size=40).map(" ".join)
macro_names = st.sampled_from(["m", "m(a)", "n", "x_filter", "bad name(", "m(a, b)"])


def parses_or_says_why(text, macros=None):
    try:
        assert isinstance(parse_search(text, macros), Query)
    except SPLError as exc:
        assert str(exc)  # a message, with the column where there is one


@BOUND
@given(text=spl)
def test_the_parser_gives_a_query_or_an_spl_error(text):
    parses_or_says_why(text)


@BOUND
@given(text=spl, macros=st.dictionaries(macro_names, spl, max_size=4))
def test_macros_expand_or_say_why(text, macros):
    parses_or_says_why(text, macros)


def test_macros_that_double_at_every_level_are_refused_not_expanded():
    """20 levels of `mN` calling `mN+1` twice would be a million tokens: a bound, not a hang."""
    macros = {f"m{i}": f"`m{i + 1}` `m{i + 1}`" for i in range(19)} | {"m19": "verb=get"}
    with pytest.raises(SPLError, match="expands the search past 100000 tokens"):
        parse_search("`m0` | stats count BY verb", macros)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=30,
)
events = st.dictionaries(st.sampled_from(["kind", "auditID", "user", "sourceIPs", "verb", "items", "a.b", "stage"]),
                         json_values, max_size=6)  # fmt: skip


@BOUND
@given(line=st.binary(max_size=300) | events.map(lambda e: json.dumps(e).encode()))
def test_the_decoder_gives_events_or_a_malformed_line(line):
    try:
        decoded = decode_line(line)
    except MalformedLine as exc:
        assert str(exc)
        return
    for event in decoded:
        record = flatten(event)
        assert all(isinstance(k, str) and all(isinstance(v, str) for v in vs) for k, vs in record.items())


@BOUND
@given(lines=st.lists(st.binary(max_size=120) | events.map(lambda e: json.dumps(e).encode()), max_size=20))
def test_the_seed_detection_counts_any_input_and_goes_on(lines):
    import yaml

    spec = yaml.safe_load(SEED.read_text())["spec"]
    evaluator = Evaluator(plan_search(seed_search(), spec.get("macros")))
    chunk = b"\n".join(line.replace(b"\n", b" ") for line in lines) + b"\n"
    list(evaluator.records(chunk))
    c = evaluator.counters
    assert c.lines == chunk.count(b"\n") and c.skipped + c.malformed <= c.lines and c.matched <= c.events
