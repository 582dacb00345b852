"""Fake dataset trees in the published layouts, a few patients each with tiny random images:
MIMIC-CXR-JPG (make_mimic), CheXpert Plus (make_chexpert_plus) and ReXGradient-160K (make_rexgradient)."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import numpy as np
from PIL import Image

from reward.constants import CHEXPERT_LABELS

RNG = np.random.default_rng(0)


def tiny_image(path: Path, size=(40, 32)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(RNG.integers(0, 255, (size[1], size[0]), dtype=np.uint8)).save(path)


def write_csv(path: Path, header: list[str], rows: list[dict], gz: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fh = gzip.open(path, "wt", newline="", encoding="utf-8") if gz else open(path, "w", newline="", encoding="utf-8")
    with fh:
        w = csv.DictWriter(fh, fieldnames=header)
        w.writeheader()
        for r in rows:
            w.writerow(r)


# == MIMIC-CXR-JPG ===================================================================================
# subject -> [(study, StudyDate, StudyTime, [(dicom_id, ViewPosition)], split)]
MIMIC_STUDIES = {
    "10000032": [("50414267", "21800506", "152345.859", [("d1a", "PA"), ("d1b", "LATERAL")], "train"),
                 ("53189527", "21800626", "165123.0", [("d2a", "PA"), ("d2b", "LL")], "train"),
                 ("53911762", "21800723", "80630.5", [("d3a", "AP")], "train"),
                 ("50000001", "21800801", "093000.0", [("d4a", "AP AXIAL"), ("d4b", "")], "train")],
    "10000764": [("57375967", "21321014", "235214.1", [("d5a", "AP")], "validate"),
                 ("51000000", "21321014", "100000.0", [("d6a", "PA"), ("d6b", "LATERAL")], "validate")],
    "11000011": [("56699142", "21500101", "120000.0", [("d7a", "PA"), ("d7b", "LATERAL")], "test")],
}


def mimic_report(study: str, with_headers: bool = True) -> str:
    if not with_headers:
        return f"FINAL REPORT\n CHEST RADIOGRAPHS\n body text for {study}\n\n Conclusion line for {study}.\n"
    return (f"                                 FINAL REPORT\n EXAMINATION:  CHEST (PA AND LAT)\n\n"
            f" INDICATION:  ___F with cough {study}\n\n TECHNIQUE:  Chest PA and lateral\n\n"
            f" COMPARISON:  None.\n\n FINDINGS:\n\n Lungs are clear in study\n {study}.\n\n"
            f" IMPRESSION:\n\n No acute process {study}.\n")


def make_mimic(root: Path, *, reports_separate: bool = False, gz: bool = True) -> Path:
    meta_rows, split_rows, chex_rows = [], [], []
    report_root = root / "mimic-cxr-reports" if reports_separate else root
    for subject, studies in MIMIC_STUDIES.items():
        for study, date, time, images, split in studies:
            for dicom, view in images:
                tiny_image(root / f"files/p{subject[:2]}/p{subject}/s{study}/{dicom}.jpg")
                meta_rows.append({"dicom_id": dicom, "subject_id": subject, "study_id": study,
                                  "PerformedProcedureStepDescription": "CHEST", "ViewPosition": view,
                                  "Rows": 32, "Columns": 40, "StudyDate": date, "StudyTime": time})
                split_rows.append({"dicom_id": dicom, "study_id": study, "subject_id": subject, "split": split})
            rp = report_root / f"files/p{subject[:2]}/p{subject}/s{study}.txt"
            rp.parent.mkdir(parents=True, exist_ok=True)
            rp.write_text(mimic_report(study, with_headers=study != "53911762"))
            labels = {k: "" for k in CHEXPERT_LABELS}
            labels.update({"Cardiomegaly": "1.0", "Edema": "-1.0", "No Finding": "0.0"})
            chex_rows.append({"subject_id": subject, "study_id": study, **labels})
    sfx = ".csv.gz" if gz else ".csv"
    write_csv(root / f"mimic-cxr-2.0.0-metadata{sfx}", list(meta_rows[0]), meta_rows, gz)
    write_csv(root / f"mimic-cxr-2.0.0-split{sfx}", list(split_rows[0]), split_rows, gz)
    write_csv(root / f"mimic-cxr-2.0.0-chexpert{sfx}", ["subject_id", "study_id", *CHEXPERT_LABELS], chex_rows, gz)
    return root


# == CheXpert Plus ===================================================================================
CXP_COLUMNS = ["path_to_image", "path_to_dcm", "frontal_lateral", "ap_pa", "deid_patient_id",
               "patient_report_date_order", "report", "section_narrative", "section_clinical_history",
               "section_history", "section_comparison", "section_technique", "section_procedure_comments",
               "section_findings", "section_impression", "section_end_of_impression", "section_summary",
               "section_accession_number", "age", "sex", "race", "ethnicity", "interpreter_needed",
               "insurance_type", "recent_bmi", "deceased", "split"]
# (patient, order, study dir, [(view file, frontal_lateral, ap_pa)], split)
CXP_STUDIES = [
    ("patient00001", 1, "train/patient00001/study1", [("view1_frontal", "Frontal", "PA"), ("view2_lateral", "Lateral", "")], "train"),
    ("patient00001", 2, "train/patient00001/study2", [("view1_frontal", "Frontal", "AP")], "train"),
    ("patient00001", 3, "train/patient00001/study3", [("view1_frontal", "Frontal", "")], "train"),
    ("patient00002", 1, "valid/patient00002/study1", [("view1_frontal", "Frontal", "AP"), ("view2_lateral", "Lateral", "LL")], "valid"),
]


def make_chexpert_plus(root: Path) -> Path:
    rows = []
    for pid, order, sdir, views, split in CXP_STUDIES:
        for vfile, fl, appa in views:
            tiny_image(root / "PNG" / sdir / f"{vfile}.png")
            rows.append({
                "path_to_image": f"{sdir}/{vfile}.jpg", "path_to_dcm": f"{sdir}/{vfile}.dcm",
                "frontal_lateral": fl, "ap_pa": appa, "deid_patient_id": pid,
                "patient_report_date_order": str(order), "report": f"NARRATIVE ... whole report {pid} {order}",
                "section_narrative": f"Chest {len(views)} View", "section_clinical_history": f"history {pid} {order}",
                "section_history": "", "section_comparison": "" if order == 1 else f"study {order - 1}",
                "section_technique": "", "section_procedure_comments": "",
                "section_findings": "" if order == 3 else f"findings {pid} {order}",
                "section_impression": f"impression {pid} {order}",
                "section_end_of_impression": "I have personally reviewed the images.",
                "section_summary": "1-NORMAL", "section_accession_number": f"{order}99",
                "age": "62.0", "sex": "Female", "race": "White", "ethnicity": "Non-Hispanic/Non-Latino",
                "interpreter_needed": "No", "insurance_type": "Private Insurance", "recent_bmi": "22.2",
                "deceased": "No", "split": split})
    rows.reverse()  # rows of one study need not be adjacent or ordered
    write_csv(root / "df_chexpert_plus_240401.csv", CXP_COLUMNS, rows)
    return root


# == ReXGradient-160K ================================================================================
REX_COLUMNS = ["id", "PatientID", "PatientAge", "PatientSex", "StudyDate", "StudyInstanceUid", "AccessionNumber",
               "StudyDescription", "Indication", "Comparison", "Findings", "Impression", "ImagePath",
               "ImageViewPosition"]
# split file -> [(id, patient, date, [(image view in JSON/CSV)])]
REX_STUDIES = {
    "train": [("GRDN1_A1_1.2.1", "GRDN1", "20200101", ["POSTERO_ANTERIOR", "LATERAL"]),
              ("GRDN2_A2_1.2.2", "GRDN2", "20190505", ["ANTERO_POSTERIOR"])],
    "valid": [("GRDN1_A3_1.2.3", "GRDN1", "20200301", ["PA"])],
    "test": [("GRDN1_A4_1.2.4", "GRDN1", "20200301", ["AP", "LL"])],
}


def make_rexgradient(root: Path, with_json: bool = True) -> Path:
    for split, studies in REX_STUDIES.items():
        rows, js = [], {}
        for sid, pid, date, views in studies:
            acc, uid = sid.split("_")[1], sid.split("_")[2]
            paths = []
            for i, _ in enumerate(views):
                rel = f"deid_png/{pid}/{acc}/studies/{uid}/series/{uid}.{i}/instances/{uid}.{i}.1.png"
                tiny_image(root / rel)
                paths.append("../" + rel)
            rows.append({"id": sid, "PatientID": pid, "PatientAge": "045Y", "PatientSex": "F", "StudyDate": date,
                         "StudyInstanceUid": uid, "AccessionNumber": acc, "StudyDescription": "XR CHEST 2V",
                         "Indication": f"cough {sid}", "Comparison": "None.", "Findings": f"findings {sid}",
                         "Impression": f"impression {sid}", "ImagePath": str(paths),
                         "ImageViewPosition": str(["UNKNOWN"] * len(views)) if with_json else str(views)})
            js[sid] = {"ImagePath": paths, "ImageViewPosition": views}
        write_csv(root / "metadata" / f"{split}_metadata.csv", REX_COLUMNS, rows)
        if with_json:
            (root / "metadata" / f"{split}_metadata_view_position.json").write_text(json.dumps(js))
    return root
