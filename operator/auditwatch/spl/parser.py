"""Parser for the SPL subset: tokens (macros expanded) -> Query.

Precedence follows Splunk's search language: ``NOT`` binds tightest, then ``OR``, then the implicit
(or explicit) ``AND``; so ``a=1 b=2 OR c=3`` is ``a=1 AND (b=2 OR c=3)``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from auditwatch.ir.plan import (
    AGG_FUNCS,
    Agg,
    Aggregate,
    And,
    Compare,
    Convert,
    Expr,
    FillNull,
    Filter,
    In,
    IpLocation,
    Keyword,
    Not,
    Operand,
    Or,
    Rename,
    Where,
    WhereCompare,
)
from auditwatch.spl.errors import SPLError
from auditwatch.spl.macros import expand, macro_table
from auditwatch.spl.syntax import Command, Query
from auditwatch.spl.tokens import Kind, Token, tokenize

STATS_FUNCTIONS = {*AGG_FUNCS, "distinct_count"}  # distinct_count: dc


def parse_search(text: str, macros: Mapping[str, str] | None = None) -> Query:
    """Parse an SPL search (as in an ESCU detection's ``search:``) into its syntax tree.

    ``macros`` is spec.macros: ``name`` or ``name(arg, ...)`` -> definition.
    """
    tokens = expand(tokenize(text), macro_table(macros or {}))
    return Query(_Parser(tokens).pipeline(), source=text)


class _Parser:
    def __init__(self, tokens: list[Token]) -> None:
        self.toks = tokens
        self.i = 0

    # -- token helpers -------------------------------------------------------------------------
    @property
    def tok(self) -> Token:
        return self.toks[self.i]

    def peek(self, k: int = 1) -> Token:
        return self.toks[min(self.i + k, len(self.toks) - 1)]

    def advance(self) -> Token:
        tok = self.toks[self.i]
        if tok.kind is not Kind.END:
            self.i += 1
        return tok

    def error(self, context: str, expected: str, tok: Token | None = None) -> SPLError:
        tok = tok or self.tok
        return SPLError(f"{context}: expected {expected}, got {tok.describe()}", tok.column, tok.macro)

    def at_command_end(self) -> bool:
        return self.tok.kind in (Kind.PIPE, Kind.END)

    def name(self, context: str) -> str:
        """A field name: a word or a quoted string."""
        if self.tok.kind not in (Kind.WORD, Kind.STRING):
            raise self.error(context, "a field name")
        return self.advance().text

    # -- pipeline ------------------------------------------------------------------------------
    def pipeline(self) -> tuple[Command, ...]:
        if self.tok.is_word("search"):
            self.advance()
        commands: list[Command] = [Filter(self.search_expr("search"))]
        while self.tok.kind is Kind.PIPE:
            self.advance()
            at = self.tok
            commands.append(self.command())
            if isinstance(commands[-1], Aggregate) and sum(isinstance(c, Aggregate) for c in commands) > 1:
                raise SPLError("only one stats command per search is supported", at.column, at.macro)
        if self.tok.kind is not Kind.END:
            raise self.error("search", "'|' or end of search")
        return tuple(commands)

    def command(self) -> Command:
        tok = self.tok
        if tok.kind is not Kind.WORD:
            raise self.error("pipeline", "a command name after '|'")
        parse = COMMANDS.get(tok.text.lower())
        if parse is None:
            raise SPLError(
                f"unsupported command '{tok.text}' (supported: {', '.join(COMMANDS)})", tok.column, tok.macro
            )
        self.advance()
        return parse(self)

    def cmd_search(self) -> Filter:
        return Filter(self.search_expr("search"))

    def cmd_fillnull(self) -> FillNull:
        value = "0"
        fields: list[str] = []
        while not self.at_command_end():
            if self.tok.is_word("value", case=False) and self.peek().kind is Kind.OP:
                self.advance()
                if self.advance().text != "=":
                    raise self.error("fillnull", "'=' after value", self.toks[self.i - 1])
                value = self.value("fillnull")
            elif self.tok.kind is Kind.COMMA:
                self.advance()
            else:
                fields.append(self.name("fillnull"))
        return FillNull(value, tuple(fields))

    def cmd_stats(self) -> Aggregate:
        aggs: list[Agg] = []
        while not self.tok.is_word("by", case=False):
            if self.tok.kind is Kind.COMMA and aggs:
                self.advance()
                continue
            if self.at_command_end() and aggs:
                break
            if not (self.tok.kind is Kind.WORD and self.tok.text.lower() in STATS_FUNCTIONS):
                raise self.error("stats", "BY or a function" if aggs else "a function such as count")
            aggs.append(self.agg())
        if not aggs:
            raise self.error("stats", "a function such as count")
        by: list[str] = []
        if self.tok.is_word("by", case=False):
            self.advance()
            while not self.at_command_end():
                if self.tok.kind is Kind.COMMA:
                    self.advance()
                    continue
                by.append(self.name("stats BY"))
            if not by:
                raise self.error("stats BY", "a field name")
        return Aggregate(tuple(aggs), tuple(by))

    def agg(self) -> Agg:
        func_tok = self.advance()
        func = {"distinct_count": "dc"}.get(func_tok.text.lower(), func_tok.text.lower())
        field = None
        if self.tok.kind is Kind.LPAREN:
            self.advance()
            field = self.name(f"stats {func}()")
            if self.tok.kind is not Kind.RPAREN:
                raise self.error(f"stats {func}()", "')'")
            self.advance()
        elif func != "count":
            raise self.error(f"stats {func}", "'(' and a field name")
        name = func if field is None else f"{func_tok.text}({field})"
        if self.tok.is_word("as", case=False):
            self.advance()
            name = self.name("stats AS")
        return Agg(func, field, name)

    def cmd_rename(self) -> Rename:
        pairs: list[tuple[str, str]] = []
        while not self.at_command_end():
            if self.tok.kind is Kind.COMMA and pairs:
                self.advance()
                continue
            old = self.name("rename")
            if not self.tok.is_word("as", case=False):
                raise self.error("rename", "AS")
            self.advance()
            pairs.append((old, self.name("rename AS")))
        if not pairs:
            raise self.error("rename", "a field name")
        return Rename(tuple(pairs))

    def cmd_where(self) -> Where:
        if self.at_command_end():
            raise self.error("where", "a condition")
        expr = self.where_or()
        if not self.at_command_end():
            raise self.error("where", "AND, OR or the end of the command")
        return Where(expr)

    def where_or(self) -> Any:
        return self.chain("OR", self.where_and, Or)

    def where_and(self) -> Any:
        return self.chain("AND", self.where_not, And)

    def chain(self, word: str, operand: Any, node: type[And] | type[Or]) -> Any:
        """``operand (word operand)*``, the word in any case (eval's AND/OR/and/or)."""
        items = [operand()]
        while self.tok.is_word(word, case=False):
            self.advance()
            items.append(operand())
        return items[0] if len(items) == 1 else node(tuple(items))

    def where_not(self) -> Any:
        if self.tok.is_word("NOT", case=False):
            self.advance()
            return Not(self.where_not())
        if self.tok.kind is Kind.LPAREN:
            self.advance()
            inner = self.where_or()
            if self.tok.kind is not Kind.RPAREN:
                raise self.error("where", "')'")
            self.advance()
            return inner
        left = self.operand()
        if self.tok.kind is not Kind.OP:
            raise self.error("where", "a comparison such as = != < <= > >=")
        op = self.advance().text
        return WhereCompare(left, op, self.operand())

    def operand(self) -> Operand:
        tok = self.tok
        if tok.kind is Kind.STRING:
            self.advance()
            return Operand(tok.text, is_field=False)
        if tok.kind is Kind.WORD and not tok.is_word("AND", "OR", "NOT", case=False):
            self.advance()
            return Operand(tok.text, is_field=not _is_number(tok.text))
        raise self.error("where", "a field, a number or a quoted string")

    def cmd_convert(self) -> Convert:
        timeformat = "%m/%d/%Y %H:%M:%S"  # Splunk's default
        fields: list[tuple[str, str]] = []
        while not self.at_command_end():
            if self.tok.is_word("timeformat", case=False) and self.peek().kind is Kind.OP:
                self.advance()
                self.advance()
                timeformat = self.value("convert timeformat")
                continue
            if not self.tok.is_word("ctime", case=False):
                raise self.error("convert", "timeformat=... or ctime(field) (the one conversion supported)")
            self.advance()
            if self.tok.kind is not Kind.LPAREN:
                raise self.error("convert ctime", "'('")
            self.advance()
            field = self.name("convert ctime()")
            if self.tok.kind is not Kind.RPAREN:
                raise self.error("convert ctime()", "')'")
            self.advance()
            out = field
            if self.tok.is_word("as", case=False):
                self.advance()
                out = self.name("convert AS")
            fields.append((field, out))
        if not fields:
            raise self.error("convert", "ctime(field)")
        return Convert(timeformat, tuple(fields))

    def cmd_iplocation(self) -> IpLocation:
        field = self.name("iplocation")
        if not self.at_command_end():
            raise self.error("iplocation", "the end of the command (options are not supported)")
        return IpLocation(field)

    # -- search expressions --------------------------------------------------------------------
    def search_expr(self, context: str) -> Expr:
        items: list[Expr] = []
        while not self.at_command_end():
            if self.tok.kind is Kind.RPAREN:
                raise SPLError(f"{context}: unbalanced ')'", self.tok.column, self.tok.macro)
            items.append(self.and_expr(context))
        if not items:
            return Keyword("*")
        return items[0] if len(items) == 1 else And(tuple(items))

    def and_expr(self, context: str) -> Expr:
        items = [self.or_expr(context)]
        while not self.at_command_end() and self.tok.kind is not Kind.RPAREN:
            if self.tok.is_word("AND"):
                self.advance()
            items.append(self.or_expr(context))
        return items[0] if len(items) == 1 else And(tuple(items))

    def or_expr(self, context: str) -> Expr:
        items = [self.not_expr(context)]
        while self.tok.is_word("OR"):
            self.advance()
            items.append(self.not_expr(context))
        return items[0] if len(items) == 1 else Or(tuple(items))

    def not_expr(self, context: str) -> Expr:
        if self.tok.is_word("NOT"):
            self.advance()
            return Not(self.not_expr(context))
        return self.primary(context)

    def primary(self, context: str) -> Expr:
        tok = self.tok
        if tok.kind is Kind.LPAREN:
            self.advance()
            if self.tok.kind is Kind.RPAREN:
                raise self.error(context, "a search term inside '( )'")
            inner = self.and_expr(context)
            if self.tok.kind is not Kind.RPAREN:
                raise self.error(context, "')'")
            self.advance()
            return inner
        if tok.kind not in (Kind.WORD, Kind.STRING) or tok.is_word("AND", "OR"):
            raise self.error(context, "a search term")
        self.advance()
        if self.tok.kind is Kind.OP:
            op = self.advance().text
            return Compare(tok.text, op, self.value(context))
        if self.tok.is_word("IN"):
            self.advance()
            return In(tok.text, self.value_list(context))
        return Keyword(tok.text)

    def value(self, context: str) -> str:
        if self.tok.kind not in (Kind.WORD, Kind.STRING):
            raise self.error(context, f"a value after '{self.toks[self.i - 1].text}'")
        return self.advance().text

    def value_list(self, context: str) -> tuple[str, ...]:
        if self.tok.kind is not Kind.LPAREN:
            raise self.error(context, "'(' after IN")
        self.advance()
        values: list[str] = []
        while self.tok.kind is not Kind.RPAREN:
            if self.tok.kind is Kind.COMMA and values:
                self.advance()
                continue
            if self.tok.kind not in (Kind.WORD, Kind.STRING):
                raise self.error(context, "a value or ')' in the IN list")
            values.append(self.advance().text)
        self.advance()
        if not values:
            raise self.error(context, "at least one value in the IN list", self.toks[self.i - 1])
        return tuple(values)


# The commands of the subset, each with its parser (called after the command's name).
COMMANDS: dict[str, Callable[[_Parser], Command]] = {
    "search": _Parser.cmd_search,
    "fillnull": _Parser.cmd_fillnull,
    "stats": _Parser.cmd_stats,
    "rename": _Parser.cmd_rename,
    "where": _Parser.cmd_where,
    "convert": _Parser.cmd_convert,
    "iplocation": _Parser.cmd_iplocation,
}


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
