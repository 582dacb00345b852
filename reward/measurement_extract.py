"""Extraction of device, tip-position, distance and lesion-size facts from report text (:func:`extract`): the
vocabulary, the compiled patterns, the fact classes and the sentence-by-sentence reader. What is read and how is
described in :mod:`reward.measurements`, the public face of these modules.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any

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
    devs = _sentence_devices(text, low, sent, s0, s1) if devices else []
    device_ranges = [(d.start - s0, d.end - s0) for d in devs]
    lms = [lm for lm in _landmarks(sent) if not any(a <= lm[1] < b for a, b in device_ranges)] if devs else []
    measures = _measures(sent)
    lms, used = _tip_distances(sent, s0, devs, lms, measures)
    lms = _carina_level(sent, s0, devs, lms)
    _first_landmarks(sent, s0, devs, lms)
    ex.devices.extend(devs)
    _sentence_sizes(text, sent, s0, s1, devs, measures, used, ex)


def _sentence_devices(text: str, low: str, sent: str, s0: int, s1: int) -> list[DeviceFact]:
    """The device mentions of one sentence with their status, comparison and generic-position flags."""
    mentions = _device_mentions(sent, s0)
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
    return devs


def _tip_distances(sent: str, s0: int, devs: list[DeviceFact], lms: list[tuple[str, int, int]],
                   measures: list) -> tuple[list[tuple[str, int, int]], set[int]]:
    """Tip distances: a number with a unit, a relation, then a landmark. Returns the landmarks left and the
    indices of the measures used."""
    used: set[int] = set()
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
    return lms, used


def _carina_level(sent: str, s0: int, devs: list[DeviceFact],
                  lms: list[tuple[str, int, int]]) -> list[tuple[str, int, int]]:
    """"At the level of the carina": 0 cm. Returns the landmarks left."""
    for m in _AT_LEVEL_RX.finditer(sent):
        lm = next((x for x in lms if x[0] == "carina" and x[1] == m.end()), None)
        d = _attach(devs, m.start(), "carina", s0) if lm else None
        if d is not None and d.landmark is None:
            d.distance = Distance(0.0, 0.0, 0.0, "cm", "at", s0 + m.start(), s0 + lm[2])
            d.landmark, d.landmark_span = "carina", (s0 + lm[1], s0 + lm[2])
            lms = [x for x in lms if x is not lm]
    return lms


def _first_landmarks(sent: str, s0: int, devs: list[DeviceFact], lms: list[tuple[str, int, int]]) -> None:
    """The remaining landmarks: the first one per device (present or hedged) that can reach it."""
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


def _sentence_sizes(text: str, sent: str, s0: int, s1: int, devs: list[DeviceFact], measures: list, used: set[int],
                    ex: Extraction) -> None:
    """Sizes: the measurements not used as distances, next to a lesion word (or said to be a size)."""
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
        ex.sizes.append(SizeFact(lesion, tuple(dims), unit, s0 + start, s0 + mb, text[s0 + start:s0 + mb],
                                 (s0, s1), lspan, _size_status(sent, start), bool(_COMPARE_RX.search(sent))))


def _size_status(sent: str, start: int) -> str:
    """present | absent ("no ... 5 mm nodule") | uncertain (hedged) of a size beginning at ``start``."""
    st = "present"
    pre = sent[max(0, start - 40):start]
    neg = re.search(r"\b(?:no|without)\b(?![^,;]*\b(?:and|with)\b)", pre)
    if neg is not None and not _SCOPE_END.search(pre[neg.end():]):
        st = "absent"
    elif _HEDGE_RX.search(sent[max(0, start - 30):start]):
        st = "uncertain"
    return st


def as_dict(ex: Extraction) -> dict[str, list[dict[str, Any]]]:
    """JSON-ready form of an :class:`Extraction`."""
    return {"devices": [asdict(d) for d in ex.devices], "sizes": [asdict(s) for s in ex.sizes]}
