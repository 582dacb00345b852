"""Converters for public box annotations -> study records with boxes, and back (lossless).

Each reads a format exactly as its dataset publishes it; boxes become fractions of the original image
(the record's convention, :mod:`data_prep.schema`), and each ``*_rows``/``to_*`` function writes the
records back in the published form (tests check the round trip on the real files):

* NIH ChestX-ray14 ``BBox_List_2017.csv``: ``Image Index, Finding Label, Bbox [x,y,w,h]`` then two unnamed
  columns (w, h); pixels of the 1024 x 1024 originals. One record per image, detection boxes on it.
* ChestX-Det (Deepwise-AILab) JSON: a list of ``{file_name, syms, boxes: [[x1,y1,x2,y2]], polygons}``,
  pixels of 1024 x 1024 NIH images; an image with empty lists was read and has no finding (``boxes: []``).
* RadFact grounded-report examples: ``[{example_id, prediction: [GroundedPhrase], target: [GroundedPhrase]}]``
  with ``GroundedPhrase = {text, boxes: [{x_min, y_min, x_max, y_max}] | null}`` (already fractions). The
  target becomes the record's ``grounded_findings``; the prediction is kept in ``meta.radfact_prediction``.
* VinDr-CXR ``annotations_*.csv`` / ``train.csv``: ``image_id, class_name, class_id, rad_id, x_min, y_min,
  x_max, y_max`` in pixels of the DICOM; several radiologists (``rad_id``) per image; a ``No finding`` row
  has empty coordinates (kept as ``meta.no_finding_readers``). Image sizes come from the caller.
* MS-CXR (``MS_CXR_Local_Alignment_v1.0.0.csv``): ``dicom_id, category_name, label_text, path, x, y, w, h,
  image_width, image_height``; one row per box; rows sharing a dicom_id and label_text are one phrase.

Image sizes: NIH and ChestX-Det state 1024 x 1024; with ``images_dir`` each image's size is read from its
file header instead (a missing image is an error naming it).
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable, Collection, Iterable, Mapping
from pathlib import Path
from typing import Any

from cxr_io import iter_csv_rows, read_json
from data_prep._util import SkipLog, build_prepare_summary
from data_prep.errors import DataPrepError, UnknownLayoutError
from data_prep.schema import SPLITS, StudyRecord, validate_record, write_records
from data_prep.schema import link_priors as _link_priors

NIH_SIZE = (1024, 1024)
CHESTX_DET_SIZE = (1024, 1024)
NIH_HEADER = ["Image Index", "Finding Label", "Bbox [x,y,w,h]"]  # then unnamed w, h columns
VINDR_COLUMNS = ("image_id", "class_name", "class_id", "rad_id", "x_min", "y_min", "x_max", "y_max")
VINDR_NO_FINDING = "No finding"
MS_CXR_COLUMNS = ("dicom_id", "category_name", "label_text", "path", "x", "y", "w", "h", "image_width",
                  "image_height")

Size = tuple[int, int]


def _sizer(images_dir: str | os.PathLike | None, default: Size,
           on_bad_image: Callable[[str, DataPrepError], None] | None = None) -> Callable[[str], Size | None]:
    """(width, height) of an image: read from ``images_dir/<name>`` when a folder is given, else ``default``.

    A missing or unreadable image is an error naming it; with ``on_bad_image`` it is reported there (once)
    and its size is ``None`` (the reader then leaves the image out)."""
    if images_dir is None:
        return lambda name: default
    known: dict[str, Size | None] = {}

    def read(name: str) -> Size:
        from PIL import Image, UnidentifiedImageError

        p = Path(images_dir) / name
        try:
            with Image.open(p) as im:
                return im.size
        except FileNotFoundError:
            err = DataPrepError("image not found (pass the folder of the dataset's images, or no folder to use "
                                f"the stated size {default[0]}x{default[1]})", file=str(p))
            err.reason = "image not found"  # type: ignore[attr-defined]
        except (OSError, UnidentifiedImageError) as e:
            err = DataPrepError(f"not a readable image ({e})", file=str(p))
            err.reason = "not a readable image"  # type: ignore[attr-defined]
        raise err

    def size(name: str) -> Size | None:
        if name not in known:
            try:
                known[name] = read(name)
            except DataPrepError as e:
                if on_bad_image is None:
                    raise
                on_bad_image(name, e)
                known[name] = None
        return known[name]

    return size


def _record(d: dict[str, Any], file: str, line: int | None) -> StudyRecord:
    return validate_record(d, file=file, line=line)


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise DataPrepError(f"must be one of {SPLITS}", field="split", value=split)
    return split


# -- NIH ChestX-ray14 ------------------------------------------------------------------------------
def nih_bbox_to_records(path: str | os.PathLike, *, images_dir: str | os.PathLike | None = None,
                        split: str = "test", image_prefix: str = "images/",
                        on_bad_image: Callable[[str, DataPrepError], None] | None = None) -> list[StudyRecord]:
    """``BBox_List_2017.csv`` -> one record per image (in first-appearance order) with its detection boxes.

    ``on_bad_image(name, error)``: with ``images_dir``, an image that is missing or unreadable is reported
    there and left out (its record too) instead of being an error."""
    path = Path(path)
    _check_split(split)
    size_of = _sizer(images_dir, NIH_SIZE, on_bad_image)
    by_image: dict[str, list[dict]] = {}
    lines: dict[str, int] = {}
    try:
        fh = open(path, encoding="utf-8-sig", newline="")
    except OSError as e:
        raise DataPrepError(f"cannot open the NIH box list ({e.strerror or e})", file=str(path)) from None
    with fh:
        reader = csv.reader(fh)
        header = next(reader, None)  # the header's "Bbox [x,y,w,h]" is not quoted: it splits in four
        if not header or ",".join(h.strip() for h in header).rstrip(",") != ",".join(NIH_HEADER):
            raise UnknownLayoutError(f"not NIH BBox_List_2017.csv (expected the header {', '.join(NIH_HEADER)}, "
                                     "then unnamed w, h columns)", file=str(path), line=1)
        for values in reader:
            line = reader.line_num
            if not values:
                continue
            if len(values) < 6:
                raise DataPrepError(f"expected 6 fields (image, label, x, y, w, h), got {len(values)}",
                                    file=str(path), line=line)
            name, label = values[0].strip(), values[1].strip()
            try:
                x, y, w, h = (float(v) for v in values[2:6])
            except ValueError:
                raise DataPrepError("x, y, w, h must be numbers", file=str(path), line=line,
                                    field="Bbox [x,y,w,h]", value=values[2:6]) from None
            size = size_of(name)
            if size is None:
                continue
            W, H = size
            box = {"label": label, "x_min": x / W, "y_min": y / H, "x_max": (x + w) / W, "y_max": (y + h) / H}
            by_image.setdefault(name, []).append(box)
            lines.setdefault(name, line)
    out = []
    for name, boxes in by_image.items():
        stem = name.rsplit(".", 1)[0]
        out.append(_record({"study_id": stem, "patient_id": stem.split("_")[0], "dataset": "nih_cxr14_bbox",
                            "split": split, "images": [{"path": image_prefix + name, "view": "UNKNOWN",
                                                        "boxes": boxes}]}, str(path), lines[name]))
    return out


def nih_bbox_rows(records: Iterable[StudyRecord], *, images_dir: str | os.PathLike | None = None,
                  image_prefix: str = "images/") -> list[list[str]]:
    """Records -> the rows of ``BBox_List_2017.csv`` (header first), numbers written as the file writes them."""
    size_of = _sizer(images_dir, NIH_SIZE)
    rows = [",".join(NIH_HEADER).split(",")]
    for r in records:
        for im in r.images:
            name = im.path.removeprefix(image_prefix)
            W, H = size_of(name)
            for b in im.boxes or []:
                x, y = b["x_min"] * W, b["y_min"] * H
                rows.append([name, b["label"], _g(x), _g(y), _g(b["x_max"] * W - x), _g(b["y_max"] * H - y)])
    return rows


def _g(v: float) -> str:
    """A pixel number as the NIH list prints it (10 significant digits, no trailing zeros)."""
    return f"{v:.10g}"


# -- ChestX-Det ------------------------------------------------------------------------------------
def chestx_det_to_records(path: str | os.PathLike, *, images_dir: str | os.PathLike | None = None,
                          split: str = "test", image_prefix: str = "images/",
                          on_bad_image: Callable[[str, DataPrepError], None] | None = None) -> list[StudyRecord]:
    """ChestX-Det JSON -> one record per image: detection boxes with their polygons (``boxes: []`` when
    the image was read and had no finding). ``on_bad_image``: as for :func:`nih_bbox_to_records`."""
    path = Path(path)
    _check_split(split)
    data = read_json(path, role="ChestX-Det annotations", error=DataPrepError)
    if not isinstance(data, list):
        raise UnknownLayoutError("not ChestX-Det annotations (expected a JSON list of {file_name, syms, boxes, "
                                 "polygons})", file=str(path))
    size_of = _sizer(images_dir, CHESTX_DET_SIZE, on_bad_image)
    out = []
    for i, item in enumerate(data):
        where = f"[{i}]"
        if not isinstance(item, dict) or not {"file_name", "syms", "boxes"} <= set(item):
            raise DataPrepError("expected {file_name, syms, boxes, polygons}", file=str(path), field=where)
        syms, boxes, polys = item["syms"], item["boxes"], item.get("polygons") or [None] * len(item["syms"])
        if not (len(syms) == len(boxes) == len(polys)):
            raise DataPrepError("syms, boxes and polygons must have one entry per finding", file=str(path),
                                field=f"{where}.boxes", value=item["file_name"])
        size = size_of(item["file_name"])
        if size is None:
            continue
        W, H = size
        dets = []
        for j, (sym, b, poly) in enumerate(zip(syms, boxes, polys)):
            if not (isinstance(b, list) and len(b) == 4):
                raise DataPrepError("a box is [x1, y1, x2, y2]", file=str(path), field=f"{where}.boxes[{j}]", value=b)
            det = {"label": sym, "x_min": b[0] / W, "y_min": b[1] / H, "x_max": b[2] / W, "y_max": b[3] / H,
                   "polygon": None if poly is None else [[px / W, py / H] for px, py in poly]}
            dets.append(det)
        stem = item["file_name"].rsplit(".", 1)[0]
        out.append(_record({"study_id": f"chestx_det_{stem}", "patient_id": f"chestx_det_{stem}",
                            "dataset": "chestx_det", "split": split,
                            "images": [{"path": image_prefix + item["file_name"], "view": "UNKNOWN",
                                        "boxes": dets}]}, str(path), None))
    return out


def to_chestx_det(records: Iterable[StudyRecord], *, images_dir: str | os.PathLike | None = None,
                  image_prefix: str = "images/") -> list[dict[str, Any]]:
    """Records -> ChestX-Det's JSON list (integer pixels, as published)."""
    size_of = _sizer(images_dir, CHESTX_DET_SIZE)
    out = []
    for r in records:
        for im in r.images:
            name = im.path.removeprefix(image_prefix)
            W, H = size_of(name)
            dets = im.boxes or []
            out.append({"file_name": name, "syms": [b["label"] for b in dets],
                        "boxes": [[round(b["x_min"] * W), round(b["y_min"] * H), round(b["x_max"] * W),
                                   round(b["y_max"] * H)] for b in dets],
                        "polygons": [[[round(px * W), round(py * H)] for px, py in (b.get("polygon") or [])]
                                     for b in dets]})
    return out


# -- RadFact examples ------------------------------------------------------------------------------
def _phrase(p: Any) -> dict[str, Any]:
    return {"text": p.get("text"), "boxes": p.get("boxes"), "image": 0} if isinstance(p, dict) else p


def radfact_examples_to_records(path: str | os.PathLike, *, split: str = "test") -> list[StudyRecord]:
    """RadFact's grounded-report examples -> one text-only record per example: the target as
    ``grounded_findings`` (and ``findings`` = its sentences joined), the prediction in ``meta``."""
    path = Path(path)
    _check_split(split)
    data = read_json(path, role="RadFact examples", error=DataPrepError)
    if not isinstance(data, list):
        raise UnknownLayoutError("not RadFact grounded-report examples (expected a JSON list of "
                                 "{example_id, prediction, target})", file=str(path))
    out = []
    for i, ex in enumerate(data):
        if not isinstance(ex, dict) or not {"prediction", "target"} <= set(ex):
            raise DataPrepError("expected {example_id, prediction, target}", file=str(path), field=f"[{i}]")
        eid = str(ex.get("example_id", i))
        target = [_phrase(p) for p in ex["target"]]
        pred = validate_record({"study_id": "p", "patient_id": "p", "dataset": "d", "split": split,
                                "grounded_findings": [_phrase(p) for p in ex["prediction"]]},
                               file=str(path), line=None).grounded_findings
        out.append(_record({"study_id": f"radfact_{eid}", "patient_id": f"radfact_{eid}", "dataset": "radfact_examples",
                            "split": split, "findings": " ".join(p["text"] for p in target if isinstance(p, dict)),
                            "grounded_findings": target,
                            "meta": {"example_id": ex.get("example_id", i),
                                     "radfact_prediction": [{"text": p["text"], "boxes": p["boxes"]} for p in pred]}},
                           str(path), None))
    return out


def to_radfact_examples(records: Iterable[StudyRecord]) -> list[dict[str, Any]]:
    """Records -> RadFact's example list (``{prediction, target, example_id}``, GroundedPhrase JSON)."""
    return [{"prediction": r.meta.get("radfact_prediction", []),
             "target": [{"text": g["text"], "boxes": g["boxes"]} for g in r.grounded_findings or []],
             "example_id": r.meta.get("example_id", r.study_id)} for r in records]


# -- VinDr-CXR -------------------------------------------------------------------------------------
def _float(v: str, *, file: str, line: int, field: str) -> float:
    try:
        return float(v)
    except ValueError:
        raise DataPrepError("must be a number", file=file, line=line, field=field, value=v) from None


def vindr_to_records(path: str | os.PathLike, image_sizes: Mapping[str, Size], *, split: str = "test",
                     image_prefix: str = "", image_suffix: str = ".dicom",
                     skip_ids: Collection[str] = ()) -> list[StudyRecord]:
    """VinDr-CXR box CSV -> one record per image; every radiologist's boxes (``reader`` = ``rad_id``);
    ``No finding`` rows (empty coordinates) as ``meta.no_finding_readers``. ``image_sizes``: image_id ->
    (width, height) of the DICOM (the CSV's pixels are the DICOM's). Rows of ``skip_ids`` (images that
    could not be read) are left out."""
    path = Path(path)
    _check_split(split)
    by_image: dict[str, dict[str, Any]] = {}
    for line, row in iter_csv_rows(path, required=VINDR_COLUMNS, role="VinDr-CXR annotations", error=DataPrepError):
        iid = row["image_id"].strip()
        if iid in skip_ids:
            continue
        entry = by_image.setdefault(iid, {"boxes": [], "no_finding": [], "line": line})
        if row["class_name"] == VINDR_NO_FINDING or not row["x_min"].strip():
            if row["class_name"] != VINDR_NO_FINDING:
                raise DataPrepError("a finding row needs coordinates (only 'No finding' rows have none)",
                                    file=str(path), line=line, field="x_min", value=row["x_min"])
            entry["no_finding"].append(row["rad_id"])
            continue
        if iid not in image_sizes:
            raise DataPrepError("no image size for this image_id (the sizes are the DICOM's: image_sizes=, "
                                "or prepare vindr-cxr --sizes-csv / --images-dir)",
                                file=str(path), line=line, field="image_id", value=iid)
        W, H = image_sizes[iid]
        c = {k: _float(row[k], file=str(path), line=line, field=k) for k in ("x_min", "y_min", "x_max", "y_max")}
        entry["boxes"].append({"label": row["class_name"], "x_min": c["x_min"] / W, "y_min": c["y_min"] / H,
                               "x_max": c["x_max"] / W, "y_max": c["y_max"] / H, "reader": row["rad_id"],
                               "class_id": row["class_id"]})
    out = []
    for iid, e in by_image.items():
        out.append(_record({"study_id": iid, "patient_id": iid, "dataset": "vindr_cxr", "split": split,
                            "images": [{"path": f"{image_prefix}{iid}{image_suffix}", "view": "UNKNOWN",
                                        "boxes": [{k: v for k, v in b.items() if k != "class_id"}
                                                  for b in e["boxes"]]}],
                            "meta": {"no_finding_readers": e["no_finding"],
                                     "class_ids": {b["label"]: b["class_id"] for b in e["boxes"]}}},
                           str(path), e["line"]))
    return out


def vindr_rows(records: Iterable[StudyRecord], image_sizes: Mapping[str, Size]) -> list[dict[str, str]]:
    """Records -> VinDr-CXR CSV rows (dicts with :data:`VINDR_COLUMNS`; coordinates in DICOM pixels)."""
    rows = []
    for r in records:
        W, H = image_sizes.get(r.study_id, (1, 1))
        for b in r.images[0].boxes or []:
            rows.append({"image_id": r.study_id, "class_name": b["label"],
                         "class_id": r.meta["class_ids"][b["label"]], "rad_id": b.get("reader", ""),
                         "x_min": _g(b["x_min"] * W), "y_min": _g(b["y_min"] * H),
                         "x_max": _g(b["x_max"] * W), "y_max": _g(b["y_max"] * H)})
        for rad in r.meta.get("no_finding_readers", []):
            rows.append({"image_id": r.study_id, "class_name": VINDR_NO_FINDING, "class_id": "14", "rad_id": rad,
                         "x_min": "", "y_min": "", "x_max": "", "y_max": ""})
    return rows


# -- MS-CXR ----------------------------------------------------------------------------------------
def ms_cxr_to_records(path: str | os.PathLike, *, split: str = "test") -> list[StudyRecord]:
    """MS-CXR local-alignment CSV -> one record per image: each phrase (``label_text``) a grounded finding
    with its boxes, each box also a detection box labelled with its ``category_name``."""
    path = Path(path)
    _check_split(split)
    by_image: dict[str, dict[str, Any]] = {}
    for line, row in iter_csv_rows(path, required=MS_CXR_COLUMNS, role="MS-CXR annotations", error=DataPrepError):
        num = {k: _float(row[k], file=str(path), line=line, field=k)
               for k in ("x", "y", "w", "h", "image_width", "image_height")}
        W, H = num["image_width"], num["image_height"]
        box = {"x_min": num["x"] / W, "y_min": num["y"] / H, "x_max": (num["x"] + num["w"]) / W,
               "y_max": (num["y"] + num["h"]) / H}
        e = by_image.setdefault(row["dicom_id"], {"row": row, "line": line, "phrases": {}, "size": (W, H)})
        e["phrases"].setdefault((row["label_text"], row["category_name"]), []).append(box)
    out = []
    for dicom_id, e in by_image.items():
        rel = e["row"]["path"]
        parts = Path(rel).parts
        patient = next((p[1:] for p in parts if p.startswith("p") and p[1:].isdigit() and len(p) > 3), dicom_id)
        study = next((p[1:] for p in parts if p.startswith("s") and p[1:].isdigit()), dicom_id)
        phrases = list(e["phrases"].items())
        out.append(_record({
            "study_id": study, "patient_id": patient, "dataset": "ms_cxr", "split": split,
            "images": [{"path": rel, "view": "UNKNOWN",
                        "boxes": [{"label": cat, **b} for (_, cat), boxes in phrases for b in boxes]}],
            "grounded_findings": [{"text": text, "boxes": boxes, "image": 0} for (text, _), boxes in phrases],
            "meta": {"dicom_id": dicom_id, "image_size": list(e["size"])}}, str(path), e["line"]))
    return out


def ms_cxr_rows(records: Iterable[StudyRecord]) -> list[dict[str, str]]:
    """Records -> MS-CXR CSV rows (dicts with :data:`MS_CXR_COLUMNS`)."""
    rows = []
    for r in records:
        W, H = r.meta["image_size"]
        im = r.images[0]
        dets = iter(im.boxes or [])
        for g in r.grounded_findings or []:
            for b in g["boxes"] or []:
                cat = next(dets)["label"]
                x, y = b["x_min"] * W, b["y_min"] * H
                rows.append({"dicom_id": r.meta["dicom_id"], "category_name": cat, "label_text": g["text"],
                             "path": im.path, "x": _g(x), "y": _g(y), "w": _g(b["x_max"] * W - x),
                             "h": _g(b["y_max"] * H - y), "image_width": _g(W), "image_height": _g(H)})
    return rows


def write_csv_rows(rows: list[dict[str, str]] | list[list[str]], path: str | os.PathLike,
                   columns: Iterable[str] | None = None) -> None:
    """Write converter rows back as CSV (dict rows under ``columns``; list rows as they are)."""
    from cxr_io import atomic_write

    with atomic_write(path, "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        if columns is not None:
            cols = list(columns)
            w.writerow(cols)
            w.writerows([[row[c] for c in cols] for row in rows])  # type: ignore[index]
        else:
            w.writerows(rows)


def write_json(data: Any, path: str | os.PathLike) -> None:
    from cxr_io import atomic_write

    with atomic_write(path, "w") as fh:
        json.dump(data, fh, ensure_ascii=False)


# -- mllm-cxr prepare ------------------------------------------------------------------------------
# The converters of ``mllm-cxr prepare nih-bbox | chestx-det | radfact | vindr-cxr | ms-cxr`` (rows of
# data_prep.prepare.DATASETS): the readers above, with the signature and summary of the other converters.
# With ``images_dir`` the records' image paths are relative to it and it is the summary's ``data_root``, so
# prepare() checks the images (or caches them with --image-cache); without it there is no data_root.
def _on_bad_image(skip_bad: bool, skips: SkipLog, images_dir: str | os.PathLike | None):
    """The readers' ``on_bad_image``: None (an error) unless ``skip_bad``, then count the image as skipped."""
    if not skip_bad:
        return None

    def count(name: str, err: DataPrepError) -> None:
        skips.add(f"bad image: {getattr(err, 'reason', None) or err}", str(Path(images_dir or "") / name),
                  kind="image")
    return count


def _box_summary(dataset: str, records: list[StudyRecord], skips: SkipLog, *, data_root, link_priors: bool,
                 out, source, **extra: Any) -> tuple[list[StudyRecord], dict[str, Any]]:
    n_priors = _link_priors(records) if link_priors else 0
    summary = build_prepare_summary(
        dataset, records, skips, data_root=data_root, priors_linked=n_priors, source=str(source),
        boxes=sum(len(im.boxes or []) for r in records for im in r.images),
        grounded_phrases=sum(len(r.grounded_findings or []) for r in records), **extra)
    if out is not None:
        write_records(records, out)
        summary["out"] = str(out)
    return records, summary


def _require_images(records: list[StudyRecord], root: Path, *, skip_bad: bool, skips: SkipLog) -> None:
    """Every record's images must exist below ``root`` (an error naming the first missing one; with
    ``skip_bad`` the record is left out and counted)."""
    kept = []
    for r in records:
        missing = [im.path for im in r.images if not (root / im.path).is_file()]
        if not missing:
            kept.append(r)
            continue
        if not skip_bad:
            raise DataPrepError("image not found (check --images-dir, the folder the annotation's image paths "
                                "are relative to)", file=str(root / missing[0]), field="study", value=r.study_id)
        for m in missing:
            skips.add("bad image: image not found", str(root / m), kind="image")
    records[:] = kept


def convert_nih_bbox(source: str | os.PathLike, *, out: str | os.PathLike | None = None,
                     images_dir: str | os.PathLike | None = None, split: str = "test", skip_bad: bool = False,
                     link_priors: bool = True, progress: bool = True,
                     skip_log: SkipLog | None = None) -> tuple[list[StudyRecord], dict[str, Any]]:
    """NIH ``BBox_List_2017.csv`` -> records (:func:`nih_bbox_to_records`). With ``images_dir`` (the folder of
    the PNGs) each image's size is read from its header and paths are relative to it; without, images are
    1024 x 1024 and paths are ``images/<file>`` (the NIH download's layout)."""
    skips = skip_log if skip_log is not None else SkipLog()
    records = nih_bbox_to_records(source, images_dir=images_dir, split=split,
                                  image_prefix="images/" if images_dir is None else "",
                                  on_bad_image=_on_bad_image(skip_bad, skips, images_dir))
    return _box_summary("nih_cxr14_bbox", records, skips, data_root=images_dir, link_priors=link_priors, out=out,
                        source=source, image_sizes="from image headers" if images_dir else "1024x1024 (stated)")


def convert_chestx_det(source: str | os.PathLike, *, out: str | os.PathLike | None = None,
                       images_dir: str | os.PathLike | None = None, split: str = "test", skip_bad: bool = False,
                       link_priors: bool = True, progress: bool = True,
                       skip_log: SkipLog | None = None) -> tuple[list[StudyRecord], dict[str, Any]]:
    """ChestX-Det JSON -> records (:func:`chestx_det_to_records`); ``images_dir`` as for :func:`convert_nih_bbox`."""
    skips = skip_log if skip_log is not None else SkipLog()
    records = chestx_det_to_records(source, images_dir=images_dir, split=split,
                                    image_prefix="images/" if images_dir is None else "",
                                    on_bad_image=_on_bad_image(skip_bad, skips, images_dir))
    return _box_summary("chestx_det", records, skips, data_root=images_dir, link_priors=link_priors, out=out,
                        source=source, image_sizes="from image headers" if images_dir else "1024x1024 (stated)",
                        no_finding_images=sum(1 for r in records if r.images[0].boxes == []))


def convert_radfact(source: str | os.PathLike, *, out: str | os.PathLike | None = None, split: str = "test",
                    skip_bad: bool = False, link_priors: bool = True, progress: bool = True,
                    skip_log: SkipLog | None = None) -> tuple[list[StudyRecord], dict[str, Any]]:
    """RadFact grounded-report examples -> text-only records (:func:`radfact_examples_to_records`).
    ``text_only`` tells prepare() not to drop them for having no image under ``skip_bad``."""
    skips = skip_log if skip_log is not None else SkipLog()
    records = radfact_examples_to_records(source, split=split)
    return _box_summary("radfact_examples", records, skips, data_root=None, link_priors=link_priors, out=out,
                        source=source, text_only=True)


def read_image_sizes(path: str | os.PathLike) -> dict[str, Size]:
    """A CSV of image sizes, ``image_id,width,height`` (pixels of the DICOM) -> ``{image_id: (width, height)}``."""
    sizes: dict[str, Size] = {}
    for line, row in iter_csv_rows(path, required=("image_id", "width", "height"), role="image sizes CSV",
                                   error=DataPrepError):
        wh = []
        for k in ("width", "height"):
            try:
                v = int(row[k])
            except ValueError:
                v = 0
            if v <= 0:
                raise DataPrepError("must be a positive whole number of pixels", file=str(path), line=line,
                                    field=k, value=row[k])
            wh.append(v)
        sizes[row["image_id"].strip()] = (wh[0], wh[1])
    return sizes


def convert_vindr(source: str | os.PathLike, *, out: str | os.PathLike | None = None,
                  images_dir: str | os.PathLike | None = None, sizes_csv: str | os.PathLike | None = None,
                  image_suffix: str = ".dicom", split: str = "test", skip_bad: bool = False,
                  link_priors: bool = True, progress: bool = True,
                  skip_log: SkipLog | None = None) -> tuple[list[StudyRecord], dict[str, Any]]:
    """VinDr-CXR box CSV -> records (:func:`vindr_to_records`). The CSV's pixels are the DICOM's, so each
    image's size is needed: from ``sizes_csv`` (``image_id,width,height``) and/or read from the header of
    ``images_dir/<image_id><image_suffix>`` (DICOM via pydicom, or a full-resolution PNG/JPG; a resized
    copy gives wrong boxes). A size in ``sizes_csv`` wins; with ``images_dir`` every image must be there
    (``skip_bad``: a missing or unreadable one is left out and counted)."""
    from tqdm import tqdm

    from data_prep.errors import BadImageError
    from data_prep.images import image_size

    if sizes_csv is None and images_dir is None:
        raise DataPrepError("VinDr-CXR boxes are DICOM pixels: give the image sizes with --sizes-csv "
                            "(image_id,width,height) and/or --images-dir (sizes read from the image headers)",
                            field="sizes_csv")
    skips = skip_log if skip_log is not None else SkipLog()
    sizes = read_image_sizes(sizes_csv) if sizes_csv is not None else {}
    bad: set[str] = set()
    if images_dir is not None:
        ids = dict.fromkeys(row["image_id"].strip() for _, row in
                            iter_csv_rows(source, required=VINDR_COLUMNS, role="VinDr-CXR annotations",
                                          error=DataPrepError))
        for iid in tqdm(ids, desc="vindr image sizes", unit="img", disable=not progress):
            p = Path(images_dir) / f"{iid}{image_suffix}"
            try:
                h, w = image_size(p)
            except BadImageError as e:
                if not skip_bad:
                    raise
                bad.add(iid)
                skips.add(f"bad image: {getattr(e, 'reason', None) or e}", str(p), kind="image")
                continue
            sizes.setdefault(iid, (w, h))
    records = vindr_to_records(source, sizes, split=split, image_suffix=image_suffix, skip_ids=bad)
    how = " + ".join(w for w, given in (("sizes CSV", sizes_csv), ("image headers", images_dir)) if given)
    return _box_summary("vindr_cxr", records, skips, data_root=images_dir, link_priors=link_priors, out=out,
                        source=source, image_sizes=how,
                        no_finding_images=sum(1 for r in records if not r.images[0].boxes))


def convert_ms_cxr(source: str | os.PathLike, *, out: str | os.PathLike | None = None,
                   images_dir: str | os.PathLike | None = None, split: str = "test", skip_bad: bool = False,
                   link_priors: bool = True, progress: bool = True,
                   skip_log: SkipLog | None = None) -> tuple[list[StudyRecord], dict[str, Any]]:
    """MS-CXR local-alignment CSV -> records (:func:`ms_cxr_to_records`). The CSV states each image's size;
    its ``path`` column is relative to the MIMIC-CXR-JPG folder (``images_dir``: every image must exist
    there, then it is checked or cached like the other datasets')."""
    skips = skip_log if skip_log is not None else SkipLog()
    records = ms_cxr_to_records(source, split=split)
    if images_dir is not None:
        _require_images(records, Path(images_dir), skip_bad=skip_bad, skips=skips)
    return _box_summary("ms_cxr", records, skips, data_root=images_dir, link_priors=link_priors, out=out,
                        source=source)
