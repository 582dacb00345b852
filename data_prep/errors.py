"""Errors raised for bad input; each names the file, the line, the field and the value."""

from __future__ import annotations


class DataPrepError(ValueError):
    """Bad input data. Carries where (file, line) and what (field, value)."""

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 field: str | None = None, value: object = None):
        self.file, self.line, self.field, self.value = file, line, field, value
        where = []
        if file is not None:
            where.append(str(file) + (f":{line}" if line is not None else ""))
        if field is not None:
            where.append(f"field '{field}'")
        if value is not None:
            v = repr(value)
            where.append(f"value {v[:80] + '...' if len(v) > 80 else v}")
        super().__init__(f"{': '.join([', '.join(where)] if where else [])}{': ' if where else ''}{message}")


class UnknownLayoutError(DataPrepError):
    """A dataset folder whose layout matches none the converter knows."""


class BadImageError(DataPrepError):
    """An image that is missing, unreadable or corrupt."""
