"""The ``boxes`` metric group of ``mllm-cxr eval``: box metrics of the rows that answer a box task.

A predictions row of a box task (written by ``mllm-cxr generate --task NAME``) carries what scoring it
needs beside ``prediction``:

==================  =============================================================================
``task``            ``phrase_grounding``, ``detection`` or ``grounded_report`` (other rows: no box metric)
``box_family``      the codec the model writes boxes in (:data:`cxr_io.boxes.FAMILIES`)
``image_size``      ``[width, height]`` of the original image (needed by ``qwen2_5_vl`` and ``maira2``)
``min_pixels``,     the processor's pixel budget (``qwen2_5_vl`` boxes are pixels of the resized image)
``max_pixels``
``boxes``           reference boxes in fractions (``[]``: the right answer is "not found"); grounding and
                    detection rows
``grounded_findings``  the reference grounded report ``[{text, boxes | null}]``; grounded_report rows
``label``           the finding a detection row asks about (the class of its mAP)
==================  =============================================================================

Numbers (definitions and sources in :mod:`reward.box_metrics` and docs/boxes.md), each a function of
per-study sums so the bootstrap and the paired permutation test of :mod:`evaluation.statistics` apply as they do
to the other groups:

* mean IoU and Acc@IoU>=0.5 over grounding + detection rows (matched IoU per row);
* box precision / recall / F1 at IoU >= 0.5 from summed TP, #predicted, #reference (micro);
* parse-failure rate: share of box rows whose answer had a malformed fragment;
* grounded precision / recall / F1 (RadFact-style, sentence counts summed over grounded_report rows);
* mAP@0.5 over detection rows (the asked label is the class): not a function of sums, so it is recomputed
  on each bootstrap resample from the per-row boxes (its CI is a true bootstrap CI); it has no paired
  permutation p-value (reported as none), though its paired delta CI is given.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from cxr_io.boxes import COORDS, FAMILIES, decode_boxes, decode_grounded
from reward.base import RewardError
from reward.box_metrics import average_precision, box_f1, grounded_report_score, matched_iou

#: The tasks whose answers hold boxes (the names of :mod:`mllm_cxr.tasks`, which evaluation may not import).
BOX_TASKS: tuple[str, ...] = ("phrase_grounding", "detection", "grounded_report")
_IOU_TASKS = ("phrase_grounding", "detection")
_PIXEL_FAMILIES = ("qwen2_5_vl", "maira2")
_NEUTRAL_SIZE = (1000, 1000)

# columns of the per-study statistics
(_IOU, _ACC, _N_IOU, _TP, _NPRED, _NREF, _FAILED, _N_BOX, _G_HP, _G_NP, _G_HR, _G_NR) = range(12)
_K = 12


class NoBoxRowsError(RewardError):
    """No row of a box task: the ``boxes`` group does not apply (eval's default list skips it; a malformed
    box row, in contrast, is an error)."""

    skippable = True


def _json_field(path: str, line: int, rec: dict, name: str) -> Any:
    v = rec.get(name)
    if isinstance(v, str):
        try:
            v = json.loads(v)
        except ValueError:
            raise RewardError("not JSON", file=path, line=line, field=name, value=v[:60]) from None
    return v


def _box_list(path: str, line: int, rec: dict, name: str) -> list[dict]:
    v = _json_field(path, line, rec, name)
    if not isinstance(v, list) or not all(isinstance(b, dict) and all(k in b for k in COORDS) for b in v):
        raise RewardError(f"a {rec.get('task')} row needs its reference boxes: a list of {{x_min, y_min, x_max, "
                          "y_max}} fractions ([] for 'not found'); write it with `mllm-cxr generate --task`",
                          file=path, line=line, field=name, value=None if v is None else type(v).__name__)
    return [{k: float(b[k]) for k in COORDS} for b in v]


def _frame(path: str, line: int, rec: dict) -> tuple[str, tuple[int, int], dict[str, Any]]:
    fam = rec.get("box_family")
    if fam not in FAMILIES:
        raise RewardError(f"a box-task row needs box_family (one of {', '.join(FAMILIES)}); write it with "
                          "`mllm-cxr generate --task ... --box-family ...`", file=path, line=line,
                          field="box_family", value=fam)
    size = _json_field(path, line, rec, "image_size")
    if size is None and fam not in _PIXEL_FAMILIES:
        size = _NEUTRAL_SIZE
    try:
        w, h = int(size[0]), int(size[1])
    except (TypeError, ValueError, IndexError):
        raise RewardError(f"family {fam} needs image_size [width, height] of the original image", file=path,
                          line=line, field="image_size", value=size) from None
    pix = {k: rec.get(k) for k in ("min_pixels", "max_pixels") if rec.get(k) is not None}
    return fam, (w, h), pix


def _plain(boxes: Sequence[dict], label: str | None = None) -> list[dict]:
    out = []
    for b in boxes:
        d = {k: round(float(b[k]), 5) for k in COORDS}
        lab = label if label is not None else b.get("label")
        if lab is not None:
            d["label"] = str(lab)
        out.append(d)
    return out


def weighted_map(items: Sequence[Any], weights: np.ndarray) -> float:
    """VOC mAP@0.5 of the detection rows of a resample: row i counted ``weights[i]`` times (each copy its
    own image); ``items[i]`` is ``(predicted, reference)`` boxes labelled with the asked class, or None."""
    preds: list[list[dict]] = []
    refs: list[list[dict]] = []
    for item, k in zip(items, weights):
        if item is None or k <= 0:
            continue
        preds += [item[0]] * int(k)
        refs += [item[1]] * int(k)
    if not any(refs):
        return float("nan")
    return float(average_precision(preds, refs)["map"])


def _ratio(a: int, b: int):
    return lambda t: np.where(t[..., b] > 0, t[..., a] / np.where(t[..., b] > 0, t[..., b], 1), np.nan)


def Stat(label: str, fn: Any, higher_is_better: bool | None = True) -> tuple:  # noqa: N802
    return (label, fn, higher_is_better)


def _iou_row(path: str, line: int, rec: dict, hyp: str, task: str, fam: str, size, pix: dict,
             row: np.ndarray) -> tuple[dict[str, Any], Any]:
    """Score a phrase_grounding or detection row into ``row`` (its per-study statistics); ``(details, item)``."""
    ref = _box_list(path, line, rec, "boxes")
    got = decode_boxes(hyp, fam, size, **pix)
    label = rec.get("label") if task == "detection" else rec.get("phrase")
    pred = _plain(got, label)
    iou = matched_iou(pred, ref)
    f1 = box_f1(pred, ref)
    row[[_IOU, _ACC, _N_IOU, _TP, _NPRED, _NREF, _FAILED]] = [
        iou, float(iou >= 0.5), 1, f1["tp"], f1["n_pred"], f1["n_ref"], float(got.n_failed > 0)]
    det = {"task": task, "family": fam, "image_size": list(size), "pred_boxes": pred,
           "ref_boxes": _plain(ref, label), "iou": round(iou, 5), "tp": f1["tp"], "n_failed": got.n_failed,
           "label": label}
    return det, ((_plain(got, str(label)), _plain(ref, str(label))) if task == "detection" else None)


def _grounded_row(path: str, line: int, rec: dict, hyp: str, task: str, fam: str, size, pix: dict,
                  row: np.ndarray) -> dict[str, Any]:
    """Score a grounded_report row into ``row`` (its per-study statistics); its details."""
    ref_f = _json_field(path, line, rec, "grounded_findings")
    if not isinstance(ref_f, list) or not all(isinstance(f, dict) for f in ref_f):
        raise RewardError("a grounded_report row needs grounded_findings [{text, boxes}] (the reference)",
                          file=path, line=line, field="grounded_findings",
                          value=None if ref_f is None else type(ref_f).__name__)
    got = decode_grounded(hyp, fam, size, **pix)
    pred_f = [{"text": f.get("text", ""), "boxes": _plain(f["boxes"]) if f.get("boxes") else None} for f in got]
    ref_f = [{"text": f.get("text", ""), "boxes": _plain(f["boxes"]) if f.get("boxes") else None}
             for f in ref_f]
    sc = grounded_report_score(pred_f, ref_f)
    row[[_FAILED, _G_HP, _G_NP, _G_HR, _G_NR]] = [float(got.n_failed > 0), sc["hits_pred"], sc["n_pred"],
                                                 sc["hits_ref"], sc["n_ref"]]
    return {"task": task, "family": fam, "image_size": list(size),
            "pred_boxes": [{**b, "label": f["text"]} for f in pred_f for b in f["boxes"] or []],
            "ref_boxes": [{**b, "label": f["text"]} for f in ref_f for b in f["boxes"] or []],
            "grounded_score": round(sc["score"], 5), "n_failed": got.n_failed}


def _micro_f1(t: np.ndarray) -> np.ndarray:
    den = t[..., _NPRED] + t[..., _NREF]
    return np.where(den > 0, 2 * t[..., _TP] / np.where(den > 0, den, 1), np.nan)


def _harmonic(a: int, na: int, b: int, nb: int):
    def fn(t: np.ndarray) -> np.ndarray:
        p = t[..., a] / np.where(t[..., na] > 0, t[..., na], 1)
        r = t[..., b] / np.where(t[..., nb] > 0, t[..., nb], 1)
        f = np.where(p + r > 0, 2 * p * r / np.where(p + r > 0, p + r, 1), 0.0)
        return np.where((t[..., na] > 0) & (t[..., nb] > 0), f, np.nan)
    return fn


def _box_stats(by_task: dict[str, int]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(stats, resampled)`` of the tasks present: ``{key: (label, fn of summed S, higher_is_better)}``."""
    stats: dict[str, Any] = {}
    resampled = {}
    if by_task.get("phrase_grounding") or by_task.get("detection"):
        stats.update({
            "box_mean_iou": Stat("Mean IoU (grounding/detection)", _ratio(_IOU, _N_IOU)),
            "box_acc_iou_0.5": Stat("Acc@IoU>=0.5", _ratio(_ACC, _N_IOU)),
            "box_precision": Stat("Box precision (IoU>=0.5, micro)", _ratio(_TP, _NPRED)),
            "box_recall": Stat("Box recall (IoU>=0.5, micro)", _ratio(_TP, _NREF)),
            "box_f1": Stat("Box F1 (IoU>=0.5, micro)", _micro_f1),
        })
    if by_task.get("detection"):
        stats["box_map_0.5"] = Stat("mAP@0.5 (detection; CI by resampling, no p-value)",
                                    lambda t: np.full(np.shape(t)[:-1], np.nan))
        resampled["box_map_0.5"] = weighted_map
    if by_task.get("grounded_report"):
        stats.update({
            "grounded_precision": Stat("Grounded-report precision (RadFact-style)", _ratio(_G_HP, _G_NP)),
            "grounded_recall": Stat("Grounded-report recall (RadFact-style)", _ratio(_G_HR, _G_NR)),
            "grounded_f1": Stat("Grounded-report F1 (RadFact-style)", _harmonic(_G_HP, _G_NP, _G_HR, _G_NR)),
        })
    stats["box_parse_failure_rate"] = Stat("Box parse-failure rate", _ratio(_FAILED, _N_BOX), False)
    return stats, resampled


def box_statistics(path: str, records: Sequence[dict], hyps: Sequence[str]) -> dict[str, Any]:
    """What :mod:`evaluation.groups` makes the ``boxes`` metric group of (rows aligned with ``hyps``): ``S``
    (per-study statistics), ``stats`` ``{key: (label, fn of summed S, higher_is_better)}``, ``info``,
    ``details`` (per study, None for rows of other tasks), ``resampled`` and ``items`` (mAP). No row of a
    box task is a :class:`NoBoxRowsError` (eval skips the group under its default metric list)."""
    S = np.zeros((len(records), _K))
    details: list[dict[str, Any] | None] = []
    items: list[Any] = []
    by_task: dict[str, int] = {}
    families: set[str] = set()
    for i, (rec, hyp) in enumerate(zip(records, hyps)):
        task = rec.get("task")
        line = i + 1
        if task not in BOX_TASKS:
            details.append(None)
            items.append(None)
            continue
        by_task[task] = by_task.get(task, 0) + 1
        fam, size, pix = _frame(path, line, rec)
        families.add(fam)
        S[i, _N_BOX] = 1
        if task in _IOU_TASKS:
            det, item = _iou_row(path, line, rec, hyp, task, fam, size, pix, S[i])
        else:
            det, item = _grounded_row(path, line, rec, hyp, task, fam, size, pix, S[i]), None
        items.append(item)
        details.append(det)
    if not by_task:
        raise NoBoxRowsError("no row of a box task (task: phrase_grounding, detection or grounded_report); "
                          "generate with `mllm-cxr generate --task NAME`", file=path, field="task")
    stats, resampled = _box_stats(by_task)
    info: dict[str, Any] = {"rows_by_task": by_task, "families": sorted(families), "iou_threshold": 0.5,
                            "definitions": "reward.box_metrics (docs/boxes.md)"}
    if by_task.get("detection"):
        info["map_per_class"] = average_precision([it[0] for it in items if it], [it[1] for it in items if it]
                                                  )["per_class"]
    return {"S": S, "stats": stats, "info": info, "details": details, "resampled": resampled, "items": items}
