"""The one input-error type of the project (:class:`InputError`) and the path type the ``cxr_io`` functions take."""

from __future__ import annotations

import os

PathLike = str | os.PathLike


class InputError(ValueError):
    """Bad input from the user: a file, field or value that is wrong, with what to do about it.

    ``file``/``line``/``field``/``value`` are kept as attributes; the message names them.
    """

    def __init__(self, message: str, *, file: PathLike | None = None, line: int | None = None,
                 field: str | None = None, value: object = None):
        self.file, self.line, self.field, self.value = (None if file is None else str(file)), line, field, value
        where = []
        if file is not None:
            where.append(str(file) + (f":{line}" if line is not None else ""))
        if field is not None:
            where.append(f"field '{field}'")
        if value is not None:
            v = repr(value)
            where.append(f"value {v[:80] + '...' if len(v) > 80 else v}")
        super().__init__(f"{', '.join(where)}: {message}" if where else message)
