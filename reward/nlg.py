"""Lexical NLG metrics as the radiology report-generation literature reports them: BLEU and ROUGE.

BLEU follows the COCO-caption ``BleuScorer`` (the one RadEval wraps), so numbers are comparable with
published RRG tables:

* tokens are the white-space split of the text, **as is**: no lower-casing, no punctuation split
  ("process." and "process" are different tokens), exactly as RadEval calls it;
* modified n-gram precision with clipping against the maximum count over the references;
* the effective reference length per sample is the *closest* reference length (ties: the shorter);
* corpus BLEU-n sums matches, candidate n-grams and lengths over the corpus, then takes the geometric
  mean of the n precisions times the brevity penalty ``exp(1 - r/c)`` when ``c < r``;
* the precisions carry the COCO epsilons: ``(matches + 1e-15) / (total + 1e-9)``, and
  ``ratio = (c + 1e-15) / (r + 1e-9)``. This is no real smoothing: a sample without a matching
  4-gram gets a sentence BLEU-4 near 1e-16.

Sentence-level BLEU (one score per sample, what a reward needs) is the same formula on one sample
(``smoothing="coco"``, identical to RadEval's ``per_sample`` output). Because that is ~0 for most
paraphrases, ``smoothing="add1"`` gives the add-one smoothing of Lin & Och (2004) for n-gram orders 2
and up (``(m + 1) / (t + 1)``; unigram precision unchanged), the usual choice for sentence BLEU
rewards. Corpus numbers never use it.

ROUGE uses Google's ``rouge-score`` package, ``RougeScorer(["rouge1", "rouge2", "rougeL"],
use_stemmer=True)``, scored as ``score(reference, hypothesis)``; the corpus value is the mean of the
per-sample F-measures (RadEval's aggregation).

Registered scorers: ``bleu`` (per-sample sentence BLEU-n, corpus BLEU-1..n in ``corpus``),
``rouge_l`` (per-sample ROUGE-L F), ``rouge`` (per-sample ROUGE-L F by default, ROUGE-1/2/L in
details and corpus).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from reward.base import RewardError, Scorer, ScoreResult

#: The COCO BleuScorer's epsilons (numerator, denominator).
_TINY = 1e-15
_SMALL = 1e-9

BLEU_SMOOTHING = ("coco", "add1")
ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


# ----------------------------------------------------------------------------------------------------
# BLEU
# ----------------------------------------------------------------------------------------------------

@dataclass
class _Cooked:
    """Sufficient statistics of one (hypothesis, references) pair."""

    testlen: int
    reflen: int  # the closest reference length
    guess: list[int]
    correct: list[int]


def _ngram_counts(words: list[str], n: int) -> Counter:
    counts: Counter = Counter()
    for k in range(1, n + 1):
        counts.update(zip(*(words[i:] for i in range(k))))  # the k-grams as tuples of words
    return counts


def _cook(hyp: str, refs: Sequence[str], n: int) -> _Cooked:
    max_ref: dict[tuple, int] = {}
    ref_lens = []
    for ref in refs:
        words = ref.split()
        ref_lens.append(len(words))
        for gram, c in _ngram_counts(words, n).items():
            if c > max_ref.get(gram, 0):
                max_ref[gram] = c
    words = hyp.split()
    testlen = len(words)
    # closest reference length; on a tie the shorter one (min over (distance, length))
    reflen = min((abs(r - testlen), r) for r in ref_lens)[1]
    correct = [0] * n
    for gram, c in _ngram_counts(words, n).items():
        correct[len(gram) - 1] += min(max_ref.get(gram, 0), c)
    guess = [max(0, testlen - k + 1) for k in range(1, n + 1)]
    return _Cooked(testlen, reflen, guess, correct)


def _bleu_from_counts(correct: Sequence[float], guess: Sequence[float], testlen: float, reflen: float,
                      n: int, smoothing: str = "coco") -> list[float]:
    """BLEU-1..n from summed statistics (the COCO formula; ``add1`` smooths orders >= 2)."""
    out = []
    prod = 1.0
    for k in range(n):
        if smoothing == "add1" and k > 0:
            prod *= (correct[k] + 1.0) / (guess[k] + 1.0)
        else:
            prod *= (float(correct[k]) + _TINY) / (float(guess[k]) + _SMALL)
        out.append(prod ** (1.0 / (k + 1)))
    ratio = (testlen + _TINY) / (reflen + _SMALL)
    if ratio < 1:
        bp = math.exp(1 - 1 / ratio)
        out = [b * bp for b in out]
    return out


def _as_refs(ref: str | Sequence[str], i: int) -> list[str]:
    if isinstance(ref, str):
        return [ref]
    refs = list(ref)
    if not refs or not all(isinstance(r, str) for r in refs):
        raise RewardError(f"bleu: reference {i} must be a string or a non-empty list of strings, got {ref!r:.80}")
    return refs


@dataclass
class BleuResult:
    """Corpus BLEU-1..n (``corpus[k-1]`` is BLEU-k) and sentence BLEU-1..n per sample."""

    corpus: list[float]
    per_sample: list[list[float]]  # per_sample[i][k-1]: sentence BLEU-k of sample i
    testlen: int = 0
    reflen: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def bleu(self) -> float:
        """Corpus BLEU-n (n = the highest order computed, 4 by default)."""
        return self.corpus[-1]


def corpus_bleu(hyps: Sequence[str], refs: Sequence[str | Sequence[str]], n: int = 4,
                smoothing: str = "coco") -> BleuResult:
    """COCO-caption BLEU-1..n over a corpus, plus sentence-level BLEU-1..n per sample.

    ``refs[i]`` is one reference string or a list of references for ``hyps[i]``. ``smoothing``
    applies to the per-sample scores only (``coco``: RadEval's per-sample values; ``add1``: Lin & Och
    add-one for orders >= 2); the corpus values are always the COCO formula.
    """
    if smoothing not in BLEU_SMOOTHING:
        raise RewardError(f"bleu: smoothing must be one of {BLEU_SMOOTHING}, got {smoothing!r}")
    if n < 1:
        raise RewardError(f"bleu: n must be >= 1, got {n}")
    if len(hyps) != len(refs):
        raise RewardError(f"bleu: {len(hyps)} hypotheses but {len(refs)} references")
    correct = [0] * n
    guess = [0] * n
    testlen = reflen = 0
    per_sample = []
    for i, (h, r) in enumerate(zip(hyps, refs)):
        c = _cook(h, _as_refs(r, i), n)
        testlen += c.testlen
        reflen += c.reflen
        for k in range(n):
            correct[k] += c.correct[k]
            guess[k] += c.guess[k]
        per_sample.append(_bleu_from_counts(c.correct, c.guess, c.testlen, c.reflen, n, smoothing))
    corpus = _bleu_from_counts(correct, guess, testlen, reflen, n) if hyps else [0.0] * n
    return BleuResult(corpus, per_sample, testlen, reflen)


def sentence_bleu(hyp: str, ref: str | Sequence[str], n: int = 4, smoothing: str = "coco") -> float:
    """Sentence BLEU-n of one hypothesis (see :func:`corpus_bleu`)."""
    return corpus_bleu([hyp], [ref], n=n, smoothing=smoothing).per_sample[0][-1]


# ----------------------------------------------------------------------------------------------------
# ROUGE
# ----------------------------------------------------------------------------------------------------

_ROUGE_SCORERS: dict[tuple[str, ...], Any] = {}


def _rouge_scorer(types: tuple[str, ...]):
    if types not in _ROUGE_SCORERS:
        try:
            from rouge_score import rouge_scorer
        except ModuleNotFoundError as e:  # a core dependency; say how to get it anyway
            from reward.base import MissingBackendError

            raise MissingBackendError("ROUGE needs the rouge-score package: pip install rouge-score") from e
        _ROUGE_SCORERS[types] = rouge_scorer.RougeScorer(list(types), use_stemmer=True)
    return _ROUGE_SCORERS[types]


def rouge_scores(hyps: Sequence[str], refs: Sequence[str],
                 types: Sequence[str] = ROUGE_TYPES) -> dict[str, list[float]]:
    """Per-sample ROUGE F-measures, ``{type: [f, ...]}`` (rouge-score, Porter stemmer)."""
    types = tuple(types)
    bad = [t for t in types if t not in ROUGE_TYPES]
    if bad:
        raise RewardError(f"rouge: unknown type(s) {bad}; known: {list(ROUGE_TYPES)}")
    if len(hyps) != len(refs):
        raise RewardError(f"rouge: {len(hyps)} hypotheses but {len(refs)} references")
    scorer = _rouge_scorer(types)
    out: dict[str, list[float]] = {t: [] for t in types}
    for h, r in zip(hyps, refs):
        s = scorer.score(r, h)  # (target, prediction), as RadEval calls it
        for t in types:
            out[t].append(s[t].fmeasure)
    return out


def corpus_rouge(hyps: Sequence[str], refs: Sequence[str], types: Sequence[str] = ROUGE_TYPES) -> dict[str, float]:
    """RadEval's corpus ROUGE: the mean of the per-sample F-measures, per type."""
    per = rouge_scores(hyps, refs, types)
    return {t: (sum(v) / len(v) if v else 0.0) for t, v in per.items()}


# ----------------------------------------------------------------------------------------------------
# Scorers
# ----------------------------------------------------------------------------------------------------

class BleuScorer(Scorer):
    """BLEU (COCO-caption / RadEval): per-sample sentence BLEU-n, corpus BLEU-1..n.

    ``corpus`` holds ``bleu`` (corpus BLEU-n, RadEval's ``bleu`` for n=4) and ``bleu_1`` ..
    ``bleu_n``; each detail holds the sample's sentence BLEU-1..n. ``smoothing`` (``coco`` or
    ``add1``) changes the per-sample scores only, and is written into ``corpus``.
    """

    name = "bleu"

    def __init__(self, n: int = 4, smoothing: str = "coco") -> None:
        if smoothing not in BLEU_SMOOTHING:
            raise RewardError(f"bleu: smoothing must be one of {BLEU_SMOOTHING}, got {smoothing!r}")
        if int(n) < 1:
            raise RewardError(f"bleu: n must be >= 1, got {n}")
        self.n = int(n)
        self.smoothing = smoothing

    def score(self, hyps: Sequence[str], refs: Sequence[str] | None = None, **_: Any) -> ScoreResult:
        res = corpus_bleu(hyps, refs, n=self.n, smoothing=self.smoothing)
        details = [{f"bleu_{k + 1}": v for k, v in enumerate(s)} for s in res.per_sample]
        corpus: dict[str, Any] = {"bleu": res.bleu}
        corpus.update({f"bleu_{k + 1}": v for k, v in enumerate(res.corpus)})
        corpus.update({"smoothing": self.smoothing, "n": self.n, "hyp_len": res.testlen, "ref_len": res.reflen})
        return ScoreResult([s[-1] for s in res.per_sample], details, corpus)


class RougeScorer(Scorer):
    """ROUGE-1, ROUGE-2 and ROUGE-L F-measures (RadEval's settings).

    The per-sample score is the F-measure of ``key`` (default ``rougeL``); details hold all the
    types, and ``corpus`` their means (RadEval's ``rouge1``/``rouge2``/``rougeL``).
    """

    name = "rouge"

    def __init__(self, key: str = "rougeL", types: Sequence[str] = ROUGE_TYPES) -> None:
        self.types = tuple(types)
        if key not in self.types:
            raise RewardError(f"{self.name}: key {key!r} is not among the computed types {list(self.types)}")
        self.key = key
        rouge_scores([], [], self.types)  # validates the types early

    def score(self, hyps: Sequence[str], refs: Sequence[str] | None = None, **_: Any) -> ScoreResult:
        per = rouge_scores(hyps, refs, self.types)
        details = [{t: per[t][i] for t in self.types} for i in range(len(hyps))]
        corpus = {t: (sum(v) / len(v) if v else 0.0) for t, v in per.items()}
        return ScoreResult(list(per[self.key]), details, corpus)


class RougeLScorer(RougeScorer):
    """ROUGE-L F-measure per sample; ``corpus["rougeL"]`` is the mean (RadEval's ``rougeL``)."""

    name = "rouge_l"

    def __init__(self) -> None:
        super().__init__(key="rougeL", types=("rougeL",))
