"""A cheap byte-level test derived from the base search, so that most lines are never JSON-parsed.

Soundness (it never skips a line the full evaluation would match) rests on three facts:

1. A required term ``field=value`` can only match when the field value contains every literal run of
   ``value`` (the text between wildcards), compared with ``str.lower``. We take the longest run made
   of "safe" ASCII characters, which JSON writes as themselves.
2. In the raw line a value's characters appear as themselves or as ``\\uXXXX`` escapes. So a line is a
   candidate when its ASCII-lower-cased bytes contain the literal, or when it has an escape of any
   character that lower-cases into the literal, or (for ``\\u212a`` KELVIN SIGN -> ``k`` and ``\\u0130``
   -> ``i``) such a character written out in UTF-8.
3. ``OR`` needs a literal from each branch (any one may appear); ``AND`` needs only one of its parts;
   ``NOT``, ``!=``, ``<``/``>``, CIDR values and short wildcards give no literal, so no prefilter.

Hypothesis tests compare prefiltered and unfiltered runs (tests/unit/test_prefilter.py).
"""

from __future__ import annotations

import re

from auditwatch.engine.candidates import candidate_lines
from auditwatch.engine.match import parse_cidr
from auditwatch.spl.syntax import And, Compare, Expr, In, Keyword, Not, Or, Query

# Printable ASCII that JSON encoders write as itself; '/' may be written '\/', and Go writes <>& as \u00XX.
SAFE = frozenset(chr(c) for c in range(0x20, 0x7F)) - set('"\\/<>&*')
# The non-ASCII characters whose str.lower() contains an ASCII character (checked by a unit test).
NON_ASCII_LOWERING_TO_ASCII = {"\u0130": "i", "\u212a": "k"}
MIN_LITERAL = 3
MAX_LITERALS = 60

Need = frozenset[str] | None  # any one of these literals must appear; None: no constraint


class Prefilter:
    """Finds candidate lines in one native pass over a chunk (``engine.candidates``).

    It looks for each literal (ASCII-caseless), for ``\\u00XX`` escapes of the characters whose
    lower case is in a literal, and for the special non-ASCII characters, raw (UTF-8) or escaped.
    Stateless, so one prefilter serves the tail and webhook threads at once.
    """

    def __init__(self, literals: tuple[str, ...]) -> None:
        self.literals = literals
        chars = frozenset(c for lit in literals for c in lit)
        specials = [k for k, v in NON_ASCII_LOWERING_TO_ASCII.items() if v in chars]
        self._search = (
            *(lit.encode() for lit in literals),
            *(k.encode() for k in specials),  # raw UTF-8: no ASCII letter in it, so matched exactly
            *(f"\\u{ord(k):04x}".encode() for k in specials),  # hex digits of either case
        )
        self._escapes = bytes(chr(code).lower() in chars for code in range(128))

    def spans(self, chunk: bytes | memoryview) -> list[tuple[int, int]]:
        """(start, end) of each candidate line of ``chunk`` (end excludes the newline), in order."""
        return candidate_lines(chunk, self._search, self._escapes)


def derive(query: Query) -> Prefilter | None:
    """The prefilter for a query's base search, or None when no literal is required (or too many are:
    the native search takes at most 64, the special characters' forms included)."""
    need = _need(query.base.expr)
    if not need or len(need) > MAX_LITERALS:
        return None
    return Prefilter(tuple(sorted(need, key=len, reverse=True)))


def _need(expr: Expr) -> Need:
    if isinstance(expr, Compare):
        return _literal(expr.value) if expr.op == "=" and parse_cidr(expr.value) is None else None
    if isinstance(expr, In):
        return _union([_literal(v) if parse_cidr(v) is None else None for v in expr.values])
    if isinstance(expr, Keyword):
        return _literal(expr.value)
    if isinstance(expr, Not):
        return None
    needs = [_need(i) for i in expr.items]
    if isinstance(expr, Or):
        return _union(needs)
    assert isinstance(expr, And)
    known = [n for n in needs if n]
    return max(known, key=lambda n: (min(map(len, n)), -len(n)), default=None)


def _union(needs: list[Need]) -> Need:
    if not needs or any(not n for n in needs):
        return None
    return frozenset().union(*needs)  # type: ignore[arg-type]


def _literal(pattern: str) -> Need:
    runs = re.split("[^" + re.escape("".join(sorted(SAFE))) + "]+", pattern.lower())
    best = max(runs, key=len)
    return frozenset([best]) if len(best) >= MIN_LITERAL else None
