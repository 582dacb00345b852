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


_REGISTRY: dict[str, tuple[Callable[..., Scorer], str]] = {}
_CACHE: dict[tuple, Scorer] = {}


def register_scorer(name: str, description: str = "") -> Callable:
    """Decorator: register a scorer factory (a class or function returning a :class:`Scorer`)."""

    def deco(factory):
        _REGISTRY[name] = (factory, description or (factory.__doc__ or "").strip().split("\n")[0])
        return factory

    return deco


def available_scorers() -> dict[str, str]:
    _load_builtin()
    return {k: v[1] for k, v in sorted(_REGISTRY.items())}


#: The one metric vocabulary of ``score``, ``eval`` and reward specs: canonical scorer name -> the
#: ``eval`` table group it feeds (None: no eval group) and the other names users may write for it.
METRIC_VOCABULARY: dict[str, tuple[str | None, tuple[str, ...]]] = {
    "bleu": ("bleu", ("bleu4", "bleu-4")),
    "rouge_l": ("rouge_l", ("rougel", "rouge-l")),
    "rouge": (None, ()),
    "radgraph_f1": ("radgraph", ("radgraph", "radgraph-f1")),
    "green": ("green", ()),
    "ratescore": ("ratescore", ("rate_score", "rate-score")),
    "chexpert_f1": ("chexpert", ("chexpert", "f1_chexpert", "f1-chexpert", "chexpert-f1")),
    "chexbert_f1": ("chexbert", ("chexbert", "f1_chexbert", "f1-chexbert", "chexbert-f1")),
    "prior_penalty": ("prior", ("prior", "prior_rate", "prior-penalty")),
    "temporal_f1": (None, ("temporal", "temporal-f1")),
    "length": ("length", ("words",)),  # eval only: report lengths (no per-sample scorer)
}
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
    _load_builtin()
    if name not in _REGISTRY and canonical_metric(name) in _REGISTRY:
        name = canonical_metric(name)
    if name not in _REGISTRY:
        raise RewardError(f"unknown scorer '{name}'; known: {', '.join(sorted(_REGISTRY))} "
                          "(aliases: " + ", ".join(sorted(a for a, c in _ALIAS.items() if a != c and c in _REGISTRY))
                          + ")")
    return name


def get_scorer(name: str, **kwargs: Any) -> Scorer:
    """A scorer instance by registry name; instances are cached per (name, kwargs) in this process."""
    name = scorer_name(name)
    key = (name, tuple(sorted((k, repr(v)) for k, v in kwargs.items())))
    if key not in _CACHE:
        _CACHE[key] = _REGISTRY[name][0](**kwargs)
    return _CACHE[key]


def _load_builtin() -> None:
    """Import the modules that register the built-in scorers (lazy: no heavy imports at startup)."""
    import importlib

    for mod in ("reward.chexpert", "reward.nlg", "reward.temporal", "reward.prior", "reward.radgraph",
                "reward.green", "reward.ratescore", "reward.chexbert", "reward.measurements", "reward.box_rewards",
                "reward.task_rewards"):
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:  # a module not written yet, or an optional dependency
            if e.name and e.name.startswith("reward."):
                continue
            raise
