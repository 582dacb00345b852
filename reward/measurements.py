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

Speed: regular expressions on lower-cased text; a report (and a sentence) without a device word or a
unit is dismissed after one token scan (most reports). About 10,000 IU X-ray reports/s on one core
(``bench/bench_measurements.py``). Quality: 88 report sentences written from IU and MIMIC-style
phrasing (``tests/reward/test_measurements.py``), and 40 IU sentences labelled blind: device + position
extraction F1 0.982. Limits: a tip described in a sentence that does not name the device ("The tip
is in the SVC.") is not attached to it; de-identified landmarks ("superior XXXX XXXX") are lost.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from reward.base import RewardError, Scorer, ScoreResult
from reward.cues import alternation, cues
from reward.text import split_sentences

# ----------------------------------------------------------------------------------------------------
# Vocabulary
# ----------------------------------------------------------------------------------------------------


#: Device name patterns: (device, route or None, regex). Order matters only for equal-length matches.
_DEVICE_SOURCES: list[tuple[str, str | None, str]] = [
    ("swan_ganz", None, r"swan[\s-]*ganz(?:\s+catheter)?|pulmonary\s+arter(?:y|ial)\s+catheter|\bpa\s+catheter"),
    ("impella", None, r"impella(?:\s+(?:device|catheter|pump))?"),
    ("iabp", None, r"intra[\s-]*aortic\s+balloon(?:\s+pump)?(?:\s+catheter)?|\biabp\b|balloon\s+pump"),
    ("ett", None, r"endo[\s-]*tracheal(?:\s+tube)?|\be\.?\s?t\.?[\s-]+tube|\bett\b|\bintubated\b|\bextubat(?:ed|ion)\b"),
    ("tracheostomy", None, r"tracheostomy(?:\s+tube)?|tracheotomy\s+tube|\btrach\s+tube|\btrach\b"),
    ("enteric_tube", None, r"(?:naso|oro)[\s-]*(?:gastric|enteric|jejunal|duodenal)\s+(?:tube|catheter)|"
                           r"\b(?:ng|og|ngt|ogt|nj|dht)\b(?:\s+tube)?|enteric(?:\s+suction)?\s+(?:tube|catheter)|"
                           r"feeding\s+tube|dobb?h?off(?:\s+tube)?|gastric(?:\s+suction)?\s+tube|"
                           r"(?:weighted\s+)?feeding\s+catheter|salem\s+sump"),
    ("cvc", "picc", r"\bpicc(?:\s+line)?\b|\bpic\s+(?:line|catheter)|peripherally\s+inserted\s+central\s+"
                    r"(?:venous\s+)?catheter"),
    ("cvc", "ij", r"(?:internal\s+jugular|\bij\b)(?:\s+approach)?(?:\s+(?:dual[\s-]lumen|tunneled|central|venous|"
                  r"central\s+venous|dialysis|hemodialysis|triple[\s-]lumen))*\s+(?:catheter|line|sheath|cvc|cvl)"),
    ("cvc", "subclavian", r"subclavian(?:\s+(?:central|venous|central\s+venous|dialysis|tunneled))*\s+"
                          r"(?:catheter|line|cvc|cvl)"),
    ("cvc", "femoral", r"femoral(?:\s+(?:central|venous|central\s+venous))*\s+(?:catheter|line)"),
    ("cvc", None, r"central\s+venous\s+(?:catheter|line)|central\s+(?:line|catheter)|\bcvc\b|\bcvl\b|"
                  r"(?:hemo)?dialysis\s+catheter|tunneled\s+(?:\w+\s+)?catheter|venous\s+catheter|"
                  r"port[\s-]*a[\s-]*cath|medi[\s-]?port|power[\s-]?port|(?:chest|venous|infusion)\s+port|"
                  r"venous\s+access\s+(?:catheter|device|port)"),
    ("chest_tube", None, r"chest\s+tubes?|thoracostomy\s+tubes?|pleural\s+(?:drain|catheter|tube)s?|"
                         r"pig[\s-]*tail\s+(?:catheter|drain)s?|pleurx(?:\s+catheter)?|chest\s+drains?|"
                         r"mediastinal\s+drains?"),
    ("pacemaker", None, r"(?:bi[\s-]*ventricular\s+|dual[\s-]*(?:chamber|lead)\s+|single[\s-]*(?:chamber|lead)\s+)?"
                        r"(?:pacemaker|pacer)(?:\s*/\s*(?:defibrillator|icd|aicd))?(?:\s+(?:device|generator|"
                        r"leads?|wires?))?|\ba?icd\b(?:\s*/\s*pacemaker)?(?:\s+(?:device|generator|leads?|wires?))?|"
                        r"(?:cardiac\s+)?defibrillator(?:\s+(?:device|leads?))?|pacing\s+(?:leads?|wires?|device)|"
                        r"(?:pulse|cardiac)\s+generator|cardiac\s+(?:pacing\s+)?(?:device|leads)|"
                        r"(?:transvenous|epicardial)\s+(?:pacing\s+)?(?:leads?|wires?)|\bleads?\b"),
    ("cvc", "unspecified", r"\bcatheters?\b"),  # kept only next to a venous landmark ("Catheter tip mid SVC")
]

#: Every device, with the landmarks its tip can reach (None: any).
DEVICES: dict[str, frozenset[str] | None] = {
    "ett": frozenset({"carina", "trachea", "thoracic_inlet", "clavicles", "right_bronchus", "left_bronchus",
                      "esophagus"}),
    "tracheostomy": frozenset({"carina", "trachea", "thoracic_inlet", "clavicles", "right_bronchus",
                               "left_bronchus"}),
    "enteric_tube": frozenset({"stomach", "below_diaphragm", "ge_junction", "esophagus", "duodenum", "carina",
                               "right_bronchus", "left_bronchus", "trachea"}),
    "cvc": frozenset({"svc", "cavoatrial_junction", "right_atrium", "right_ventricle", "brachiocephalic_vein",
                      "subclavian_vein", "ij_vein", "azygos", "ivc"}),
    "swan_ganz": frozenset({"pulmonary_artery", "right_ventricle", "right_atrium", "svc", "cavoatrial_junction"}),
    "chest_tube": frozenset({"lung_apex", "lung_base", "fissure", "pleural_space"}),
    "pacemaker": frozenset({"right_atrium", "right_ventricle", "coronary_sinus", "svc", "cavoatrial_junction"}),
    "impella": frozenset({"left_ventricle", "aortic_valve", "aortic_root"}),
    "iabp": frozenset({"aortic_knob", "descending_aorta", "carina"}),
}

_LANDMARK_SOURCES: list[tuple[str, str]] = [
    ("carina", r"carina\b"),
    ("cavoatrial_junction", r"cavo[\s-]*atrial(?:\s+junction)?|caval?[\s-]+atrial\s+junction|atrio[\s-]*caval"
                            r"(?:\s+junction)?|svc[\s/-]+ra\s+junction|junction\s+of\s+the\s+(?:svc|superior\s+vena"
                            r"\s+cava)\s+(?:and|with)\s+the\s+right\s+atrium"),
    ("svc", r"\bsvc\b|superior\s+vena\s+cava|superior\s+vena\s+caval"),
    ("ivc", r"\bivc\b|inferior\s+vena\s+cava"),
    ("right_atrium", r"right\s+atri(?:um|al\s+appendage|al\b(?!\s+enlargement))|\bra\b(?!\s+junction)"),
    ("right_ventricle", r"right\s+ventric(?:le|ular)(?:\s+(?:apex|outflow\s+tract))?|\brv\b"),
    ("left_ventricle", r"left\s+ventric(?:le|ular)(?!\s+(?:enlargement|hypertrophy|configuration|contour))|\blv\b"),
    ("coronary_sinus", r"coronary\s+(?:sinus|vein)"),
    ("brachiocephalic_vein", r"brachiocephalic(?:\s+venous)?\s+(?:vein|confluence)|innominate\s+vein|"
                             r"brachiocephalic\s+(?:and|/)\s+svc\s+junction"),
    ("subclavian_vein", r"subclavian\s+vein"),
    ("ij_vein", r"(?:internal\s+)?jugular\s+vein"),
    ("azygos", r"azygos(?:\s+vein|\s+arch)?"),
    ("pulmonary_artery", r"(?:main|right|left|interlobar|descending|proximal|distal)?\s*(?:right\s+|left\s+)?"
                         r"pulmonary\s+(?:artery|arterial\s+(?:trunk|outflow))|pulmonary\s+outflow\s+tract"),
    ("right_bronchus", r"right\s+(?:main(?:[\s-]*stem)?\s+)?bronch(?:us|ial)|bronchus\s+intermedius|"
                       r"right\s+mainstem"),
    ("left_bronchus", r"left\s+(?:main(?:[\s-]*stem)?\s+)?bronch(?:us|ial)|left\s+mainstem"),
    ("thoracic_inlet", r"thoracic\s+inlet"),
    ("clavicles", r"(?:medial\s+)?clavic(?:les?|ular\s+heads?)|clavicular\s+heads?"),
    ("trachea", r"(?:mid|upper|lower|distal|proximal|intra[\s-]*thoracic|mid[\s-]*thoracic)?\s*trachea\b"),
    ("ge_junction", r"gastro[\s-]*esophageal\s+junction|\bge\s+junction|\bgej\b"),
    ("esophagus", r"(?:distal|mid|proximal|upper|lower)?\s*esophag(?:us|eal)(?!\s+junction)"),
    ("stomach", r"stomach|gastric\s+(?:body|fundus|antrum|lumen)|(?:body|fundus|antrum)\s+of\s+the\s+stomach|"
                r"\bfundus\b"),
    ("duodenum", r"duoden(?:um|al)|jejun(?:um|al)|post[\s-]*pyloric"),
    ("below_diaphragm", r"(?:below|beneath|under|past|inferior\s+to|beyond)\s+(?:the\s+)?(?:left\s+|right\s+)?"
                        r"(?:hemi)?diaphragm|sub[\s-]*diaphragmatic|infra[\s-]*diaphragmatic|"
                        r"(?:upper\s+)?abdomen|out\s+of\s+(?:the\s+)?(?:field\s+of\s+)?view"),
    ("aortic_knob", r"aortic\s+(?:knob|knuckle|arch)"),
    ("descending_aorta", r"descending\s+(?:thoracic\s+)?aorta"),
    ("aortic_valve", r"aortic\s+valve"),
    ("aortic_root", r"aortic\s+root"),
    ("lung_apex", r"(?:lung\s+)?ap(?:ex|ical|ices)"),
    ("lung_base", r"(?:lung\s+)?bases?\b|basilar|basal"),
    ("fissure", r"(?:major|minor|oblique|horizontal)\s+fissure"),
]

#: Landmarks that are close enough not to contradict each other (symmetric).
ADJACENT: frozenset[frozenset[str]] = frozenset(frozenset(p) for p in [
    ("svc", "cavoatrial_junction"), ("cavoatrial_junction", "right_atrium"), ("svc", "brachiocephalic_vein"),
    ("svc", "azygos"), ("stomach", "below_diaphragm"), ("duodenum", "below_diaphragm"), ("stomach", "duodenum"),
    ("stomach", "ge_junction"), ("carina", "trachea"), ("trachea", "thoracic_inlet"), ("trachea", "clavicles"),
    ("thoracic_inlet", "clavicles"), ("right_ventricle", "pulmonary_artery"), ("aortic_knob", "descending_aorta"),
    ("aortic_valve", "aortic_root"), ("left_ventricle", "aortic_valve"), ("esophagus", "ge_junction"),
])
LANDMARKS: tuple[str, ...] = tuple(name for name, _ in _LANDMARK_SOURCES)
#: Devices whose tip-to-carina distance is the "tube-to-carina" measurement.
CARINA_TUBES = frozenset({"ett", "tracheostomy"})

_LESIONS: list[tuple[str, str]] = [
    ("nodule", r"nodul(?:e|es|ar)(?:\s+(?:opacity|opacities|density|densities|lesion))?|granulomas?|masses|mass\b|"
               r"masslike(?:\s+(?:opacity|density))?|mass-like(?:\s+(?:opacity|density))?|lesions?|"
               r"opacit(?:y|ies)|densit(?:y|ies)|calcification|neoplasm|tumou?r"),
    ("lymph_node", r"lymph\s+nodes?|lymphadenopathy|\bnodes?\b"),
    ("pneumothorax", r"pneumothora(?:x|ces)"),
    ("effusion", r"effusions?"),
    ("cavity", r"cavit(?:y|ies|ary)|lucency|lucencies|bulla(?:e)?|cysts?"),
    ("aorta", r"aort(?:a|ic)"),
]

# ----------------------------------------------------------------------------------------------------
# Compiled patterns
# ----------------------------------------------------------------------------------------------------
# The big patterns run on lower-cased text (faster than IGNORECASE).
_DEVICE_RX = re.compile("|".join(f"(?P<d{i}>{rx})" for i, (_, _, rx) in enumerate(_DEVICE_SOURCES)))
_DEVICE_OF = [(dev, route) for dev, route, _ in _DEVICE_SOURCES]
_LANDMARK_RX = re.compile("|".join(f"(?P<l{i}>\\b(?:{rx}))" for i, (_, rx) in enumerate(_LANDMARK_SOURCES)))
_LESION_RX = re.compile("|".join(f"(?P<s{i}>\\b(?:{rx}))" for i, (_, rx) in enumerate(_LESIONS)))

_WORD_NUM = {"one": 1.0, "two": 2.0, "three": 3.0, "four": 4.0, "five": 5.0, "six": 6.0, "seven": 7.0,
             "eight": 8.0, "nine": 9.0, "ten": 10.0, "half": 0.5}
_NUM = r"(?:\d+(?:[.,]\d+)?|\.\d+|one|two|three|four|five|six|seven|eight|nine|ten)"
_UNIT = r"(?:cm|mm|centimet(?:er|re)s?|millimet(?:er|re)s?)\b"
#: "4.5 cm", "5-6 centimeters", "13 - 14 mm", "1.2 x 0.8 cm", "2.5 cm x 1.9 cm", "3 mm x 1 mm"
_MEASURE_RX = re.compile(
    rf"(?<![\w.])(?P<a>{_NUM})(?:\s*(?:-|–|to)\s*(?P<a2>{_NUM}))?\s*(?P<ua>{_UNIT})?"
    rf"(?P<more>(?:\s*(?:x|×|by)\s*{_NUM}\s*(?:{_UNIT})?)*)",
    )
_DIM_RX = re.compile(rf"({_NUM})\s*({_UNIT})?")
_APPROX_RX = re.compile(r"\b(?:approximately|approx\.?|about|roughly|nearly|almost|around|~|circa|up\s+to)\s*$")
#: What follows a tip distance: a relation to a landmark.
_RELATION_RX = re.compile(
    r"^\s*(?:(?:superior|inferior|cephalad|caudal|proximal|distal)\s+to|above|below|from|beyond|past|"
    r"short\s+of|before|within|into)\b")
_AT_LEVEL_RX = re.compile(r"\b(?:at|to|near)\s+(?:the\s+)?(?:level\s+of\s+(?:the\s+)?)?(?=carina\b)")
#: A distance that is a change, not a position ("retraction of approximately 6 cm", "advanced by 2 cm").
_CHANGE_RX = re.compile(r"\b(?:retract\w*|advanc\w*|withdra\w*|pulled\s+back|pull\s+back|reposition\w*|"
                        r"mov\w*|migrat\w*|displac\w*|increas\w*|decreas\w*|recommend\w*|by)\b[^.;]{0,40}$")

#: A cheap first scan: a report (or sentence) without any of these words, and without a unit, holds no fact.
_TOKEN_RX = re.compile(r"[a-z]+")
_TRIGGERS = frozenset("""
tube tubes catheter catheters cath picc pic pacemaker pacemakers pacer pacing icd aicd defibrillator lead leads ett
ng ngt og ogt nj dht ij cvc cvl mediport powerport swan impella balloon iabp trach tracheostomy tracheotomy
tracheal endotracheal intubated extubated extubation drain drains dobhoff dobbhoff pleurx pigtail sump sheath
""".split())
#: Device phrases without a trigger word of their own (checked when "line" or "port" is a token).
_TRIGGER_PHRASES = re.compile(r"(?:central|subclavian|femoral|jugular)\s+line|port[\s-]*a\b|"
                              r"(?:chest|venous|infusion|power)\s+port")
_UNITS = frozenset({"cm", "mm"})


def _may_hold_facts(low: str) -> tuple[bool, bool]:
    """(may name a device, may hold a number with a unit)."""
    toks = _TOKEN_RX.findall(low)
    return (not _TRIGGERS.isdisjoint(toks) or (("line" in toks or "port" in toks)
                                                and _TRIGGER_PHRASES.search(low) is not None),
            not _UNITS.isdisjoint(toks) or "centimet" in low or "millimet" in low)


def _lower(text: str) -> str:
    """``text.lower()`` with the same length (character offsets stay valid)."""
    low = text.lower()
    if len(low) != len(text):
        low = "".join(c.lower() if len(c.lower()) == 1 else c for c in text)
    return low


# Context around a mention (the shared words from the cue lexicon, reward/resources/cues.yaml, then ours)
_NEG_PRE = re.compile(r"\b(?:" + alternation(cues("negation"), [r"discontinu\w+", "removed", "extubation and"],
                                              space=r"\s+") + r")\b")
_NEG_KIND = re.compile(r"removal|removed|discontinu|extubation")
_NEG_POST = re.compile(
    r"\b(?:(?:is|are|was|were|has|have)\s+(?:also\s+)?(?:been\s+)?(?:(?:interval(?:ly)?|since|subsequently|"
    r"now)\s+)?(?:removed|withdrawn|discontinued|pulled)|(?:is|are|was|were)\s+(?:no\s+longer|not)\s+(?:seen|"
    r"visible|visualized|identified|present|noted|appreciated|demonstrated|evident)|(?:no\s+longer|not)\s+"
    r"(?:seen|visualized|identified|present|appreciated)|removal|(?:is|are)\s+absent)\b")
_NEG_POST_REMOVAL = re.compile(r"remov|withdraw|discontinu|pulled")
#: Where a negation's scope before a mention ends: punctuation that closes a clause, a contrast word, a
#: new clause after a comma, or a verb (the negated noun phrase is over).
_SCOPE_END = re.compile(r"[;:]|\b(?:" + alternation(cues("clause_breaks"), ["except", "which", "while"]) + r")\b|"
                        r",\s*(?:the|a|an|there|this|it|and\s+(?:the|a|an|there))\b|"
                        r"\b(?:is|are|was|were|has|have|terminates?|projects?|courses?|ends?|extends?|seen|noted|"
                        r"identified|in\s+place|with|status\s+post|s/p|after|following|since|placement|placed|insertion)\b")
_HEDGE_RX = re.compile(r"\b(?:" + alternation(cues("hedge"), [r"presum\w*", r"cannot (be )?exclude\w*", "either",
                                                               r"or (in|within|at)\b", r"\?"], space=r"\s+") + ")")
_HEDGE_ALT = re.compile(r"^\s*(?:or|versus|vs\.?|and/or)\s+(?:the\s+)?(?:\w+\s+){0,3}?")
_COMPARE_RX = re.compile(r"\b(?:" + alternation(cues("unchanged"), cues("seen_before"), [
    "un-changed", r"no (significant )?change", "as before", "previously", "continue[sd]?"], space=r"\s+")
    + r")\b")
#: Words that make "leads" something other than a cardiac device.
_NOT_LEAD = re.compile(r"\b(?:monitor(?:ing)?|ecg|ekg|external|telemetry|electrocardiogra\w*|overlying|"
                       r"overlie|skin)\s+(?:\w+\s+){0,2}$")
_LEAD_OK = re.compile(r"pac|icd|defib|cardiac|generator|atri|ventric|coronary")
_VENOUS_RX = re.compile(r"\b(?:svc|superior\s+vena|cavo[\s-]*atrial|caval?[\s-]+atrial|right\s+atri(?:um|al)|"
                        r"brachiocephalic|innominate|azygos)")
_GENERIC_POS = re.compile(r"\b(?:standard|satisfactory|appropriate|good|expected|acceptable|adequate|"
                          r"unremarkable|optimal|usual|correct)\s+(?:position|placement|location)|"
                          r"\bin\s+(?:place|position)\b|\bappropriately\s+(?:positioned|placed|sited)\b")


# ----------------------------------------------------------------------------------------------------
# Facts
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Distance:
    """A tip distance, normalised to cm: ``value`` (the midpoint of a range), ``low``/``high``, its span."""

    value: float
    low: float
    high: float
    unit: str
    relation: str  # above | below | from | at | ...
    start: int
    end: int


@dataclass
class DeviceFact:
    """One device mention of a report.

    ``status``: ``present`` | ``absent`` (negated) | ``removed`` | ``uncertain`` (hedged).
    ``landmark``: canonical tip landmark or None; ``landmark_uncertain`` when the landmark is hedged.
    ``comparison``: described relative to a prior ("unchanged in position", "again noted").
    ``start``/``end``: the device words; ``sentence``: the sentence's span.
    """

    device: str
    route: str | None
    status: str
    start: int
    end: int
    text: str
    sentence: tuple[int, int]
    landmark: str | None = None
    landmark_span: tuple[int, int] | None = None
    landmark_uncertain: bool = False
    distance: Distance | None = None
    comparison: bool = False
    generic_position: bool = False
    kind: str = "device"

    @property
    def asserted(self) -> bool:
        return self.status == "present"

    def describe(self) -> str:
        s = self.device if self.status == "present" else f"{self.device} ({self.status})"
        if self.landmark:
            s += f" -> {self.landmark}"
        if self.distance is not None:
            s += f" {self.distance.value:g} cm {self.distance.relation}"
        return s


@dataclass
class SizeFact:
    """A lesion size: dimensions in cm in order of writing, the lesion kind (or None), spans, status."""

    lesion: str | None
    dims_cm: tuple[float, ...]
    unit: str
    start: int
    end: int
    text: str
    sentence: tuple[int, int]
    lesion_span: tuple[int, int] | None = None
    status: str = "present"
    comparison: bool = False
    kind: str = "size"

    @property
    def largest(self) -> float:
        return max(self.dims_cm)

    @property
    def asserted(self) -> bool:
        return self.status == "present"

    def describe(self) -> str:
        return f"{self.lesion or 'lesion'} " + " x ".join(f"{d:g}" for d in self.dims_cm) + " cm"


@dataclass
class Extraction:
    """All device and size facts of one text."""

    devices: list[DeviceFact] = field(default_factory=list)
    sizes: list[SizeFact] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------------
# Extraction
# ----------------------------------------------------------------------------------------------------


def _to_float(s: str) -> float | None:
    s = s.strip().lower()
    if s in _WORD_NUM:
        return _WORD_NUM[s]
    try:
        v = float(s.replace(",", "."))
    except ValueError:
        return None
    return v if math.isfinite(v) else None


def _unit_factor(unit: str | None) -> float | None:
    if not unit:
        return None
    u = unit.lower()
    return 0.1 if u.startswith(("mm", "milli")) else 1.0


def _device_mentions(sent: str, off: int) -> list[tuple[str, str | None, int, int]]:
    out = []
    for m in _DEVICE_RX.finditer(sent):
        idx = int(m.lastgroup[1:])
        dev, route = _DEVICE_OF[idx]
        a, b = m.span()
        word = m.group(0).lower()
        if dev == "pacemaker" and re.fullmatch(r"leads?", word):
            before = sent[max(0, a - 40):a]
            if _NOT_LEAD.search(before) or not (_LEAD_OK.search(sent) or re.search(r"\b(?:intact|pacing)\b", sent)):
                continue
            if re.search(r"\b(?:monitor|ecg|ekg|telemetry)\b", sent):
                continue
        if dev == "cvc" and route is None and re.match(r"(?:chest|venous|infusion)\s+port", word) \
                and re.search(r"\bport(?:able)?\s+(?:ap|view|film|chest)", sent[a:b + 12]):
            continue
        if route == "unspecified":  # a bare "catheter": a central line only next to a venous landmark
            if not _VENOUS_RX.search(sent) or any(d in ("cvc", "swan_ganz") for d, _, _, _ in out):
                continue
            route = None
        if dev == "pacemaker" and re.fullmatch(r"leads?", word) and any(d == "pacemaker" for d, _, _, _ in out):
            continue  # "pacemaker with leads in the right atrium": one device
        out.append((dev, route, off + a, off + b))
    # "Swan-Ganz catheter" inside a longer central-line phrase, duplicates of one device phrase: keep distinct spans
    return out


def _status(sent: str, a: int, b: int, prev_end: int, word: str) -> str:
    """Status of the device at [a, b) (sentence-relative): present | absent | removed | uncertain."""
    if "extubat" in word.lower():
        return "removed"
    status = "present"
    pre = sent[max(0, a - 80):a]
    for m in _NEG_PRE.finditer(pre):  # a negation/removal cue before the mention whose scope reaches it
        if not _SCOPE_END.search(pre[m.end():]):
            status = "removed" if _NEG_KIND.search(m.group(0)) else "absent"
    post = sent[b:b + 90]
    cue = _NEG_POST.search(post)  # "... has been removed", "... is not seen", "chest tube removal"
    if cue is not None and not _SCOPE_END.search(post[:cue.start()]) and not re.search(r"[;:]", post[:cue.start()]):
        status = "removed" if _NEG_POST_REMOVAL.search(cue.group(0)) else "absent"
    if status == "present":
        hpre = sent[max(prev_end, a - 40):a]
        h = next(reversed(list(_HEDGE_RX.finditer(hpre))), None)
        if h is not None and not _SCOPE_END.search(hpre[h.end():]):
            status = "uncertain"
    return status


def _measures(sent: str) -> list[tuple[int, int, list[float], float | None, float | None, str]]:
    """Numbers with a unit in ``sent``: (start, end, dims_cm, low, high, unit) (sentence-relative)."""
    out = []
    for m in _MEASURE_RX.finditer(sent):
        a_val = _to_float(m.group("a"))
        if a_val is None:
            continue
        dims_raw: list[tuple[float, str | None]] = [(a_val, m.group("ua"))]
        a2 = _to_float(m.group("a2")) if m.group("a2") else None
        more = m.group("more") or ""
        for dm in _DIM_RX.finditer(more):
            v = _to_float(dm.group(1))
            if v is not None:
                dims_raw.append((v, dm.group(2)))
        unit = next((u for _, u in reversed(dims_raw) if u), None)
        if unit is None:
            continue  # a number without a unit is not a measurement
        f = _unit_factor(unit)
        dims, last = [], None
        for v, u in reversed(dims_raw):  # "2.5 cm x 1.9 cm": each its own unit; "1.2 x 0.8 cm": the last one
            last = _unit_factor(u) or last or f
            dims.append(v * last)
        dims.reverse()
        low = high = None
        if a2 is not None:
            fa = _unit_factor(m.group("ua")) or f
            low, high = sorted((a_val * fa, a2 * fa))
            dims[0] = (low + high) / 2
        out.append((m.start(), m.end(), dims, low, high, unit.lower()))
    return out


def _landmarks(sent: str) -> list[tuple[str, int, int]]:
    out = []
    for m in _LANDMARK_RX.finditer(sent):
        name = _LANDMARK_SOURCES[int(m.lastgroup[1:])][0]
        a, b = m.span()
        while a < b and sent[a].isspace():
            a += 1
        out.append((name, a, b))
    return out


def _attach(devs: list[DeviceFact], pos: int, landmark: str | None, s0: int) -> DeviceFact | None:
    """The device a landmark (or distance) at sentence position ``pos`` belongs to."""
    def fits(d: DeviceFact) -> bool:
        allowed = DEVICES.get(d.device)
        return landmark is None or allowed is None or landmark in allowed

    before = [d for d in devs if d.end - s0 <= pos and fits(d)]
    if before:
        return before[-1]
    after = [d for d in devs if d.start - s0 >= pos and fits(d)]
    return after[0] if after else None


def extract(text: Any) -> Extraction:
    """Device and lesion-size facts of ``text`` (any input; non-strings are turned into text)."""
    if not isinstance(text, str):
        text = "" if text is None else str(text)
    ex = Extraction()
    if not text:
        return ex
    low = _lower(text)
    if not any(_may_hold_facts(low)):
        return ex
    for s0, s1 in split_sentences(text):
        sent = low[s0:s1]
        devices, units = _may_hold_facts(sent)
        if devices or units:
            _extract_sentence(text, low, sent, s0, s1, ex, devices)
    return ex


def _extract_sentence(text: str, low: str, sent: str, s0: int, s1: int, ex: Extraction, devices: bool = True) -> None:
    """Facts of one sentence: ``sent`` is ``low[s0:s1]`` (lower-cased); spans index ``text``."""
    mentions = _device_mentions(sent, s0) if devices else []
    devs: list[DeviceFact] = []
    prev_end = 0
    for dev, route, a, b in mentions:
        word = text[a:b]
        status = _status(sent, a - s0, b - s0, prev_end, word)
        nxt = next((m[2] for m in mentions if m[2] >= b), s1)
        tail = low[b:nxt]
        # "leads ... unchanged": a comparison word between this mention and the next device
        comparison = bool(_COMPARE_RX.search(low[max(s0, a - 30):a]) or _COMPARE_RX.search(tail))
        devs.append(DeviceFact(dev, route, status, a, b, word, (s0, s1), comparison=comparison,
                               generic_position=bool(_GENERIC_POS.search(tail))))
        prev_end = b - s0
    device_ranges = [(d.start - s0, d.end - s0) for d in devs]
    lms = [lm for lm in _landmarks(sent) if not any(a <= lm[1] < b for a, b in device_ranges)] if devs else []
    measures = _measures(sent)
    used: set[int] = set()
    # tip distances: a number with a unit, a relation, then a landmark
    for k, (ma, mb, dims, low, high, unit) in enumerate(measures):
        if not devs or len(dims) != 1:
            continue
        rel = _RELATION_RX.match(sent[mb:])
        if rel is None:
            continue
        lm = next((x for x in lms if x[1] >= mb + rel.end() - 1 and x[1] - (mb + rel.end()) <= 32), None)
        if lm is None:
            continue
        if _CHANGE_RX.search(sent[max(0, ma - 60):ma]) and not re.search(r"\btip\b", sent[max(0, ma - 25):ma]):
            continue
        d = _attach(devs, ma, lm[0], s0)
        if d is None or d.distance is not None:
            continue
        ap = _APPROX_RX.search(sent[:ma])
        start = ap.start() if ap else ma
        lo_v, hi_v = (low, high) if low is not None else (dims[0], dims[0])
        d.distance = Distance(dims[0], lo_v, hi_v, unit, rel.group(0).strip().lower().split()[0], s0 + start, s0 + mb)
        d.landmark, d.landmark_span = lm[0], (s0 + lm[1], s0 + lm[2])
        d.landmark_uncertain = bool(_HEDGE_RX.search(sent[max(0, start - 30):start]))
        used.add(k)
        lms = [x for x in lms if x is not lm]
    # "at the level of the carina": 0 cm
    for m in _AT_LEVEL_RX.finditer(sent):
        lm = next((x for x in lms if x[0] == "carina" and x[1] == m.end()), None)
        d = _attach(devs, m.start(), "carina", s0) if lm else None
        if d is not None and d.landmark is None:
            d.distance = Distance(0.0, 0.0, 0.0, "cm", "at", s0 + m.start(), s0 + lm[2])
            d.landmark, d.landmark_span = "carina", (s0 + lm[1], s0 + lm[2])
            lms = [x for x in lms if x is not lm]
    # remaining landmarks: the first one per device
    for name, a, b in lms:
        d = _attach(devs, a, name, s0)
        if d is None or d.landmark is not None or d.status not in ("present", "uncertain"):
            continue
        allowed = DEVICES.get(d.device)
        if allowed is not None and name not in allowed:
            continue
        between = sent[max(d.end - s0, 0) if d.end - s0 <= a else 0:a]
        if name in ("lung_apex", "lung_base") and not re.search(r"\b(?:tip|terminat|project|courses|in|at|toward)",
                                                                between):
            continue
        d.landmark, d.landmark_span = name, (s0 + a, s0 + b)
        hz = _HEDGE_RX.search(between[-45:]) if between else None
        d.landmark_uncertain = bool(hz) or bool(_HEDGE_ALT.match(sent[b:]))
    ex.devices.extend(devs)
    # sizes: the remaining measurements next to a lesion word
    for k, (ma, mb, dims, _low, _high, unit) in enumerate(measures):
        if k in used:
            continue
        if devs and _RELATION_RX.match(sent[mb:]):
            continue  # a distance whose landmark we did not read
        if _CHANGE_RX.search(sent[max(0, ma - 40):ma]) and re.search(r"retract|advanc|withdra|pull", sent[max(0, ma - 60):ma]):
            continue
        lesion, lspan = None, None
        after = _LESION_RX.search(sent, mb, min(len(sent), mb + 60))
        before = None
        for lm_ in _LESION_RX.finditer(sent, max(0, ma - 80), ma):
            before = lm_
        pick = after if after is not None and (before is None or after.start() - mb <= ma - before.end()) else before
        if pick is not None:
            lesion = _LESIONS[int(pick.lastgroup[1:])][0]
            lspan = (s0 + pick.start(), s0 + pick.end())
        elif re.match(r"\s*(?:in\s+)?(?:diameter|in\s+size|long|wide|thick)", sent[mb:]) is None and \
                not re.search(r"\b(?:measur\w*|size)\b", sent[max(0, ma - 30):ma]):
            continue
        ap = _APPROX_RX.search(sent[:ma])
        start = ap.start() if ap else ma
        st = "present"
        pre = sent[max(0, start - 40):start]
        neg = re.search(r"\b(?:no|without)\b(?![^,;]*\b(?:and|with)\b)", pre)
        if neg is not None and not _SCOPE_END.search(pre[neg.end():]):
            st = "absent"
        elif _HEDGE_RX.search(sent[max(0, start - 30):start]):
            st = "uncertain"
        ex.sizes.append(SizeFact(lesion, tuple(dims), unit, s0 + start, s0 + mb, text[s0 + start:s0 + mb],
                                 (s0, s1), lspan, st, bool(_COMPARE_RX.search(sent))))


# ----------------------------------------------------------------------------------------------------
# Comparison
# ----------------------------------------------------------------------------------------------------


def landmarks_agree(a: str, b: str) -> bool:
    """Same landmark, or two adjacent ones (:data:`ADJACENT`)."""
    return a == b or frozenset((a, b)) in ADJACENT


def _fact_ref(f: DeviceFact | SizeFact | None) -> dict[str, Any] | None:
    if f is None:
        return None
    out = {"description": f.describe(), "span": [f.start, f.end], "sentence": list(f.sentence), "text": f.text}
    if isinstance(f, DeviceFact):
        out.update(device=f.device, status=f.status, landmark=f.landmark,
                   distance_cm=None if f.distance is None else f.distance.value)
    else:
        out.update(lesion=f.lesion, dims_cm=list(f.dims_cm))
    return out


@dataclass
class Comparison:
    """Hallucinated facts of a generation vs its reference, and the counts behind P/R/F1 and the MAE."""

    hallucinations: list[dict[str, Any]]
    tp_hyp: int
    n_hyp: int
    tp_ref: int
    n_ref: int
    carina_error: float | None

    @property
    def count(self) -> int:
        return len(self.hallucinations)

    def f1(self, empty_score: float = 1.0) -> float:
        if self.n_hyp == 0 and self.n_ref == 0:
            return empty_score
        p = self.tp_hyp / self.n_hyp if self.n_hyp else 0.0
        r = self.tp_ref / self.n_ref if self.n_ref else 0.0
        return 2 * p * r / (p + r) if p + r > 0 else 0.0


@dataclass(frozen=True)
class Tolerances:
    """Tolerances of the comparison (cm), and whether numbers the reference does not give count."""

    carina_cm: float = 1.0
    distance_cm: float = 1.0
    size_cm: float = 0.3
    size_rel: float = 0.25
    count_unsupported: bool = False


def _by_device(facts: Sequence[DeviceFact]) -> dict[str, list[DeviceFact]]:
    out: dict[str, list[DeviceFact]] = {}
    for f in facts:
        out.setdefault(f.device, []).append(f)
    return out


def _positions(facts: Sequence[DeviceFact]) -> list[DeviceFact]:
    return [f for f in facts if f.status == "present" and f.landmark and not f.landmark_uncertain]


def _distance_ok(h: DeviceFact, r: DeviceFact, tol: Tolerances) -> bool:
    """Both distances stated: the gap between them (ranges: between the intervals) is within tolerance."""
    if h.distance is None or r.distance is None:
        return True
    t = tol.carina_cm if h.landmark == "carina" else tol.distance_cm
    gap = max(0.0, h.distance.low - r.distance.high, r.distance.low - h.distance.high)
    return gap <= t + 1e-9


def _position_fact_ok(h: DeviceFact, refs: Sequence[DeviceFact], tol: Tolerances) -> bool:
    return any(landmarks_agree(h.landmark, r.landmark) and _distance_ok(h, r, tol) for r in refs)


def compare(hyp: Extraction | str, ref: Extraction | str, tol: Tolerances | None = None) -> Comparison:
    """Hallucinated device/position/measurement/size facts of ``hyp`` against ``ref`` (see the module docstring)."""
    tol = tol or Tolerances()
    h = hyp if isinstance(hyp, Extraction) else extract(hyp)
    r = ref if isinstance(ref, Extraction) else extract(ref)
    out: list[dict[str, Any]] = []
    h_by, r_by = _by_device(h.devices), _by_device(r.devices)
    r_present = {d for d, fs in r_by.items() if any(f.status == "present" for f in fs)}
    h_present = {d for d, fs in h_by.items() if any(f.status == "present" for f in fs)}
    # device facts
    for dev in sorted(h_present, key=lambda d: min(f.start for f in h_by[d] if f.status == "present")):
        first = next(f for f in h_by[dev] if f.status == "present")
        if dev not in r_present:
            contra = next((f for f in r_by.get(dev, []) if f.status in ("absent", "removed")), None)
            out.append({"kind": "device", "device": dev, "span": [first.start, first.end], "text": first.text,
                        "sentence": list(first.sentence), "reference": _fact_ref(contra)})
    # positions and distances of the devices both have
    tp_hyp = len(h_present & r_present)
    tp_ref = tp_hyp
    n_hyp, n_ref = len(h_present), len(r_present)
    for dev in sorted(h_present | r_present):
        hp, rp = _positions(h_by.get(dev, [])), _positions(r_by.get(dev, []))
        # one position fact per (device, landmark): the first mention with a distance if any
        hp_u = _unique_positions(hp)
        rp_u = _unique_positions(rp)
        n_hyp += len(hp_u) if dev in h_present else 0
        n_ref += len(rp_u)
        if dev in h_present:
            tp_ref += sum(1 for f in rp_u if _position_fact_ok(f, hp_u, tol))
        if dev not in h_present or dev not in r_present:
            continue
        for f in hp_u:
            if _position_fact_ok(f, rp_u, tol):
                tp_hyp += 1
                continue
            if not rp_u:
                if tol.count_unsupported and f.distance is not None:
                    out.append(_hall("unsupported", f, f.distance, next(iter(r_by[dev]), None)))
                continue
            same = [x for x in rp_u if landmarks_agree(f.landmark, x.landmark)]
            if not same:
                out.append(_hall("position", f, None, rp_u[0]))
            else:
                best = min(same, key=lambda x: abs(x.distance.value - f.distance.value)
                           if (x.distance and f.distance) else 0.0)
                out.append(_hall("measurement", f, f.distance, best))
    # tube-to-carina error
    carina_error = None
    hc = [f for f in h.devices if f.device in CARINA_TUBES and f.status == "present" and f.landmark == "carina"
          and f.distance is not None and not f.landmark_uncertain]
    rc = [f for f in r.devices if f.device in CARINA_TUBES and f.status == "present" and f.landmark == "carina"
          and f.distance is not None and not f.landmark_uncertain]
    if hc and rc:
        carina_error = abs(hc[0].distance.value - rc[0].distance.value)
    # sizes
    r_sizes = [s for s in r.sizes if s.asserted]
    for s in h.sizes:
        if not s.asserted:
            continue
        cands = [x for x in r_sizes if x.lesion == s.lesion or s.lesion is None or x.lesion is None]
        if not cands:
            if tol.count_unsupported:
                out.append(_size_hall("unsupported", s, None))
            continue
        best = min(cands, key=lambda x: abs(x.largest - s.largest))
        diff = abs(best.largest - s.largest)
        if diff > max(tol.size_cm, tol.size_rel * max(best.largest, s.largest)) + 1e-9:
            out.append(_size_hall("size", s, best))
    out.sort(key=lambda x: x["span"][0])
    return Comparison(out, tp_hyp, n_hyp, tp_ref, n_ref, carina_error)


def _unique_positions(facts: Sequence[DeviceFact]) -> list[DeviceFact]:
    seen: dict[str, DeviceFact] = {}
    for f in facts:
        cur = seen.get(f.landmark)
        if cur is None or (cur.distance is None and f.distance is not None):
            seen[f.landmark] = f
    return list(seen.values())


def _hall(kind: str, f: DeviceFact, dist: Distance | None, ref: DeviceFact | None) -> dict[str, Any]:
    if dist is not None:
        span = [dist.start, f.landmark_span[1] if f.landmark_span else dist.end]
    elif f.landmark_span:
        span = list(f.landmark_span)
    else:
        span = [f.start, f.end]
    out = {"kind": kind, "device": f.device, "span": span, "sentence": list(f.sentence), "landmark": f.landmark,
           "distance_cm": None if f.distance is None else f.distance.value, "reference": _fact_ref(ref)}
    return out


def _size_hall(kind: str, s: SizeFact, ref: SizeFact | None) -> dict[str, Any]:
    return {"kind": kind, "lesion": s.lesion, "span": [s.start, s.end], "sentence": list(s.sentence),
            "dims_cm": list(s.dims_cm), "reference": _fact_ref(ref)}


def as_dict(ex: Extraction) -> dict[str, list[dict[str, Any]]]:
    """JSON-ready form of an :class:`Extraction`."""
    return {"devices": [asdict(d) for d in ex.devices], "sizes": [asdict(s) for s in ex.sizes]}


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
