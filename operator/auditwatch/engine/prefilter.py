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
import threading

import hyperscan

from auditwatch.audit.chunks import backing
from auditwatch.engine.match import parse_cidr
from auditwatch.spl.plan import And, Compare, Expr, In, Keyword, Not, Or, Plan

# Printable ASCII that JSON encoders write as itself; '/' may be written '\/', and Go writes <>& as \u00XX.
SAFE = frozenset(chr(c) for c in range(0x20, 0x7F)) - set('"\\/<>&*')
# The non-ASCII characters whose str.lower() contains an ASCII character (checked by a unit test).
NON_ASCII_LOWERING_TO_ASCII = {"\u0130": "i", "\u212a": "k"}
MIN_LITERAL = 3

Need = frozenset[str] | None  # any one of these literals must appear; None: no constraint


class Prefilter:
    """Finds candidate lines with Hyperscan, in one pass over a chunk.

    Expressions: each literal (caseless); ``\\u00H`` where H is the high hex digit of a literal
    character, confirmed in the match callback by the low digit (a single precise alternation of
    all codes scans at half the speed); and the special non-ASCII characters, escaped or raw.
    """

    def __init__(self, literals: tuple[str, ...]) -> None:
        self.literals = literals
        self.chars = frozenset(c for lit in literals for c in lit)
        codes = {ord(form) for c in self.chars for form in (c.lower(), c.upper()) if ord(form) < 0x80}
        high = sorted({f"{code >> 4:x}" for code in codes})
        specials = [k for k, v in NON_ASCII_LOWERING_TO_ASCII.items() if v in self.chars]
        expressions = [_hs_literal(lit.encode()) for lit in literals]
        flags = [hyperscan.HS_FLAG_CASELESS] * len(literals)
        self._escape_id = len(expressions)
        expressions.append(rb"\\u00[" + "".join(high).encode() + b"]")
        flags.append(0)
        if specials:
            alternatives = [rb"\\u" + f"{ord(k):04x}".encode() for k in specials]
            alternatives += [_hs_literal(k.encode()) for k in specials]
            expressions.append(b"|".join(alternatives))
            flags.append(hyperscan.HS_FLAG_CASELESS)
        self._db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
        self._db.compile(
            expressions=expressions, ids=list(range(len(expressions))), elements=len(expressions), flags=flags
        )
        self._local = threading.local()

    def spans(self, chunk: bytes | memoryview) -> list[tuple[int, int]]:
        """(start, end) of each candidate line of ``chunk`` (end excludes the newline), in order.

        A memoryview chunk must start at offset 0 of its bytearray (as ``iter_chunks`` gives them).
        """
        buf = backing(chunk)
        size = len(chunk)
        starts: dict[int, int] = {}
        last_end = -1
        escape_id, chars = self._escape_id, self.chars

        def on_match(expr_id: int, _from: int, to: int, _flags: int, _ctx: object) -> None:
            nonlocal last_end
            if to <= last_end:  # another match in the line already taken
                return
            if expr_id == escape_id:
                try:
                    code = int(bytes(buf[to - 1 : to + 1]), 16)
                except ValueError:
                    return
                if chr(code).lower() not in chars:
                    return
            start = buf.rfind(b"\n", 0, to - 1) + 1
            end = buf.find(b"\n", to - 1, size)
            last_end = size if end < 0 else end
            starts[start] = last_end

        self._db.scan(chunk, match_event_handler=on_match, scratch=self._scratch())  # type: ignore[type-var]
        return sorted(starts.items())

    def _scratch(self) -> hyperscan.Scratch:
        """Hyperscan scratch space is per thread: one prefilter may serve the tail and webhook threads."""
        scratch = getattr(self._local, "scratch", None)
        if scratch is None:
            scratch = self._local.scratch = hyperscan.Scratch(self._db)
        return scratch


def derive(plan: Plan) -> Prefilter | None:
    """The prefilter for a plan's base search, or None when no literal is required."""
    need = _need(plan.base.expr)
    return Prefilter(tuple(sorted(need, key=len, reverse=True))) if need else None


def _hs_literal(data: bytes) -> bytes:
    """A Hyperscan expression matching ``data`` literally."""
    return b"".join(b"\\x%02x" % b for b in data)


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
