"""Phantom chest radiographs whose visible features determine the findings in their reports.

The demo's data and the learning tests' data: a tiny random Qwen2.5-VL trained for a few minutes on
a CPU can learn image -> findings from it, because every finding is drawn big and with high contrast
(it survives a resize to 112x112 pixels) while the rest of the picture still looks like a chest:
body outline, dark lungs with texture, ribs, clavicles, bright spine and mediastinum, a heart
shadow, diaphragm domes, detector noise, and random jitter of position, size, depth of inspiration
and exposure. The studies of one patient share the patient's anatomy.

Findings (:data:`PHANTOM_FINDINGS`, CheXpert names) and how they look on the frontal view:

- ``Cardiomegaly``: the heart shadow is wide, cardiothoracic ratio 0.56-0.66 (normal 0.38-0.46).
- ``Pleural Effusion``: a bright meniscus filling the lower lateral corner of a lung (right, left
  or bilateral); the costophrenic angle and the diaphragm dome disappear under it.
- ``Consolidation``: a dense bright patch with soft edges in one lung zone (a lobe).
- ``Pneumothorax``: a dark band without lung texture at the apex and the lateral side of a lung,
  with a thin bright visceral pleural edge where the lung has fallen away from the chest wall.
- ``Support Devices``: thin saturated lines: endotracheal tube, central venous catheter (right
  internal jugular or left subclavian), enteric tube.

The optional lateral view agrees with the frontal one (bigger heart, effusion in the posterior
sulcus, consolidation at the zone's height, the same tubes). Each study is normal with probability
1/3; otherwise every finding is present independently with probability 0.42 (drawn again until at
least one is), so each finding's overall rate is about 0.30.

Reports are written from the truth with a few phrasings per finding and explicit negatives for the
absent ones, in words a negation-aware CheXpert rule labeler reads correctly (``labels`` holds what
such a labeler should find). Some patients also have an earlier study (its own images and report,
findings partly carried over); the later study links it as ``prior``, names it in ``comparison``
and describes changes ("new", "unchanged", "has resolved"). A share of the studies without any
prior gets one invented prior-exam sentence ("No interval change."), as real reports do; those are
marked ``meta["hallucinated_prior"]`` with the sentence in ``meta["hallucinated_sentence"]``.

``meta`` also holds ``findings`` (the truth, in :data:`PHANTOM_FINDINGS` order), ``views``,
``details`` (side, zone, size, devices of each finding and the drawn cardiothoracic ratio ``ctr``)
and, on a follow-up, ``changes`` (finding -> ``same``/``new``/``resolved``).
:func:`phantom_findings` reads the findings back from a report, :func:`finding_scores` scores
generated reports against the truth (the demo's finding-level F1).

Everything is deterministic by seed::

    python -m data_prep.phantom OUT_DIR --n 200 --seed 0
"""

from __future__ import annotations

import argparse
import datetime as _dt
import math
import os
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from tqdm.auto import tqdm

from data_prep.errors import DataPrepError
from data_prep.schema import SPLITS, ImageRef, Prior, StudyRecord, write_records
from reward.constants import CHEXPERT_LABELS

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


# ------------------------------------------------------------------------------------------------
# Drawing
# ------------------------------------------------------------------------------------------------
# Shapes of constant brightness are painted with PIL (fast, in C) in unit coordinates; numpy only
# adds what varies within a shape (lung texture, ribs, soft blobs, fluid, noise), and only inside
# the bounding box of what it changes. Pixel noise and textures are cut from a per-seed bank of
# tiles at a random offset, which keeps generation at a few milliseconds per image.


_GRIDS: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in [0, 1]: ``xx`` of shape (1, S), ``yy`` of shape (S, 1)."""
    g = _GRIDS.get(size)
    if g is None:
        c = ((np.arange(size, dtype=np.float32) + 0.5) / size).astype(np.float32)
        g = _GRIDS[size] = (c[None, :], c[:, None])
    return g


class _Canvas:
    """An 8-bit PIL image drawn on in unit coordinates (brightness or mask codes), read as numpy."""

    def __init__(self, size: int, fill: float = 0):
        self.size = size
        self.im = Image.new("L", (size, size), round(fill))
        self.draw = ImageDraw.Draw(self.im)

    def _px(self, pts: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
        s = self.size
        return [(x * s, y * s) for x, y in pts]

    def polygon(self, pts: Sequence[tuple[float, float]], fill: float) -> None:
        self.draw.polygon(self._px(pts), fill=round(fill))

    def ellipse(self, cx: float, cy: float, rx: float, ry: float, fill: float) -> None:
        s = self.size
        self.draw.ellipse([(cx - rx) * s, (cy - ry) * s, (cx + rx) * s, (cy + ry) * s], fill=round(fill))

    def rect(self, x0: float, y0: float, x1: float, y1: float, fill: float) -> None:
        s = self.size
        self.draw.rectangle([x0 * s, y0 * s, x1 * s, y1 * s], fill=round(fill))

    def line(self, pts: Sequence[tuple[float, float]], width: float, fill: float, smooth: bool = False) -> None:
        self.draw.line(self._px(pts), fill=round(fill), width=max(1, round(width * self.size)),
                       joint="curve" if smooth else None)

    def array(self, dtype: type = np.uint8) -> np.ndarray:
        return np.asarray(self.im, dtype=dtype)


@dataclass
class _Bank:
    """Noise tiles (2S x 2S) shared by all images of one run: detector noise and lung texture."""

    noise: np.ndarray
    texture: np.ndarray

    def cut(self, tile: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        size = tile.shape[0] // 2
        ox, oy = rng.integers(0, size, 2)
        return tile[oy:oy + size, ox:ox + size]


def _bank(seed: int, size: int) -> _Bank:
    rng = np.random.default_rng([seed, 2, size])

    def smooth(cells: int) -> np.ndarray:
        small = rng.standard_normal((2 * cells, 2 * cells), dtype=np.float32)
        return np.asarray(Image.fromarray(small).resize((2 * size, 2 * size), Image.Resampling.BICUBIC))

    # detector noise in 2x2 pixel grains: survives a 2x downscale, and keeps PNG encoding fast
    grains = rng.standard_normal((size, size), dtype=np.float32)
    return _Bank(noise=np.repeat(np.repeat(grains, 2, axis=0), 2, axis=1),
                 texture=(7.0 * smooth(14) + 3.0 * smooth(40)).astype(np.float32))


def _box(size: int, x0: float, y0: float, x1: float, y1: float) -> tuple[slice, slice, np.ndarray, np.ndarray]:
    """Row and column slices of a unit-coordinate box (clipped to the image) and its pixel centres."""
    c0, c1 = max(0, int(x0 * size)), min(size, int(math.ceil(x1 * size)))
    r0, r1 = max(0, int(y0 * size)), min(size, int(math.ceil(y1 * size)))
    xs = ((np.arange(c0, c1, dtype=np.float32) + 0.5) / size)[None, :]
    ys = ((np.arange(r0, r1, dtype=np.float32) + 0.5) / size)[:, None]
    return slice(r0, r1), slice(c0, c1), xs, ys


def _jitter(a: _Anatomy, rng: np.random.Generator) -> _Anatomy:
    """The patient's anatomy as positioned on one study (a little shift and inspiration change)."""
    dy = rng.uniform(-0.012, 0.012)
    return replace(a, cx=a.cx + rng.uniform(-0.012, 0.012), y_top=a.y_top + dy, carina=a.carina + dy,
                   y_cp=a.y_cp + dy + rng.uniform(-0.01, 0.01), half_thorax=a.half_thorax * rng.uniform(0.98, 1.02))


_APEX_T = [(math.sin(t), math.cos(t)) for t in (i * math.pi / 26 for i in range(14))]
_DOME_S = [(s, math.sin(s * math.pi / 2) ** 0.6) for s in (i / 11 for i in range(1, 12))]
_RIB_U = [(u, 0.085 * u ** 1.5 - 0.03 * u * (1 - u)) for u in (i / 7 for i in range(8))]
_LAT_DOME = [(s, math.sin(math.pi * s) ** 0.8) for s in (0.08 + 0.92 * i / 11 for i in range(12))]


def _lung_outline(a: _Anatomy, side: int, y_cp: float) -> list[tuple[float, float]]:
    """Polygon of one lung (side -1: patient's right = image left; +1: patient's left)."""
    x_lat, x_med = a.cx + side * a.half_thorax, a.cx + side * a.med
    w = x_med - x_lat
    xa = x_lat + 0.55 * w  # apex
    height = y_cp - a.y_top
    pts = [(xa - (xa - x_lat) * sn, y_cp - height * cs) for sn, cs in _APEX_T]  # apex -> lateral wall -> angle
    pts += [(x_lat + s * w, y_cp - a.dome * rise) for s, rise in _DOME_S]  # diaphragm dome, rising medially
    pts += [(x_med, a.y_top + 0.12), (xa + 0.3 * (x_med - xa), a.y_top + 0.015)]
    return pts


def _lung_geometry(a: _Anatomy, side: int) -> tuple[float, float, float]:
    """(lateral x, medial x, costophrenic y) of one lung; the left dome sits a little lower."""
    y_cp = a.y_cp + (0.015 if side > 0 else 0.0)
    return a.cx + side * a.half_thorax, a.cx + side * a.med, y_cp


def _device_paths(a: _Anatomy, devices: Sequence[str], ett_cm: int, lateral: bool) -> list[tuple[list, float]]:
    """Polylines (unit coordinates) and widths of the support devices on one view."""
    out = []
    cx = a.cx
    for d in devices:
        if lateral:
            if d == "ett":
                out.append(([(0.43, -0.01), (0.455, 0.12), (0.48, a.carina - 0.01 * ett_cm)], 0.02))
            elif d in ("cvc_rij", "cvc_lsc"):
                out.append(([(0.38, 0.03), (0.41, 0.14), (0.43, 0.25), (0.44, a.carina + 0.03)], 0.014))
            elif d == "ngt":
                out.append(([(0.45, -0.01), (0.53, 0.25), (0.56, 0.5), (0.52, a.y_cp + 0.02), (0.42, a.y_cp + 0.1)], 0.016))
        else:
            if d == "ett":
                out.append(([(cx + 0.01, -0.01), (cx + 0.004, 0.1), (cx, a.carina - 0.012 * ett_cm)], 0.02))
            elif d == "cvc_rij":
                out.append(([(cx - 0.09, -0.01), (cx - 0.08, 0.12), (cx - 0.05, 0.22), (cx - 0.035, a.carina + 0.04)], 0.014))
            elif d == "cvc_lsc":
                out.append(([(cx + 0.36, 0.12), (cx + 0.2, 0.14), (cx + 0.07, 0.19), (cx - 0.02, 0.25),
                             (cx - 0.035, a.carina + 0.04)], 0.014))
            elif d == "ngt":
                out.append(([(cx + 0.005, -0.01), (cx + 0.01, 0.35), (cx + 0.03, 0.62), (cx + 0.09, a.y_cp + 0.05),
                             (cx + 0.17, a.y_cp + 0.1)], 0.016))
    return out


def _blob(img: np.ndarray, lung: np.ndarray, cx: float, cy: float, rx: float, ry: float, gain: float,
          bank: _Bank, rng: np.random.Generator) -> np.ndarray:
    """Add a dense patch with soft edges and mottled texture inside the lung mask; returns its weight."""
    size = img.shape[0]
    rows, cols, xs, ys = _box(size, cx - rx, cy - ry, cx + rx, cy + ry)
    r2 = ((xs - cx) / rx) ** 2 + ((ys - cy) / ry) ** 2
    weight = np.clip(2.5 * (1.0 - r2), 0.0, 1.0) * lung[rows, cols]
    mottle = bank.cut(bank.texture, rng)[rows, cols]
    img[rows, cols] += weight * (gain + 1.2 * mottle)
    return weight


def _fluid(img: np.ndarray, lung: np.ndarray, x_wall: float, x_far: float, y_wall: float, y_flat: float,
           y_bottom: float, reach: float, level: float) -> None:
    """Fluid in the lung mask: a meniscus highest at the wall ``x_wall``, flattening towards ``x_far``."""
    size = img.shape[0]
    rows, cols, xs, ys = _box(size, min(x_wall, x_far), y_wall - 0.03, max(x_wall, x_far), y_bottom)
    d = np.abs(xs - x_wall) / reach
    y_top = y_flat - (y_flat - y_wall) * np.clip(1.0 - d, 0.0, 1.0) ** 2
    alpha = np.clip((ys - y_top) / 0.025, 0.0, 1.0) * lung[rows, cols]
    fluid = level + 18.0 * ys + 22.0 * np.clip((ys - y_wall) / max(y_bottom - y_wall, 1e-3), 0.0, 1.0)
    crop = img[rows, cols]
    img[rows, cols] = crop + alpha * (fluid - crop)


def _finish(img: np.ndarray, rng: np.random.Generator, bank: _Bank, devices: list[tuple[list, float]]) -> Image.Image:
    """Noise, exposure jitter, saturated devices on top; 8-bit grayscale."""
    size = img.shape[0]
    img += bank.cut(bank.noise, rng) * rng.uniform(3.0, 5.0)
    img *= rng.uniform(0.9, 1.08)
    img += rng.uniform(-6.0, 6.0)
    if devices:
        layer = _Canvas(size)
        for pts, width in devices:
            layer.line(pts, width, 1, smooth=True)
        img = np.where(layer.array() > 0, 236.0 + 3.0 * bank.cut(bank.noise, rng), img)
    return Image.fromarray(np.clip(img, 0.0, 255.0, out=img).astype(np.uint8))


def _render_frontal(a: _Anatomy, st: _Study, size: int, rng: np.random.Generator, bank: _Bank) -> Image.Image:
    f = st.findings
    xx, yy = _grid(size)
    c = _Canvas(size, 6)  # brightness
    m = _Canvas(size)  # 1 where lung parenchyma shows (texture, ribs), 2 on a pleural edge
    over = _Canvas(size)  # ribs and clavicles
    # body, neck and shoulders
    c.ellipse(a.cx, 0.66, a.body_rx, 0.62, a.soft)
    c.rect(a.cx - 0.09, 0.0, a.cx + 0.09, 0.3, a.soft)
    c.ellipse(a.cx - 0.25, 0.16, 0.22, 0.09, a.soft)
    c.ellipse(a.cx + 0.25, 0.16, 0.22, 0.09, a.soft)
    # lungs (a pneumothorax: dark, textureless rim around the collapsed lung)
    ptx = f.get("Pneumothorax")
    for side in (-1, 1):
        x_lat, x_med, y_cp = _lung_geometry(a, side)
        outline = _lung_outline(a, side, y_cp)
        if ptx and (ptx["side"] == "right") == (side < 0):
            k = 1.0 - ptx["size"]
            collapsed = [(x_med + k * (x - x_med), y_cp + k * (y - y_cp)) for x, y in outline]
            c.polygon(outline, 14.0)
            c.polygon(collapsed, a.lung + 8.0)
            m.polygon(collapsed, 1)
            m.line(collapsed[:14], 0.008, 2)
        else:
            c.polygon(outline, a.lung)
            m.polygon(outline, 1)
        x0 = a.cx + side * 0.03
        for i in range(9):  # posterior ribs, sweeping laterally and downwards
            y0 = a.y_top + 0.005 + i * 0.068
            span = x_lat - side * 0.01 - x0
            over.line([(x0 + span * u, y0 + dy) for u, dy in _RIB_U], 0.02, 1)
        over.line([(a.cx + side * 0.05, 0.145), (a.cx + side * 0.2, 0.115), (a.cx + side * 0.34, 0.075)], 0.028, 1)
    # mediastinum, heart, spine, airway
    medi = [(a.cx - 0.065, 0.02), (a.cx + 0.065, 0.02), (a.cx + 0.065, a.carina), (a.cx + 0.095, a.carina + 0.03),
            (a.cx + 0.095, a.y_cp - 0.02), (a.cx - 0.095, a.y_cp - 0.02), (a.cx - 0.095, a.carina + 0.03),
            (a.cx - 0.065, a.carina)]
    c.polygon(medi, 148.0)
    m.polygon(medi, 0)
    ctr = f["Cardiomegaly"]["ctr"] if "Cardiomegaly" in f else st.ctr
    width = ctr * 2.0 * a.half_thorax
    heart = (a.cx + 0.14 * width, a.y_cp - 0.5 * a.dome - a.heart_ry + 0.025, width / 2.0,
             a.heart_ry + 0.1 * (ctr - 0.42))
    c.ellipse(*heart, a.heart)
    m.ellipse(*heart, 0)
    c.rect(a.cx - 0.033, 0.02, a.cx + 0.033, 1.0, a.bone)
    for pts, w in (([(a.cx, 0.0), (a.cx, a.carina)], 0.036), ([(a.cx, a.carina), (a.cx - 0.08, a.carina + 0.06)], 0.026),
                   ([(a.cx, a.carina), (a.cx + 0.085, a.carina + 0.07)], 0.026)):
        c.line(pts, w, 100.0)
    img = c.array(np.float32)
    spine = img == round(a.bone)
    lung_code = m.array()
    lung = (lung_code > 0).astype(np.float32)
    hilum = 12.0 * (1.0 - np.abs(xx - a.cx) / a.half_thorax)  # vessels brighten the inner lung
    img += lung * (bank.cut(bank.texture, rng) + hilum) + 18.0 * yy
    img += over.array() * (10.0 + 12.0 * lung)
    img += 48.0 * (lung_code == 2)
    img -= 22.0 * ((yy * 18.0) % 1.0 < 0.22) * spine  # intervertebral discs

    if "Consolidation" in f:
        d = f["Consolidation"]
        side = -1 if d["side"] == "right" else 1
        x_lat, x_med, y_cp = _lung_geometry(a, side)
        zy = {"upper": 0.25, "middle": 0.5, "lower": 0.72}[d["zone"]]
        cx, cy = x_lat + 0.48 * (x_med - x_lat) + d["dx"], a.y_top + zy * (y_cp - a.y_top) + d["dy"]
        weight = _blob(img, lung, cx, cy, d["rx"], d["ry"], 72.0, bank, rng)
        air = _Canvas(size)  # air bronchograms
        air.line([(cx - side * 0.05, cy - 0.04), (cx, cy), (cx + side * 0.03, cy + 0.045)], 0.012, 1)
        rows, cols, _, _ = _box(size, cx - d["rx"], cy - d["ry"], cx + d["rx"], cy + d["ry"])
        img[rows, cols] -= 28.0 * (air.array()[rows, cols] > 0) * (weight > 0.6)
    if "Pleural Effusion" in f:
        e = f["Pleural Effusion"]
        for side in (-1, 1) if e["side"] == "bilateral" else ((-1,) if e["side"] == "right" else (1,)):
            x_lat, x_med, y_cp = _lung_geometry(a, side)
            h = e["size"] * (y_cp - a.y_top)
            _fluid(img, lung, x_lat - side * 0.01, x_med, y_cp - h, y_cp - 0.6 * h, y_cp + 0.01,
                   0.9 * abs(x_med - x_lat), a.soft + 12.0)

    devices = []
    if "Support Devices" in f:
        devices = _device_paths(a, f["Support Devices"]["devices"], f["Support Devices"]["ett_cm"], lateral=False)
    return _finish(img, rng, bank, devices)


def _clip_box(label: str, x0: float, y0: float, x1: float, y1: float) -> dict[str, Any] | None:
    """A detection box in fractions of the image, clipped to it (None when nothing of it is inside)."""
    x0, y0, x1, y1 = max(0.0, x0), max(0.0, y0), min(1.0, x1), min(1.0, y1)
    if x0 >= x1 or y0 >= y1:
        return None
    return {"label": label, "x_min": round(x0, 4), "y_min": round(y0, 4), "x_max": round(x1, 4), "y_max": round(y1, 4)}


#: The label of a device tip's box; the device names of :data:`_DEVICES`.
DEVICE_TIP_LABELS = {"ett": "ETT tip", "cvc_rij": "CVC tip", "cvc_lsc": "CVC tip", "ngt": "NGT tip"}
_TIP_HALF = 0.02  # half side of a device tip's box


def _frontal_boxes(a: _Anatomy, st: _Study) -> list[dict[str, Any]]:
    """Where :func:`_render_frontal` draws the heart and the findings, as detection boxes (fractions of
    the image): the same geometry, recomputed without drawing and without touching any random state.

    Heart (always; also as Cardiomegaly when present), one Pleural Effusion box per side of fluid (the
    meniscus top to the costophrenic angle), the Consolidation blob, the Pneumothorax band (the affected
    lung's outline: the band runs from the apex down the lateral wall), and each device's tip. Fluid and
    opacity show only inside the lung, so beside a pneumothorax their boxes are cut to the collapsed lung
    (and left out when nothing is left).
    """
    f = st.findings
    out: list[dict[str, Any] | None] = []
    ptx = f.get("Pneumothorax")

    def in_lung(label: str, side: int, x0: float, y0: float, x1: float, y1: float) -> dict[str, Any] | None:
        """Opacity and fluid are drawn inside the lung mask only: with a pneumothorax on that side, inside
        the collapsed lung (its bounding box), so the box is cut to it."""
        if ptx and (ptx["side"] == "right") == (side < 0):
            x_lat, x_med, y_cp = _lung_geometry(a, side)
            k = 1.0 - ptx["size"]
            pts = [(x_med + k * (x - x_med), y_cp + k * (y - y_cp)) for x, y in _lung_outline(a, side, y_cp)]
            x0, x1 = max(x0, min(p[0] for p in pts)), min(x1, max(p[0] for p in pts))
            y0, y1 = max(y0, min(p[1] for p in pts)), min(y1, max(p[1] for p in pts))
        return _clip_box(label, x0, y0, x1, y1)

    ctr = f["Cardiomegaly"]["ctr"] if "Cardiomegaly" in f else st.ctr
    width = ctr * 2.0 * a.half_thorax
    hx, hy, hrx, hry = (a.cx + 0.14 * width, a.y_cp - 0.5 * a.dome - a.heart_ry + 0.025, width / 2.0,
                        a.heart_ry + 0.1 * (ctr - 0.42))
    out.append(_clip_box("Heart", hx - hrx, hy - hry, hx + hrx, hy + hry))
    if "Cardiomegaly" in f:
        out.append(_clip_box("Cardiomegaly", hx - hrx, hy - hry, hx + hrx, hy + hry))
    if "Pleural Effusion" in f:
        e = f["Pleural Effusion"]
        for side in (-1, 1) if e["side"] == "bilateral" else ((-1,) if e["side"] == "right" else (1,)):
            x_lat, x_med, y_cp = _lung_geometry(a, side)
            h = e["size"] * (y_cp - a.y_top)
            x_wall = x_lat - side * 0.01
            out.append(in_lung("Pleural Effusion", side, min(x_wall, x_med), y_cp - h, max(x_wall, x_med), y_cp + 0.01))
    if "Consolidation" in f:
        d = f["Consolidation"]
        side = -1 if d["side"] == "right" else 1
        x_lat, x_med, y_cp = _lung_geometry(a, side)
        zy = {"upper": 0.25, "middle": 0.5, "lower": 0.72}[d["zone"]]
        cx, cy = x_lat + 0.48 * (x_med - x_lat) + d["dx"], a.y_top + zy * (y_cp - a.y_top) + d["dy"]
        out.append(in_lung("Consolidation", side, cx - d["rx"], cy - d["ry"], cx + d["rx"], cy + d["ry"]))
    if "Pneumothorax" in f:
        side = -1 if f["Pneumothorax"]["side"] == "right" else 1
        _, _, y_cp = _lung_geometry(a, side)
        outline = _lung_outline(a, side, y_cp)
        xs, ys = [x for x, _ in outline], [y for _, y in outline]
        out.append(_clip_box("Pneumothorax", min(xs), min(ys), max(xs), max(ys)))
    if "Support Devices" in f:
        sd = f["Support Devices"]
        for dev, (pts, _) in zip(sd["devices"], _device_paths(a, sd["devices"], sd["ett_cm"], lateral=False)):
            tx, ty = pts[-1]
            out.append(_clip_box(DEVICE_TIP_LABELS[dev], tx - _TIP_HALF, ty - _TIP_HALF, tx + _TIP_HALF, ty + _TIP_HALF))
    return [b for b in out if b is not None]


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


def _render_lateral(a: _Anatomy, st: _Study, size: int, rng: np.random.Generator, bank: _Bank) -> Image.Image:
    f = st.findings
    _, yy = _grid(size)
    c = _Canvas(size, 6)
    m = _Canvas(size)
    over = _Canvas(size)
    c.ellipse(0.5, 0.64, a.body_rx - 0.08, 0.62, a.soft)
    c.polygon([(0.42, 0.0), (0.86, 0.0), (0.89, 0.4), (0.8, 0.4), (0.42, 0.3)], a.soft)  # neck and upper back
    y_ant, y_post = a.y_cp - 0.04, a.y_cp + 0.06
    outline = [(0.5, a.y_top), (0.36, a.y_top + 0.05), (0.26, a.y_top + 0.18), (0.22, 0.45), (0.23, 0.62), (0.26, y_ant)]
    outline += [(0.26 + 0.48 * s, y_post - (y_post - y_ant) * (1 - s) - 0.13 * rise) for s, rise in _LAT_DOME]
    outline += [(0.75, 0.55), (0.72, 0.3), (0.63, a.y_top + 0.04)]
    c.polygon(outline, a.lung + 10.0)
    m.polygon(outline, 1)
    for i in range(7):
        y0 = a.y_top + 0.08 + i * 0.085
        over.line([(0.82, y0), (0.7, y0 + 0.05), (0.55, y0 + 0.12)], 0.016, 1)
    ctr = f["Cardiomegaly"]["ctr"] if "Cardiomegaly" in f else st.ctr
    rx = 0.13 + 0.6 * (ctr - 0.42)
    heart = (0.24 + rx, a.y_cp - 0.14, rx, a.heart_ry + 0.03 + 0.15 * (ctr - 0.42))
    c.ellipse(*heart, a.heart - 6.0)
    m.ellipse(*heart, 0)
    c.polygon([(0.71, 0.0), (0.74, 0.35), (0.72, 0.7), (0.75, 1.0), (0.84, 1.0), (0.81, 0.7), (0.83, 0.35),
               (0.8, 0.0)], a.bone)  # vertebral column
    c.rect(0.15, 0.16, 0.18, 0.62, 132.0)  # sternum
    c.line([(0.44, 0.0), (0.48, 0.18), (0.52, a.carina + 0.03)], 0.036, 65.0)  # trachea
    img = c.array(np.float32)
    img -= 30.0 * ((yy * 18.0) % 1.0 < 0.22) * (img == round(a.bone))  # disc spaces
    lung = (m.array() > 0).astype(np.float32)
    img += lung * bank.cut(bank.texture, rng) * 0.85 + 18.0 * yy + 14.0 * over.array()

    if "Consolidation" in f:
        d = f["Consolidation"]
        zy = {"upper": 0.25, "middle": 0.5, "lower": 0.72}[d["zone"]]
        cy = a.y_top + zy * (a.y_cp - a.y_top) + d["dy"]
        cx = 0.5 + (0.05 if d["zone"] == "lower" else -0.02) + d["dx"]
        _blob(img, lung, cx, cy, d["rx"] + 0.01, d["ry"], 55.0, bank, rng)
    if "Pleural Effusion" in f:
        e = f["Pleural Effusion"]
        h = e["size"] * (a.y_cp - a.y_top) * (1.3 if e["side"] == "bilateral" else 1.0)
        _fluid(img, lung, 0.76, 0.36, y_post - h, y_post - 0.35 * h, y_post + 0.01, 0.32, a.soft + 12.0)

    devices = []
    if "Support Devices" in f:
        devices = _device_paths(a, f["Support Devices"]["devices"], f["Support Devices"]["ett_cm"], lateral=True)
    return _finish(img, rng, bank, devices)


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
_NEG_BEFORE = re.compile(r"\b(?:no|not|without|negative for|free of|resolution of|removal of|rather than|"
                         r"absence of|resolved|cleared)\b")
_NEG_AFTER = re.compile(r"\b(?:not|normal|resolved|resolving|cleared|removed|no longer|absent|unremarkable|"
                        r"within normal limits)\b")
_CLAUSE_SPLIT = re.compile(r"[.;:!?\n]+|\b(?:but|however|although|though|whereas|with|and there is|and there are)\b")


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


# ------------------------------------------------------------------------------------------------
# The data set
# ------------------------------------------------------------------------------------------------
def _check_args(n: int, prior_fraction: float, hallucinated_prior_rate: float, image_size: int,
                split_fractions: Sequence[float]) -> tuple[float, ...]:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise DataPrepError("must be a positive integer (the number of studies)", field="n", value=n)
    if not 0.0 <= prior_fraction <= 0.5:
        raise DataPrepError("must be within [0, 0.5] (each prior is itself one of the n studies)",
                            field="prior_fraction", value=prior_fraction)
    if not 0.0 <= hallucinated_prior_rate <= 1.0:
        raise DataPrepError("must be within [0, 1]", field="hallucinated_prior_rate", value=hallucinated_prior_rate)
    if isinstance(image_size, bool) or not isinstance(image_size, int) or not 56 <= image_size <= 4096:
        raise DataPrepError("must be an integer number of pixels in [56, 4096]", field="image_size", value=image_size)
    fr = tuple(float(x) for x in split_fractions)
    if len(fr) != 3 or any(x < 0 for x in fr) or abs(sum(fr) - 1.0) > 1e-6:
        raise DataPrepError("must be three non-negative fractions (train, validate, test) summing to 1",
                            field="split_fractions", value=split_fractions)
    return fr


def _stamp(t: _dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S")


def make_phantom(out_dir: str | os.PathLike, n: int = 200, seed: int = 0, *, lateral: bool = True, prior_fraction: float = 0.3,
                 hallucinated_prior_rate: float = 0.3, image_size: int = 224,
                 split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)) -> dict:
    """Write a phantom data set: ``out_dir/studies.jsonl`` and ``out_dir/images/*.png``.

    ``n`` is the number of studies (records). ``round(prior_fraction * n)`` of them are follow-ups
    whose earlier study is one of the ``n`` too (same patient, so ``prior_fraction`` is at most
    0.5); ``round(hallucinated_prior_rate * m)`` of the ``m`` studies without a prior get an
    invented prior-exam sentence. Patients are split by ``split_fractions`` (train, validate,
    test), never across splits. Images are ``image_size`` pixels square, grayscale PNG: the
    frontal view (PA or AP) and, with ``lateral``, a lateral view. Image paths in the records are
    relative to ``out_dir``.

    Returns a summary: studies, patients, images, counts per split and per finding, normal studies,
    studies with a prior, hallucinated prior references, seconds elapsed and studies per second.
    """
    t0 = time.perf_counter()
    fractions = _check_args(n, prior_fraction, hallucinated_prior_rate, image_size, split_fractions)
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)

    # -- the plan: who has two studies, which studies hallucinate, which patient goes where -------
    plan = np.random.default_rng([seed, 0])
    n_followups = min(round(prior_fraction * n), n // 2)
    n_patients = n - n_followups
    two_studies = np.zeros(n_patients, dtype=bool)
    two_studies[plan.permutation(n_patients)[:n_followups]] = True
    order = plan.permutation(n_patients)
    bounds = np.round(np.cumsum(fractions) * n_patients).astype(int)
    split_of = np.empty(n_patients, dtype=object)
    for rank, p in enumerate(order):
        split_of[p] = SPLITS[int(np.searchsorted(bounds, rank, side="right"))] if rank < bounds[-1] else SPLITS[-1]
    no_prior_slots = [(p, 0) for p in range(n_patients)]  # (patient, index of study without prior)
    n_halluc = round(hallucinated_prior_rate * len(no_prior_slots))
    halluc = {no_prior_slots[i] for i in plan.permutation(len(no_prior_slots))[:n_halluc]}

    bank = _bank(seed, image_size)
    records: list[StudyRecord] = []
    next_id = 0
    for p in tqdm(range(n_patients), desc="phantom", unit="patient", disable=None):
        rng = np.random.default_rng([seed, 1, p])
        anat = _anatomy(rng)
        current = _draw_findings(rng)
        when = _BASE_DATE + _dt.timedelta(days=float(rng.uniform(0, 3000)), seconds=int(rng.integers(7 * 3600, 20 * 3600)))
        studies = [_Study(findings=current, ctr=anat.base_ctr, frontal_view="PA" if rng.random() < 0.8 else "AP", time=when)]
        if two_studies[p]:
            earlier = _Study(findings=_earlier_findings(current, rng), ctr=anat.base_ctr,
                             frontal_view="PA" if rng.random() < 0.8 else "AP",
                             time=when - _dt.timedelta(days=int(rng.integers(14, 700)), hours=int(rng.integers(0, 6))))
            studies.insert(0, earlier)
        patient_id = f"php{p:05d}"
        previous: tuple[_Study, StudyRecord] | None = None
        for k, st in enumerate(studies):
            study_id = f"ph{next_id:05d}"
            next_id += 1
            views = [st.frontal_view] + (["LATERAL"] if lateral else [])
            images = []
            pose = _jitter(anat, rng)
            for view in views:
                rel = f"images/{study_id}_{view}.png"
                render = _render_lateral if view == "LATERAL" else _render_frontal
                render(pose, st, image_size, rng, bank).save(out / rel, compress_level=1)
                # boxes on the frontal view (the lateral view's are not recorded)
                images.append(ImageRef(path=rel, view=view,
                                       boxes=None if view == "LATERAL" else _frontal_boxes(pose, st)))
            prior_study = previous[0] if previous else None
            findings_text, impression_text, negated = _write_report(st, prior_study, rng)
            hallucinated = previous is None and (p, k) in halluc
            sentence = None
            if hallucinated:
                sentence = _hallucination(st, rng)
                if rng.random() < 0.6:
                    findings_text = _insert_sentence(findings_text, sentence, rng)
                else:
                    impression_text = _insert_sentence(impression_text, sentence, rng)
            technique = (f"{st.frontal_view} and lateral views of the chest." if lateral
                         else f"Single {st.frontal_view} view of the chest.")
            meta: dict[str, Any] = {
                "findings": [f for f in PHANTOM_FINDINGS if f in st.findings],
                "views": views,
                "hallucinated_prior": hallucinated,
                "hallucinated_sentence": sentence,
                "details": {**st.findings, "ctr": st.findings.get("Cardiomegaly", {}).get("ctr", st.ctr)},
                "generator": {"name": "phantom", "seed": seed},
            }
            prior_ref = None
            comparison = "None."
            if previous is not None:
                prev_rec = previous[1]
                prior_ref = Prior(study_id=prev_rec.study_id, findings=prev_rec.findings, impression=prev_rec.impression,
                                  images=list(prev_rec.images), study_time=prev_rec.study_time)
                comparison = f"Chest radiograph of {prev_rec.study_time[:10]}."
                meta["changes"] = dict(st.changes)
            rec = StudyRecord(
                study_id=study_id, patient_id=patient_id, dataset="phantom", split=str(split_of[p]),
                study_time=_stamp(st.time), images=images, indication=_pick(rng, _INDICATIONS), technique=technique,
                comparison=comparison, findings=findings_text, impression=impression_text, prior=prior_ref,
                labels=_labels(st, negated), meta=meta,
                grounded_findings=_grounded_findings(findings_text, images[0].boxes or []),
            )
            records.append(rec)
            previous = (st, rec)

    write_records(records, out / "studies.jsonl")
    elapsed = time.perf_counter() - t0
    return {
        "out_dir": str(out),
        "studies": len(records),
        "patients": n_patients,
        "images": sum(len(r.images) for r in records),
        "splits": {s: sum(r.split == s for r in records) for s in SPLITS},
        "findings": {f: sum(f in r.meta["findings"] for r in records) for f in PHANTOM_FINDINGS},
        "normal": sum(not r.meta["findings"] for r in records),
        "with_prior": sum(r.prior is not None for r in records),
        "hallucinated_prior": sum(bool(r.meta["hallucinated_prior"]) for r in records),
        "elapsed_s": round(elapsed, 3),
        "studies_per_s": round(len(records) / elapsed, 1) if elapsed > 0 else None,
    }


# ------------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------------
def _cmd(args: argparse.Namespace) -> int:
    s = make_phantom(args.out_dir, n=args.n, seed=args.seed, lateral=not args.no_lateral,
                     prior_fraction=args.prior_fraction, hallucinated_prior_rate=args.hallucinated_prior_rate,
                     image_size=args.image_size)
    print(f"phantom: {s['studies']} studies ({s['splits']['train']} train / {s['splits']['validate']} validate / "
          f"{s['splits']['test']} test), {s['images']} images, {s['with_prior']} with a prior, "
          f"{s['hallucinated_prior']} hallucinated prior references, {s['elapsed_s']:.1f} s -> {s['out_dir']}")
    return 0


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("out_dir", help="folder for studies.jsonl and images/")
    p.add_argument("--n", type=int, default=200, help="number of studies (default 200)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--image-size", type=int, default=224, help="square image side in pixels (default 224)")
    p.add_argument("--prior-fraction", type=float, default=0.3, help="share of studies with an earlier study")
    p.add_argument("--hallucinated-prior-rate", type=float, default=0.3,
                   help="share of studies without a prior whose report still mentions one")
    p.add_argument("--no-lateral", action="store_true", help="frontal views only")


def register(subparsers) -> None:
    """Add the ``phantom`` verb: write a synthetic chest X-ray data set."""
    p = subparsers.add_parser("phantom", help="write a synthetic chest X-ray data set (studies.jsonl + PNGs)",
                              description=__doc__.split("\n\n")[0])
    _add_arguments(p)
    p.set_defaults(func=_cmd)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m data_prep.phantom", description=__doc__.split("\n\n")[0])
    _add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return _cmd(args)
    except DataPrepError as e:
        print(f"error: {e}")
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
