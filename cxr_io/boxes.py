"""Box geometry and the box text codecs, one per model family (standard library only; never torch).

A box is a dict ``{"x_min", "y_min", "x_max", "y_max"}`` in FRACTIONS of the ORIGINAL image (RadFact's
``GroundedPhrase`` convention, the study record's convention), optionally with a ``"label"``.
A model writes boxes as text in its own family's convention; :func:`encode_boxes` turns boxes into that
text and :func:`decode_boxes` turns a model's text back into boxes. The two are inverses up to the
family's quantisation (:func:`quantum`):

=============  ==============================================================  =====================================
family         text                                                            coordinates
=============  ==============================================================  =====================================
qwen2_5_vl     ```json [{"bbox_2d": [x1, y1, x2, y2], "label": "..."}] ```     integer pixels of the image as the
                                                                               processor resizes it (:func:`smart_resize`
                                                                               with min/max pixels)
qwen3_vl       ```json [{"bbox_2d": [x1, y1, x2, y2], "label": "..."}] ```     integers 0-1000, relative to the image
qwen2_vl       <|object_ref_start|>label<|object_ref_end|>                     integers 0-1000, relative to the image
               <|box_start|>(x1,y1),(x2,y2)<|box_end|>
maira2         <obj>label<box><x12><y30><x45><y77></box></obj>                 100 bins of the centre square crop
                                                                               (bin = floor(100 f); decoded (bin+0.5)/100)
normalized     [{"box": [x_min, y_min, x_max, y_max], "label": "..."}]         fractions, 4 decimals
=============  ==============================================================  =====================================

Decoding never raises on a model's text: it returns a :class:`DecodedBoxes` (a list of boxes) whose
``n_failed`` counts the malformed fragments, so callers can report a parse-failure rate. Boxes are
decoded as written (not clipped, corners not reordered): :func:`box_problem` says what is wrong with one.

:func:`smart_resize` lives here (and not with the image code in ``data_prep.images``, which re-exports it)
because the Qwen2.5-VL codec needs it and ``reward`` (which decodes completions) may not import
``data_prep``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

#: Side of one vision token in Qwen2/2.5-VL: 14-pixel patches merged 2x2.
FACTOR = 28
#: Default pixel budget: at least 4 and at most 512 vision tokens per image.
DEFAULT_MIN_PIXELS = 4 * FACTOR * FACTOR
DEFAULT_MAX_PIXELS = 512 * FACTOR * FACTOR
#: Qwen2.5-VL refuses images more elongated than this.
MAX_ASPECT_RATIO = 200

FAMILIES: tuple[str, ...] = ("qwen2_5_vl", "qwen2_vl", "qwen3_vl", "maira2", "normalized")
COORDS: tuple[str, str, str, str] = ("x_min", "y_min", "x_max", "y_max")
#: MAIRA-2's number of coordinate bins (``num_box_coord_bins`` of its processor).
MAIRA2_BINS = 100
#: Qwen2-VL / Qwen3-VL relative coordinate scale.
REL_SCALE = 1000
#: What the tag families (qwen2_vl, maira2) write for "no box"; the JSON families write ``[]``.
NO_BOXES_TEXT = "No boxes."
#: Longest model answer the decoder looks at (characters); longer text is cut.
MAX_DECODE_CHARS = 100_000


# -- geometry --------------------------------------------------------------------------------------
def smart_resize(height: int, width: int, *, min_pixels: int = DEFAULT_MIN_PIXELS,
                 max_pixels: int = DEFAULT_MAX_PIXELS, factor: int = FACTOR) -> tuple[int, int]:
    """Target ``(height, width)`` for a pixel budget, exactly as Qwen2.5-VL's processor computes it
    (``transformers.models.qwen2_vl.image_processing_qwen2_vl.smart_resize``; tested side by side).

    Both sides are rounded to the nearest multiple of ``factor``; if that exceeds ``max_pixels`` (or
    falls below ``min_pixels``) the image is scaled down (up) by the square root of the ratio, with
    sides floored (ceiled) to multiples of ``factor``.
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    if max(height, width) / min(height, width) > MAX_ASPECT_RATIO:
        raise ValueError(f"aspect ratio of {height}x{width} exceeds {MAX_ASPECT_RATIO}")
    if max_pixels < factor * factor or min_pixels > max_pixels:
        raise ValueError(f"bad pixel budget min_pixels={min_pixels}, max_pixels={max_pixels} "
                         f"(need {factor * factor} <= min <= max)")
    h = round(height / factor) * factor  # 0 for a side under factor / 2: then the min_pixels branch scales up
    w = round(width / factor) * factor
    if h * w > max_pixels:
        scale = math.sqrt(height * width / max_pixels)
        h = max(factor, math.floor(height / scale / factor) * factor)
        w = max(factor, math.floor(width / scale / factor) * factor)
    elif h * w < min_pixels:
        scale = math.sqrt(min_pixels / (height * width))
        h = math.ceil(height * scale / factor) * factor
        w = math.ceil(width * scale / factor) * factor
    if h == 0 or w == 0:  # only with min_pixels == 0; transformers would return the 0 side
        raise ValueError(f"{height}x{width} rounds to a 0-pixel side with min_pixels={min_pixels}")
    return h, w


def box_problem(box: Any) -> str | None:
    """What is wrong with a box (None when it is a valid fraction box): a missing or non-finite
    coordinate, a coordinate outside [0, 1], or ``x_min >= x_max`` / ``y_min >= y_max``."""
    if not isinstance(box, Mapping):
        return "not an object with x_min, y_min, x_max, y_max"
    for k in COORDS:
        v = box.get(k)
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            return f"{k} must be a finite number"
        if not 0.0 <= v <= 1.0:
            return f"{k} must be a fraction of the image in [0, 1]"
    if box["x_min"] >= box["x_max"]:
        return "x_min must be smaller than x_max"
    if box["y_min"] >= box["y_max"]:
        return "y_min must be smaller than y_max"
    return None


def box_area(b: Mapping[str, float]) -> float:
    return max(0.0, b["x_max"] - b["x_min"]) * max(0.0, b["y_max"] - b["y_min"])


def iou(a: Mapping[str, float], b: Mapping[str, float]) -> float:
    """Intersection over union of two boxes (0 for boxes with no area, e.g. reversed corners)."""
    iw = min(a["x_max"], b["x_max"]) - max(a["x_min"], b["x_min"])
    ih = min(a["y_max"], b["y_max"]) - max(a["y_min"], b["y_min"])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    union = box_area(a) + box_area(b) - inter
    return inter / union if union > 0 else 0.0


def _size(image_size: Sequence[int]) -> tuple[int, int]:
    try:
        w, h = int(image_size[0]), int(image_size[1])
    except (TypeError, ValueError, IndexError):
        raise ValueError(f"image_size must be (width, height), got {image_size!r}") from None
    if w <= 0 or h <= 0:
        raise ValueError(f"image_size must be positive (width, height), got {image_size!r}")
    return w, h


# -- the codecs ------------------------------------------------------------------------------------
class DecodedBoxes(list):
    """The boxes decoded from a model's text (fractions of the original image), plus what went wrong.

    ``n_failed``: malformed fragments (a box with the wrong number of coordinates, JSON that does not
    parse, an answer with neither a box nor an explicit "none"). ``empty_answer``: the text said there
    was nothing (``[]``, "not found", "none"). ``ok``: nothing failed.
    """

    def __init__(self, boxes: Iterable[dict] = (), n_failed: int = 0, empty_answer: bool = False) -> None:
        super().__init__(boxes)
        self.n_failed = int(n_failed)
        self.empty_answer = bool(empty_answer)

    @property
    def ok(self) -> bool:
        return self.n_failed == 0

    def __repr__(self) -> str:
        return f"DecodedBoxes({list.__repr__(self)}, n_failed={self.n_failed}, empty_answer={self.empty_answer})"


_EMPTY_RE = re.compile(r"^\s*(?:```(?:json)?\s*)?\[\s*\]\s*(?:```)?\s*$|\b(?:not found|none|no boxes?|nothing)\b",
                       re.IGNORECASE)
_FENCE_RE = re.compile(r"```(?:json)?\s*(.*?)\s*(?:```|$)", re.DOTALL | re.IGNORECASE)
_QWEN2_RE = re.compile(r"(?:<\|object_ref_start\|>(.*?)<\|object_ref_end\|>\s*)?<\|box_start\|>(.*?)(?:<\|box_end\|>|$)",
                       re.DOTALL)
_QWEN2_XY = re.compile(r"^\s*\(\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*\)\s*,\s*"
                       r"\(\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*\)\s*$")
_MAIRA_OBJ = re.compile(r"<obj>(.*?)(?:</obj>|$)", re.DOTALL)
_MAIRA_BOX = re.compile(r"<box>(.*?)(?:</box>|$)", re.DOTALL)
_MAIRA_XY = re.compile(r"^\s*<x(\d+)>\s*<y(\d+)>\s*<x(\d+)>\s*<y(\d+)>\s*$")


def _check_family(family: str) -> str:
    if family not in FAMILIES:
        raise ValueError(f"unknown box family {family!r}; known: {', '.join(FAMILIES)}")
    return family


def pixel_frame(family: str, image_size: Sequence[int], *, min_pixels: int | None = None,
                max_pixels: int | None = None) -> tuple[float, float, float, float]:
    """``(scale_x, scale_y, offset_x, offset_y)``: a family's coordinate of a fraction ``f`` of the original
    image is ``f * scale - offset`` (before quantisation)."""
    w, h = _size(image_size)
    if family == "qwen2_5_vl":
        rh, rw = smart_resize(h, w, min_pixels=DEFAULT_MIN_PIXELS if min_pixels is None else min_pixels,
                              max_pixels=DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels)
        return float(rw), float(rh), 0.0, 0.0
    if family in ("qwen2_vl", "qwen3_vl"):
        return float(REL_SCALE), float(REL_SCALE), 0.0, 0.0
    if family == "maira2":  # the processor crops the centre square of side min(w, h)
        side = min(w, h)
        ox, oy = (w - side) // 2, (h - side) // 2
        return MAIRA2_BINS * w / side, MAIRA2_BINS * h / side, MAIRA2_BINS * ox / side, MAIRA2_BINS * oy / side
    return 1.0, 1.0, 0.0, 0.0


def quantum(family: str, image_size: Sequence[int], *, min_pixels: int | None = None,
            max_pixels: int | None = None) -> tuple[float, float]:
    """The largest error (x, y), in fractions of the image, of a decode(encode(box)) round trip."""
    if family == "normalized":  # 4 decimals
        return 0.5e-4, 0.5e-4
    # rounding to an integer coordinate, or (maira2) flooring into a bin decoded at its centre: half a unit
    sx, sy, _, _ = pixel_frame(family, image_size, min_pixels=min_pixels, max_pixels=max_pixels)
    return 0.5 / sx, 0.5 / sy


def _label(box: Mapping) -> str:
    lab = box.get("label")
    return "" if lab is None else str(lab)


def encode_boxes(boxes: Iterable[Mapping[str, Any]], family: str, image_size: Sequence[int], *,
                 min_pixels: int | None = None, max_pixels: int | None = None) -> str:
    """The text a model of ``family`` writes for ``boxes`` (fractions of the original image of size
    ``image_size`` = (width, height)). ``min_pixels``/``max_pixels``: the processor's pixel budget
    (Qwen2.5-VL only; default the project's). An invalid box raises :class:`ValueError`."""
    _check_family(family)
    boxes = list(boxes)
    for i, b in enumerate(boxes):
        problem = box_problem(b)
        if problem:
            raise ValueError(f"box {i}: {problem}: {dict(b)!r}")
    sx, sy, ox, oy = pixel_frame(family, image_size, min_pixels=min_pixels, max_pixels=max_pixels)
    if not boxes and family in ("qwen2_vl", "maira2"):
        return NO_BOXES_TEXT
    if family in ("qwen2_5_vl", "qwen3_vl"):
        hi_x, hi_y = (sx, sy) if family == "qwen2_5_vl" else (REL_SCALE, REL_SCALE)
        items = []
        for b in boxes:
            coords = [min(hi_x, max(0, round(b["x_min"] * sx))), min(hi_y, max(0, round(b["y_min"] * sy))),
                      min(hi_x, max(0, round(b["x_max"] * sx))), min(hi_y, max(0, round(b["y_max"] * sy)))]
            items.append(json.dumps({"bbox_2d": [int(c) for c in coords], "label": _label(b)}, ensure_ascii=False))
        if not items:
            return "```json\n[]\n```"
        return "```json\n[\n" + ",\n".join("\t" + it for it in items) + "\n]\n```"
    if family == "qwen2_vl":
        parts = []
        for b in boxes:
            x1, y1 = (min(REL_SCALE, max(0, round(b[k] * REL_SCALE))) for k in ("x_min", "y_min"))
            x2, y2 = (min(REL_SCALE, max(0, round(b[k] * REL_SCALE))) for k in ("x_max", "y_max"))
            ref = f"<|object_ref_start|>{_label(b)}<|object_ref_end|>" if _label(b) else ""
            parts.append(f"{ref}<|box_start|>({x1},{y1}),({x2},{y2})<|box_end|>")
        return "".join(parts)
    if family == "maira2":
        groups: list[tuple[str, list[str]]] = []
        for b in boxes:
            bins = []
            for k, s, o in (("x_min", sx, ox), ("y_min", sy, oy), ("x_max", sx, ox), ("y_max", sy, oy)):
                bins.append(min(MAIRA2_BINS - 1, max(0, math.floor(b[k] * s - o))))
            token = "<box><x{}><y{}><x{}><y{}></box>".format(*bins)
            if groups and groups[-1][0] == _label(b):
                groups[-1][1].append(token)
            else:
                groups.append((_label(b), [token]))
        return "".join(f"<obj>{lab}{''.join(toks)}</obj>" for lab, toks in groups)
    items = [json.dumps({"box": [round(b[k], 4) for k in COORDS], "label": _label(b)}, ensure_ascii=False)
             for b in boxes]
    return "[" + ", ".join(items) + "]"


def _num(v: Any) -> float | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int | float):
        f = float(v)
    elif isinstance(v, str):
        try:
            f = float(v.strip())
        except ValueError:
            return None
    else:
        return None
    return f if math.isfinite(f) else None


def _json_candidates(text: str) -> Any:
    """The JSON value in a model's answer (inside a ```json fence, or the outermost [...] / {...}),
    or raise ValueError."""
    m = _FENCE_RE.search(text)
    body = m.group(1) if m else text
    pairs = sorted((("[", "]"), ("{", "}")), key=lambda p: (body.find(p[0]) == -1, body.find(p[0])))
    for opener, closer in pairs:  # the outermost bracket first
        i, j = body.find(opener), body.rfind(closer)
        if i != -1 and j > i:
            try:
                return json.loads(body[i:j + 1])
            except (ValueError, RecursionError):
                continue
    raise ValueError("no JSON list or object")


def _make_box(coords: Sequence[float], sx: float, sy: float, ox: float, oy: float, label: Any,
              half_bin: float = 0.0) -> dict:
    x1, y1, x2, y2 = coords
    box = {"x_min": (x1 + half_bin + ox) / sx, "y_min": (y1 + half_bin + oy) / sy,
           "x_max": (x2 + half_bin + ox) / sx, "y_max": (y2 + half_bin + oy) / sy}
    if isinstance(label, str) and label:
        box["label"] = label
    return box


def _decode_json(text: str, key: str, frame: tuple[float, float, float, float]) -> DecodedBoxes:
    try:
        data = _json_candidates(text)
    except ValueError:
        return DecodedBoxes(n_failed=0 if _EMPTY_RE.search(text) else 1, empty_answer=bool(_EMPTY_RE.search(text)))
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        return DecodedBoxes(n_failed=1)
    out, failed = [], 0
    for item in data:
        raw = item.get(key, item.get("bbox_2d", item.get("bbox"))) if isinstance(item, dict) else None
        coords = [_num(c) for c in raw] if isinstance(raw, list) and len(raw) == 4 else None
        if coords is None or any(c is None for c in coords):
            failed += 1
            continue
        out.append(_make_box(coords, *frame, item.get("label")))
    return DecodedBoxes(out, failed, empty_answer=not data)


def decode_boxes(text: Any, family: str, image_size: Sequence[int], *, min_pixels: int | None = None,
                 max_pixels: int | None = None) -> DecodedBoxes:
    """The boxes in a model's answer, as fractions of the original image; never raises on the text.

    An unknown ``family`` or a bad ``image_size`` is the caller's error (:class:`ValueError`); anything
    in ``text`` is not: malformed fragments are counted in the result's ``n_failed``.
    """
    _check_family(family)
    frame = pixel_frame(family, image_size, min_pixels=min_pixels, max_pixels=max_pixels)
    if not isinstance(text, str):
        text = "" if text is None else str(text)
    text = text[:MAX_DECODE_CHARS]
    if not text.strip():
        return DecodedBoxes(n_failed=1)
    if family in ("qwen2_5_vl", "qwen3_vl"):
        return _decode_json(text, "bbox_2d", frame)
    if family == "normalized":
        return _decode_json(text, "box", frame)
    sx, sy, ox, oy = frame
    out, failed = [], 0
    if family == "qwen2_vl":
        matches = list(_QWEN2_RE.finditer(text))
        for m in matches:
            xy = _QWEN2_XY.match(m.group(2))
            if not xy:
                failed += 1
                continue
            out.append(_make_box([float(g) for g in xy.groups()], sx, sy, ox, oy, (m.group(1) or "").strip()))
    else:  # maira2
        matches = list(_MAIRA_OBJ.finditer(text))
        for m in matches:
            body = m.group(1)
            cut = body.find("<box>")
            label = (body if cut == -1 else body[:cut]).strip()
            for bm in _MAIRA_BOX.finditer(body):
                xy = _MAIRA_XY.match(bm.group(1))
                if not xy or any(int(g) >= MAIRA2_BINS for g in xy.groups()):
                    failed += 1
                    continue
                out.append(_make_box([float(g) for g in xy.groups()], sx, sy, ox, oy, label, half_bin=0.5))
    if not matches:
        empty = bool(_EMPTY_RE.search(text))
        return DecodedBoxes(n_failed=0 if empty else 1, empty_answer=empty)
    return DecodedBoxes(out, failed)


# -- grounded reports: sentences, each with its boxes or none --------------------------------------
class DecodedFindings(list):
    """Sentences decoded from a grounded report: ``[{"text", "boxes": [box] | None}]`` (boxes as fractions
    of the original image); ``n_failed`` counts malformed box fragments."""

    def __init__(self, findings: Iterable[dict] = (), n_failed: int = 0) -> None:
        super().__init__(findings)
        self.n_failed = int(n_failed)

    @property
    def ok(self) -> bool:
        return self.n_failed == 0


def _coords_json(b: Mapping[str, float], sx: float, sy: float, hi_x: float, hi_y: float, digits: int | None):
    vals = [b["x_min"] * sx, b["y_min"] * sy, b["x_max"] * sx, b["y_max"] * sy]
    if digits is not None:
        return [round(v, digits) for v in vals]
    return [int(min(hi, max(0, round(v)))) for v, hi in zip(vals, (hi_x, hi_y, hi_x, hi_y))]


def encode_grounded(findings: Iterable[Mapping[str, Any]], family: str, image_size: Sequence[int], *,
                    min_pixels: int | None = None, max_pixels: int | None = None) -> str:
    """The text of a grounded report: sentences ``{text, boxes | None}`` in ``family``'s convention.

    * maira2: ``<obj>sentence<box>...</box></obj>`` per sentence (MAIRA-2's grounded reporting output);
    * qwen2_vl: one line per sentence, a grounded one as
      ``<|object_ref_start|>sentence<|object_ref_end|><|box_start|>(x1,y1),(x2,y2)<|box_end|>...``;
    * qwen2_5_vl, qwen3_vl, normalized: a JSON list ``[{"text": ..., "bbox_2d": [[x1, y1, x2, y2], ...] | null}]``
      (``"box"`` for normalized) in the family's coordinates.
    """
    _check_family(family)
    findings = list(findings)
    sx, sy, ox, oy = pixel_frame(family, image_size, min_pixels=min_pixels, max_pixels=max_pixels)
    for i, f in enumerate(findings):
        for j, b in enumerate(f.get("boxes") or []):
            problem = box_problem(b)
            if problem:
                raise ValueError(f"finding {i} box {j}: {problem}")
    if family == "maira2":
        out = []
        for f in findings:
            boxes = f.get("boxes")
            body = encode_boxes([{**b, "label": ""} for b in boxes], family, image_size) if boxes else ""
            inner = body.removeprefix("<obj>").removesuffix("</obj>") if boxes else ""
            out.append(f"<obj>{f['text']}{inner}</obj>")
        return "".join(out)
    if family == "qwen2_vl":
        lines = []
        for f in findings:
            if f.get("boxes"):
                boxes = "".join(encode_boxes([{k: b[k] for k in COORDS}], family, image_size)
                                for b in f["boxes"])
                lines.append(f"<|object_ref_start|>{f['text']}<|object_ref_end|>{boxes}")
            else:
                lines.append(str(f["text"]))
        return "\n".join(lines)
    key = "box" if family == "normalized" else "bbox_2d"
    hi = (sx, sy) if family == "qwen2_5_vl" else (REL_SCALE, REL_SCALE)
    items = [json.dumps({"text": f["text"], key: None if not f.get("boxes") else
                         [_coords_json(b, sx, sy, *hi, 4 if family == "normalized" else None) for b in f["boxes"]]},
                        ensure_ascii=False) for f in findings]
    body = "[\n" + ",\n".join("\t" + it for it in items) + "\n]"
    return body if family == "normalized" else "```json\n" + body + "\n```"


def decode_grounded(text: Any, family: str, image_size: Sequence[int], *, min_pixels: int | None = None,
                    max_pixels: int | None = None) -> DecodedFindings:
    """The sentences and boxes of a grounded report written by :func:`encode_grounded`'s convention;
    never raises on the text (plain text becomes ungrounded sentences, one per line)."""
    _check_family(family)
    frame = pixel_frame(family, image_size, min_pixels=min_pixels, max_pixels=max_pixels)
    if not isinstance(text, str):
        text = "" if text is None else str(text)
    text = text[:MAX_DECODE_CHARS]
    out: list[dict] = []
    failed = 0
    if family == "maira2":
        if "<obj>" not in text:
            return DecodedFindings([{"text": t.strip(), "boxes": None} for t in text.splitlines() if t.strip()],
                                   1 if "<box>" in text else 0)
        for m in _MAIRA_OBJ.finditer(text):
            got = decode_boxes("<obj>" + m.group(1) + "</obj>", family, image_size)
            body = m.group(1)
            cut = body.find("<box>")
            sentence = (body if cut == -1 else body[:cut]).strip()
            boxes = [{k: b[k] for k in COORDS} for b in got] if cut != -1 else None
            failed += got.n_failed if cut != -1 else 0
            out.append({"text": sentence, "boxes": boxes})
        return DecodedFindings(out, failed)
    if family == "qwen2_vl":
        for line in text.splitlines():
            if not line.strip():
                continue
            if "<|box_start|>" in line:
                got = decode_boxes(line, family, image_size)
                ref = re.search(r"<\|object_ref_start\|>(.*?)<\|object_ref_end\|>", line, re.DOTALL)
                sentence = ref.group(1).strip() if ref else re.sub(r"<\|.*?\|>", " ", line).strip()
                failed += got.n_failed
                out.append({"text": sentence, "boxes": [{k: b[k] for k in COORDS} for b in got]})
            else:
                out.append({"text": line.strip(), "boxes": None})
        return DecodedFindings(out, failed)
    key = "box" if family == "normalized" else "bbox_2d"
    try:
        data = _json_candidates(text)
    except ValueError:
        return DecodedFindings([{"text": t.strip(), "boxes": None} for t in text.splitlines() if t.strip()],
                               0 if not re.search(r"[\[{]", text) else 1)
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        return DecodedFindings([], 1)
    for item in data:
        if not isinstance(item, dict) or not isinstance(item.get("text"), str):
            failed += 1
            continue
        raw = item.get(key, item.get("boxes"))
        if raw is None:
            out.append({"text": item["text"], "boxes": None})
            continue
        if isinstance(raw, list) and len(raw) == 4 and all(not isinstance(v, list) for v in raw):
            raw = [raw]  # one box written flat
        boxes = []
        for r in raw if isinstance(raw, list) else [raw]:
            coords = [_num(c) for c in r] if isinstance(r, list) and len(r) == 4 else None
            if coords is None or any(c is None for c in coords):
                failed += 1
                continue
            boxes.append({k: v for k, v in _make_box(coords, *frame, None).items()})
        out.append({"text": item["text"], "boxes": boxes})
    return DecodedFindings(out, failed)
