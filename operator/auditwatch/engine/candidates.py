"""The prefilter's candidate search and line counting: native when the C extension was built, else Python.

``candidate_lines(buffer, literals, escapes)`` gives (start, end) of each line (end excludes the
newline) holding one of ``literals`` (lower-case bytes, matched ASCII-caselessly) or a JSON escape
``\\u00XX`` whose code is marked in ``escapes`` (128 bytes). The C extension (``_candidates.c``)
does it in one SIMD pass; without a compiler at install time, or with ``AUDITWATCH_NATIVE=0``,
the functions below give the same spans, several times slower (tests compare the two).
"""

from __future__ import annotations

import os
import re

Buffer = bytes | bytearray | memoryview
_ESCAPE = re.compile(rb"\\u00([0-7][0-9a-fA-F])")


def py_count_lines(buffer: Buffer) -> int:
    """The number of newline bytes."""
    return memoryview(buffer).tobytes().count(b"\n")


def py_candidate_lines(
    buffer: Buffer, literals: tuple[bytes, ...], escapes: bytes, width: int = -1
) -> list[tuple[int, int]]:
    """The spans ``_candidates.candidate_lines`` gives, found with bytes.find (``width`` is ignored)."""
    if len(escapes) != 128:
        raise ValueError("escapes: expected 128 bytes")
    data = memoryview(buffer).tobytes()
    folded = data.lower()  # bytes.lower folds ASCII letters only, as the native search does
    hits = [m.start() for m in _ESCAPE.finditer(data) if escapes[int(m.group(1), 16)]]
    for literal in literals:
        if not literal or literal != literal.lower():
            raise ValueError("literals: expected non-empty bytes with lower-case letters")
        at = folded.find(literal)
        while at >= 0:
            hits.append(at)
            end = data.find(b"\n", at)
            at = -1 if end < 0 else folded.find(literal, end + 1)  # the rest of the line is a candidate already
    spans: list[tuple[int, int]] = []
    for at in sorted(hits):
        if spans and at <= spans[-1][1]:
            continue  # on a line found already
        end = data.find(b"\n", at)
        spans.append((data.rfind(b"\n", 0, at) + 1, len(data) if end < 0 else end))
    return spans


def py_widest() -> int:
    return 1


try:
    if os.environ.get("AUDITWATCH_NATIVE", "1") == "0":
        raise ImportError("AUDITWATCH_NATIVE=0")
    from auditwatch.engine._candidates import candidate_lines, count_lines, widest

    NATIVE = True
except ImportError:
    candidate_lines, count_lines, widest = py_candidate_lines, py_count_lines, py_widest  # type: ignore[assignment]
    NATIVE = False
