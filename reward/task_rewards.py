"""The short-answer reward of the question tasks (``classification``, ``vqa``, ``view`` in
:mod:`mllm_cxr.tasks`): does the completion give the reference answer?

``answer_match``: the reference is a short answer ("Yes.", "No.", "Uncertain.", "PA", or for
``classification`` lines ``Finding: yes``); the completion's answers are compared after lower-casing and
dropping punctuation. One answer: 1 or 0. Several ``name: answer`` lines: the fraction of reference lines
the completion answers the same way. A strange completion scores 0.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from reward.base import Scorer, ScoreResult

_WORD = re.compile(r"[a-z0-9]+")


def _norm(text: str) -> str:
    return " ".join(_WORD.findall(text.lower()))


def _pairs(text: str) -> dict[str, str]:
    out = {}
    for line in re.split(r"[\n;]+", text):
        if ":" in line:
            k, _, v = line.partition(":")
            if _norm(k):
                out[_norm(k)] = _norm(v)
    return out


def answer_match(hyp: str, ref: str) -> float:
    """1/0 for one answer; the fraction of matching ``name: answer`` lines for several."""
    ref_pairs = _pairs(ref)
    if len(ref_pairs) > 1:
        got = _pairs(hyp)
        return sum(got.get(k) == v for k, v in ref_pairs.items()) / len(ref_pairs)
    r = _norm(ref)
    h = _norm(hyp)
    if not r:  # nothing to match (an empty or punctuation-only reference)
        return 0.0
    return 1.0 if h == r or h.split(" ")[: len(r.split(" "))] == r.split(" ") else 0.0


class AnswerMatch(Scorer):
    name = "answer_match"

    def score(self, hyps: Sequence[str], refs: Sequence[str] | None = None, **context: Any) -> ScoreResult:
        return ScoreResult([answer_match(h, r) for h, r in zip(hyps, refs or [])])
