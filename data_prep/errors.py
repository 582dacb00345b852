"""Errors raised for bad input; each names the file, the line, the field and the value."""

from __future__ import annotations

from cxr_io import InputError


class DataPrepError(InputError):
    """Bad input data. Carries where (file, line) and what (field, value) (see :class:`cxr_io.InputError`)."""


class UnknownLayoutError(DataPrepError):
    """A dataset folder whose layout matches none the converter knows."""


class BadImageError(DataPrepError):
    """An image that is missing, unreadable or corrupt."""
