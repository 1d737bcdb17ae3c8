"""Tokenizer for the SPL subset.

Splunk's lexical rules that matter here: ``|`` separates commands; quoted strings take ``\\"`` and
``\\\\`` escapes; unquoted words run until white space or one of ``|()=!<>,"`` and may contain ``\\"``
escapes (ESCU writes ``*\\"privileged\\":true*``); backticks enclose a macro call, optionally with
arguments ``name(a, b)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from auditwatch.spl.errors import SPLError


class Kind(Enum):
    WORD = "word"
    STRING = "string"
    OP = "operator"
    PIPE = "|"
    LPAREN = "("
    RPAREN = ")"
    COMMA = ","
    MACRO = "macro"
    END = "end of search"


@dataclass(frozen=True)
class Token:
    kind: Kind
    text: str
    column: int  # 1-based, in the text the token came from
    macro: str | None = None  # the macro whose body this token came from, for error messages

    def describe(self) -> str:
        if self.kind is Kind.END:
            return "end of search"
        if self.kind is Kind.STRING:
            return f'"{self.text}"'
        return f"'{self.text}'"

    def is_word(self, *words: str, case: bool = True) -> bool:
        if self.kind is not Kind.WORD:
            return False
        return self.text in words if case else self.text.lower() in {w.lower() for w in words}


_SINGLE = {"|": Kind.PIPE, "(": Kind.LPAREN, ")": Kind.RPAREN, ",": Kind.COMMA}
_BREAK = set(' \t\r\n|()=!<>,"`')
_OPS = ("!=", "<=", ">=", "==", "=", "<", ">")


def tokenize(text: str, macro: str | None = None) -> list[Token]:
    """Split ``text`` into tokens; the list always ends with an END token."""
    tokens: list[Token] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        col = i + 1
        if c.isspace():
            i += 1
        elif c in _SINGLE:
            tokens.append(Token(_SINGLE[c], c, col, macro))
            i += 1
        elif c == '"':
            value, i = _quoted(text, i, macro)
            tokens.append(Token(Kind.STRING, value, col, macro))
        elif c == "`":
            end = text.find("`", i + 1)
            if end < 0:
                raise SPLError("unterminated macro call (missing closing backtick)", col, macro)
            tokens.append(Token(Kind.MACRO, text[i + 1 : end].strip(), col, macro))
            i = end + 1
        elif c in "=!<>":
            op = next((o for o in _OPS if text.startswith(o, i)), None)
            if op is None:
                raise SPLError(f"unexpected character '{c}'", col, macro)
            tokens.append(Token(Kind.OP, "=" if op == "==" else op, col, macro))
            i += len(op)
        else:
            word, i = _word(text, i)
            tokens.append(Token(Kind.WORD, word, col, macro))
    tokens.append(Token(Kind.END, "", n + 1, macro))
    return tokens


def _quoted(text: str, i: int, macro: str | None) -> tuple[str, int]:
    out: list[str] = []
    j = i + 1
    while j < len(text):
        c = text[j]
        if c == "\\" and j + 1 < len(text) and text[j + 1] in '"\\':
            out.append(text[j + 1])
            j += 2
        elif c == '"':
            return "".join(out), j + 1
        else:
            out.append(c)
            j += 1
    raise SPLError("unterminated quoted string", i + 1, macro)


def _word(text: str, i: int) -> tuple[str, int]:
    out: list[str] = []
    j = i
    while j < len(text):
        c = text[j]
        if c == "\\" and j + 1 < len(text) and text[j + 1] in '"\\':
            out.append(text[j + 1])
            j += 2
        elif c in _BREAK:
            break
        else:
            out.append(c)
            j += 1
    return "".join(out), j
