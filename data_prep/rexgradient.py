"""ReXGradient-160K -> study records.

Published layout (Hugging Face ``rajpurkarlab/ReXGradient-160K``)::

    root/metadata/train_metadata.csv            one row per study: id, PatientID, StudyDate, Indication,
    root/metadata/valid_metadata.csv            Comparison, Findings, Impression, ImagePath (list-like
    root/metadata/test_metadata.csv             string), PatientAge, PatientSex, StudyDescription, ...
    root/metadata/<split>_metadata_view_position.json   {id: {"ImagePath": [...], "ImageViewPosition": [...]}}
    root/deid_png/<patient>/<accession>/studies/<uid>/series/<uid>/instances/<uid>.png

``ImagePath`` entries are written relative to ``metadata/`` (``../deid_png/...``); the records store
them relative to ``root``. Views come from the view-position JSON when present, else from an
``ImageViewPosition`` column, else ``UNKNOWN``. The metadata files may also sit directly in ``root``.
Priors are linked per patient by StudyDate (studies on the same day are not linked to each other).
"""

from __future__ import annotations

import ast
import json
import os
import posixpath
from pathlib import Path
from typing import Any

from tqdm import tqdm

from data_prep._util import SkipLog, build_prepare_summary, collapse_whitespace, fail_or_skip, iter_csv
from data_prep.errors import BadImageError, DataPrepError, UnknownLayoutError
from data_prep.schema import ImageRef, StudyRecord, normalize_view, write_records
from data_prep.schema import link_priors as _link_priors

DATASET = "rexgradient"
#: our split name -> file-name stems the release may use
SPLIT_FILES = {"train": ("train",), "validate": ("valid", "validation", "val"), "test": ("test",)}
REQUIRED = ("id", "Findings", "Impression")
_EXPECTED = ("metadata/{train,valid,test}_metadata.csv (id, PatientID, StudyDate, Indication, Comparison, "
             "Findings, Impression, ImagePath, ...) with optional {split}_metadata_view_position.json")


def parse_list(value: Any, *, file: str, line: int | str, field: str) -> list[str]:
    """A list-like cell (``"['a.png', 'b.png']"``, JSON, or one bare path) -> list of strings."""
    if value is None:
        return []
    if isinstance(value, list):
        return [str(v) for v in value]
    s = str(value).strip()
    if not s:
        return []
    if s[0] in "[(":
        try:
            parsed = json.loads(s)
        except json.JSONDecodeError:
            try:
                parsed = ast.literal_eval(s)
            except (ValueError, SyntaxError):
                raise DataPrepError("not a list", file=file, line=line if isinstance(line, int) else None,
                                    field=field, value=s) from None
        if not isinstance(parsed, list | tuple):
            raise DataPrepError("not a list", file=file, field=field, value=s)
        return [str(v) for v in parsed]
    return [s]


def _date(value: str) -> str:
    d = collapse_whitespace(value).split(" ")[0].replace("-", "").replace("/", "")
    d = d.split(".")[0]
    if len(d) == 8 and d.isdigit():
        return f"{d[:4]}-{d[4:6]}-{d[6:]}"
    return ""


def _find_meta_dir(root: Path) -> Path:
    for cand in (root / "metadata", root):
        if any(cand.glob("*_metadata.csv")) or any(cand.glob("*_metadata.csv.gz")):
            return cand
    found = sorted(p.name for p in root.iterdir())[:12] if root.is_dir() else []
    raise UnknownLayoutError(f"no ReXGradient metadata found; expected {_EXPECTED}; found {found}", file=str(root))


def _split_files(meta_dir: Path) -> dict[str, tuple[Path, Path | None]]:
    out = {}
    for split, stems in SPLIT_FILES.items():
        for stem in stems:
            csv_path = next((p for p in (meta_dir / f"{stem}_metadata.csv", meta_dir / f"{stem}_metadata.csv.gz")
                             if p.is_file()), None)
            if csv_path is None:
                continue
            js = next((p for p in (meta_dir / f"{stem}_metadata_view_position.json", meta_dir / f"{stem}_metadata.json")
                       if p.is_file()), None)
            out[split] = (csv_path, js)
            break
    return out


def _norm_image_path(raw: str, meta_rel: str) -> str:
    """``../deid_png/x.png`` (relative to ``metadata/``) -> ``deid_png/x.png`` (relative to the root).

    Paths not starting with ``../`` are taken as relative to the root already.
    """
    p = raw.replace("\\", "/").strip()
    if p.startswith("../"):
        if meta_rel:
            return posixpath.normpath(posixpath.join(meta_rel, p))
        while p.startswith("../"):
            p = p[3:]
    return posixpath.normpath(p)


def _views_json(js_path: Path | None) -> dict[str, Any]:
    """The split's view-position JSON (study id -> ImagePath/ImageViewPosition); {} without one."""
    views_json: dict[str, Any] = {}
    if js_path is not None:
        try:
            views_json = json.loads(js_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise DataPrepError(f"unreadable view-position JSON ({e})", file=str(js_path)) from None
        if not isinstance(views_json, dict):
            raise UnknownLayoutError("expected an object keyed by study id", file=str(js_path),
                                     value=type(views_json).__name__)
    return views_json


def _row_images(root: Path, meta_rel: str, sid: str, raw_paths: list, raw_views: list, verify: bool, skip_bad: bool,
                skips: SkipLog) -> list[ImageRef]:
    """A study's images with their views (those on disk when ``verify``; a missing one is an error or skipped)."""
    images = []
    for i, raw in enumerate(raw_paths):
        rel = _norm_image_path(str(raw), meta_rel)
        view = normalize_view(raw_views[i]) if i < len(raw_views) and raw_views[i] is not None else "UNKNOWN"
        if verify and not (root / rel).is_file():
            err = BadImageError(f"image of study {sid} not found", file=str(root / rel), field="ImagePath",
                                value=str(raw))
            fail_or_skip(skip_bad, skips, err, "image file missing", rel, kind="image")
            continue
        images.append(ImageRef(rel, view))
    return images


def _row_record(row: dict[str, str], sid: str, pid: str, split: str, images: list[ImageRef]) -> StudyRecord:
    """The study record of one metadata row."""
    meta: dict[str, Any] = {}
    for col, key in (("StudyDescription", "examination"), ("PatientAge", "age"), ("PatientSex", "sex"),
                     ("StudyInstanceUid", "study_instance_uid"), ("AccessionNumber", "accession_number")):
        v = collapse_whitespace(row.get(col))
        if v:
            meta[key] = v
    return StudyRecord(
        study_id=sid, patient_id=pid, dataset=DATASET, split=split,
        study_time=_date(row.get("StudyDate", "")), images=images,
        indication=collapse_whitespace(row.get("Indication")), technique=collapse_whitespace(row.get("Technique")),
        comparison=collapse_whitespace(row.get("Comparison")), findings=collapse_whitespace(row["Findings"]),
        impression=collapse_whitespace(row["Impression"]), meta=meta,
    )


def convert_rexgradient(root: str | os.PathLike, *, out: str | os.PathLike | None = None,
                        splits: tuple[str, ...] | None = None, check_images: bool = True, skip_bad: bool = False,
                        link_priors: bool = True, progress: bool = True,
                        skip_log: SkipLog | None = None) -> tuple[list[StudyRecord], dict[str, Any]]:
    """Convert ReXGradient-160K to study records; returns ``(records, summary)``, writes ``out`` when given.

    ``splits`` limits which split files are read (``("train",)``...); images are checked on disk when
    ``check_images`` and the ``deid_png`` folder exists (a metadata-only download is not an error).
    """
    root = Path(root)
    if not root.is_dir():
        raise DataPrepError(f"not a folder; expected {_EXPECTED}", file=str(root))
    meta_dir = _find_meta_dir(root)
    meta_rel = meta_dir.relative_to(root).as_posix() if meta_dir != root else ""
    files = _split_files(meta_dir)
    if splits is not None:
        files = {k: v for k, v in files.items() if k in set(splits)}
    if not files:
        found = sorted(p.name for p in meta_dir.iterdir())[:12]
        raise UnknownLayoutError(f"no split metadata CSV; expected {_EXPECTED}; found {found}", file=str(meta_dir))
    verify = check_images and any((root / d).is_dir() for d in ("deid_png", "images"))
    skips = skip_log if skip_log is not None else SkipLog()
    records: list[StudyRecord] = []
    seen: set[str] = set()
    for split, (csv_path, js_path) in files.items():
        views_json = _views_json(js_path)
        file = str(csv_path)
        for line, row in tqdm(iter_csv(csv_path, required=REQUIRED), desc=f"rexgradient {split}", unit="study",
                              disable=not progress):
            sid = collapse_whitespace(row["id"])
            if not sid:
                raise DataPrepError("empty id", file=file, line=line, field="id")
            if sid in seen:
                raise DataPrepError("duplicate study id", file=file, line=line, field="id", value=sid)
            seen.add(sid)
            pid = collapse_whitespace(row.get("PatientID")) or sid.split("_")[0]
            vj = views_json.get(sid) or {}
            raw_paths = vj.get("ImagePath") if vj.get("ImagePath") else parse_list(
                row.get("ImagePath"), file=file, line=line, field="ImagePath")
            raw_views = vj.get("ImageViewPosition") if vj.get("ImageViewPosition") is not None else parse_list(
                row.get("ImageViewPosition"), file=file, line=line, field="ImageViewPosition")
            if not isinstance(raw_paths, list):
                raise DataPrepError("ImagePath must be a list", file=str(js_path or csv_path), field=f"{sid}.ImagePath",
                                    value=raw_paths)
            images = _row_images(root, meta_rel, sid, raw_paths, raw_views, verify, skip_bad, skips)
            if raw_paths and not images:
                skips.add("no images on disk", sid)
                continue
            records.append(_row_record(row, sid, pid, split, images))
    n_priors = _link_priors(records) if link_priors else 0
    summary = build_prepare_summary(DATASET, records, skips, data_root=root, priors_linked=n_priors,
                                    metadata_dir=str(meta_dir), split_files={k: str(v[0]) for k, v in files.items()},
                                    images_verified=verify)
    if out is not None:
        write_records(records, out)
        summary["out"] = str(out)
    return records, summary
