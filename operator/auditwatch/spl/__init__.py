"""The SPL subset: tokenizer, macro expansion and parser, producing a Plan of immutable values."""

from auditwatch.spl.errors import SPLError
from auditwatch.spl.parser import compile_search
from auditwatch.spl.plan import Plan

__all__ = ["Plan", "SPLError", "compile_search"]
