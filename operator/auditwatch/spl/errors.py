"""The one error type of the SPL layer: a message that names the column and the token."""

from auditwatch.errors import AuditwatchError, Location


class SPLError(AuditwatchError, ValueError):
    """An invalid search. The column is 1-based in the search text as written (before macro expansion);
    ``macro`` names the macro whose text the column is in."""

    def __init__(self, message: str, column: int | None = None, macro: str | None = None) -> None:
        super().__init__(message, Location(column=column))
        self.column = column
        self.macro = macro

    def __str__(self) -> str:
        return super().__str__() + (f" (in macro `{self.macro}`)" if self.macro else "")
