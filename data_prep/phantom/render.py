"""Drawing the phantom's frontal and lateral images, and the detection boxes of the frontal view."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from data_prep.phantom.findings import _Anatomy, _Study

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


def _consolidation_centre(a, d: dict) -> tuple[int, float, float]:
    """The side (-1 right, 1 left) and centre of a drawn consolidation: its zone of the lung, plus its jitter."""
    side = -1 if d["side"] == "right" else 1
    x_lat, x_med, y_cp = _lung_geometry(a, side)
    zy = {"upper": 0.25, "middle": 0.5, "lower": 0.72}[d["zone"]]
    return side, x_lat + 0.48 * (x_med - x_lat) + d["dx"], a.y_top + zy * (y_cp - a.y_top) + d["dy"]


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
        side, cx, cy = _consolidation_centre(a, d)
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
        side, cx, cy = _consolidation_centre(a, d)
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

