"""The Falco front end: a ``k8s_audit`` rule's condition, with the macros and lists it uses, as a Plan.

Falco's filter language: ``and``, ``or``, ``not``, parentheses, macros by name, lists by name inside
``( )``, and comparisons of a field (frontend/falco_fields.py) with a value: ``=`` ``!=`` ``<`` ``<=``
``>`` ``>=`` ``contains`` ``icontains`` ``startswith`` ``endswith`` ``glob`` ``iglob`` ``pmatch``
``exists`` ``in`` ``intersects``. Text compares case-sensitively (``icontains``, ``iglob`` fold case); a
missing field makes every comparison false (so ``not`` of it true); ``in`` over a list field needs each
value in the set, ``intersects`` one; ``pmatch`` is a path or anything under it. ``jevt.rawtime exists`` and
``jevt.rawtime=0`` (the published ``always_true``/``never_true`` macros) fold to true and false, so a
rule switched off by ``never_true`` is known never to match.

``output`` becomes the finding's message (``%field`` -> ``$field$`` of the audit field) and its fields
the finding's key; ``priority`` its severity.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import NoReturn

from auditwatch.frontend.common import RuleError, Translated
from auditwatch.frontend.falco_fields import FIELDS, KaField
from auditwatch.ir.plan import ALWAYS as TRUE
from auditwatch.ir.plan import NEVER as FALSE
from auditwatch.ir.plan import And, Compare, Expr, Filter, Not, Or, Plan, Test

SEVERITY = {
    "EMERGENCY": "critical",
    "ALERT": "critical",
    "CRITICAL": "critical",
    "ERROR": "high",
    "WARNING": "medium",
    "NOTICE": "low",
    "INFORMATIONAL": "informational",
    "INFO": "informational",
    "DEBUG": "informational",
}
UNARY = {"exists"}
LIST_OPS = {"in", "intersects", "pmatch"}
TEXT_OPS = {"contains": ("contains", False), "icontains": ("contains", True), "startswith": ("startswith", False),
            "endswith": ("endswith", False), "glob": ("glob", False), "iglob": ("glob", True)}  # fmt: skip
ORDER_OPS = {"<", "<=", ">", ">="}
REFUSED_OPS = {"bcontains", "bstartswith", "regex"}
WORD_OPS = UNARY | LIST_OPS | set(TEXT_OPS) | REFUSED_OPS
TOKEN = re.compile(
    r"""\s*(?:(?P<punct>[(),])|(?P<op>!=|==|<=|>=|=|<|>)|(?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')"""
    r"""|(?P<word>[^\s(),=<>!'"]+))"""
)
FIELD = re.compile(r"^(?P<name>[a-zA-Z_][a-zA-Z0-9_.]*)(?:\[(?P<arg>[^\]]*)\])?$")
OUTPUT_FIELD = re.compile(r"%([a-zA-Z_][a-zA-Z0-9_.]*(?:\[[^\]]*\])?)")
MAX_KEY = 8  # FindingPolicy.groupBy's limit


@dataclass(frozen=True)
class FalcoRule:
    """``spec.falco``: a rule as the importer writes it (its lists already expanded)."""

    rule: str
    condition: str
    output: str = ""
    priority: str = "WARNING"
    macros: Mapping[str, str] | None = None
    lists: Mapping[str, Sequence[str]] | None = None


@dataclass(frozen=True)
class Token:
    kind: str  # punct, op, str, word
    text: str
    column: int  # 1-based in the text it is in

    @property
    def value(self) -> str:
        """A string's text without its quotes and escapes; anything else as written."""
        if self.kind != "str":
            return self.text
        return re.sub(r"\\(.)", r"\1", self.text[1:-1])


def tokenize(text: str, where: str) -> list[Token]:
    tokens, at = [], 0
    while at < len(text):
        if not text[at:].strip():
            break
        m = TOKEN.match(text, at)
        if not m or m.end() == at:
            raise RuleError(f"{where}: unexpected {text[at:].strip()[:20]!r} at column {at + 1}")
        kind = next(k for k, v in m.groupdict().items() if v is not None)
        tokens.append(Token(kind, m.group(kind), m.start(kind) + 1))
        at = m.end()
    return tokens


class _Parser:
    """One condition (a rule's or a macro's): recursive descent to IR, macros expanded and folded."""

    def __init__(
        self, rule: FalcoRule, cache: dict[str, Expr], text: str, where: str, chain: tuple[str, ...] = ()
    ) -> None:
        self.rule, self.cache, self.where, self.chain = rule, cache, where, chain  # chain: macros being expanded
        self.tokens, self.at = tokenize(text, where), 0

    def parse(self) -> Expr:
        if not self.tokens:
            raise RuleError(f"{self.where}: empty condition")
        expr = self._or()
        if self.at < len(self.tokens):
            self._fail("expected and, or or the end")
        return expr

    # -- grammar --------------------------------------------------------------------------------
    def _or(self) -> Expr:
        items = [self._and()]
        while self._word("or"):
            items.append(self._and())
        return _fold(Or, items)

    def _and(self) -> Expr:
        items = [self._not()]
        while self._word("and"):
            items.append(self._not())
        return _fold(And, items)

    def _not(self) -> Expr:
        if self._word("not"):
            inner = self._not()
            return FALSE if inner == TRUE else TRUE if inner == FALSE else Not(inner)
        return self._primary()

    def _primary(self) -> Expr:
        tok = self._next("a condition")
        if tok.kind == "punct" and tok.text == "(":
            expr = self._or()
            self._expect(")")
            return expr
        if tok.kind != "word":
            self._fail("expected a field, a macro or (", tok)
        after = self._peek()
        if after is not None and (after.kind == "op" or (after.kind == "word" and after.text in WORD_OPS)):
            return self._check(tok)
        if "." in tok.text or "[" in tok.text:
            self._fail(f"field {tok.text} needs an operator", tok)
        return self._macro(tok)

    def _macro(self, tok: Token) -> Expr:
        name, macros = tok.text, self.rule.macros or {}
        if name in self.cache:
            return self.cache[name]
        if name not in macros:
            close = difflib.get_close_matches(name, list(macros), n=1)
            self._fail(f"unknown macro {name!r}" + (f" (did you mean {close[0]}?)" if close else ""), tok)
        if name in self.chain:
            self._fail(f"macro {name!r} refers to itself", tok)
        expr = _Parser(self.rule, self.cache, macros[name], f"macro {name}", (*self.chain, name)).parse()
        self.cache[name] = expr
        return expr

    def _check(self, field_tok: Token) -> Expr:
        m = FIELD.match(field_tok.text)
        if m is None:
            self._fail(f"{field_tok.text!r} is not a field", field_tok)
        name, arg = m.group("name"), m.group("arg")
        op_tok = self._next("an operator")
        op = "=" if op_tok.text == "==" else op_tok.text
        if op in REFUSED_OPS:
            self._fail(f"operator {op} is not supported", op_tok)
        if op in UNARY:
            values: list[str] = []
        elif op in LIST_OPS:
            values = self._list()
        else:
            value = self._next("a value")
            if value.kind not in ("str", "word"):
                self._fail("expected a value", value)
            values = [value.value]
        return lower(name, arg, op, values, lambda message: self._fail(message, field_tok))

    def _list(self) -> list[str]:
        self._expect("(")
        values: list[str] = []
        while not self._punct(")"):
            tok = self._next("a value or )")
            if tok.kind == "word" and tok.text in (self.rule.lists or {}):
                values += list((self.rule.lists or {})[tok.text])
            elif tok.kind in ("str", "word"):
                values.append(tok.value)
            else:
                self._fail("expected a value", tok)
            if not self._punct(","):
                self._expect(")")
                break
        return values

    # -- tokens ---------------------------------------------------------------------------------
    def _peek(self) -> Token | None:
        return self.tokens[self.at] if self.at < len(self.tokens) else None

    def _next(self, wanted: str) -> Token:
        tok = self._peek()
        if tok is None:
            raise RuleError(f"{self.where}: expected {wanted} at the end")
        self.at += 1
        return tok

    def _accept(self, kind: str, text: str) -> bool:
        """Take the next token if it is ``text`` of ``kind``."""
        tok = self._peek()
        if tok is not None and tok.kind == kind and tok.text == text:
            self.at += 1
            return True
        return False

    def _word(self, word: str) -> bool:
        return self._accept("word", word)

    def _punct(self, char: str) -> bool:
        return self._accept("punct", char)

    def _expect(self, char: str) -> None:
        if not self._punct(char):
            self._fail(f"expected {char}", self._peek())

    def _fail(self, message: str, tok: Token | None = None) -> NoReturn:
        at = f" at column {tok.column}" if tok else " at the end"
        raise RuleError(f"{self.where}: {message}{at}")


def _fold(kind: type[And] | type[Or], items: list[Expr]) -> Expr:
    """``And``/``Or`` of ``items`` with the constants folded away."""
    absorbing, neutral = (FALSE, TRUE) if kind is And else (TRUE, FALSE)
    if absorbing in items:
        return absorbing
    kept = [j for i in items if i != neutral for j in (i.items if isinstance(i, kind) else (i,))]
    if not kept:
        return neutral
    return kept[0] if len(kept) == 1 else kind(tuple(kept))


def field_of(name: str, arg: str | None) -> tuple[KaField, str]:
    """The field spec and the audit field a Falco field (with its bracketed argument) reads."""
    spec = FIELDS[name]
    if "{key}" in spec.audit:
        if not arg:
            raise ValueError(f"{name} needs an argument in brackets")
        return spec, spec.audit.replace("{key}", arg)
    if arg is None:
        return spec, spec.audit
    if spec.indexed is None or not arg.isdigit():
        raise ValueError(f"{name} takes no argument [{arg}]")
    return KaField(spec.indexed.replace("{i}", arg), repository=spec.repository), spec.indexed.replace("{i}", arg)


def lower(name: str, arg: str | None, op: str, values: list[str], fail: Callable[[str], NoReturn]) -> Expr:
    """One comparison as IR (frontend/falco_fields.py for what each field reads)."""
    if name not in FIELDS:
        close = difflib.get_close_matches(name, list(FIELDS), n=1, cutoff=0.6)
        if not name.startswith(("ka.", "jevt.")):
            fail(f"{name!r} is a syscall field: only k8s_audit rules read audit events")
        fail(f"unknown field {name!r}" + (f" (did you mean {close[0]}?)" if close else ""))
    try:
        spec, audit = field_of(name, arg)
    except ValueError as exc:
        fail(str(exc))
    if audit == "_time":
        if op == "exists":
            return TRUE
        if op == "=" and values == ["0"]:
            return FALSE
        fail(f"{name}: only `exists` and `=0` are supported")
    if audit.startswith("requestURI?"):
        fail(f"{name} is read for a finding's output, not by a condition")
    if spec.is_list and op not in ("in", "intersects", "exists"):
        fail(f"{name} is a list: it takes in, intersects or exists, not {op}")
    if op == "exists":
        return Test(audit, "exists")
    if spec.repository:
        return _repository(audit, op, values, every=spec.is_list and op == "in", fail=fail)
    if op in ("in", "intersects", "="):
        return Test(audit, "eq", tuple(values), every=spec.is_list and op == "in")
    if op == "!=":
        return And((Test(audit, "exists"), Not(Test(audit, "eq", tuple(values)))))
    if op in TEXT_OPS:
        test, fold = TEXT_OPS[op]
        if test == "glob" and any(c in values[0] for c in "[]"):
            fail(f"{op} with a [character class] is not supported")
        return Test(audit, test, tuple(values), fold=fold)
    if op == "pmatch":
        prefixes = tuple(p.rstrip("/") + "/" for p in values)
        return Or((Test(audit, "eq", tuple(values)), Test(audit, "startswith", prefixes)))
    if op in ORDER_OPS:
        return Compare(audit, op, values[0])
    fail(f"operator {op} is not supported")


def _repository(audit: str, op: str, values: list[str], every: bool, fail: Callable[[str], NoReturn]) -> Expr:
    """A test of images' repositories (the text before the first ``:`` or ``@``) as a regex of the images."""
    alternatives = "|".join(_escape(v) for v in values if not set(v) & set(":@"))
    if op not in ("in", "intersects", "=", "startswith", "contains", "endswith"):
        fail(f"{op} of an image repository is not supported")
    if not alternatives:  # a repository has neither
        return FALSE
    pattern = {
        "startswith": f"^(?:{alternatives})",
        "contains": f"^[^:@]*(?:{alternatives})",
        "endswith": f"^[^:@]*(?:{alternatives})(?:[:@]|$)",
    }.get(op, f"^(?:{alternatives})(?:[:@]|$)")
    return Test(audit, "regex", (pattern,), every=every)


def _escape(text: str) -> str:
    """``text`` as a regex of itself, in the syntax RE2, Java and Joni share."""
    return re.sub(r"([\\.^$|?*+()\[\]{}])", r"\\\1", text)


def translate(rule: FalcoRule) -> Translated:
    """A Falco rule's plan and the finding policy its output and priority give."""
    expr = _Parser(rule, {}, rule.condition, f"rule {rule.rule!r}: condition").parse()
    notes = []
    if expr == FALSE:
        notes.append("its condition can never be true as written (a macro such as k8s_audit_never_true turns "
                     "it off): override that macro to turn it on")  # fmt: skip
    priority = rule.priority.upper()
    if priority not in SEVERITY:
        raise RuleError(f"rule {rule.rule!r}: priority {rule.priority!r} is not one of {', '.join(SEVERITY)}")
    message, group_by = output(rule.output or rule.rule, rule.rule)
    return Translated(Plan((Filter(expr),), text=rule.condition), SEVERITY[priority], message, group_by, notes)


def output(text: str, rule: str) -> tuple[str, list[str]]:
    """The finding's message (``%field`` -> ``$audit field$``) and key (its fields read from the event as
    they are: not JSON text, at most eight)."""
    key: list[str] = []

    def token(m: re.Match[str]) -> str:
        fm = FIELD.match(m.group(1))
        if not fm or fm.group("name") not in FIELDS:
            raise RuleError(f"rule {rule!r}: output: unknown field %{m.group(1)}")
        try:
            _, audit = field_of(fm.group("name"), fm.group("arg"))
        except ValueError as exc:
            raise RuleError(f"rule {rule!r}: output: {exc}") from None
        if not audit.startswith(("/", "_", "requestURI?")) and audit not in key and len(key) < MAX_KEY:
            key.append(audit)
        return f"${audit}$"

    message = OUTPUT_FIELD.sub(token, " ".join(text.split()))
    return message, key
