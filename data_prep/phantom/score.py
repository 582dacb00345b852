"""Reading phantom-style reports back (:func:`phantom_findings`) and the demo's finding-level F1
(:func:`finding_scores`)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from data_prep.errors import DataPrepError
from data_prep.phantom.findings import PHANTOM_FINDINGS
from data_prep.schema import StudyRecord
from reward.cues import alternation, cues

# ------------------------------------------------------------------------------------------------
# Reading phantom-style reports back
# ------------------------------------------------------------------------------------------------
_MENTIONS: dict[str, re.Pattern[str]] = {
    "Cardiomegaly": re.compile(r"cardiomegaly|cardiac enlargement|enlarged (?:heart|cardiac)|"
                               r"(?:heart|cardiac silhouette|cardiac size|heart size)\b[^.;]*?\benlarg"),
    "Pleural Effusion": re.compile(r"(?<!pericardial )effusion|pleural fluid"),
    "Consolidation": re.compile(r"consolidat"),
    "Pneumothorax": re.compile(r"pneumothora(?:x|ces)"),
    "Support Devices": re.compile(r"\b(?:tubes?|catheters?|picc|pacemaker|pacer|(?<!pleural )lines?|cannula|drains?|"
                                  r"devices?|leads?|port)\b"),
}
# Negation and clause words: the shared cue lexicon's (reward/resources/cues.yaml), then the phantom's own.
_NEG_BEFORE = re.compile(r"\b(?:" + alternation(cues("negation"), ["not", "resolution of", "rather than", "resolved",
                                                                  "cleared"]) + r")\b")
_NEG_AFTER = re.compile(r"\b(?:" + alternation(cues("resolution"), ["not", "normal", "resolving", "no longer",
                                                                    "unremarkable", "within normal limits"]) + r")\b")
_CLAUSE_SPLIT = re.compile(r"[.;:!?\n]+|\b(?:" + alternation(cues("clause_breaks"), ["with", "and there is",
                                                                                     "and there are"]) + r")\b")


def phantom_findings(text: str) -> set[str]:
    """The phantom findings positively asserted in a phantom-style report.

    Sentences are split into clauses; a mention is negated when a negation cue ("no", "without",
    "resolution of", "removal of"...) precedes it in the clause, or one ("normal", "not", "has
    resolved", "removed"...) follows it. A finding counts when at least one mention is not negated
    (CheXpert's aggregation). Anything that is not a string, or garbage, gives an empty set.
    """
    if not isinstance(text, str) or not text:
        return set()
    low = text[:200_000].lower()
    found: set[str] = set()
    for clause in _CLAUSE_SPLIT.split(low):
        if not clause or len(clause) < 4:
            continue
        for name, pattern in _MENTIONS.items():
            if name in found:
                continue
            for m in pattern.finditer(clause):
                if _NEG_BEFORE.search(clause, 0, m.start()) or _NEG_AFTER.search(clause, m.start()):
                    continue
                found.add(name)
                break
    return found


def _truth_set(item: Any, index: int) -> set[str]:
    if isinstance(item, StudyRecord):
        names = item.meta.get("findings")
    elif isinstance(item, dict):
        names = (item.get("meta") or {}).get("findings") if "meta" in item else item.get("findings")
    elif isinstance(item, str):
        return phantom_findings(item)
    else:
        names = item
    if names is None or isinstance(names, str) or not isinstance(names, Iterable):
        raise DataPrepError("expected a StudyRecord with meta['findings'], a record dict, a reference report "
                            "or a collection of finding names", field=f"records_or_truth[{index}]", value=item)
    out = set(names)
    unknown = out - set(PHANTOM_FINDINGS)
    if unknown:
        raise DataPrepError(f"not a phantom finding (expected one of {PHANTOM_FINDINGS})",
                            field=f"records_or_truth[{index}]", value=sorted(unknown)[0])
    return out


def finding_scores(predictions: list[str], records_or_truth: list) -> dict[str, Any]:
    """The simple finding-level score of the demo: F1 per phantom finding, micro/macro F1, exact match.

    ``predictions`` are generated reports (read with :func:`phantom_findings`; a set of finding
    names is taken as is). ``records_or_truth`` holds, per prediction, a :class:`StudyRecord` or
    record dict (truth from ``meta["findings"]``), a reference report, or a collection of names.
    F1 follows scikit-learn's convention: 0.0 when a finding has no true and no predicted positive.
    """
    predictions, truth_items = list(predictions), list(records_or_truth)
    if len(predictions) != len(truth_items):
        raise DataPrepError("predictions and truth differ in length", field="predictions",
                            value=f"{len(predictions)} vs {len(truth_items)}")
    pred_sets = [p if isinstance(p, set | frozenset) else phantom_findings(p) for p in predictions]
    true_sets = [_truth_set(t, i) for i, t in enumerate(truth_items)]

    def f1(tp: int, fp: int, fn: int) -> float:
        return 2 * tp / (2 * tp + fp + fn) if tp else 0.0

    per: dict[str, dict[str, float]] = {}
    tot_tp = tot_fp = tot_fn = 0
    for name in PHANTOM_FINDINGS:
        tp = sum(name in p and name in t for p, t in zip(pred_sets, true_sets))
        fp = sum(name in p and name not in t for p, t in zip(pred_sets, true_sets))
        fn = sum(name not in p and name in t for p, t in zip(pred_sets, true_sets))
        tot_tp, tot_fp, tot_fn = tot_tp + tp, tot_fp + fp, tot_fn + fn
        per[name] = {"precision": tp / (tp + fp) if tp + fp else 0.0, "recall": tp / (tp + fn) if tp + fn else 0.0,
                     "f1": f1(tp, fp, fn), "support": float(tp + fn), "predicted": float(tp + fp)}
    n = len(pred_sets)
    phantom = set(PHANTOM_FINDINGS)
    return {
        "n": n,
        "exact_match": sum((p & phantom) == t for p, t in zip(pred_sets, true_sets)) / n if n else 0.0,
        "micro_f1": f1(tot_tp, tot_fp, tot_fn),
        "macro_f1": sum(v["f1"] for v in per.values()) / len(per),
        "micro_precision": tot_tp / (tot_tp + tot_fp) if tot_tp + tot_fp else 0.0,
        "micro_recall": tot_tp / (tot_tp + tot_fn) if tot_tp + tot_fn else 0.0,
        "f1": {k: v["f1"] for k, v in per.items()},
        "per_finding": per,
    }

