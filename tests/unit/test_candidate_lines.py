"""The candidate-line search finds exactly the lines a plain line-by-line search finds: the native one
at every width (32 AVX2, 16 SSE2, 8 portable words, 1 bytes) and the Python one of builds without C."""

import functools
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from auditwatch.engine import candidates

try:
    from auditwatch.engine import _candidates as native
except ImportError:  # built without a compiler: only the Python search is there to test
    native = None

NATIVE_WIDTHS = [w for w in (1, 8, 16, 32) if native and w <= max(8, native.widest())]
SEARCHES = {f"native-{w}": functools.partial(lambda w, *a: native.candidate_lines(*a, w), w) for w in NATIVE_WIDTHS}
SEARCHES["python"] = candidates.py_candidate_lines
ESCAPE = re.compile(rb"\\u00([0-7][0-9a-fA-F])")


def reference(buf: bytes, literals: tuple[bytes, ...], escapes: bytes) -> list[tuple[int, int]]:
    """Lines holding a literal (ASCII-caseless: bytes.lower) or a marked \\u00XX escape."""
    spans, start = [], 0
    for line in buf.split(b"\n"):
        end = start + len(line)
        low = line.lower()
        if any(lit in low for lit in literals) or any(escapes[int(m[1], 16)] for m in ESCAPE.finditer(line)):
            spans.append((start, end))
        start = end + 1
    return spans


PIECES = [
    b"system:unauthenticated",
    b"SYSTEM:Unauthenticated",
    b"system:unauthenticate",
    b"ystem:unauthenticated",
    b"kubectl",
    b"KUBE",
    b"\\u0073",
    b"\\u0053",
    b"\\u006B",
    b"\\u00",
    b"\\u00z1",
    b"\\\\u0073",
    b"\xc4\xb0",
    b"\xe2\x84\xaa",
    b"\\u0130",
    b"\\u212A",
    b"\n",
    b"\\",
    b'"',
]
texts = st.lists(st.one_of(st.sampled_from(PIECES), st.binary(max_size=40)), max_size=60).map(b"".join)
literal_sets = st.lists(
    st.sampled_from([b"system:unauthenticated", b"kubectl", b"kube", b"ku", b"\xc4\xb0", b"\\u0130", b"\\u212a", b"d"]),
    max_size=4,
    unique=True,
).map(tuple)
escape_tables = st.binary(min_size=128, max_size=128).map(lambda b: bytes(x & 1 for x in b))


@pytest.mark.parametrize("search", SEARCHES)
@settings(max_examples=600, deadline=None)
@given(buf=texts, literals=literal_sets, escapes=escape_tables)
def test_same_lines_as_the_reference(search, buf, literals, escapes):
    assert SEARCHES[search](buf, literals, escapes) == reference(buf, literals, escapes)


@pytest.mark.parametrize("search", SEARCHES)
def test_a_hit_in_the_last_bytes_of_a_long_line(search):
    """Block loops stop a block short of the end; the last bytes are searched one by one."""
    for pad in range(0, 80):
        buf = b"x" * pad + b"SyStem:unauthenticated"
        assert SEARCHES[search](buf, (b"system:unauthenticated",), bytes(128)) == [(0, len(buf))]


@pytest.mark.parametrize("search", SEARCHES)
def test_line_counts_agree(search):
    count = native.count_lines if search.startswith("native") else candidates.py_count_lines
    assert [count(b) for b in (b"", b"a", b"a\n", b"\n\n", bytearray(b"x\ny\nz"))] == [0, 0, 1, 2, 2]


@pytest.mark.parametrize("search", SEARCHES)
def test_bad_arguments_name_what_is_wrong(search):
    with pytest.raises(ValueError, match="escapes: expected 128 bytes"):
        SEARCHES[search](b"", (b"abc",), b"")
    with pytest.raises(ValueError, match="letters"):
        SEARCHES[search](b"", (b"ABC",), bytes(128))


@pytest.mark.skipif(native is None, reason="built without the C extension")
def test_widths_the_native_search_refuses():
    with pytest.raises(ValueError, match="width: expected 1, 8, 16 or 32"):
        native.candidate_lines(b"", (b"abc",), bytes(128), 4)
