"""Writing the phantom's reports from the truth: FINDINGS, IMPRESSION, labels, hallucinated prior
sentences and the grounded FINDINGS sentences."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from data_prep.phantom.findings import _DEVICES, PHANTOM_FINDINGS, _Study
from data_prep.phantom.render import DEVICE_TIP_LABELS
from data_prep.phantom.score import phantom_findings
from reward.constants import CHEXPERT_LABELS

# ------------------------------------------------------------------------------------------------
# Reports
# ------------------------------------------------------------------------------------------------
_DEVICE_NP = {
    "ett": "endotracheal tube",
    "cvc_rij": "right internal jugular central venous catheter",
    "cvc_lsc": "left subclavian central venous catheter",
    "ngt": "enteric tube",
}
_DEVICE_POS = {
    "ett": ("Endotracheal tube terminates about {cm} cm above the carina.",
            "An endotracheal tube is in place with the tip {cm} cm above the carina.",
            "Endotracheal tube in standard position."),
    "cvc_rij": ("Right internal jugular central venous catheter with the tip in the superior vena cava.",
                "A right internal jugular catheter terminates in the superior vena cava."),
    "cvc_lsc": ("Left subclavian central venous catheter with the tip in the superior vena cava.",
                "A left subclavian catheter terminates in the superior vena cava."),
    "ngt": ("Enteric tube courses below the diaphragm into the stomach.",
            "A nasogastric tube is seen with the tip in the stomach."),
}
_GENERIC_HALLUCINATIONS = (
    "Unchanged from the prior examination.",
    "No interval change.",
    "No significant change compared to the prior study.",
    "Appearance is similar to the previous radiograph.",
    "Compared to the prior exam, there is no significant change.",
)
_INDICATIONS = ("Shortness of breath.", "Cough.", "Chest pain.", "Fever.", "Evaluate for pneumonia.",
                "Preoperative evaluation.", "Follow-up.", "Dyspnea and tachycardia.", "Weakness.")


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _words(name: str, d: dict[str, Any]) -> dict[str, str]:
    """Words that describe one finding's details, for the templates."""
    if name == "Pleural Effusion":
        size = "small" if d["size"] < 0.34 else "moderate"
        if d["side"] == "bilateral":
            return {"size": size, "np": "bilateral pleural effusions", "be": "are"}
        return {"size": size, "np": f"{d['side']} pleural effusion", "be": "is"}
    if name == "Pneumothorax":
        return {"size": "small" if d["size"] < 0.22 else "moderate", "np": f"{d['side']} pneumothorax"}
    if name == "Consolidation":
        if d["side"] == "left" and d["zone"] == "middle":
            return {"adj": "lingular", "where": "the lingula"}
        return {"adj": f"{d['side']} {d['zone']} lobe", "where": f"the {d['side']} {d['zone']} lobe"}
    if name == "Cardiomegaly":
        mild = d["ctr"] < 0.6
        return {"degree": "mild" if mild else "moderate", "adv": "mildly" if mild else "moderately"}
    return {}


def _finding_sentences(name: str, status: str, d: dict[str, Any], rng: np.random.Generator) -> list[str]:
    """FINDINGS sentences for one finding; ``status`` is pos/abs (no prior) or same/new/resolved."""
    w = _words(name, d) if d else {}
    if name == "Support Devices":
        return []  # written per device by _device_sentences
    if name == "Cardiomegaly":
        options = {
            "pos": ("{degree} cardiomegaly.", "The heart is {adv} enlarged.", "Cardiomegaly."),
            "abs": ("Heart size is normal.", "The heart is not enlarged.", "Normal heart size."),
            "same": ("Stable cardiomegaly.", "Cardiomegaly is unchanged compared to the prior study."),
            "new": ("New cardiomegaly compared to the prior study.", "The heart is now enlarged."),
            "resolved": ("Heart size is now normal.",),
        }[status]
    elif name == "Pleural Effusion":
        if w.get("be") == "are":
            pos = ("{size} {np}.", "There are {size} {np}.", "Bilateral pleural effusions.")
        else:
            pos = ("{size} {np}.", "There is a {size} {np}.", "{np} layering at the base.")
        options = {
            "pos": pos,
            "abs": ("No pleural effusion.",),
            "same": ("The {np} {be} unchanged compared to the prior study.", "Stable {size} {np}."),
            "new": ("New {size} {np} compared to the prior study.",),
            "resolved": ("Interval resolution of the {np}.", "The previously seen {np} has resolved."),
        }[status]
        if status == "resolved" and w.get("be") == "are":
            options = ("Interval resolution of the {np}.", "The previously seen {np} have resolved.")
    elif name == "Consolidation":
        options = {
            "pos": ("{adj} consolidation.", "Consolidation in {where}.", "There is dense consolidation in {where}.",
                    "Focal consolidation in {where}."),
            "abs": ("No focal consolidation.", "No consolidation."),
            "same": ("{adj} consolidation is unchanged compared to the prior study.", "Persistent consolidation in {where}."),
            "new": ("New consolidation in {where} compared to the prior study.",
                    "Compared to the prior study, there is new {adj} consolidation."),
            "resolved": ("Interval resolution of the {adj} consolidation.",
                         "The previously seen {adj} consolidation has resolved."),
        }[status]
    elif name == "Pneumothorax":
        options = {
            "pos": ("{size} {np}.", "There is a {size} {np}.", "{size} apical {np}."),
            "abs": ("No pneumothorax.",),
            "same": ("The {np} is unchanged in size compared to the prior study.", "Persistent {size} {np}."),
            "new": ("New {size} {np} since the prior study.",),
            "resolved": ("Interval resolution of the {np}.", "The previously seen {np} has resolved."),
        }[status]
    else:
        raise AssertionError(name)
    text = _pick(rng, options)
    if status == "pos" and name == "Pneumothorax" and text.startswith("{size} apical"):
        side, _ = w["np"].split(" ", 1)
        return [_cap(f"{w['size']} {side} apical pneumothorax.")]
    return [_cap(text.format(**w))]


def _device_sentences(cur: dict[str, Any] | None, old: dict[str, Any] | None, has_prior: bool,
                      rng: np.random.Generator) -> list[str]:
    now = cur["devices"] if cur else []
    before = old["devices"] if old else []
    out = []
    for dev in _DEVICES:
        if dev in now and (not has_prior or dev not in before):
            if has_prior:
                out.append(_pick(rng, (f"Interval placement of the {_DEVICE_NP[dev]}.",
                                       f"The {_DEVICE_NP[dev]} is new since the prior study.")))
            else:
                out.append(_pick(rng, _DEVICE_POS[dev]).format(cm=cur["ett_cm"]))
        elif dev in now:
            out.append(_cap(f"{_DEVICE_NP[dev]} is unchanged in position."))
        elif dev in before:
            out.append(_pick(rng, (f"Interval removal of the {_DEVICE_NP[dev]}.", f"The {_DEVICE_NP[dev]} has been removed.")))
    return out


def _impression(st: _Study, has_prior: bool) -> list[str]:
    f, out = st.findings, []
    prefix = {"same": "Unchanged ", "new": "New "}
    for name in ("Pleural Effusion", "Consolidation", "Pneumothorax", "Cardiomegaly"):
        if name not in f:
            continue
        w = _words(name, f[name])
        status = st.changes.get(name, "pos") if has_prior else "pos"
        if name == "Cardiomegaly":
            phrase = "Stable cardiomegaly." if status == "same" else "New cardiomegaly." if status == "new" else "Cardiomegaly."
        elif name == "Consolidation":
            phrase = f"{prefix.get(status, '')}{w['adj']} consolidation."
        else:
            phrase = f"{prefix.get(status, '')}{w['size']} {w['np']}."
        out.append(phrase)
    if not out:
        if "Support Devices" in f:
            out.append("Lines and tubes as described.")
        out.append("No acute cardiopulmonary process.")
    return [_cap(s) for s in out]


def _write_report(st: _Study, prior: _Study | None, rng: np.random.Generator) -> tuple[str, str, set[str]]:
    """FINDINGS, IMPRESSION and the findings explicitly negated in them."""
    f = st.findings
    has_prior = prior is not None
    negated: set[str] = set()

    def status(name: str) -> str:
        if not has_prior:
            return "pos" if name in f else "abs"
        now, before = name in f, name in prior.findings
        return {(True, True): "same", (True, False): "new", (False, True): "resolved", (False, False): "abs"}[(now, before)]

    if has_prior:
        st.changes = {n: status(n) for n in PHANTOM_FINDINGS if status(n) != "abs"}
    devices = _device_sentences(f.get("Support Devices"), prior.findings.get("Support Devices") if prior else None,
                                has_prior, rng)
    if any("removal" in s or "removed" in s for s in devices) and "Support Devices" not in f:
        negated.add("Support Devices")
    lungs: list[str] = []
    pleura: list[str] = []
    heart: list[str] = []
    s_cons, s_ptx, s_eff = status("Consolidation"), status("Pneumothorax"), status("Pleural Effusion")
    if s_cons == "abs" and s_ptx == "abs" and rng.random() < 0.5:
        lungs.append("The lungs are clear.")
    else:
        lungs += _finding_sentences("Consolidation", s_cons, f.get("Consolidation") or
                                    (prior.findings.get("Consolidation") if prior else None) or {}, rng)
        if s_cons in ("abs", "resolved"):
            negated.add("Consolidation")
    if s_ptx == "abs" and s_eff == "abs":
        pleura.append(_pick(rng, ("No pleural effusion or pneumothorax.", "There is no pleural effusion or pneumothorax.")))
        negated |= {"Pleural Effusion", "Pneumothorax"}
    else:
        for name, s in (("Pneumothorax", s_ptx), ("Pleural Effusion", s_eff)):
            d = f.get(name) or (prior.findings.get(name) if prior else None) or {}
            (lungs if name == "Pneumothorax" else pleura).extend(_finding_sentences(name, s, d, rng))
            if s in ("abs", "resolved"):
                negated.add(name)
    s_cmg = status("Cardiomegaly")
    heart += _finding_sentences("Cardiomegaly", s_cmg, f.get("Cardiomegaly") or {"ctr": st.ctr}, rng)
    if s_cmg in ("abs", "resolved"):
        negated.add("Cardiomegaly")
    body = devices + (heart + lungs + pleura if rng.random() < 0.5 else lungs + pleura + heart)
    impression = _impression(st, has_prior)
    if has_prior and all(v == "same" for v in st.changes.values()) and (not st.changes or rng.random() < 0.5):
        # nothing new or resolved: say so (always when both studies are normal, so that every
        # report with a prior carries comparison language)
        impression.append(_pick(rng, ("No interval change.", "No change compared to the prior study.")))
    return " ".join(body), " ".join(impression), negated


def _hallucination(st: _Study, rng: np.random.Generator) -> str:
    specific = []
    f = st.findings
    if "Cardiomegaly" in f:
        specific.append("Stable cardiomegaly compared to prior.")
    if "Pleural Effusion" in f:
        be = "are" if f["Pleural Effusion"]["side"] == "bilateral" else "is"
        noun = "effusions" if be == "are" else "effusion"
        specific.append(f"The pleural {noun} {be} unchanged from the prior study.")
    if "Consolidation" in f:
        specific.append("Persistent consolidation compared to the prior radiograph.")
    if specific and rng.random() < 0.4:
        return _pick(rng, specific)
    return _pick(rng, _GENERIC_HALLUCINATIONS)


def _insert_sentence(text: str, sentence: str, rng: np.random.Generator) -> str:
    parts = [p for p in re.split(r"(?<=\.)\s+", text) if p]
    parts.insert(int(rng.integers(len(parts) + 1)), sentence)
    return " ".join(parts)


def _labels(st: _Study, negated: set[str]) -> dict[str, float | None]:
    labels: dict[str, float | None] = dict.fromkeys(CHEXPERT_LABELS)
    for name in PHANTOM_FINDINGS:
        if name in st.findings:
            labels[name] = 1.0
        elif name in negated:
            labels[name] = 0.0
    if not any(n in st.findings for n in PHANTOM_FINDINGS if n != "Support Devices"):
        labels["No Finding"] = 1.0  # CheXpert: nothing but support devices is positive
    return labels


# ------------------------------------------------------------------------------------------------
# Grounding: which boxes each FINDINGS sentence asserts
# ------------------------------------------------------------------------------------------------
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
#: Which detection boxes ground a sentence about a finding.
_GROUNDING_LABELS = {"Cardiomegaly": ("Cardiomegaly",), "Pleural Effusion": ("Pleural Effusion",),
                     "Consolidation": ("Consolidation",), "Pneumothorax": ("Pneumothorax",),
                     "Support Devices": tuple(sorted(set(DEVICE_TIP_LABELS.values())))}


_TIP_WORDS = {"ETT tip": re.compile(r"endotracheal|\bett\b", re.I),
              "CVC tip": re.compile(r"jugular|subclavian|central venous|catheter|\bcvc\b", re.I),
              "NGT tip": re.compile(r"enteric|nasogastric|feeding|\bng\b|\bngt\b|orogastric", re.I)}


def _grounded_findings(findings_text: str, boxes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The FINDINGS sentences, each with the frontal image's boxes of the findings it asserts (a negated
    or normal sentence has ``boxes: None``)."""
    out = []
    for sentence in _SENTENCE_END.split(findings_text.strip()):
        if not sentence:
            continue
        labels = {lab for name in phantom_findings(sentence) for lab in _GROUNDING_LABELS.get(name, ())}
        tips = {lab for lab, rx in _TIP_WORDS.items() if lab in labels and rx.search(sentence)}
        if tips:  # a sentence about one device is grounded by that device's tip only
            labels = (labels - set(_TIP_WORDS)) | tips
        mine = [{k: b[k] for k in ("x_min", "y_min", "x_max", "y_max")} for b in boxes if b["label"] in labels]
        out.append({"text": sentence, "boxes": mine or None, "image": 0})
    return out

