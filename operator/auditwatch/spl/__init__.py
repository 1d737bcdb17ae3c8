"""The SPL subset: tokenizer, macro expansion and parser, producing a Query of immutable values."""

from auditwatch.spl.errors import SPLError
from auditwatch.spl.parser import parse_search
from auditwatch.spl.syntax import Query

__all__ = ["Query", "SPLError", "parse_search"]
