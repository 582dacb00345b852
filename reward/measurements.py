"""Devices, tip positions, distances and lesion sizes in report text: extract them, compare them, penalise them.

Report-generation models invent numbers and devices freely ("endotracheal tube 4.5 cm above the
carina" when it is 1 cm, an "8 mm" nodule that was 15 mm, a central line "in the SVC" when there is
none), and label-based metrics do not notice: CheXpert sees only "Support Devices: present". This
module (the text side of FactCheXcker, Heiman et al., CVPR 2025)

* extracts the quantitative and positional statements of a report, each with its character span
  (:func:`extract`): support devices with their tip landmark and tip distance, and lesion sizes;
* compares a generated report with its reference (:func:`compare`) and registers the scorers
  ``measurement_hallucination`` (number of hallucinated facts per report), ``measurement_f1`` (F1
  of device + position facts) and ``measurement_penalty`` (a GRPO reward: minus that number).

What is extracted
-----------------
* **Devices** (:data:`DEVICES`): ``ett`` (endotracheal tube, "ET tube", "ETT", "intubated"),
  ``tracheostomy``, ``enteric_tube`` (NG/OG/feeding/Dobhoff/enteric tube), ``cvc`` (central venous
  catheters: internal jugular, subclavian, PICC, dialysis and tunneled catheters, ports; the route is
  kept in ``route``), ``swan_ganz`` (pulmonary artery catheter), ``chest_tube`` (thoracostomy tube,
  pleural drain or catheter, pigtail), ``pacemaker`` (pacemaker, ICD/AICD, pacing leads), ``impella``
  and ``iabp`` (intra-aortic balloon pump). External monitor/ECG leads are not devices here.
* **Tip landmarks** (:data:`LANDMARKS`): carina, trachea, thoracic inlet, clavicles, right/left main
  bronchus, SVC, cavoatrial junction, right atrium, right ventricle, coronary sinus, brachiocephalic,
  subclavian, internal jugular and azygos veins, pulmonary artery, stomach, below the diaphragm,
  gastroesophageal junction, esophagus, duodenum, left ventricle, aortic knob/arch, descending aorta,
  lung apex and base. A landmark belongs to the nearest device before it in the sentence that can
  reach it (a catheter cannot end in the stomach), else the nearest one after it.
* **Distances**: ``<number> <unit> above|below|from|proximal to|distal to <landmark>`` and "at the
  level of the carina" (0 cm), with "approximately", ranges ("5-6 cm": the midpoint, the range kept),
  cm/mm/centimeters/millimeters, all normalised to cm. A change ("retraction of approximately 6 cm")
  is not a tip distance.
* **Sizes**: ``<number> [unit] x <number> <unit>`` next to a lesion word (nodule, mass, granuloma,
  opacity, density, lesion, lymph node, pneumothorax, cavity, ...): every dimension in cm, largest
  first kept in order of writing.
* **Language around them**: negation ("no endotracheal tube", "... is not seen"), removal ("interval
  removal of the NG tube", "has been removed", "extubated"), hedging ("may be within the SVC",
  "possible chest tube") and comparison with a prior ("unchanged in position", "stable", "again
  noted", "remains") are recognised. A negated device is ``absent``, a removed one ``removed``; a hedged
  device is ``uncertain`` (a hedged landmark: ``landmark_uncertain``) and never counted as a fact; a comparison keeps the device present
  (it is there now) but "unchanged position" is not read as a position. Numbers without a unit are
  not measurements.

How a generated report is compared with its reference
-----------------------------------------------------
Facts of the generation that are asserted (present, not hedged):

* a device absent from the reference (not mentioned, negated or removed there) is a **device
  hallucination** (kind ``device``; its position statements are not counted again);
* a tip landmark of a device the reference also has, where the reference places that device's tip
  at a landmark that is neither the same nor adjacent (SVC ~ cavoatrial junction ~ right atrium,
  stomach ~ below the diaphragm ~ duodenum, carina ~ trachea, ...), is a **position hallucination**
  (kind ``position``);
* a tip distance to the same landmark that differs from the reference's by more than a tolerance
  (``carina_tolerance_cm``, default 1.0 cm, for tube-to-carina; ``distance_tolerance_cm`` for the
  others) is a **measurement hallucination** (kind ``measurement``);
* a lesion size whose closest reference size of the same lesion kind differs by more than
  ``max(size_tolerance_cm, size_rel_tolerance * larger)`` (default 0.3 cm, 25%) is a **size
  hallucination** (kind ``size``).

Omissions (a fact of the reference missing from the generation) never count. With
``count_unsupported=True`` a distance or size the reference gives no number for is also counted
(kind ``unsupported``); by default it is not (a reference "in standard position" does not contradict
"4 cm above the carina").

The F1 of device + position facts (``measurement_f1``) counts per report the facts ``(device)`` and
``(device, landmark)``: a generated fact is correct when the reference has the device (for a
landmark: a compatible landmark, and a distance within tolerance where both state one); a
reference fact is found when the generation has it in the same sense. Both reports without any
such fact score ``empty_score`` (1.0). The corpus numbers are micro precision/recall/F1, the
hallucination rate per report and the mean absolute error of the tube-to-carina distance over the
reports where both state it.

The parts: :mod:`reward.measurement_extract` (vocabulary, patterns, facts, :func:`extract`),
:mod:`reward.measurement_compare` (:func:`compare`); this module re-exports their public names and holds the scorers.

Speed: regular expressions on lower-cased text; a report (and a sentence) without a device word or a
unit is dismissed after one token scan (most reports). About 10,000 IU X-ray reports/s on one core
(``bench/bench_measurements.py``). Quality: 88 report sentences written from IU and MIMIC-style
phrasing (``tests/reward/test_measurements.py``), and 40 IU sentences labelled blind: device + position
extraction F1 0.982. Limits: a tip described in a sentence that does not name the device ("The tip
is in the SVC.") is not attached to it; de-identified landmarks ("superior XXXX XXXX") are lost.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from reward.base import RewardError, Scorer, ScoreResult
from reward.measurement_compare import Comparison, Tolerances, compare, landmarks_agree
from reward.measurement_extract import (
    ADJACENT,
    CARINA_TUBES,
    DEVICES,
    LANDMARKS,
    DeviceFact,
    Distance,
    Extraction,
    SizeFact,
    as_dict,
    extract,
)

__all__ = ["ADJACENT", "CARINA_TUBES", "DEVICES", "LANDMARKS", "Comparison", "DeviceFact", "Distance", "Extraction",
           "MeasurementF1", "MeasurementHallucination", "MeasurementPenalty", "SizeFact", "Tolerances", "as_dict",
           "compare", "extract", "landmarks_agree"]


# ----------------------------------------------------------------------------------------------------
# Scorers
# ----------------------------------------------------------------------------------------------------


class _MeasurementScorer(Scorer):
    needs_reference = True

    def __init__(self, carina_tolerance_cm: float = 1.0, distance_tolerance_cm: float = 1.0,
                 size_tolerance_cm: float = 0.3, size_rel_tolerance: float = 0.25, count_unsupported: bool = False,
                 empty_score: float = 1.0) -> None:
        vals = {"carina_tolerance_cm": carina_tolerance_cm, "distance_tolerance_cm": distance_tolerance_cm,
                "size_tolerance_cm": size_tolerance_cm, "size_rel_tolerance": size_rel_tolerance}
        for k, v in vals.items():
            try:
                ok = math.isfinite(float(v)) and float(v) >= 0
            except (TypeError, ValueError):
                ok = False
            if not ok:
                raise RewardError(f"{self.name}: {k} must be a finite number >= 0, got {v!r}")
        self.tol = Tolerances(float(carina_tolerance_cm), float(distance_tolerance_cm), float(size_tolerance_cm),
                              float(size_rel_tolerance), bool(count_unsupported))
        self.empty_score = float(empty_score)
        self._ref_cache: dict[str, Extraction] = {}

    def _ref(self, text: str) -> Extraction:
        ex = self._ref_cache.get(text)
        if ex is None:
            if len(self._ref_cache) > 4096:
                self._ref_cache.clear()
            ex = self._ref_cache[text] = extract(text)
        return ex

    def compare_all(self, hyps: Sequence[str], refs: Sequence[str]) -> list[Comparison]:
        return [compare(extract(h), self._ref(r), self.tol) for h, r in zip(hyps, refs)]

    def corpus(self, comps: Sequence[Comparison]) -> dict[str, Any]:
        n = len(comps)
        tp_h, n_h = sum(c.tp_hyp for c in comps), sum(c.n_hyp for c in comps)
        tp_r, n_r = sum(c.tp_ref for c in comps), sum(c.n_ref for c in comps)
        p = tp_h / n_h if n_h else 0.0
        r = tp_r / n_r if n_r else 0.0
        errs = [c.carina_error for c in comps if c.carina_error is not None]
        kinds: dict[str, int] = {}
        for c in comps:
            for x in c.hallucinations:
                kinds[x["kind"]] = kinds.get(x["kind"], 0) + 1
        return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0,
                "hallucinations_per_report": sum(c.count for c in comps) / n if n else 0.0,
                "hallucination_rate": sum(1 for c in comps if c.count) / n if n else 0.0,
                "hallucinations_by_kind": kinds,
                "carina_mae_cm": sum(errs) / len(errs) if errs else None, "n_carina_pairs": len(errs),
                "tolerances": asdict(self.tol)}

    def details(self, comps: Sequence[Comparison]) -> list[dict[str, Any]]:
        return [{"hallucinations": c.hallucinations, "n_hallucinations": c.count, "tp_hyp": c.tp_hyp,
                 "n_hyp": c.n_hyp, "tp_ref": c.tp_ref, "n_ref": c.n_ref, "carina_error_cm": c.carina_error}
                for c in comps]


class MeasurementHallucination(_MeasurementScorer):
    """Per sample: the number of hallucinated device, tip-position, tip-distance and size facts of the
    generation against its reference (omissions do not count); ``details[i]["hallucinations"]`` lists
    each with its kind, span and the reference fact it disagrees with (or None). Lower is better."""

    name = "measurement_hallucination"
    higher_is_better = False

    def score(self, hyps, refs=None, **_: Any) -> ScoreResult:
        comps = self.compare_all(hyps, refs)
        return ScoreResult([float(c.count) for c in comps], self.details(comps), self.corpus(comps))


class MeasurementF1(_MeasurementScorer):
    """Per sample: F1 in [0, 1] of the device and (device, landmark[, distance]) facts; ``empty_score``
    (1.0) when neither report states any. Corpus: micro precision/recall/F1, hallucination rate, MAE of
    the tube-to-carina distance."""

    name = "measurement_f1"

    def score(self, hyps, refs=None, **_: Any) -> ScoreResult:
        comps = self.compare_all(hyps, refs)
        return ScoreResult([c.f1(self.empty_score) for c in comps], self.details(comps), self.corpus(comps))


class MeasurementPenalty(_MeasurementScorer):
    """A GRPO reward: ``-penalty * min(count, max_count)`` (``per_fact=True``, the default) or ``-penalty``
    when a generation has any hallucinated device/position/measurement/size fact (``per_fact=False``)."""

    name = "measurement_penalty"

    def __init__(self, penalty: float = 1.0, per_fact: bool = True, max_count: int = 5, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not (isinstance(penalty, int | float) and math.isfinite(penalty) and penalty >= 0):
            raise RewardError(f"measurement_penalty: penalty must be a finite number >= 0 (the score is -penalty), "
                              f"got {penalty!r}")
        if int(max_count) < 1:
            raise RewardError(f"measurement_penalty: max_count must be >= 1, got {max_count!r}")
        self.penalty, self.per_fact, self.max_count = float(penalty), bool(per_fact), int(max_count)

    def score(self, hyps, refs=None, **_: Any) -> ScoreResult:
        comps = self.compare_all(hyps, refs)
        scores = [-self.penalty * (min(c.count, self.max_count) if self.per_fact else float(c.count > 0))
                  for c in comps]
        return ScoreResult(scores, self.details(comps), self.corpus(comps))
