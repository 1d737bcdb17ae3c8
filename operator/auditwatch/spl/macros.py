"""Backticked macro expansion, at token level so that errors keep the column of the call.

Defaults as Splunk's content tooling generates them (every ESCU detection calls a data-source macro
and a ``<name>_filter`` macro that users customise): ``kube_audit`` (and the EKS pack's
``aws_cloudwatchlogs_eks``) means all events of the detection's own sources, and any ``*_filter``
macro is ``search *``. A call with arguments,
``name(a, b)``, looks up ``name(2)`` first (Splunk's naming), then ``name``, and substitutes
``$arg$`` tokens by the names listed in the definition's ``args``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from auditwatch.spl.errors import SPLError
from auditwatch.spl.tokens import Kind, Token, tokenize

MAX_DEPTH = 20
MAX_TOKENS = 100_000  # a search may not expand past this: macros that call others twice grow exponentially
_CALL = re.compile(r"^\s*([A-Za-z0-9_.:-]+)\s*(?:\((.*)\))?\s*$", re.S)


@dataclass(frozen=True)
class Macro:
    definition: str
    args: tuple[str, ...] = ()


def macro_table(definitions: Mapping[str, str]) -> dict[str, Macro]:
    """spec.macros -> lookup table. A key ``name(a, b)`` declares arguments and is stored as ``name(2)``."""
    table: dict[str, Macro] = {}
    for key, body in definitions.items():
        m = _CALL.match(key)
        if not m:
            raise SPLError(f"invalid macro name {key!r} in spec.macros")
        args = tuple(a.strip() for a in (m.group(2) or "").split(",") if a.strip())
        table[f"{m.group(1)}({len(args)})" if args else m.group(1)] = Macro(body, args)
    return table


def default_macro(name: str) -> Macro | None:
    if name in ("kube_audit", "aws_cloudwatchlogs_eks"):
        return Macro("*")
    if name.endswith("_filter"):
        return Macro("search *")
    return None


def expand(tokens: list[Token], macros: Mapping[str, Macro], depth: int = 0) -> list[Token]:
    """Replace every MACRO token with the tokens of its definition, recursively."""
    out: list[Token] = []
    for tok in tokens:
        if tok.kind is not Kind.MACRO:
            out.append(tok)
            continue
        if depth >= MAX_DEPTH:
            raise SPLError(f"macro `{tok.text}` expands more than {MAX_DEPTH} levels deep", tok.column, tok.macro)
        body, label = _body(tok, macros)
        inner = tokenize(body, macro=label)[:-1]
        # Tokens from a macro body report the column of the call in the text the user wrote.
        inner = [Token(t.kind, t.text, tok.column if tok.macro is None else t.column, t.macro) for t in inner]
        out.extend(expand(inner, macros, depth + 1))
        if len(out) > MAX_TOKENS:
            raise SPLError(f"macro `{tok.text}` expands the search past {MAX_TOKENS} tokens", tok.column, tok.macro)
    return out


def _body(tok: Token, macros: Mapping[str, Macro]) -> tuple[str, str]:
    m = _CALL.match(tok.text)
    if not m:
        raise SPLError(f"invalid macro call `{tok.text}`", tok.column, tok.macro)
    name, arglist = m.group(1), m.group(2)
    args = [a.strip() for a in arglist.split(",")] if arglist is not None and arglist.strip() else []
    macro = macros.get(f"{name}({len(args)})") if args else None
    macro = macro or macros.get(name) or default_macro(name)
    if macro is None:
        arities = sorted(k for k in macros if k.startswith(f"{name}("))
        if arities:
            raise SPLError(
                f"macro `{name}` is defined as {', '.join(arities)}, called with {len(args)} argument(s)",
                tok.column,
                tok.macro,
            )
        raise SPLError(f"unknown macro `{tok.text}`: define it in spec.macros", tok.column, tok.macro)
    if len(args) != len(macro.args):
        raise SPLError(f"macro `{name}` takes {len(macro.args)} argument(s), got {len(args)}", tok.column, tok.macro)
    body = macro.definition
    for param, value in zip(macro.args, args, strict=True):
        body = body.replace(f"${param}$", value)
    return body, name
