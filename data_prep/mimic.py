"""MIMIC-CXR-JPG -> study records.

Expected layout (PhysioNet ``mimic-cxr-jpg/2.x``)::

    root/files/p10/p10000032/s50414267/02aa804e-bde0afdd-112c0b34-7bc16630-4e384014.jpg
    root/mimic-cxr-2.0.0-metadata.csv[.gz]   dicom_id, subject_id, study_id, ViewPosition, StudyDate, StudyTime, ...
    root/mimic-cxr-2.0.0-split.csv[.gz]      dicom_id, study_id, subject_id, split   (optional: else hashed)
    root/mimic-cxr-2.0.0-chexpert.csv[.gz]   subject_id, study_id, <14 CheXpert labels>  (optional)

Free-text reports ``s50414267.txt`` sit either beside the study folders
(``root/files/p10/p10000032/s50414267.txt``) or in a separate reports tree
(``mimic-cxr-reports/files/...``, given as ``reports_root`` or found next to ``root``). Each report
is split with :func:`data_prep.sections.parse_sections`; a report without FINDINGS/IMPRESSION
headers gets its last paragraph as the impression (``meta.impression_source``). Images come from
the metadata CSV and must exist on disk (``image_ext=".dcm"`` reads the DICOM release instead, given
the JPG release's metadata CSV). Priors are linked per patient by StudyDate + StudyTime.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tqdm import tqdm

from cxr_io import not_utf8
from data_prep._util import (
    SkipLog,
    build_prepare_summary,
    collapse_whitespace,
    fail_or_skip,
    find_first,
    hash_split,
    iter_csv,
)
from data_prep.errors import BadImageError, DataPrepError, UnknownLayoutError
from data_prep.schema import ImageRef, StudyRecord, normalize_split, normalize_view, write_records
from data_prep.schema import link_priors as _link_priors
from data_prep.sections import last_paragraph_impression, parse_sections
from reward.constants import CHEXPERT_LABELS

DATASET = "mimic_cxr"
METADATA = "mimic-cxr-2.0.0-metadata.csv"
SPLIT = "mimic-cxr-2.0.0-split.csv"
CHEXPERT = "mimic-cxr-2.0.0-chexpert.csv"
_EXPECTED = (f"a MIMIC-CXR-JPG folder with files/p1x/p1xxxxxxx/s5xxxxxxx/*.jpg and {METADATA}[.gz] "
             f"(optionally {SPLIT}[.gz], {CHEXPERT}[.gz])")


def study_time(date: str, time: str) -> str:
    """``"21800506"``, ``"152345.859"`` -> ``"2180-05-06T15:23:45.859"`` (sortable ISO-like text)."""
    d = str(date).strip().split(".")[0]
    if len(d) != 8 or not d.isdigit():
        raise ValueError(f"StudyDate {date!r} is not YYYYMMDD")
    t = str(time).strip()
    if not t:
        return f"{d[:4]}-{d[4:6]}-{d[6:]}"
    t = f"{float(t):010.3f}"
    return f"{d[:4]}-{d[4:6]}-{d[6:]}T{t[:2]}:{t[2:4]}:{t[4:]}"


def image_relpath(subject_id: str, study_id: str, dicom_id: str, ext: str = ".jpg") -> str:
    return f"files/p{subject_id[:2]}/p{subject_id}/s{study_id}/{dicom_id}{ext}"


def report_relpath(subject_id: str, study_id: str) -> str:
    return f"files/p{subject_id[:2]}/p{subject_id}/s{study_id}.txt"


def _report_roots(root: Path, reports_root: str | os.PathLike | None) -> list[Path]:
    if reports_root is not None:
        rr = Path(reports_root)
        if not rr.is_dir():
            raise DataPrepError("reports folder not found", file=str(rr))
        # accept both ".../mimic-cxr-reports" and ".../mimic-cxr-reports/files"
        return [rr.parent if rr.name == "files" else rr]
    cands = [root, root / "mimic-cxr-reports", root.parent / "mimic-cxr-reports"]
    return [c for c in cands if (c / "files").is_dir()]


def _label(value: str, file: str, line: int, name: str) -> float | None:
    v = (value or "").strip()
    if v == "":
        return None
    try:
        f = float(v)
    except ValueError:
        raise DataPrepError("label must be 1, 0, -1 or blank", file=file, line=line, field=name, value=v) from None
    if f not in (1.0, 0.0, -1.0):
        raise DataPrepError("label must be 1, 0, -1 or blank", file=file, line=line, field=name, value=v)
    return f


def read_chexpert_labels(path: str | os.PathLike) -> dict[str, dict[str, float | None]]:
    """study_id -> {CheXpert label: 1/0/-1/None} from ``mimic-cxr-2.0.0-chexpert.csv(.gz)``."""
    out = {}
    for line, row in iter_csv(path, required=("study_id",) + CHEXPERT_LABELS):
        out[row["study_id"].strip()] = {k: _label(row[k], str(path), line, k) for k in CHEXPERT_LABELS}
    return out


def _locate(root: Path, metadata_csv, split_csv, chexpert_csv) -> tuple[Path, Path | None, Path | None]:
    """The metadata, split and CheXpert-label CSVs of a MIMIC-CXR-JPG folder (given ones first); a folder that
    is not one is an error naming what it holds."""
    if not root.is_dir():
        raise DataPrepError(f"not a folder; expected {_EXPECTED}", file=str(root))
    if not (root / "files").is_dir():
        found = sorted(p.name for p in root.iterdir())[:12]
        raise UnknownLayoutError(f"no files/ folder; expected {_EXPECTED}; found {found}", file=str(root))
    meta_path = Path(metadata_csv) if metadata_csv else find_first(root, [METADATA])
    if meta_path is None or not meta_path.is_file():
        found = sorted(p.name for p in root.iterdir())[:12]
        raise UnknownLayoutError(f"metadata CSV not found; expected {_EXPECTED}; found {found}", file=str(root))
    split_path = Path(split_csv) if split_csv else find_first(root, [SPLIT])
    chex_path = Path(chexpert_csv) if chexpert_csv else find_first(root, [CHEXPERT])
    return meta_path, split_path, chex_path


def _read_metadata(meta_path: Path, progress: bool) -> dict[str, dict[str, Any]]:
    """The metadata CSV -> studies: ``{study: {subject, images: [(dicom, view)], time (earliest)}}``."""
    studies: dict[str, dict[str, Any]] = {}
    for line, row in tqdm(iter_csv(meta_path, required=("dicom_id", "subject_id", "study_id", "ViewPosition",
                                                         "StudyDate", "StudyTime")),
                          desc="mimic metadata", unit="image", disable=not progress):
        subject, study, dicom = row["subject_id"].strip(), row["study_id"].strip(), row["dicom_id"].strip()
        if not (subject.isdigit() and study.isdigit() and dicom):
            raise DataPrepError("subject_id/study_id must be numeric and dicom_id non-empty",
                                file=str(meta_path), line=line, field="study_id", value=study)
        try:
            t = study_time(row["StudyDate"], row["StudyTime"])
        except ValueError:
            raise DataPrepError("bad StudyDate/StudyTime", file=str(meta_path), line=line, field="StudyDate",
                                value=row["StudyDate"]) from None
        st = studies.setdefault(study, {"subject": subject, "images": [], "time": t})
        if st["subject"] != subject:
            raise DataPrepError(f"study listed under two subjects ({st['subject']}, {subject})",
                                file=str(meta_path), line=line, field="subject_id", value=subject)
        st["time"] = min(st["time"], t)
        st["images"].append((dicom, normalize_view(row["ViewPosition"])))
    if not studies:
        raise UnknownLayoutError(f"metadata CSV lists no images; expected {_EXPECTED}", file=str(meta_path))
    return studies


def _read_splits(split_path: Path | None) -> dict[str, str]:
    """study_id -> split from the split CSV ({} without one)."""
    splits: dict[str, str] = {}
    if split_path is not None:
        for line, row in iter_csv(split_path, required=("study_id", "split")):
            try:
                splits[row["study_id"].strip()] = normalize_split(row["split"])
            except DataPrepError:
                raise DataPrepError("unknown split", file=str(split_path), line=line, field="split",
                                    value=row["split"]) from None
    return splits


def _read_report(root: Path, report_roots: list[Path], study: str, rel_report: str, skip_bad: bool,
                 skips: SkipLog) -> str | None:
    """The study's report text; None when it is missing, unreadable or not UTF-8 and skipped (else an error)."""
    report_file = next((r / rel_report for r in report_roots if (r / rel_report).is_file()), None)
    if report_file is None:
        where = report_roots[0] / rel_report if report_roots else root / rel_report
        err = DataPrepError(f"report of study {study} not found (looked in {[str(r) for r in report_roots]})",
                            file=str(where))
        fail_or_skip(skip_bad, skips, err, "report missing", rel_report)
        return None
    try:
        return report_file.read_bytes().decode("utf-8")
    except OSError as e:
        fail_or_skip(skip_bad, skips, DataPrepError(f"unreadable report ({e.strerror})", file=str(report_file)),
                     "report unreadable", rel_report)
    except UnicodeDecodeError:  # as the CheXpert Plus CSV: refused (or counted with skip_bad), never "\ufffd"
        fail_or_skip(skip_bad, skips, not_utf8(report_file, DataPrepError), "report not UTF-8", rel_report)
    return None


def _study_images(root: Path, subject: str, study: str, st: dict[str, Any], image_ext: str, check_images: bool,
                  skip_bad: bool, skips: SkipLog) -> list[ImageRef]:
    """The study's images (those on disk when ``check_images``; a missing one is an error or skipped)."""
    images = []
    for dicom, view in st["images"]:
        rel = image_relpath(subject, study, dicom, image_ext)
        if check_images and not (root / rel).is_file():
            err = BadImageError(f"image of study {study} not found (partial download? use skip_bad to skip)",
                                file=str(root / rel), field="dicom_id", value=dicom)
            fail_or_skip(skip_bad, skips, err, "image file missing", rel, kind="image")
            continue
        images.append(ImageRef(rel, view))
    return images


def _study_record(study: str, st: dict[str, Any], text: str, rel_report: str, images: list[ImageRef],
                  splits: dict[str, str], labels: dict[str, dict]) -> tuple[StudyRecord, bool]:
    """The study's record from its report's sections; True when the impression is the report's last paragraph."""
    subject = st["subject"]
    sec = parse_sections(text)
    findings = sec.get("findings") or sec.get("findings_impression", "")
    impression = sec.get("impression", "")
    meta: dict[str, Any] = {"report_file": rel_report, "sections": sorted(sec)}
    fallback = False
    if not findings and not impression:
        impression = last_paragraph_impression(text)
        meta["impression_source"] = "last_paragraph"
        fallback = True
    for key in ("examination", "history", "addendum", "wet_read", "recommendation"):
        if sec.get(key):
            meta[key] = sec[key]
    split = splits.get(study) or hash_split(subject)
    return StudyRecord(
        study_id=study, patient_id=subject, dataset=DATASET, split=split, study_time=st["time"],
        images=images, indication=collapse_whitespace(sec.get("indication") or sec.get("history")),
        technique=collapse_whitespace(sec.get("technique")), comparison=collapse_whitespace(sec.get("comparison")),
        findings=collapse_whitespace(findings), impression=collapse_whitespace(impression),
        labels=labels.get(study), meta=meta,
    ), fallback


def convert_mimic(root: str | os.PathLike, *, out: str | os.PathLike | None = None,
                  reports_root: str | os.PathLike | None = None, metadata_csv: str | os.PathLike | None = None,
                  split_csv: str | os.PathLike | None = None, chexpert_csv: str | os.PathLike | None = None,
                  image_ext: str = ".jpg", check_images: bool = True, skip_bad: bool = False,
                  link_priors: bool = True, progress: bool = True,
                  skip_log: SkipLog | None = None) -> tuple[list[StudyRecord], dict[str, Any]]:
    """Convert MIMIC-CXR-JPG to study records; returns ``(records, summary)``, writes ``out`` when given."""
    root = Path(root)
    meta_path, split_path, chex_path = _locate(root, metadata_csv, split_csv, chexpert_csv)
    report_roots = _report_roots(root, reports_root)
    skips = skip_log if skip_log is not None else SkipLog()
    studies = _read_metadata(meta_path, progress)  # 1. metadata -> studies
    splits = _read_splits(split_path)  # 2. splits and labels
    labels = read_chexpert_labels(chex_path) if chex_path is not None else {}
    records: list[StudyRecord] = []  # 3. reports and images
    fallback_impressions = 0
    for study, st in tqdm(sorted(studies.items()), desc="mimic studies", unit="study", disable=not progress):
        subject = st["subject"]
        rel_report = report_relpath(subject, study)
        text = _read_report(root, report_roots, study, rel_report, skip_bad, skips)
        if text is None:
            continue
        images = _study_images(root, subject, study, st, image_ext, check_images, skip_bad, skips)
        if not images:
            skips.add("no images on disk", f"s{study}")
            continue
        record, fallback = _study_record(study, st, text, rel_report, images, splits, labels)
        records.append(record)
        fallback_impressions += fallback
    n_priors = _link_priors(records) if link_priors else 0
    summary = build_prepare_summary(DATASET, records, skips, data_root=root, priors_linked=n_priors,
                                    metadata_csv=str(meta_path), split_source=str(split_path) if split_path else "hash(patient_id)",
                                    split_hashed=sum(1 for r in records if r.study_id not in splits),
                                    labels_source=str(chex_path) if chex_path else None,
                                    with_labels=sum(1 for r in records if r.labels is not None),
                                    impression_from_last_paragraph=fallback_impressions,
                                    report_roots=[str(r) for r in report_roots])
    if out is not None:
        write_records(records, out)
        summary["out"] = str(out)
    return records, summary
