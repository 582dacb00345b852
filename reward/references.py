"""Which field of a record holds the reference report: one default order and one rule, for every consumer.

``score --ref-field``, the TRL reward functions' ``reference_column`` (and GRPO's
``reward_reference_column``, a reward spec entry's ``reference_column``) and EditGRPO's
``edit_reference_column`` all name the reference the same way:

* not given (``None``, or ``"auto"`` on the command line): the first of :data:`DEFAULT_REFERENCE_FIELDS`
  that the data has (``reference``, which ``generate`` and the training datasets write: the report the
  prompt asked for; then a study record's ``findings``, then its ``impression``);
* a field name, or ``"a+b"``: those fields' non-empty values joined with a space
  (``findings+impression``);
* a list of such names: the first the data has.

``eval`` reads the ``reference`` field of each prediction row (the format's, :mod:`evaluation.predictions`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

#: The reference fields tried, in order, when none is named.
DEFAULT_REFERENCE_FIELDS: tuple[str, ...] = ("reference", "findings", "impression")
#: The command-line spelling of "not given" (``score --ref-field auto``).
AUTO = "auto"


def reference_candidates(requested: str | Sequence[str] | None) -> tuple[str, ...]:
    """The reference field names to try, in order: :data:`DEFAULT_REFERENCE_FIELDS` when ``requested`` is
    None or ``"auto"``, else the name (or names) given."""
    if requested is None or requested == AUTO:
        return DEFAULT_REFERENCE_FIELDS
    if isinstance(requested, str):
        return (requested,)
    return tuple(requested)


def field_parts(name: str) -> list[str]:
    """``"findings+impression"`` -> ``["findings", "impression"]`` (blank parts dropped)."""
    return [p.strip() for p in name.split("+") if p.strip()]


def choose_reference_field(requested: str | Sequence[str] | None, has: Callable[[str], bool]) -> str | None:
    """The first candidate (:func:`reference_candidates`) all of whose parts ``has`` accepts; None if none."""
    for cand in reference_candidates(requested):
        parts = field_parts(cand)
        if parts and all(has(p) for p in parts):
            return cand
    return None


def join_reference(values: Iterable[str]) -> str:
    """The reference text of a ``"a+b"`` field: its parts' non-empty (stripped) values joined with a space."""
    return " ".join(t for t in (v.strip() for v in values) if t)
