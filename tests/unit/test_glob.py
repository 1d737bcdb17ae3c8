"""Wildcard matching is exact (the same answers as a regular expression) and linear (no backtracking)."""

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from auditwatch.engine.match import glob_test, value_test


def regex_answer(pattern: str, text: str) -> bool:
    return re.fullmatch(".*".join(map(re.escape, pattern.split("*"))), text, re.S) is not None


@settings(max_examples=2000, deadline=None)
@given(pattern=st.text("ab*", max_size=8), text=st.text("abc", max_size=12))
def test_same_answers_as_a_regular_expression(pattern, text):
    assert glob_test(pattern)(text) == regex_answer(pattern, text)


class CountingText(str):
    """A text that counts the searches made in it and the characters they could look at."""

    searches = 0
    span = 0

    def find(self, sub, start=0, end=None):  # type: ignore[override]
        CountingText.searches += 1
        CountingText.span += (len(self) if end is None else end) - start
        return super().find(sub, start, end)


def test_adversarial_patterns_do_a_bounded_amount_of_work():
    """`*a*a*a*a*a*b` over 200 a's took a backtracking regex 74 s; here each piece is looked for once,
    over at most the whole text: work linear in the text, whatever the number of `*`s."""
    for stars in (4, 6, 12, 40):
        pattern = "*a" * stars + "*b"
        for length in (200, 100_000):
            CountingText.searches = CountingText.span = 0
            assert not glob_test(pattern)(CountingText("a" * length))
            assert CountingText.searches <= stars + 1 and CountingText.span <= (stars + 1) * length


def test_search_values_use_it_case_insensitively():
    test = value_test("*Anon*OUS")
    assert test("system:ANONYMOUS") and not test("system:anonymous-x")
