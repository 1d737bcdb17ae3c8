"""The prefilter is sound: prefiltered and unfiltered runs give the same rows, on any encoding."""

import json
import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from auditwatch.engine.evaluate import Decoded
from auditwatch.engine.prefilter import NON_ASCII_LOWERING_TO_ASCII, Prefilter, derive
from auditwatch.spl import plan_search
from factory import event, run, seed_search

SEARCHES = [
    seed_search(),
    "user.username=*anon* | stats count BY user.username",
    'verb IN ("delete", "deletecollection") OR userAgent="kube*ctl*" | stats count BY verb userAgent',
    '"objectRef.resource"=secrets verb=get | stats count BY user.username',
    "NOT user.username=system:anonymous | stats count BY user.username",
    "kubectl | stats count BY userAgent",
    "user.username=system:anonymous | rename user.username as user | stats count BY user",
]

# Names built from pieces that stress case folding and escapes around the literals the searches need.
PIECES = [
    "system:",
    "anonymous",
    "ANON",
    "\u212aube",
    "İ",
    "s",
    "ſ",  # noqa: RUF001 - long s: upper-cases to S, must not fool the prefilter
    "kubectl",
    "Kube-CTL",
    ":",
    "/",
    "\u00e9",
    "secrets",
    "get",
    "delete",
    "\\",
    '"',
    "<&>",
    " ",
    "*",
]
text = st.lists(st.sampled_from(PIECES), max_size=4).map("".join)


@st.composite
def audit_event(draw):
    return event(
        username=draw(st.one_of(st.just("system:anonymous"), st.just("System:Anonymous"), text)),
        groups=draw(
            st.one_of(
                st.none(),
                st.lists(st.sampled_from(["system:unauthenticated", "dev", "SYSTEM:UNAUTHENTICATED"]), max_size=2),
            )
        ),
        verb=draw(st.sampled_from(["get", "GET", "delete", "deletecollection", "list"])),
        agent=draw(text),
        ips=draw(st.lists(st.sampled_from(["10.0.0.1", "2001:db8::1"]), max_size=2)),
        object_ref=draw(st.one_of(st.none(), st.builds(lambda r: {"resource": r}, text))),
    )


def encode(ev, style: int, rnd: random.Random) -> bytes:
    """One valid JSON encoding of ``ev``: compact, ASCII-escaped, or with random \\u escapes."""
    if style == 0:
        return json.dumps(ev, ensure_ascii=False, separators=(",", ":")).encode()
    if style == 1:
        return json.dumps(ev).encode()
    out = []
    in_string = escaped = False
    for ch in json.dumps(ev, ensure_ascii=False):
        if in_string and not escaped and ch.isalnum() and rnd.random() < 0.3:
            out.append("".join(f"\\u{u:04x}" for u in _utf16(ch)))
            continue
        out.append(ch)
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = in_string
        elif ch == '"':
            in_string = not in_string
    encoded = "".join(out)  # escapes inside key names and values alike: still the same JSON document
    assert json.loads(encoded) == ev
    return encoded.encode()


def _utf16(ch):
    data = ch.encode("utf-16-be")
    return [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    events=st.lists(audit_event(), min_size=1, max_size=8),
    style=st.integers(0, 2),
    seed=st.integers(0, 1000),
    search=st.sampled_from(SEARCHES),
)
def test_prefiltered_rows_equal_unfiltered_rows(events, style, seed, search):
    rnd = random.Random(seed)
    lines = [encode(ev, style, rnd) + b"\n" for ev in events]
    assert run(search, lines, prefilter=True) == run(search, lines, prefilter=False)


def test_the_seed_rule_gets_a_literal_prefilter():
    pf = derive(plan_search(seed_search()))
    assert pf is not None and pf.literals == ("system:unauthenticated",)


def test_rules_without_a_required_literal_get_no_prefilter():
    for search in [
        "NOT user.username=x",
        "user.username!=abc",
        "sourceIPs{}=10.0.0.0/8",
        "a=1* OR b=xyz",
        "*",
    ]:
        assert derive(plan_search(search)) is None, search


def test_the_prefilter_skips_lines_that_cannot_match():
    pf = derive(plan_search(seed_search()))
    chunk = b'{"user":{"username":"alice"}}\n{"g":"SYSTEM:UNAUTHENTICATED"}\n{"u":"x"}\n{"g":"\\u0073ystem"}'
    assert [chunk[s:e] for s, e in pf.spans(chunk)] == [
        b'{"g":"SYSTEM:UNAUTHENTICATED"}',
        b'{"g":"\\u0073ystem"}',
    ]


def test_non_ascii_characters_lowering_into_ascii_are_all_known():
    found = {chr(c): chr(c).lower() for c in range(0x80, 0x110000) if any(ord(x) < 0x80 for x in chr(c).lower())}
    assert {k: "".join(x for x in v if ord(x) < 0x80) for k, v in found.items()} == NON_ASCII_LOWERING_TO_ASCII


def test_the_generated_events_do_reach_rows_through_escapes():
    """Guards the property test above against vacuity: escaped lines that match exist in its space."""
    from hypothesis import find

    def matches_when_escaped(events):
        lines = [encode(ev, 2, random.Random(1)) + b"\n" for ev in events]
        return bool(run(SEARCHES[0], lines, prefilter=False)) and b"\\u" in b"".join(lines)

    find(
        st.lists(audit_event(), min_size=1, max_size=3),
        matches_when_escaped,
        settings=settings(max_examples=2000),
    )


def test_a_search_needing_more_literals_than_the_native_search_takes_runs_unfiltered():
    values = ", ".join(f'"user-{i:03d}"' for i in range(61))
    assert derive(plan_search(f"user.username IN ({values}) | stats count BY user.username")) is None
    assert derive(plan_search(f"user.username IN ({values[: values.rindex(',')]}) | stats count")) is not None


LINES = st.lists(st.sampled_from([b"alpha", b"beta x", b"gamma", b"ALPHA", b"\\u0061lpha", b"", b"delta beta"]))


@settings(max_examples=200, deadline=None)
@given(LINES, st.sets(st.sampled_from(["alpha", "beta", "gamma", "lta"]), min_size=1), st.booleans())
def test_each_prefilter_gets_its_own_lines_from_a_chunk_decoded_for_several(lines, literals, everything):
    chunk = b"".join(line + b"\n" for line in lines)
    mine = Prefilter(tuple(sorted(literals)))
    other = Prefilter(("delta",))
    union = None if everything else Prefilter(tuple(sorted(literals | {"delta"})))
    decoded = Decoded(chunk, union)
    assert decoded.candidates(mine) == mine.spans(chunk)
    assert decoded.candidates(other) == other.spans(chunk)
    assert decoded.lines == len(lines)
