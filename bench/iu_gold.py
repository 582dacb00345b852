"""The CheXpert rule labeler against the IU X-ray (Open-i) gold labels: ``evaluate_iu_gold``.

Used by ``bench/bench_labeler.py`` and ``tests/reward/test_chexpert_rules.py``. The reports are read with the
project's one reader of the Open-i archive, :func:`data_prep.iu_xray.iter_reports`.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from data_prep.iu_xray import iter_reports
from reward.base import RewardError
from reward.chexpert import NO_FINDING, ChexpertRulesLabeler, _default_labeler
from reward.constants import POSITIVE, UNCERTAIN

#: CheXpert observation -> columns of the Open-i gold file (openi_gld_std14 layout) that mean it.
IU_GOLD_MAP: dict[str, tuple[str, ...]] = {
    "Atelectasis": ("Atelectasis",),
    "Cardiomegaly": ("Cardiomegaly",),
    "Pleural Effusion": ("Effusion",),
    "Pneumonia": ("Pneumonia",),
    "Pneumothorax": ("Pneumothorax",),
    "Consolidation": ("Consolidation",),
    "Edema": ("Edema",),
    "Lung Lesion": ("Mass", "Nodule"),
    "No Finding": ("normal",),
}


def read_iu_reports(tgz_path: str | Path) -> dict[str, dict[str, str]]:
    """Sections of the Open-i IU report archive (``NLMCXR_reports.tgz``) by uid (``CXR<n>``): comparison,
    indication, findings, impression ("" when empty), as :func:`data_prep.iu_xray.iter_reports` reads them."""
    return {r["uid"]: {k: r[k] for k in ("comparison", "indication", "findings", "impression")}
            for r in iter_reports(tgz_path)}


def evaluate_iu_gold(tgz_path: str | Path, gold_csv: str | Path, labeler: ChexpertRulesLabeler | None = None,
                     uncertain: str = "positive", sections: Sequence[str] = ("findings", "impression"),
                     return_errors: bool = False,
                     reports: Mapping[str, Mapping[str, str]] | None = None) -> dict[str, Any]:
    """Per-class precision/recall/F1 of the rule labeler against the Open-i gold labels.

    Text = the given sections (FINDINGS + IMPRESSION). A class counts as predicted when its label is
    1 (and -1 when ``uncertain="positive"``). Gold columns are mapped by :data:`IU_GOLD_MAP`
    (Mass or Nodule -> Lung Lesion, normal -> No Finding). ``micro`` pools the eight finding classes
    (No Finding apart). With ``return_errors`` the result lists false positives/negatives per class
    (report uids only). ``reports``: the output of :func:`read_iu_reports`, to read the archive once.
    """
    if uncertain not in ("positive", "negative"):
        raise RewardError(f"evaluate_iu_gold: uncertain must be positive|negative, got {uncertain!r}")
    labeler = labeler or _default_labeler()
    if reports is None:
        reports = read_iu_reports(tgz_path)
    with open(gold_csv, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        cols = reader.fieldnames or []
        need = {c for v in IU_GOLD_MAP.values() for c in v} | {"filename"}
        missing = sorted(need - set(cols))
        if missing:
            raise RewardError(f"{gold_csv}: columns {missing} missing")
        gold_rows = list(reader)
    present = (POSITIVE, UNCERTAIN) if uncertain == "positive" else (POSITIVE,)
    counts = {c: [0, 0, 0] for c in IU_GOLD_MAP}  # tp, fp, fn
    errors: dict[str, dict[str, list[str]]] = {c: {"fp": [], "fn": []} for c in IU_GOLD_MAP}
    n = no_report = 0
    for row in gold_rows:
        uid = row["filename"]
        rep = reports.get(uid)
        if rep is None:
            no_report += 1
            continue
        n += 1
        text = "\n\n".join(rep.get(s, "") for s in sections if rep.get(s))
        lab = labeler.label(text)
        for cls, gcols in IU_GOLD_MAP.items():
            g = any(row[c].strip() == "1" for c in gcols)
            p = lab[cls] in present
            if p and g:
                counts[cls][0] += 1
            elif p:
                counts[cls][1] += 1
                errors[cls]["fp"].append(uid)
            elif g:
                counts[cls][2] += 1
                errors[cls]["fn"].append(uid)

    def prf(tp: int, fp: int, fn: int) -> dict[str, float]:
        p = tp / (tp + fp) if tp + fp else 0.0
        r = tp / (tp + fn) if tp + fn else 0.0
        return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0,
                "support": tp + fn, "tp": tp, "fp": fp, "fn": fn}

    classes = {c: prf(*v) for c, v in counts.items()}
    pooled = [sum(counts[c][i] for c in IU_GOLD_MAP if c != NO_FINDING) for i in range(3)]
    result: dict[str, Any] = {"n_reports": n, "gold_rows_without_report": no_report, "uncertain": uncertain,
                              "sections": list(sections), "classes": classes, "micro": prf(*pooled)}
    if return_errors:
        result["errors"] = errors
    return result
