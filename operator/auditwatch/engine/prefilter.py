"""A cheap byte-level test of the literals the planner derives (ir/planner.py), so that most lines are
never JSON-parsed.

Soundness (it never skips a line the full evaluation would match): a line is a candidate when its
ASCII-lower-cased bytes contain a literal, or when it has a ``\\uXXXX`` escape of any character that
lower-cases into one, or (for ``\\u212a`` KELVIN SIGN -> ``k`` and ``\\u0130`` -> ``i``) such a character
written out in UTF-8.

Hypothesis tests compare prefiltered and unfiltered runs (tests/unit/test_prefilter.py).
"""

from __future__ import annotations

from auditwatch.engine.candidates import candidate_lines
from auditwatch.ir.plan import Plan, never
from auditwatch.ir.planner import literals

# The non-ASCII characters whose str.lower() contains an ASCII character (checked by a unit test).
NON_ASCII_LOWERING_TO_ASCII = {"\u0130": "i", "\u212a": "k"}
MAX_LITERALS = 60


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


def derive(plan: Plan) -> Prefilter | None:
    """The prefilter of a plan's first filter, or None when no literal is required (or too many are:
    the native search takes at most 64, the special characters' forms included). A plan that keeps no
    event has one that admits no line."""
    if never(plan):
        return Prefilter(())
    need = literals(plan)
    if not need or len(need) > MAX_LITERALS:
        return None
    return Prefilter(tuple(sorted(need, key=len, reverse=True)))
