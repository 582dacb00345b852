"""The scorer interface and the registry of scorers by name.

A scorer takes hypotheses, references and optional context columns and returns one finite float per
sample plus details. It works in batches and never raises on a strange completion (empty, huge,
non-ASCII, markup): such input gets a finite score. Model-backed scorers load once per process
(``get_scorer`` caches instances by name and arguments).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cxr_io import InputError
from reward.metric_table import METRICS


class RewardError(InputError):
    """Bad input to a scorer or a reward spec (names the scorer, field and value)."""


class MissingBackendError(RewardError):
    """A scorer whose model or optional package is not installed (the message says how to get it)."""


@dataclass
class ScoreResult:
    """Per-sample scores (finite floats), optional per-sample details and corpus-level numbers."""

    scores: list[float]
    details: list[dict[str, Any]] | None = None
    corpus: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.scores = [finite(s) for s in self.scores]


def finite(x: Any, default: float = 0.0) -> float:
    """``float(x)`` or ``default`` when that is not a finite number."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        return default
    return v if math.isfinite(v) else default


class Scorer:
    """Base class. Subclasses set ``name`` and implement :meth:`score`.

    ``needs_reference``: whether ``refs`` is required. ``higher_is_better``: for rewards.
    """

    name: str = "scorer"
    needs_reference: bool = True
    higher_is_better: bool = True

    def score(self, hyps: Sequence[str], refs: Sequence[str] | None = None, **context: Sequence[Any]) -> ScoreResult:
        raise NotImplementedError

    def __call__(self, hyps, refs=None, **context) -> ScoreResult:
        hyps = [to_scorable_text(h) for h in hyps]
        if self.needs_reference:
            if refs is None:
                raise RewardError(f"scorer '{self.name}' needs references (refs=None)")
            if len(refs) != len(hyps):
                raise RewardError(f"scorer '{self.name}': {len(hyps)} hypotheses but {len(refs)} references")
            refs = [to_scorable_text(r) for r in refs]
        return self.score(hyps, refs, **context)


#: Longest text a scorer looks at (characters). Longer completions are cut, never rejected.
MAX_TEXT_CHARS = 20_000


def to_scorable_text(text: Any) -> str:
    """Coerce any completion into a scorable string: None -> "", non-str -> str, cut to MAX_TEXT_CHARS."""
    if text is None:
        return ""
    if isinstance(text, list):  # TRL conversational completion [{"role": ..., "content": ...}]
        text = " ".join(str(m.get("content", "")) if isinstance(m, dict) else str(m) for m in text)
    elif isinstance(text, dict):
        text = str(text.get("content", ""))
    elif not isinstance(text, str):
        text = str(text)
    return text[:MAX_TEXT_CHARS]


#: The built-in scorers: registry name -> ("module:factory", description), derived from the one metric table
#: (:data:`reward.metric_table.METRICS`, the rows with a scorer). The module is imported when the scorer is
#: first built (``get_scorer``), so listing the scorers imports none of them; a row naming a missing module or
#: attribute is a :class:`cxr_io.registry.RegistryError` naming the row (tests/repo/test_import_graph.py imports
#: every row). Adding a scorer: its class, and one row in ``METRICS``.
BUILTIN_SCORERS: dict[str, tuple[str, str]] = {s.name: (s.scorer, s.description) for s in METRICS if s.scorer}

#: Scorers registered at run time (:func:`register_scorer`: a user's or a test's); they win over a built-in
#: of the same name.
_REGISTRY: dict[str, tuple[Callable[..., Scorer], str]] = {}
_CACHE: dict[tuple, Scorer] = {}


def register_scorer(name: str, description: str = "") -> Callable:
    """Decorator: register a scorer factory (a class or function returning a :class:`Scorer`) at run time
    (a user's own scorer; the built-in ones are rows of :data:`BUILTIN_SCORERS`)."""

    def deco(factory):
        _REGISTRY[name] = (factory, description or (factory.__doc__ or "").strip().split("\n")[0])
        return factory

    return deco


def available_scorers() -> dict[str, str]:
    """Registry name -> description of every scorer, built-in and registered (imports no scorer module)."""
    out = {k: d for k, (_, d) in BUILTIN_SCORERS.items()}
    out.update({k: v[1] for k, v in _REGISTRY.items()})
    return dict(sorted(out.items()))


def scorer_factory(name: str) -> Callable[..., Scorer]:
    """The factory of a scorer by registry name (a registered one, else the built-in row, imported now)."""
    if name in _REGISTRY:
        return _REGISTRY[name][0]
    from cxr_io.registry import import_entry

    return import_entry("reward.base.BUILTIN_SCORERS", name, BUILTIN_SCORERS[name][0])


#: The one metric vocabulary of ``score``, ``eval`` and reward specs: canonical name -> the ``eval`` table group
#: it feeds (None: no eval group) and the other names users may write for it; the group's name is one of those
#: names too. Derived from :data:`reward.metric_table.METRICS`.
METRIC_VOCABULARY: dict[str, tuple[str | None, tuple[str, ...]]] = {s.name: (s.group, s.aliases) for s in METRICS}
_ALIAS = {a: canon for canon, (_, aliases) in METRIC_VOCABULARY.items() for a in (canon, *aliases)}
_ALIAS.update({g: canon for canon, (g, _) in METRIC_VOCABULARY.items() if g})


def canonical_metric(name: str) -> str:
    """The canonical name of a metric written any accepted way (``"chexpert"`` -> ``"chexpert_f1"``);
    a name outside the vocabulary comes back unchanged (a scorer registered by a user)."""
    key = str(name).strip()
    return _ALIAS.get(key, _ALIAS.get(key.lower(), key))


def eval_group(name: str) -> str | None:
    """The ``eval`` group of a metric name or alias (``"chexpert_f1"`` -> ``"chexpert"``), else None."""
    entry = METRIC_VOCABULARY.get(canonical_metric(name))
    return entry[0] if entry else None


def scorer_name(name: str) -> str:
    """The registry name of a scorer written by name or alias; an unknown one is a RewardError listing the
    known names (nothing is built: ``--dry-run`` uses this)."""
    known = available_scorers()
    if name not in known and canonical_metric(name) in known:
        name = canonical_metric(name)
    if name not in known:
        raise RewardError(f"unknown scorer '{name}'; known: {', '.join(known)} "
                          "(aliases: " + ", ".join(sorted(a for a, c in _ALIAS.items() if a != c and c in known))
                          + ")")
    return name


def unique_names(names: Sequence[str]) -> list[str]:
    """``names`` made unique in order: a repeat gets ``_2``, ``_3``... (``bleu, bleu`` -> ``bleu, bleu_2``), so
    the outputs of ``score`` and TRL's per-reward logs never collide."""
    out: list[str] = []
    used: set[str] = set()
    for base in names:
        name, k = base, 2
        while name in used:
            name, k = f"{base}_{k}", k + 1
        used.add(name)
        out.append(name)
    return out


def get_scorer(name: str, **kwargs: Any) -> Scorer:
    """A scorer instance by registry name; instances are cached per (name, kwargs) in this process."""
    name = scorer_name(name)
    key = (name, tuple(sorted((k, repr(v)) for k, v in kwargs.items())))
    if key not in _CACHE:
        _CACHE[key] = scorer_factory(name)(**kwargs)
    return _CACHE[key]
