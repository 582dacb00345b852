"""What a phantom study shows: the findings drawn for it, their details, and the patient's anatomy."""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: The findings the phantom draws, as CheXpert observation names.
PHANTOM_FINDINGS: tuple[str, ...] = (
    "Cardiomegaly",
    "Pleural Effusion",
    "Consolidation",
    "Pneumothorax",
    "Support Devices",
)

_P_NORMAL = 1.0 / 3.0  # share of studies without any finding
_P_FINDING = 0.42  # per finding in an abnormal study -> about 0.30 overall
_P_CARRY = 0.6  # a current finding was already there on the earlier study
_P_RESOLVED = 0.2  # an absent finding was there on the earlier study
_DEVICES = ("ett", "cvc_rij", "cvc_lsc", "ngt")
_BASE_DATE = _dt.datetime(2131, 1, 1)  # shifted far into the future, like de-identified dates


# ------------------------------------------------------------------------------------------------
# What a study shows
# ------------------------------------------------------------------------------------------------
@dataclass
class _Anatomy:
    """Per-patient body shape; every study of the patient reuses it with a little jitter."""

    cx: float
    half_thorax: float
    med: float
    y_top: float
    y_cp: float
    dome: float
    heart_ry: float
    base_ctr: float
    body_rx: float
    soft: float
    lung: float
    bone: float
    heart: float
    carina: float


@dataclass
class _Study:
    findings: dict[str, dict[str, Any]]
    ctr: float
    frontal_view: str
    time: _dt.datetime
    changes: dict[str, str] = field(default_factory=dict)


def _anatomy(rng: np.random.Generator) -> _Anatomy:
    y_top = rng.uniform(0.10, 0.14)
    return _Anatomy(
        cx=0.5 + rng.uniform(-0.015, 0.015), half_thorax=rng.uniform(0.35, 0.39), med=rng.uniform(0.045, 0.06),
        y_top=y_top, y_cp=rng.uniform(0.76, 0.82), dome=rng.uniform(0.08, 0.11), heart_ry=rng.uniform(0.12, 0.145),
        base_ctr=rng.uniform(0.38, 0.46), body_rx=rng.uniform(0.44, 0.48), soft=rng.uniform(92, 106),
        lung=rng.uniform(36, 48), bone=rng.uniform(160, 175), heart=rng.uniform(138, 152),
        carina=y_top + rng.uniform(0.16, 0.20),
    )


def _draw_detail(name: str, rng: np.random.Generator) -> dict[str, Any]:
    """Random parameters of one finding (side, zone, size, devices...)."""
    if name == "Cardiomegaly":
        return {"ctr": round(float(rng.uniform(0.56, 0.66)), 3)}
    if name == "Pleural Effusion":
        side = ("right", "left", "bilateral")[int(rng.choice(3, p=[0.4, 0.35, 0.25]))]
        return {"side": side, "size": round(float(rng.uniform(0.26, 0.42)), 3)}
    if name == "Consolidation":
        return {"side": ("right", "left")[int(rng.integers(2))], "zone": ("upper", "middle", "lower")[int(rng.integers(3))],
                "dx": round(float(rng.uniform(-0.03, 0.03)), 3), "dy": round(float(rng.uniform(-0.03, 0.03)), 3),
                "rx": round(float(rng.uniform(0.09, 0.12)), 3), "ry": round(float(rng.uniform(0.08, 0.105)), 3)}
    if name == "Pneumothorax":
        return {"side": ("right", "left")[int(rng.integers(2))], "size": round(float(rng.uniform(0.16, 0.28)), 3)}
    if name == "Support Devices":
        k = 1 if rng.random() < 0.6 else 2
        devices = sorted(rng.choice(len(_DEVICES), size=k, replace=False).tolist())
        return {"devices": [_DEVICES[i] for i in devices], "ett_cm": int(rng.integers(3, 6))}
    raise AssertionError(name)


def _draw_findings(rng: np.random.Generator) -> dict[str, dict[str, Any]]:
    if rng.random() < _P_NORMAL:
        return {}
    while True:
        present = [f for f in PHANTOM_FINDINGS if rng.random() < _P_FINDING]
        if present:
            return {f: _draw_detail(f, rng) for f in present}


def _earlier_findings(current: dict[str, dict[str, Any]], rng: np.random.Generator) -> dict[str, dict[str, Any]]:
    """Findings of the patient's earlier study: some carried over (same details), some since resolved."""
    out: dict[str, dict[str, Any]] = {}
    for f in PHANTOM_FINDINGS:
        if f in current:
            if f == "Support Devices":
                kept = [d for d in current[f]["devices"] if rng.random() < _P_CARRY]
                if kept:
                    out[f] = {**current[f], "devices": kept}
            elif rng.random() < _P_CARRY:
                out[f] = dict(current[f])
        elif rng.random() < _P_RESOLVED:
            out[f] = _draw_detail(f, rng)
    if "Support Devices" in current and "Support Devices" in out and rng.random() < _P_RESOLVED:
        extra = [d for d in _DEVICES if d not in current["Support Devices"]["devices"]]
        out["Support Devices"]["devices"] = sorted([*out["Support Devices"]["devices"], extra[int(rng.integers(len(extra)))]],
                                                   key=_DEVICES.index)
    return out

