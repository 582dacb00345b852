"""CheXpert Plus -> study records.

Expected: ``df_chexpert_plus_240401.csv`` (one row per image; 27 columns: ``path_to_image``,
``path_to_dcm``, ``frontal_lateral``, ``ap_pa``, ``deid_patient_id``, ``patient_report_date_order``,
``report``, ``section_narrative``, ``section_clinical_history``, ``section_history``,
``section_comparison``, ``section_technique``, ``section_procedure_comments``, ``section_findings``,
``section_impression``, ``section_end_of_impression``, ``section_summary``, ``section_accession_number``,
``age``, ``sex``, ``race``, ``ethnicity``, ``interpreter_needed``, ``insurance_type``, ``recent_bmi``,
``deceased``, ``split``), given as the file or a folder holding it.

One study per (``deid_patient_id``, ``patient_report_date_order``); its images are that group's rows.
Priors link each study to the same patient's previous report order. With ``image_root`` the image
files are checked: ``path_to_image`` as listed, or with a ``.png`` suffix (the PNG release keeps the
``.jpg`` names in the CSV); ``use_dicom=True`` takes ``path_to_dcm`` instead.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tqdm import tqdm

from data_prep._util import SkipLog, build_prepare_summary, collapse_whitespace, fail_or_skip, iter_csv
from data_prep.errors import BadImageError, DataPrepError, UnknownLayoutError
from data_prep.schema import ImageRef, StudyRecord, normalize_split, write_records
from data_prep.schema import link_priors as _link_priors

DATASET = "chexpert_plus"
CSV_NAME = "df_chexpert_plus_240401.csv"
REQUIRED = ("path_to_image", "deid_patient_id", "patient_report_date_order", "section_findings",
            "section_impression", "split")
DEMOGRAPHICS = ("age", "sex", "race", "ethnicity", "interpreter_needed", "insurance_type", "recent_bmi",
                "deceased")
_EXPECTED = f"{CSV_NAME} (or a folder holding it) with columns {list(REQUIRED)}"


def view_of(frontal_lateral: str, ap_pa: str) -> str:
    """CheXpert's two view columns -> PA/AP/LATERAL/LL/UNKNOWN."""
    fl = (frontal_lateral or "").strip().lower()
    ap = (ap_pa or "").strip().upper()
    if fl == "lateral":
        return "LL" if ap == "LL" else "LATERAL"
    if ap in ("AP", "PA"):
        return ap
    if ap == "LL":
        return "LL"
    return "UNKNOWN"


def _find_csv(source: Path) -> Path:
    if source.is_file():
        return source
    if source.is_dir():
        for cand in (source / CSV_NAME, source / (CSV_NAME + ".gz")):
            if cand.is_file():
                return cand
        others = sorted(source.glob("df_chexpert_plus*.csv*"))
        if others:
            return others[0]
        found = sorted(p.name for p in source.iterdir())[:12]
        raise UnknownLayoutError(f"no CheXpert Plus CSV; expected {_EXPECTED}; found {found}", file=str(source))
    raise DataPrepError(f"not found; expected {_EXPECTED}", file=str(source))


def _number(value: str, file: str, line: int, field: str) -> int:
    try:
        return int(float(value))
    except (TypeError, ValueError):
        raise DataPrepError("must be a number", file=file, line=line, field=field, value=value) from None


def _optional(value: str) -> Any:
    v = collapse_whitespace(value)
    if v == "":
        return None
    try:
        f = float(v)
        return int(f) if f.is_integer() and "." not in v else f
    except ValueError:
        return v


def convert_chexpert_plus(source: str | os.PathLike, *, out: str | os.PathLike | None = None,
                          image_root: str | os.PathLike | None = None, use_dicom: bool = False,
                          skip_bad: bool = False, link_priors: bool = True,
                          progress: bool = True,
                          skip_log: SkipLog | None = None) -> tuple[list[StudyRecord], dict[str, Any]]:
    """Convert CheXpert Plus to study records; returns ``(records, summary)``, writes ``out`` when given."""
    csv_path = _find_csv(Path(source))
    root = Path(image_root) if image_root is not None else None
    if root is not None and not root.is_dir():
        raise DataPrepError("image folder not found", file=str(root))
    path_col = "path_to_dcm" if use_dicom else "path_to_image"
    required = REQUIRED + (("path_to_dcm",) if use_dicom else ())
    skips = skip_log if skip_log is not None else SkipLog()
    groups: dict[tuple[str, int], dict[str, Any]] = {}
    file = str(csv_path)
    for line, row in tqdm(iter_csv(csv_path, required=required), desc="chexpert-plus rows", unit="row",
                          disable=not progress):
        pid = collapse_whitespace(row["deid_patient_id"])
        if not pid:
            raise DataPrepError("empty patient id", file=file, line=line, field="deid_patient_id")
        order = _number(row["patient_report_date_order"], file, line, "patient_report_date_order")
        g = groups.get((pid, order))
        if g is None:
            try:
                split = normalize_split(row["split"])
            except DataPrepError:
                raise DataPrepError("unknown split", file=file, line=line, field="split", value=row["split"]) from None
            g = groups[(pid, order)] = {"row": row, "line": line, "split": split, "images": []}
        rel = collapse_whitespace(row[path_col])
        if not rel:
            raise DataPrepError("empty image path", file=file, line=line, field=path_col)
        if root is not None:
            found = rel if (root / rel).is_file() else None
            if found is None and not use_dicom and (root / rel).with_suffix(".png").is_file():
                found = Path(rel).with_suffix(".png").as_posix()
            if found is None:
                err = BadImageError(f"image listed on line {line} not found", file=str(root / rel), field=path_col,
                                    value=rel)
                fail_or_skip(skip_bad, skips, err, "image file missing", rel, kind="image")
                continue
            rel = found
        g["images"].append(ImageRef(rel, view_of(row.get("frontal_lateral", ""), row.get("ap_pa", ""))))
    if not groups:
        raise UnknownLayoutError(f"the CSV has no rows; expected {_EXPECTED}", file=file)

    records: list[StudyRecord] = []
    for (pid, order), g in sorted(groups.items()):
        if not g["images"]:
            skips.add("no images on disk", f"{pid}_r{order}")
            continue
        row = g["row"]
        rel0 = collapse_whitespace(row["path_to_image"])
        meta: dict[str, Any] = {"report_order": order, "study_dir": str(Path(rel0).parent.as_posix()),
                                "csv_line": g["line"]}
        for col, key in (("section_narrative", "examination"), ("section_summary", "summary"),
                         ("section_procedure_comments", "procedure_comments"),
                         ("section_accession_number", "accession_number")):
            v = collapse_whitespace(row.get(col))
            if v:
                meta[key] = v
        for col in DEMOGRAPHICS:
            v = _optional(row.get(col))
            if v is not None:
                meta[col] = v
        records.append(StudyRecord(
            study_id=f"{pid}_r{order}", patient_id=pid, dataset=DATASET, split=g["split"],
            study_time=f"{order:06d}", images=sorted(g["images"], key=lambda im: im.path),
            indication=collapse_whitespace(row.get("section_clinical_history") or row.get("section_history")),
            technique=collapse_whitespace(row.get("section_technique")), comparison=collapse_whitespace(row.get("section_comparison")),
            findings=collapse_whitespace(row["section_findings"]), impression=collapse_whitespace(row["section_impression"]),
            meta=meta,
        ))
    n_priors = _link_priors(records) if link_priors else 0
    summary = build_prepare_summary(DATASET, records, skips, data_root=root, priors_linked=n_priors, csv=file,
                                    image_column=path_col)
    if out is not None:
        write_records(records, out)
        summary["out"] = str(out)
    return records, summary
