"""The SPL front end: tokenizer, macro expansion and parser (a Query of IR steps), lowered to a Plan."""

from collections.abc import Mapping

from auditwatch.ir.plan import Plan
from auditwatch.spl.errors import SPLError
from auditwatch.spl.lower import plan
from auditwatch.spl.parser import parse_search
from auditwatch.spl.syntax import Query


def plan_search(text: str, macros: Mapping[str, str] | None = None) -> Plan:
    """The plan of an SPL search (raises SPLError)."""
    return plan(parse_search(text, macros))


__all__ = ["Plan", "Query", "SPLError", "parse_search", "plan", "plan_search"]
