"""The shared cue lexicon: negation, hedge, change and clause-break words (``reward/resources/cues.yaml``).

The CheXpert rule labeler, the measurement extractor, the prior-exam detector and the phantom's report
reader take their common words from here and add their own extras:

* :func:`cues` -- one list's entries (``cues("negation")``); :func:`cue` -- one named entry of a
  by-name list (``cue("seen_before", "again")``);
* :func:`alternation` -- entries as one regex alternation ``a|b|c`` (groups made non-capturing, the
  single spaces widened as the engine needs, e.g. ``space=r"\\s+"``); the engine adds the boundaries;
* :func:`expand` -- a rules list in which ``$name`` stands for the lexicon's list ``name`` (the
  labeler's YAML uses it).

The file is read once per process. Imports nothing from the project but ``cxr_io`` and ``reward.base``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from cxr_io import read_yaml
from reward.base import RewardError

LEXICON_PATH = Path(__file__).resolve().parent / "resources" / "cues.yaml"
#: The lists of the lexicon: plain lists and lists by name.
LISTS = ("negation", "resolution", "hedge", "clause_breaks")
NAMED_LISTS = ("unchanged", "seen_before")
_UNCAPTURE_RE = re.compile(r"(?<!\\)\((?!\?)")


def _check(data: Any, path: Path) -> dict[str, tuple[str, ...] | dict[str, str]]:
    if not isinstance(data, dict):
        raise RewardError(f"{path}: not a cue lexicon (a mapping of lists expected)")
    unknown = set(data) - set(LISTS) - set(NAMED_LISTS) - {"version"}
    if unknown:
        raise RewardError(f"{path}: unknown lists {sorted(unknown)}; known: {LISTS + NAMED_LISTS}")
    out: dict[str, tuple[str, ...] | dict[str, str]] = {}
    for name in LISTS + NAMED_LISTS:
        value = data.get(name)
        entries = list(value.values()) if name in NAMED_LISTS and isinstance(value, dict) else value
        if not isinstance(entries, list) or not entries or not all(isinstance(e, str) and e.strip() for e in entries):
            kind = "a mapping of names to entries" if name in NAMED_LISTS else "a list of entries"
            raise RewardError(f"{path}: field {name!r} must be {kind} (non-empty text)")
        for e in entries:
            try:
                re.compile(_UNCAPTURE_RE.sub("(?:", e))
            except re.error as err:
                raise RewardError(f"{path}: bad regex in {name}: {e!r} ({err})") from err
        out[name] = dict(value) if name in NAMED_LISTS else tuple(entries)
    return out


@lru_cache(maxsize=4)
def lexicon(path: str | None = None) -> Mapping[str, tuple[str, ...] | dict[str, str]]:
    """The lexicon file (the packaged ``cues.yaml`` by default), checked, as list name -> entries."""
    p = Path(path) if path else LEXICON_PATH
    return _check(read_yaml(p, role="cue lexicon", error=RewardError), p)


def cues(name: str) -> tuple[str, ...]:
    """The entries of one list (a by-name list: its entries in file order)."""
    lists = lexicon()
    if name not in lists:
        raise RewardError(f"cue lexicon: no list {name!r}; known: {sorted(lists)}")
    value = lists[name]
    return tuple(value.values()) if isinstance(value, dict) else value


def cue(name: str, key: str) -> str:
    """One named entry of a by-name list (``cue("seen_before", "again")``)."""
    value = lexicon().get(name)
    if not isinstance(value, dict) or key not in value:
        raise RewardError(f"cue lexicon: no entry {key!r} in {name!r}")
    return value[key]


def alternation(*parts: Iterable[str], space: str = " ") -> str:
    """Entries (lists given in order) as one alternation ``a|b|c``: plain groups made non-capturing,
    each single space replaced by ``space``. No boundaries are added."""
    out = []
    for part in parts:
        for e in part:
            body = _UNCAPTURE_RE.sub("(?:", e.strip())
            out.append(body.replace(" ", space) if space != " " else body)
    return "|".join(out)


def expand(entries: Any, where: str = "rules") -> Any:
    """A rules list with each ``$name`` entry replaced by the lexicon's list ``name`` (in its place).
    Anything that is not a list is returned as is (the caller reports its own format errors)."""
    if not isinstance(entries, list):
        return entries
    out: list[Any] = []
    for e in entries:
        if isinstance(e, str) and e.strip().startswith("$"):
            name = e.strip()[1:]
            if name not in lexicon():
                raise RewardError(f"{where}: {e!r} names no list of the cue lexicon ({LEXICON_PATH.name}); "
                                  f"known: {sorted(lexicon())}")
            out.extend(cues(name))
        else:
            out.append(e)
    return out


def expand_all(spec: Any, kinds: Sequence[str], where: str) -> Any:
    """``spec`` (a mapping of rules lists) with :func:`expand` applied to the lists named in ``kinds``."""
    if not isinstance(spec, dict):
        return spec
    return {k: expand(v, f"{where}.{k}") if k in kinds else v for k, v in spec.items()}
