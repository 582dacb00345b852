"""F1-CheXpert / F1-CheXbert aggregation from CheXpert label dicts or matrices.

The usual report-generation ("RRG") convention, used by F1-CheXbert in f1chexbert and RadEval:
each report becomes a binary vector over the 14 observations with blank/None -> 0, positive -> 1,
negative -> 0 and uncertain -> 1 (``uncertain="positive"``) or 0 (``uncertain="negative"``). Corpus
scores are scikit-learn's ``classification_report`` (``zero_division=0``) with the reference as
``y_true``: micro/macro/weighted F1 over all 14 and over the five competition observations
(:data:`reward.constants.CHEXPERT_5`), plus exact-match accuracy over the five. Which convention
was used is written into every result.

Labels may come from any labeler (our rules, CheXbert, the Stanford labeler's CSV): a list of dicts
keyed by observation name, or an ``(n, 14)`` matrix in :data:`CHEXPERT_LABELS` order.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from reward.base import RewardError
from reward.constants import CHEXPERT_5, CHEXPERT_LABELS

UNCERTAIN_CHOICES = ("positive", "negative")
SUBSETS = {"14": CHEXPERT_LABELS, "5": CHEXPERT_5}
_IDX = {name: i for i, name in enumerate(CHEXPERT_LABELS)}
_IDX5 = [_IDX[n] for n in CHEXPERT_5]
_FAST = {1.0: 1.0, 0.0: 0.0, -1.0: -1.0}


def convention(uncertain: str) -> str:
    """One line describing the binarisation, written into results."""
    _check_uncertain(uncertain)
    u = "1" if uncertain == "positive" else "0"
    return f"blank->0, positive->1, negative->0, uncertain->{u} (uncertain={uncertain})"


def _check_uncertain(uncertain: str) -> None:
    if uncertain not in UNCERTAIN_CHOICES:
        raise RewardError(f"uncertain must be one of {UNCERTAIN_CHOICES}, got {uncertain!r}")


def _value(v: Any, where: str) -> float:
    """A label cell -> 1/0/-1, or NaN for blank (None, NaN, "")."""
    if v is None:
        return math.nan
    orig = v
    if isinstance(v, str):
        v = v.strip()
        if not v:
            return math.nan
        try:
            v = float(v)
        except ValueError:
            raise RewardError(f"{where}: label value {v!r} is not 1, 0, -1 or blank") from None
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise RewardError(f"{where}: label value {v!r} is not 1, 0, -1 or blank") from None
    if math.isnan(f):
        return f
    if f not in (1.0, 0.0, -1.0):
        raise RewardError(f"{where}: label value {orig!r} is not 1, 0, -1 or blank")
    return f


def to_matrix(labels: Sequence[Mapping[str, Any]] | np.ndarray | Sequence[Sequence[Any]]) -> np.ndarray:
    """Labels -> float matrix (n, 14) in CHEXPERT_LABELS order with 1/0/-1 and NaN for blank.

    Dicts may omit observations (blank); unknown keys are an error, so a misspelt name is not lost.
    """
    if isinstance(labels, np.ndarray) and labels.dtype != object and labels.ndim == 2:
        if labels.shape[1] != len(CHEXPERT_LABELS):
            raise RewardError(f"label matrix has {labels.shape[1]} columns, expected {len(CHEXPERT_LABELS)}")
        m = labels.astype(float)
        bad = ~np.isnan(m) & ~np.isin(m, (1.0, 0.0, -1.0))
        if bad.any():
            r, c = np.argwhere(bad)[0]
            raise RewardError(f"row {r}, column {CHEXPERT_LABELS[c]!r}: label value {m[r, c]!r} is not 1, 0, -1 or blank")
        return m
    out = []
    nan, width = math.nan, len(CHEXPERT_LABELS)
    for i, row in enumerate(labels):
        vec = [nan] * width
        if isinstance(row, Mapping):
            for k, v in row.items():
                j = _IDX.get(k)
                if j is None:
                    raise RewardError(f"row {i}: unknown observation {k!r}; expected CheXpert names")
                if v is None:
                    continue
                vec[j] = _FAST.get(v) if type(v) in (float, int) and v in _FAST else _value(v, f"row {i}, column {k!r}")
        else:
            vals = list(row)
            if len(vals) != width:
                raise RewardError(f"row {i}: {len(vals)} values, expected {width}")
            for j, v in enumerate(vals):
                vec[j] = _value(v, f"row {i}, column {CHEXPERT_LABELS[j]!r}")
        out.append(vec)
    return np.array(out, dtype=float).reshape(len(out), width)


def to_binary(labels: Sequence[Mapping[str, Any]] | np.ndarray | Sequence[Sequence[Any]],
              uncertain: str = "positive") -> np.ndarray:
    """Labels -> int matrix (n, 14): blank/None->0, 1->1, 0->0, -1->1 (uncertain="positive") or 0."""
    _check_uncertain(uncertain)
    m = to_matrix(labels)
    out = (m == 1.0)
    if uncertain == "positive":
        out |= (m == -1.0)
    return out.astype(np.int64)


def _pair(hyp_labels, ref_labels, uncertain: str) -> tuple[np.ndarray, np.ndarray]:
    h, r = to_binary(hyp_labels, uncertain), to_binary(ref_labels, uncertain)
    if h.shape != r.shape:
        raise RewardError(f"{h.shape[0]} hypothesis label rows but {r.shape[0]} reference label rows")
    return h, r


def f1_report(hyp_labels, ref_labels, uncertain: str = "positive") -> dict[str, Any]:
    """Corpus F1 of hypothesis labels against reference labels (scikit-learn semantics).

    Returns ``uncertain`` and ``convention``; ``n``; ``f1_14`` and ``f1_5`` with micro/macro/
    weighted F1; ``precision_14``/``recall_14`` and ``_5`` (micro/macro/weighted); ``accuracy_5``
    (exact match over the five) and ``exact_match_5`` per pair; ``per_class`` (precision, recall,
    f1, support for the 14); and scikit-learn's full ``classification_report_14``/``_5`` dicts.
    """
    from sklearn.metrics import accuracy_score, classification_report

    h, r = _pair(hyp_labels, ref_labels, uncertain)
    if h.shape[0] == 0:
        raise RewardError("f1_report: no label rows")
    out: dict[str, Any] = {"uncertain": uncertain, "convention": convention(uncertain), "n": int(h.shape[0])}
    for tag, cols, names in (("14", list(range(len(CHEXPERT_LABELS))), CHEXPERT_LABELS), ("5", _IDX5, CHEXPERT_5)):
        rep = classification_report(r[:, cols], h[:, cols], target_names=list(names), output_dict=True,
                                    zero_division=0)
        out[f"classification_report_{tag}"] = rep
        for metric, key in (("f1", "f1-score"), ("precision", "precision"), ("recall", "recall")):
            out[f"{metric}_{tag}"] = {avg: float(rep[f"{avg} avg"][key]) for avg in ("micro", "macro", "weighted")}
    out["accuracy_5"] = float(accuracy_score(r[:, _IDX5], h[:, _IDX5]))
    out["exact_match_5"] = (h[:, _IDX5] == r[:, _IDX5]).all(axis=1).astype(float).tolist()
    rep14 = out["classification_report_14"]
    out["per_class"] = {n: {"precision": float(rep14[n]["precision"]), "recall": float(rep14[n]["recall"]),
                            "f1": float(rep14[n]["f1-score"]), "support": int(rep14[n]["support"])}
                        for n in CHEXPERT_LABELS}
    return out


def per_sample_f1(hyp_labels, ref_labels, uncertain: str = "positive", subset: str = "14") -> np.ndarray:
    """F1 between the positive sets of each hypothesis and its reference (one float per pair).

    ``subset`` "14" or "5". A pair whose positive sets are both empty scores 1.0 (nothing to find,
    nothing claimed); one empty set against a non-empty one scores 0.0.
    """
    h, r = _pair(hyp_labels, ref_labels, uncertain)
    cols = _subset_cols(subset)
    h, r = h[:, cols], r[:, cols]
    tp = (h & r).sum(axis=1)
    denom = h.sum(axis=1) + r.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(denom == 0, 1.0, 2.0 * tp / np.maximum(denom, 1))
    return f1.astype(float)


def per_sample_exact_match(hyp_labels, ref_labels, uncertain: str = "positive", subset: str = "5") -> np.ndarray:
    """1.0 where hypothesis and reference agree on every observation of the subset, else 0.0."""
    h, r = _pair(hyp_labels, ref_labels, uncertain)
    cols = _subset_cols(subset)
    return (h[:, cols] == r[:, cols]).all(axis=1).astype(float)


def per_sample_hamming(hyp_labels, ref_labels, uncertain: str = "positive", subset: str = "14") -> np.ndarray:
    """Share of the subset's observations on which hypothesis and reference agree (one float per pair).

    Every false positive and every false negative costs the same ``1/len(subset)``, whatever else the
    study shows. Per-sample F1 does not: a spurious finding on a normal study costs 1.0 while a
    finding missed among four costs 0.14, so a policy trained on it learns to stay silent on crowded
    studies. Summed over a corpus, this score moves with micro-F1 (whose change from fixing one error
    is about the same for a false positive and a false negative once F1 is high).
    """
    h, r = _pair(hyp_labels, ref_labels, uncertain)
    cols = _subset_cols(subset)
    return (h[:, cols] == r[:, cols]).mean(axis=1).astype(float)


def _subset_cols(subset: str) -> list[int]:
    subset = str(subset)
    if subset not in SUBSETS:
        raise RewardError(f"subset must be one of {sorted(SUBSETS)}, got {subset!r}")
    return list(range(len(CHEXPERT_LABELS))) if subset == "14" else _IDX5
