"""One base for auditwatch's errors, with where the problem is: a file, a field path, a line, a column.

Every layer raises a subclass (``SPLError``, ``ManifestError``, ``InputError``...) with what it knows;
a caller that knows more adds it with ``at`` (validation knows the field, ``lint`` and ``scan`` the
file), so lint, validate, scan and the operator's conditions all print a problem the same way:
``FILE: FIELD: message at line L, column C``. As pySigma's ``SigmaError`` carries a
``SigmaRuleLocation``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Location:
    file: str | None = None  # a manifest, rule or log file
    field: str | None = None  # a field path in it: spec.search, spec.sources[audit].file.path
    line: int | None = None  # 1-based
    column: int | None = None  # 1-based, in the line (or in the field's text, e.g. a search as written)

    def prefix(self) -> str:
        return "".join(f"{part}: " for part in (self.file, self.field) if part)

    def suffix(self) -> str:
        at = [f"line {self.line}" if self.line is not None else "", f"column {self.column}" if self.column else ""]
        return f" at {', '.join(p for p in at if p)}" if any(at) else ""


class AuditwatchError(Exception):
    """An error with a ``message`` and the ``location`` it is about (whatever is known of it)."""

    def __init__(self, message: str, location: Location | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.location = location or Location()

    def __str__(self) -> str:
        return f"{self.location.prefix()}{self.message}{self.location.suffix()}"

    def at(self, file: str | None = None, field: str | None = None) -> AuditwatchError:
        """A copy of this error placed in ``file`` and/or under ``field`` where its location lacks them."""
        where = self.location
        error = copy.copy(self)
        error.location = replace(where, file=where.file or file, field=where.field or field)
        return error
