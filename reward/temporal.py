"""Temporal F1: do the hypothesis and the reference use the same words of change over time?

The metric of Libra (Zhang et al.) as RadEval computes it (``temporal_f1``). The "temporal entities"
of a report are the words of a fixed list of 44 change/stability words from BioViL-T (Bannur et al.,
CVPR 2023: "bigger", "new", "stable", "unchanged", "worsening", ...) that occur in it as whole words,
case-insensitively. Per pair, with ``eps = 1e-10``:

* reference set empty: 1.0 when the hypothesis set is empty too, else ``eps``;
* otherwise ``P = (tp + eps) / (|hyp| + eps)``, ``R = (tp + eps) / (|ref| + eps)`` and
  ``F = 2PR / (P + R + eps)`` (so a hypothesis without any temporal word scores ~``2 eps``).

The corpus value is the mean over pairs. Text cleaning before matching is RadEval's: runs of ``_``
and ``-`` become a space, and every character that is not a word character, white space or one of
``.,:;()-`` is deleted (so ``"stable/unchanged"`` becomes one unknown word). RadEval also unions in
Stanza "radiology" NER entities whose whole text is a keyword; those are single keywords the word
match already finds, so this module needs no model (it reproduces RadEval's published test value
exactly). The only possible difference: a keyword glued to another word by a deleted character,
which the word match misses and Stanza might still tag.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from reward.base import RewardError, Scorer, ScoreResult

#: The 44 temporal keywords (BioViL-T's list, as used by RadEval's Temporal F1).
TEMPORAL_KEYWORDS: frozenset[str] = frozenset("""
bigger change cleared constant decrease decreased decreasing elevated elevation enlarged enlargement
enlarging expanded greater growing improved improvement improving increase increased increasing larger
new persistence persistent persisting progression progressive reduced removal resolution resolved
resolving smaller stability stable stably unaltered unchanged unfolded worse worsen worsened worsening
""".split())

EPS = 1e-10

_DASHES = re.compile(r"[_-]+")
_DROPPED = re.compile(r"[^\w\s.,:;()-]")
_WORD = re.compile(r"\w+")


def temporal_entities(text: str, keywords: Iterable[str] = TEMPORAL_KEYWORDS) -> set[str]:
    """The temporal keywords that occur in ``text`` as whole words (lower-cased)."""
    kw = keywords if isinstance(keywords, (set, frozenset)) else frozenset(keywords)
    cleaned = _DROPPED.sub("", _DASHES.sub(" ", text or ""))
    return {w for w in _WORD.findall(cleaned.lower()) if w in kw}


def temporal_f1_from_sets(hyp: set[str], ref: set[str], eps: float = EPS) -> float:
    """Temporal F1 of two keyword sets, with RadEval's ``eps`` rules."""
    if not ref:
        return 1.0 if not hyp else eps
    tp = len(hyp & ref)
    precision = (tp + eps) / (len(hyp) + eps)
    recall = (tp + eps) / (len(ref) + eps)
    return (2 * precision * recall) / (precision + recall + eps)


def temporal_f1(hyp: str, ref: str | Sequence[str], eps: float = EPS) -> float:
    """Temporal F1 of one hypothesis against one reference (or the union of several references)."""
    refs = [ref] if isinstance(ref, str) else list(ref)
    ref_set: set[str] = set()
    for r in refs:
        ref_set |= temporal_entities(r)
    return temporal_f1_from_sets(temporal_entities(hyp), ref_set, eps)


class TemporalF1Scorer(Scorer):
    """Per-sample Temporal F1; ``corpus["temporal_f1"]`` is the mean (RadEval's ``temporal_f1``).

    Details list the keywords found in the hypothesis and the reference.
    """

    name = "temporal_f1"

    def __init__(self, eps: float = EPS) -> None:
        if not (0 < eps < 1):  # eps = 0 divides by zero for an empty hypothesis
            raise RewardError(f"temporal_f1: eps must be in (0, 1), got {eps}")
        self.eps = float(eps)

    def score(self, hyps: Sequence[str], refs: Sequence[str] | None = None, **_: Any) -> ScoreResult:
        scores, details = [], []
        for h, r in zip(hyps, refs):
            hs, rs = temporal_entities(h), temporal_entities(r)
            scores.append(temporal_f1_from_sets(hs, rs, self.eps))
            details.append({"hyp_terms": sorted(hs), "ref_terms": sorted(rs)})
        corpus = {"temporal_f1": sum(scores) / len(scores) if scores else 0.0, "eps": self.eps}
        return ScoreResult(scores, details, corpus)
