"""Box metrics for grounding, detection and grounded reports (standalone: numpy + scipy).

Boxes are dicts ``{x_min, y_min, x_max, y_max}`` in fractions of the image (optionally ``label`` and, for
detections, ``score``), as in the study record and as :func:`cxr_io.boxes.decode_boxes` returns them.
Definitions (docs/boxes.md has the table with sources):

* **matched IoU** of one sample (:func:`matched_iou`): predicted and reference boxes are paired one-to-one
  by the Hungarian algorithm on IoU (Kuhn 1955; ``scipy.optimize.linear_sum_assignment``); the score is
  the sum of the pairs' IoU divided by ``max(#pred, #ref)``, so missing and extra boxes cost. With one box
  each it is the plain IoU (Jaccard index) used by referring-expression grounding and the VLM-R1 IoU
  reward (Shen et al. 2025); both empty is 1 (a correct "not found"), one empty is 0.
  **mean IoU** is its mean over samples; **Acc@IoU>=0.5** the fraction of samples with matched IoU >= 0.5
  (the grounding accuracy of Mao et al. 2016 / Kazemzadeh et al. 2014, as reported on MS-CXR).
* **mAP@0.5** (:func:`average_precision`): PASCAL VOC detection AP (Everingham et al., IJCV 2010; the
  all-point interpolation of VOC2010 onwards): per class, detections sorted by score (stable, so unscored
  model answers keep their written order) are matched greedily to an unmatched reference box of the same
  image with IoU >= 0.5 (otherwise, or when a duplicate, false positive); AP is the area under the
  precision envelope ``p_interp(r) = max_{r' >= r} p(r')``. mAP is the mean over classes with references.
* **box F1** (:func:`box_f1`): Hungarian one-to-one matching on IoU; a pair with IoU >= 0.5 (and the same
  label when ``match_labels``) is a true positive; precision TP/#pred, recall TP/#ref, F1 their harmonic
  mean (1 when both sides are empty). Corpus numbers sum TP/#pred/#ref over samples (micro).
* **grounded report score** (:func:`grounded_report_score`), after RadFact (Bannur et al. 2024, MAIRA-2):
  a generated sentence with boxes is *grounded-correct* when the CheXpert rule labeler
  (:mod:`reward.chexpert`) finds a finding in it that it also finds in a reference sentence with boxes,
  AND its boxes cover those reference boxes with pixel precision > 0.5 (``|P ∩ R| / |P|`` on a 224 x 224
  mask grid, RadFact's spatial entailment). Grounding precision is over the generated sentences with
  boxes, grounding recall the same rule with the roles swapped (over reference sentences with boxes);
  the score is their harmonic mean. RadFact decides "same finding" with an LLM entailment judge; here the
  rule labeler stands in for it (deterministic, CPU, no model).
* **parse-failure rate** (:func:`parse_failure_rate`): the fraction of answers whose box text had a
  malformed fragment (``n_failed > 0`` of :class:`cxr_io.boxes.DecodedBoxes`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from cxr_io.boxes import COORDS

Box = Mapping[str, Any]
MASK_GRID = 224  # RadFact's mask resolution for pixel precision
IOU_THRESHOLD = 0.5


def _arr(boxes: Sequence[Box]) -> np.ndarray:
    if not boxes:
        return np.zeros((0, 4))
    return np.asarray([[float(b[k]) for k in COORDS] for b in boxes], dtype=float)


def iou_matrix(a: Sequence[Box], b: Sequence[Box]) -> np.ndarray:
    """Pairwise IoU (len(a), len(b)); boxes with reversed corners have no area (IoU 0)."""
    A, B = _arr(a), _arr(b)
    if not len(A) or not len(B):
        return np.zeros((len(A), len(B)))
    iw = np.minimum(A[:, None, 2], B[None, :, 2]) - np.maximum(A[:, None, 0], B[None, :, 0])
    ih = np.minimum(A[:, None, 3], B[None, :, 3]) - np.maximum(A[:, None, 1], B[None, :, 1])
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    area = lambda X: np.clip(X[:, 2] - X[:, 0], 0, None) * np.clip(X[:, 3] - X[:, 1], 0, None)  # noqa: E731
    union = area(A)[:, None] + area(B)[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)
    return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)


def hungarian(pred: Sequence[Box], ref: Sequence[Box], *, match_labels: bool = False) -> list[tuple[int, int, float]]:
    """One-to-one pairs ``(i_pred, j_ref, iou)`` maximising the summed IoU (pairs of IoU 0 dropped)."""
    if not pred or not ref:
        return []
    from scipy.optimize import linear_sum_assignment

    m = iou_matrix(pred, ref)
    if match_labels:
        same = np.array([[str(p.get("label", "")).lower() == str(r.get("label", "")).lower() for r in ref]
                         for p in pred])
        m = np.where(same, m, 0.0)
    rows, cols = linear_sum_assignment(m, maximize=True)
    return [(int(i), int(j), float(m[i, j])) for i, j in zip(rows, cols) if m[i, j] > 0]


def matched_iou(pred: Sequence[Box], ref: Sequence[Box]) -> float:
    """Summed IoU of the Hungarian pairs / max(#pred, #ref); 1 when both are empty."""
    if not pred and not ref:
        return 1.0
    return sum(p[2] for p in hungarian(pred, ref)) / max(len(pred), len(ref))


def grounding_summary(preds: Sequence[Sequence[Box]], refs: Sequence[Sequence[Box]],
                      threshold: float = IOU_THRESHOLD) -> dict[str, float]:
    """``mean_iou`` and ``acc_at_iou`` (fraction of samples with matched IoU >= threshold), plus ``n``."""
    if len(preds) != len(refs):
        raise ValueError(f"{len(preds)} predictions but {len(refs)} references")
    ious = [matched_iou(p, r) for p, r in zip(preds, refs)]
    n = len(ious)
    return {"mean_iou": float(np.mean(ious)) if n else math.nan,
            f"acc_at_iou_{threshold:g}": float(np.mean([v >= threshold for v in ious])) if n else math.nan, "n": n}


def box_f1(pred: Sequence[Box], ref: Sequence[Box], *, threshold: float = IOU_THRESHOLD,
           match_labels: bool = False) -> dict[str, float]:
    """Per-sample ``tp``, ``n_pred``, ``n_ref``, ``precision``, ``recall``, ``f1`` (Hungarian matching)."""
    tp = sum(1 for _, _, v in hungarian(pred, ref, match_labels=match_labels) if v >= threshold)
    return {"tp": tp, "n_pred": len(pred), "n_ref": len(ref), **_prf(tp, len(pred), len(ref))}


def _prf(tp: int, n_pred: int, n_ref: int) -> dict[str, float]:
    if n_pred == 0 and n_ref == 0:
        return {"precision": 1.0, "recall": 1.0, "f1": 1.0}
    p = tp / n_pred if n_pred else 0.0
    r = tp / n_ref if n_ref else 0.0
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0}


def box_f1_corpus(preds: Sequence[Sequence[Box]], refs: Sequence[Sequence[Box]], **kw: Any) -> dict[str, float]:
    """Micro precision/recall/F1 over samples (summed TP, #pred, #ref) and the mean per-sample F1."""
    per = [box_f1(p, r, **kw) for p, r in zip(preds, refs)]
    tp, npred, nref = (sum(x[k] for x in per) for k in ("tp", "n_pred", "n_ref"))
    micro = _prf(tp, npred, nref)
    return {**micro, "mean_f1": float(np.mean([x["f1"] for x in per])) if per else math.nan, "n": len(per)}


# -- VOC mAP ---------------------------------------------------------------------------------------
def voc_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """Area under the all-point interpolated precision-recall curve (VOC2010+)."""
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]  # the precision envelope
    i = np.nonzero(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def average_precision(preds: Sequence[Sequence[Box]], refs: Sequence[Sequence[Box]], *,
                      threshold: float = IOU_THRESHOLD) -> dict[str, Any]:
    """VOC mAP@threshold over images: ``preds[i]``/``refs[i]`` are image i's labelled boxes (a prediction
    may carry a ``score``; without one all tie and keep their order). Returns ``{"map", "per_class"}``;
    a class predicted but absent from the references is not in the mean (VOC)."""
    if len(preds) != len(refs):
        raise ValueError(f"{len(preds)} predictions but {len(refs)} references")
    # references per class and image as coordinate tuples: images hold a handful of boxes, where a plain
    # loop beats numpy's per-call overhead (bench/bench_boxes.py)
    gt: dict[str, dict[int, list[tuple[float, float, float, float]]]] = {}
    for i, boxes in enumerate(refs):
        for b in boxes:
            gt.setdefault(str(b.get("label", "")), {}).setdefault(i, []).append(tuple(float(b[k]) for k in COORDS))
    dets: dict[str, list[tuple[float, int, int, Box]]] = {}
    order = 0
    for i, boxes in enumerate(preds):
        for b in boxes:
            s = b.get("score", 1.0)
            s = float(s) if isinstance(s, int | float) and math.isfinite(s) else 1.0
            dets.setdefault(str(b.get("label", "")), []).append((-s, order, i, b))
            order += 1
    per_class: dict[str, float] = {}
    for lab, by_img in gt.items():
        n_gt = sum(len(a) for a in by_img.values())
        ds = sorted(dets.get(lab, []), key=lambda d: (d[0], d[1]))
        used = {i: [False] * len(a) for i, a in by_img.items()}
        tp = np.zeros(len(ds))
        for k, (_, _, i, b) in enumerate(ds):
            g = by_img.get(i)
            if g is None:
                continue
            x1, y1, x2, y2 = (float(b[c]) for c in COORDS)
            area = max(0.0, x2 - x1) * max(0.0, y2 - y1)
            best, j = -1.0, -1
            for m, (gx1, gy1, gx2, gy2) in enumerate(g):
                iw, ih = min(x2, gx2) - max(x1, gx1), min(y2, gy2) - max(y1, gy1)
                if iw > 0 and ih > 0:
                    inter = iw * ih
                    union = area + (gx2 - gx1) * (gy2 - gy1) - inter
                    ov = inter / union if union > 0 else 0.0
                else:
                    ov = 0.0
                if ov > best:
                    best, j = ov, m
            if best >= threshold and not used[i][j]:
                used[i][j] = True
                tp[k] = 1
        ctp = np.cumsum(tp)
        cfp = np.cumsum(1 - tp)
        recall = ctp / n_gt if len(ds) else np.zeros(0)
        precision = ctp / np.maximum(ctp + cfp, np.finfo(float).eps) if len(ds) else np.zeros(0)
        per_class[lab] = voc_ap(recall, precision)
    return {"map": float(np.mean(list(per_class.values()))) if per_class else math.nan, "per_class": per_class,
            "threshold": threshold}


# -- grounded reports ------------------------------------------------------------------------------
def box_mask(boxes: Iterable[Box], grid: int = MASK_GRID) -> np.ndarray:
    """The union of boxes as a (grid, grid) boolean mask (a cell is in when its centre is inside a box)."""
    m = np.zeros((grid, grid), bool)
    centres = (np.arange(grid) + 0.5) / grid
    for b in boxes:
        if not all(isinstance(b.get(k), int | float) and math.isfinite(b[k]) for k in COORDS):
            continue
        xs = (centres >= b["x_min"]) & (centres <= b["x_max"])
        ys = (centres >= b["y_min"]) & (centres <= b["y_max"])
        m |= ys[:, None] & xs[None, :]
    return m


def pixel_precision(pred: Iterable[Box], ref: Iterable[Box], grid: int = MASK_GRID) -> float:
    """``|P ∩ R| / |P|`` of the boxes' masks (0 when P is empty)."""
    p, r = box_mask(pred, grid), box_mask(ref, grid)
    n = int(p.sum())
    return float((p & r).sum() / n) if n else 0.0


_LABELER = None


def _positive_findings(text: str) -> frozenset[str]:
    """CheXpert observations the rule labeler marks positive or uncertain in a sentence (No Finding aside)."""
    global _LABELER
    if _LABELER is None:
        from reward.chexpert import ChexpertRulesLabeler

        _LABELER = ChexpertRulesLabeler()
    labels = _LABELER.label(text)
    return frozenset(k for k, v in labels.items() if v in (1.0, -1.0) and k != "No Finding")


def _grounded_hits(src: Sequence[Mapping], dst: Sequence[Mapping], threshold: float, grid: int) -> tuple[int, int]:
    """(sentences of ``src`` with boxes that are grounded-correct against ``dst``, sentences with boxes)."""
    dst_f = [(_positive_findings(str(d.get("text", ""))), d.get("boxes") or []) for d in dst if d.get("boxes")]
    hits = total = 0
    for s in src:
        boxes = s.get("boxes") or []
        if not boxes:
            continue
        total += 1
        found = _positive_findings(str(s.get("text", "")))
        region = [b for f, bs in dst_f if found & f for b in bs]
        if found and region and pixel_precision(boxes, region, grid) > threshold:
            hits += 1
    return hits, total


def grounded_report_score(pred: Sequence[Mapping], ref: Sequence[Mapping], *, threshold: float = 0.5,
                          grid: int = MASK_GRID) -> dict[str, float]:
    """RadFact-style grounding precision/recall/F1 of one report: ``pred``/``ref`` are lists of
    ``{text, boxes | None}`` (see the module docstring). With no boxed sentence on either side, 1."""
    hp, tp_ = _grounded_hits(pred, ref, threshold, grid)
    hr, tr = _grounded_hits(ref, pred, threshold, grid)
    if tp_ == 0 and tr == 0:
        return {"grounding_precision": 1.0, "grounding_recall": 1.0, "score": 1.0, "hits_pred": 0, "n_pred": 0,
                "hits_ref": 0, "n_ref": 0}
    p = hp / tp_ if tp_ else 0.0
    r = hr / tr if tr else 0.0
    return {"grounding_precision": p, "grounding_recall": r, "score": 2 * p * r / (p + r) if p + r else 0.0,
            "hits_pred": hp, "n_pred": tp_, "hits_ref": hr, "n_ref": tr}


def grounded_report_corpus(preds: Sequence[Sequence[Mapping]], refs: Sequence[Sequence[Mapping]],
                           **kw: Any) -> dict[str, float]:
    """Corpus grounding precision/recall/F1 (sentence counts summed over reports) and the mean score."""
    per = [grounded_report_score(p, r, **kw) for p, r in zip(preds, refs)]
    hp, np_, hr, nr = (sum(x[k] for x in per) for k in ("hits_pred", "n_pred", "hits_ref", "n_ref"))
    p = hp / np_ if np_ else math.nan
    r = hr / nr if nr else math.nan
    f = 2 * p * r / (p + r) if np_ and nr and p + r else (0.0 if np_ and nr else math.nan)
    return {"grounding_precision": p, "grounding_recall": r, "grounding_f1": f,
            "mean_score": float(np.mean([x["score"] for x in per])) if per else math.nan, "n": len(per)}


def parse_failure_rate(decoded: Sequence[Any]) -> float:
    """The fraction of decoded answers with a malformed fragment (``n_failed > 0``)."""
    if not decoded:
        return math.nan
    return sum(1 for d in decoded if getattr(d, "n_failed", 1) > 0) / len(decoded)
