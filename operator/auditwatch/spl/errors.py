"""The one error type of the SPL layer: a message that names the column and the token."""


class SPLError(ValueError):
    """An invalid search. ``column`` is 1-based in the search text as written (before macro expansion)."""

    def __init__(self, message: str, column: int | None = None, macro: str | None = None) -> None:
        where = f" at column {column}" if column is not None else ""
        inside = f" (in macro `{macro}`)" if macro else ""
        super().__init__(f"{message}{where}{inside}")
        self.column = column
        self.macro = macro
