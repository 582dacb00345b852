"""Registries as explicit lazy tables: a row names ``"package.module:attribute"``, imported when it is used.

The verbs (:data:`mllm_cxr.cli.VERB_MODULES`), the converters (:data:`data_prep.prepare.DATASETS`) and the
scorers (:data:`reward.base.BUILTIN_SCORERS`) are such tables. :func:`import_entry` fails loudly: a row
naming a module or an attribute that does not exist is a :class:`RegistryError` naming the table and the
row, never skipped; an import error raised *inside* an existing module (a missing optional package) goes
through unchanged, for the caller to turn into its own message. Every row of each table is imported by a
test (tests/repo/test_import_graph.py).
"""

from __future__ import annotations

import importlib
from typing import Any


class RegistryError(LookupError):
    """A registry row that names a module or attribute that does not exist (a bug of the table, not input)."""


def import_entry(table: str, key: str, target: str) -> Any:
    """The object that row ``key`` of registry ``table`` names: ``"pkg.module:attr"`` (or ``"pkg.module"``)."""
    module, _, attr = target.partition(":")
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name and (module == e.name or module.startswith(e.name + ".")):
            raise RegistryError(f"{table}: row '{key}' names module '{module}', which does not exist") from None
        raise
    if not attr:
        return mod
    try:
        return getattr(mod, attr)
    except AttributeError:
        raise RegistryError(f"{table}: row '{key}' names '{target}', but {module} has no '{attr}'") from None
