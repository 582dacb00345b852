"""IU X-ray (Open-i, Indiana University) -> study records.

Two layouts are read:

* the Open-i report archive ``NLMCXR_reports.tgz`` (or its extracted folder), one XML file per
  report under ``ecgen-radiology/``: COMPARISON, INDICATION, FINDINGS and IMPRESSION sections, MeSH
  terms (kept in ``meta.mesh_major`` / ``meta.mesh_automatic``) and the report's image ids
  (``meta.image_ids``, e.g. ``CXR1000_IM-0003-1001``);
* the R2Gen annotation file ``annotation.json`` (``{"train"|"val"|"test": [{id, report, image_path,
  split}]}``, images under ``images/<id>/0.png``); pass ``reports=`` (the XML archive) to add the
  indication, comparison, impression and MeSH terms the annotation file lacks.

Images: with ``png_dir`` each image id is looked up among the PNGs below it (Open-i names
``CXR1000_IM-0003-1001.png``, Kaggle names ``1000_IM-0003-1001.dcm.png``, or the R2Gen folders
``CXR1000_IM-0003/0.png``); views come from ``nlmcxr_dicom_metadata.csv.gz`` when given, else
``UNKNOWN``. Without ``png_dir`` the records name the Open-i PNG files (``<image id>.png``) unchecked.

Splits: ``r2gen_splits.csv`` (the standard R2Gen split) when given -- reports outside it are skipped
(``unlisted="skip"``), put in train (``"train"``) or hashed (``"hash"``) -- else a deterministic hash
of the patient id. IU reports carry no dates and one report per patient, so no priors are linked.
"""

from __future__ import annotations

import json
import os
import re
import tarfile
import xml.etree.ElementTree as ET
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tqdm import tqdm

from data_prep._util import (
    SkipLog,
    build_prepare_summary,
    collapse_whitespace,
    fail_or_skip,
    hash_split,
    iter_csv,
)
from data_prep.errors import BadImageError, DataPrepError, UnknownLayoutError
from data_prep.schema import ImageRef, StudyRecord, normalize_split, normalize_view, write_records
from data_prep.schema import link_priors as _link_priors

DATASET = "iu_xray"
_EXPECTED = ("NLMCXR_reports.tgz (or its extracted folder with ecgen-radiology/*.xml), "
             "or an R2Gen annotation.json (or a folder holding one)")
_SECTIONS = {"COMPARISON": "comparison", "INDICATION": "indication", "FINDINGS": "findings",
             "IMPRESSION": "impression"}
UNLISTED_POLICIES = ("skip", "train", "hash")


# -- XML reports -----------------------------------------------------------------------------------
def _parse_report(data: bytes, name: str, origin: str) -> dict[str, Any]:
    try:
        root = ET.fromstring(data)
    except ET.ParseError as e:
        raise DataPrepError(f"malformed XML ({e})", file=f"{origin}:{name}") from None
    uid_el = root.find("uId")
    uid = uid_el.get("id") if uid_el is not None else None
    if not uid:
        stem = Path(name).stem
        if not stem.isdigit():
            raise DataPrepError("report has no <uId id=...>", file=f"{origin}:{name}", field="uId")
        uid = f"CXR{stem}"
    sections = {v: "" for v in _SECTIONS.values()}
    for at in root.iter("AbstractText"):
        key = _SECTIONS.get((at.get("Label") or "").strip().upper())
        if key:
            sections[key] = collapse_whitespace("".join(at.itertext()))
    mesh = root.find("MeSH")
    major = [collapse_whitespace(e.text) for e in mesh.findall("major")] if mesh is not None else []
    automatic = [collapse_whitespace(e.text) for e in mesh.findall("automatic")] if mesh is not None else []
    image_ids = [pi.get("id") for pi in root.findall("parentImage") if pi.get("id")]
    return {"uid": uid, **sections, "mesh_major": [m for m in major if m],
            "mesh_automatic": [m for m in automatic if m], "image_ids": image_ids, "source_file": name}


def iter_reports(source: str | os.PathLike) -> Iterator[dict[str, Any]]:
    """Parsed Open-i XML reports from the ``.tgz`` archive or an extracted folder."""
    src = Path(source)
    if src.is_file():
        try:
            tf = tarfile.open(src, "r:*")
        except (tarfile.TarError, OSError) as e:
            raise UnknownLayoutError(f"not a readable tar archive ({e}); expected {_EXPECTED}", file=str(src)) from None
        with tf:
            try:
                for m in tf:
                    if m.isfile() and m.name.endswith(".xml"):
                        fh = tf.extractfile(m)
                        if fh is not None:
                            yield _parse_report(fh.read(), m.name, str(src))
            except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
                raise DataPrepError(f"corrupt or truncated archive ({e}); re-download it", file=str(src)) from None
        return
    folder = src / "ecgen-radiology" if (src / "ecgen-radiology").is_dir() else src
    for p in sorted(folder.glob("*.xml")):
        yield _parse_report(p.read_bytes(), p.relative_to(src).as_posix(), str(src))


def _r2gen_id(image_id: str) -> str:
    """``CXR1000_IM-0003-1001`` -> ``CXR1000_IM-0003`` (the study id R2Gen uses)."""
    return re.sub(r"-\d+$", "", image_id)


def canonical_image_id(image_id: str) -> str:
    """Undo a quirk of a few reports: ``CXR1_1_IM-0001-3001`` names the image ``CXR1_IM-0001-3001``."""
    return re.sub(r"^CXR(\d+)_\1_IM-", r"CXR\1_IM-", image_id)


def _uid_of(study_id: str) -> str:
    return study_id.split("_", 1)[0]


# -- images ----------------------------------------------------------------------------------------
class _PngIndex:
    """Finds IU PNGs below a folder under any of the published naming schemes."""

    def __init__(self, root: Path):
        self.root = root
        self.by_id: dict[str, str] = {}
        self.by_folder: dict[str, list[str]] = {}
        for dirpath, _, files in os.walk(root):
            for f in files:
                if not f.lower().endswith(".png"):
                    continue
                rel = (Path(dirpath) / f).relative_to(root).as_posix()
                stem = f[:-4]
                if stem.lower().endswith(".dcm"):
                    stem = stem[:-4]
                if not stem.startswith("CXR") and re.match(r"^\d+_IM-", stem):
                    stem = "CXR" + stem
                if stem.startswith("CXR"):
                    self.by_id.setdefault(stem, rel)
                parent = Path(dirpath).name
                if parent.startswith("CXR") and stem.isdigit():
                    self.by_folder.setdefault(parent, []).append(rel)
        for v in self.by_folder.values():
            v.sort(key=lambda r: int(Path(r).stem) if Path(r).stem.isdigit() else 0)

    def __len__(self) -> int:
        return len(self.by_id) + sum(len(v) for v in self.by_folder.values())


def read_views(metadata_csv: str | os.PathLike) -> dict[str, str]:
    """Image id -> normalised view from ``nlmcxr_dicom_metadata.csv(.gz)``."""
    views = {}
    for _, row in iter_csv(metadata_csv, required=("imageid", "View Position")):
        raw = (row["View Position"] or "").strip()
        v = normalize_view(raw)
        if v == "UNKNOWN" and "LAT" in raw.upper():
            v = "LATERAL"
        views[row["imageid"].strip()] = v
    return views


def read_r2gen_splits(splits_csv: str | os.PathLike) -> dict[str, str]:
    """R2Gen study id -> split from ``r2gen_splits.csv`` (columns ``id, split``)."""
    out = {}
    for line, row in iter_csv(splits_csv, required=("id", "split")):
        try:
            out[row["id"].strip()] = normalize_split(row["split"])
        except DataPrepError as e:
            raise DataPrepError(str(e).split(": ")[-1], file=str(splits_csv), line=line, field="split",
                                value=row["split"]) from None
    return out


# -- layouts ---------------------------------------------------------------------------------------
def _detect(source: Path) -> tuple[str, Path]:
    if not source.exists():
        raise DataPrepError(f"not found; expected {_EXPECTED}", file=str(source))
    if source.is_file():
        if source.suffix.lower() == ".json":
            return "r2gen", source
        if source.name.endswith((".tgz", ".tar.gz", ".tar")):
            return "xml", source
        raise UnknownLayoutError(f"unknown file type; expected {_EXPECTED}", file=str(source))
    if (source / "annotation.json").is_file():
        return "r2gen", source / "annotation.json"
    if (source / "ecgen-radiology").is_dir() or any(source.glob("*.xml")):
        return "xml", source
    for name in ("NLMCXR_reports.tgz", "NLMCXR_reports.tar.gz"):
        if (source / name).is_file():
            return "xml", source / name
    found = sorted(p.name for p in source.iterdir())[:12]
    raise UnknownLayoutError(f"no IU X-ray layout recognised; expected {_EXPECTED}; found {found}",
                             file=str(source))


def convert_iu_xray(source: str | os.PathLike, *, out: str | os.PathLike | None = None,
                    png_dir: str | os.PathLike | None = None, dicom_metadata: str | os.PathLike | None = None,
                    splits_csv: str | os.PathLike | None = None, reports: str | os.PathLike | None = None,
                    unlisted: str = "skip", skip_bad: bool = False, link_priors: bool = True,
                    progress: bool = True,
                    skip_log: SkipLog | None = None) -> tuple[list[StudyRecord], dict[str, Any]]:
    """Convert IU X-ray to study records (and write them to ``out`` as JSONL/Parquet when given).

    Returns ``(records, summary)``; ``summary["data_root"]`` is the folder image paths are relative to.
    """
    if unlisted not in UNLISTED_POLICIES:
        raise DataPrepError(f"must be one of {UNLISTED_POLICIES}", field="unlisted", value=unlisted)
    layout, path = _detect(Path(source))
    views = read_views(dicom_metadata) if dicom_metadata else {}
    splits = read_r2gen_splits(splits_csv) if splits_csv else None
    skips = skip_log if skip_log is not None else SkipLog()
    if layout == "xml":
        records, extra = _from_xml(path, png_dir, views, splits, unlisted, skip_bad, skips, progress)
        data_root = Path(png_dir) if png_dir else None
    else:
        records, extra, data_root = _from_r2gen(path, png_dir, reports, splits, unlisted, skip_bad, skips, progress)
    n_priors = _link_priors(records) if link_priors else 0
    summary = build_prepare_summary(DATASET, records, skips, data_root=data_root, priors_linked=n_priors,
                                    layout=layout, source=str(path), split_source="r2gen_splits.csv" if splits else
                                    ("annotation.json" if layout == "r2gen" else "hash(patient_id)"),
                                    views_known=sum(im.view != "UNKNOWN" for r in records for im in r.images), **extra)
    if out is not None:
        write_records(records, out)
        summary["out"] = str(out)
    return records, summary


def _split_for(ids: list[str], uid: str, splits: dict[str, str] | None, unlisted: str) -> str | None:
    if splits is None:
        return hash_split(uid)
    for i in ids:
        if i in splits:
            return splits[i]
    if unlisted == "train":
        return "train"
    if unlisted == "hash":
        return hash_split(uid)
    return None


def _from_xml(path: Path, png_dir, views, splits, unlisted, skip_bad, skips, progress):
    index = _PngIndex(Path(png_dir)) if png_dir else None
    if index is not None and len(index) == 0:
        raise UnknownLayoutError("no PNG files found below the image folder", file=str(png_dir))
    records: list[StudyRecord] = []
    n_reports = 0
    for rep in tqdm(iter_reports(path), desc="iu-xray reports", unit="report", disable=not progress):
        n_reports += 1
        uid = rep["uid"]
        study_ids = sorted({_r2gen_id(i) for i in rep["image_ids"]} | {_r2gen_id(canonical_image_id(i))
                                                                       for i in rep["image_ids"]})
        split = _split_for(study_ids, uid, splits, unlisted)
        if split is None:
            skips.add("not in the split file", uid)
            continue
        images: list[ImageRef] = []
        used_folders: set[str] = set()
        for iid in rep["image_ids"]:
            cid = canonical_image_id(iid)
            view = views.get(iid) or views.get(cid) or "UNKNOWN"
            if index is None:
                images.append(ImageRef(f"{iid}.png", view))
            elif iid in index.by_id or cid in index.by_id:
                images.append(ImageRef(index.by_id.get(iid) or index.by_id[cid], view))
            elif _r2gen_id(iid) in index.by_folder or _r2gen_id(cid) in index.by_folder:
                folder = _r2gen_id(iid) if _r2gen_id(iid) in index.by_folder else _r2gen_id(cid)
                if folder not in used_folders:  # R2Gen folders hold 0.png, 1.png: views unknown
                    used_folders.add(folder)
                    images.extend(ImageRef(rel, "UNKNOWN") for rel in index.by_folder[folder])
            else:
                err = BadImageError(f"image {iid} of report {uid} not found below the PNG folder",
                                    file=str(Path(png_dir) / f"{iid}.png"), field="image_ids", value=iid)
                fail_or_skip(skip_bad, skips, err, "image file missing", iid, kind="image")
        records.append(StudyRecord(
            study_id=uid, patient_id=uid, dataset=DATASET, split=split,
            images=images, indication=rep["indication"], comparison=rep["comparison"],
            findings=rep["findings"], impression=rep["impression"],
            meta={"mesh_major": rep["mesh_major"], "mesh_automatic": rep["mesh_automatic"],
                  "image_ids": rep["image_ids"], "r2gen_ids": study_ids, "source_file": rep["source_file"],
                  "images_verified": index is not None},
        ))
    if n_reports == 0:
        raise UnknownLayoutError(f"no XML reports found; expected {_EXPECTED}", file=str(path))
    return records, {"reports_parsed": n_reports}


def _from_r2gen(path: Path, png_dir, reports, splits, unlisted, skip_bad, skips, progress):
    try:
        ann = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataPrepError(f"unreadable annotation file ({e})", file=str(path)) from None
    if not isinstance(ann, dict) or not any(isinstance(v, list) for v in ann.values()):
        raise UnknownLayoutError('expected {"train": [...], "val": [...], "test": [...]} lists of '
                                 "{id, report, image_path, split}", file=str(path),
                                 value=sorted(ann)[:5] if isinstance(ann, dict) else type(ann).__name__)
    if png_dir:
        image_root = Path(png_dir)
    elif (path.parent / "images").is_dir():
        image_root = path.parent / "images"
    else:
        image_root = None
    xml = {r["uid"]: r for r in iter_reports(reports)} if reports else {}
    records: list[StudyRecord] = []
    for key, entries in ann.items():
        if not isinstance(entries, list):
            continue
        for i, e in enumerate(tqdm(entries, desc=f"iu-xray r2gen {key}", unit="study", disable=not progress)):
            where = f"{key}[{i}]"
            if not isinstance(e, dict) or not e.get("id"):
                raise DataPrepError("entry needs an 'id'", file=str(path), field=where,
                                    value=sorted(e)[:6] if isinstance(e, dict) else type(e).__name__)
            sid = str(e["id"])
            try:
                split = normalize_split(e.get("split") or key)
            except DataPrepError:
                raise DataPrepError("unknown split", file=str(path), field=f"{where}.split",
                                    value=e.get("split") or key) from None
            if splits is not None:
                split = splits.get(sid) or (split if unlisted == "train" else None)
                if split is None:
                    skips.add("not in the split file", sid)
                    continue
            paths = e.get("image_path") or []
            if isinstance(paths, str):
                paths = [paths]
            images = []
            for rel in paths:
                if image_root is not None and not (image_root / rel).is_file():
                    err = BadImageError(f"image of study {sid} not found", file=str(image_root / rel),
                                        field=f"{where}.image_path", value=rel)
                    fail_or_skip(skip_bad, skips, err, "image file missing", rel, kind="image")
                    continue
                images.append(ImageRef(str(rel), "UNKNOWN"))
            uid = _uid_of(sid)
            rep = xml.get(uid, {})
            records.append(StudyRecord(
                study_id=sid, patient_id=uid, dataset=DATASET, split=split, images=images,
                indication=rep.get("indication", ""), comparison=rep.get("comparison", ""),
                findings=collapse_whitespace(e.get("report")), impression=rep.get("impression", ""),
                meta={"mesh_major": rep.get("mesh_major", []), "mesh_automatic": rep.get("mesh_automatic", []),
                      "image_ids": rep.get("image_ids", []), "annotation_split": key,
                      "images_verified": image_root is not None},
            ))
    extra = {"reports_parsed": len(records), "xml_reports_joined": sum(1 for r in records if _uid_of(r.study_id) in xml)}
    return records, extra, image_root
