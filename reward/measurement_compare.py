"""Comparison of a generated report's device/position/distance/size facts with its reference's (:func:`compare`):
hallucinated facts by kind and the counts behind the F1 and the tube-to-carina error. The rules are described in
:mod:`reward.measurements`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from reward.measurement_extract import (
    ADJACENT,
    CARINA_TUBES,
    DeviceFact,
    Distance,
    Extraction,
    SizeFact,
    extract,
)


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
