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


#: The built-in scorers, one row each: registry name -> ("module:factory", description). The module is
#: imported when the scorer is first built (``get_scorer``), so listing the scorers imports none of them;
#: a row naming a missing module or attribute is a :class:`cxr_io.registry.RegistryError` naming the row
#: (tests/test_import_graph.py imports every row). Adding a scorer: its class, and one row here.
BUILTIN_SCORERS: dict[str, tuple[str, str]] = {
    "chexpert_f1": ("reward.chexpert:ChexpertF1Scorer",
        "Per-sample F1 of CheXpert labels (hypothesis vs reference), rule labeler"),
    "chexbert_f1": ("reward.chexbert:ChexbertF1Scorer",
        "F1 between the CheXbert labels of hypothesis and reference (needs chexbert.pth)"),
    "radgraph_f1": ("reward.radgraph:RadGraphF1Scorer",
        "RadGraph F1 (simple/partial/complete) with a local RadGraph model"),
    "green": ("reward.green:GreenScorer",
        "GREEN: LLM-judged clinically significant errors vs matched findings (needs a judge)"),
    "ratescore": ("reward.ratescore:RaTEScoreScorer",
        "RaTEScore: entity-aware similarity of two reports (optional RaTEScore package)"),
    "bleu": ("reward.nlg:BleuScorer", "sentence BLEU-n per sample (COCO/RadEval); corpus BLEU-1..n in corpus"),
    "rouge": ("reward.nlg:RougeScorer", "ROUGE-1/2/L F (rouge-score, stemmer); per-sample key rougeL by default"),
    "rouge_l": ("reward.nlg:RougeLScorer", "ROUGE-L F per sample (rouge-score, stemmer); corpus mean in corpus"),
    "temporal_f1": ("reward.temporal:TemporalF1Scorer",
        "Temporal F1 (RadEval/Libra): overlap of BioViL-T change words"),
    "prior_penalty": ("reward.prior:PriorPenalty",
        "-1 per completion (or per sentence) that refers to a prior exam the study did not have"),
    "measurement_hallucination": ("reward.measurements:MeasurementHallucination",
        "number of hallucinated device/position/measurement/size facts per report (vs the reference)"),
    "measurement_f1": ("reward.measurements:MeasurementF1",
        "F1 of device + tip-position facts of the generation vs the reference"),
    "measurement_penalty": ("reward.measurements:MeasurementPenalty",
        "-penalty per hallucinated device/position/measurement/size fact (capped at max_count)"),
    "iou": ("reward.box_rewards:IoUReward",
        "Matched IoU of the completion's boxes with the reference boxes (VLM-R1 style)"),
    "box_f1": ("reward.box_rewards:BoxF1Reward", "Box F1 at IoU >= threshold with Hungarian matching"),
    "box_format": ("reward.box_rewards:BoxFormatReward",
        "1 when the completion's boxes parse, lie inside the image and have ordered corners"),
    "grounded_report": ("reward.box_rewards:GroundedReportReward",
        "RadFact-style grounded report score (rule labeler + pixel precision > 0.5)"),
    "answer_match": ("reward.task_rewards:AnswerMatch",
        "The completion gives the reference short answer (classification, vqa, view)"),
}

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
    known = available_scorers()
    if name not in known and canonical_metric(name) in known:
        name = canonical_metric(name)
    if name not in known:
        raise RewardError(f"unknown scorer '{name}'; known: {', '.join(known)} "
                          "(aliases: " + ", ".join(sorted(a for a, c in _ALIAS.items() if a != c and c in known))
                          + ")")
    return name


def get_scorer(name: str, **kwargs: Any) -> Scorer:
    """A scorer instance by registry name; instances are cached per (name, kwargs) in this process."""
    name = scorer_name(name)
    key = (name, tuple(sorted((k, repr(v)) for k, v in kwargs.items())))
    if key not in _CACHE:
        _CACHE[key] = scorer_factory(name)(**kwargs)
    return _CACHE[key]
