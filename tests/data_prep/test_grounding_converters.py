"""Box converters (data_prep.grounding): the real NIH, ChestX-Det and RadFact files in ../shared/data/boxes
convert to study records and back without loss; VinDr-CXR and MS-CXR on small fixtures written here."""

from __future__ import annotations

import csv
import json

import pytest
from PIL import Image

from data_prep.errors import DataPrepError, UnknownLayoutError
from data_prep.grounding import (
    MS_CXR_COLUMNS,
    VINDR_COLUMNS,
    chestx_det_to_records,
    ms_cxr_rows,
    ms_cxr_to_records,
    nih_bbox_rows,
    nih_bbox_to_records,
    radfact_examples_to_records,
    to_chestx_det,
    to_radfact_examples,
    vindr_rows,
    vindr_to_records,
    write_csv_rows,
)
from data_prep.schema import read_records, write_records
from tests.builders.grounding import MS_CXR, SIZES, VINDR, nih_subset
from tests.builders.repo import require_shared


def _through_files(records, tmp_path, suffix=".jsonl"):
    """Records written and read back (so the round trip includes the record files)."""
    p = tmp_path / f"records{suffix}"
    write_records(records, p)
    return read_records(p)


def test_nih_bbox_list_round_trip(tmp_path):
    src = require_shared("boxes", "nih_bbox_list_2017.csv")
    recs = nih_bbox_to_records(src)
    assert len(recs) == 880 and sum(len(r.images[0].boxes) for r in recs) == 984
    labels = {b["label"] for r in recs for b in r.images[0].boxes}
    assert labels == {"Atelectasis", "Cardiomegaly", "Effusion", "Infiltrate", "Mass", "Nodule", "Pneumonia",
                      "Pneumothorax"}
    r0 = next(r for r in recs if r.study_id == "00013118_008")
    b0 = r0.images[0].boxes[0]
    assert r0.patient_id == "00013118" and r0.images[0].path == "images/00013118_008.png"
    assert b0["x_min"] == pytest.approx(225.0847458 / 1024) and b0["x_max"] == pytest.approx((225.0847458 + 86.77966102) / 1024)
    back = nih_bbox_rows(_through_files(recs, tmp_path, ".parquet"))
    with open(src, encoding="utf-8-sig", newline="") as fh:
        original = list(csv.reader(fh))
    assert back[0] == original[0]
    assert sorted(map(tuple, back[1:])) == sorted(map(tuple, original[1:]))  # every number as printed
    out = tmp_path / "nih.csv"
    write_csv_rows(back, out)
    assert sorted(out.read_text().splitlines()[1:]) == sorted(src.read_text(encoding="utf-8-sig").splitlines()[1:])


def test_nih_sizes_come_from_stand_in_images(tmp_path):
    sub, lines, images, names = nih_subset(tmp_path, 6)
    for n in names:  # stand-ins at the stated size; one at twice the size to see the size is read from the file
        Image.new("L", (2048, 2048) if n == names[0] else (1024, 1024)).save(images / n)
    recs = nih_bbox_to_records(sub, images_dir=images)
    full = {r.study_id: r for r in nih_bbox_to_records(sub)}
    first = recs[0].images[0].boxes[0]
    assert first["x_min"] == full[recs[0].study_id].images[0].boxes[0]["x_min"] / 2
    assert [r.images[0].boxes for r in recs[1:]] == [full[r.study_id].images[0].boxes for r in recs[1:]]
    assert sorted(nih_bbox_rows(recs, images_dir=images)[1:]) == sorted(ln.split(",") for ln in lines[1:])
    Image.new("L", (512, 512)).save(images / names[0])  # too small for its box: the record is refused
    with pytest.raises(DataPrepError, match=r"\[0, 1\]") as e:
        nih_bbox_to_records(sub, images_dir=images)
    assert e.value.line == 2 and e.value.field.startswith("images[0].boxes[0].")
    Image.new("L", (2048, 2048)).save(images / names[0])
    (images / names[1]).unlink()
    with pytest.raises(DataPrepError, match="image not found") as e:
        nih_bbox_to_records(sub, images_dir=images)
    assert names[1] in str(e.value)


def test_nih_rejects_other_layouts(tmp_path):
    p = tmp_path / "x.csv"
    p.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(UnknownLayoutError, match="BBox_List_2017"):
        nih_bbox_to_records(p)
    p.write_text("Image Index,Finding Label,Bbox [x,y,w,h]\nx.png,Mass,1,2,three,4\n")
    with pytest.raises(DataPrepError) as e:
        nih_bbox_to_records(p)
    assert e.value.line == 2


def test_chestx_det_round_trip(tmp_path):
    src = require_shared("boxes", "chestx_det_test.json")
    recs = chestx_det_to_records(src)
    assert len(recs) == 553 and sum(len(r.images[0].boxes) for r in recs) == 1734
    assert len({b["label"] for r in recs for b in r.images[0].boxes}) == 13
    assert sum(1 for r in recs if r.images[0].boxes == []) == 64  # read, nothing found (not "not annotated")
    poly = next(b for r in recs for b in r.images[0].boxes if b["polygon"])
    assert all(0 <= v <= 1 for pt in poly["polygon"] for v in pt)
    assert to_chestx_det(_through_files(recs, tmp_path)) == json.loads(src.read_text())
    assert to_chestx_det(_through_files(recs, tmp_path, ".parquet")) == json.loads(src.read_text())


def test_chestx_det_with_stand_in_images(tmp_path):
    src = require_shared("boxes", "chestx_det_test.json")
    data = json.loads(src.read_text())[:4]
    sub = tmp_path / "sub.json"
    sub.write_text(json.dumps(data))
    for item in data:
        Image.new("L", (1024, 1024)).save(tmp_path / item["file_name"])
    recs = chestx_det_to_records(sub, images_dir=tmp_path)
    assert to_chestx_det(recs, images_dir=tmp_path) == data == to_chestx_det(chestx_det_to_records(sub))


def test_radfact_examples_round_trip(tmp_path):
    src = require_shared("boxes", "radfact_grounded_reporting_examples.json")
    recs = radfact_examples_to_records(src)
    assert len(recs) == 20 and all(r.grounded_findings for r in recs)
    assert any(g["boxes"] is None for r in recs for g in r.grounded_findings)
    assert recs[0].findings.startswith(recs[0].grounded_findings[0]["text"])
    assert to_radfact_examples(_through_files(recs, tmp_path)) == json.loads(src.read_text())


def test_vindr_readers_and_no_finding(tmp_path):
    p = tmp_path / "annotations_test.csv"
    p.write_text(VINDR)
    recs = vindr_to_records(p, SIZES)
    assert [r.study_id for r in recs] == list(SIZES)
    boxes = recs[0].images[0].boxes
    assert [(b["label"], b["reader"]) for b in boxes] == [("Cardiomegaly", "R10"), ("Aortic enlargement", "R10"),
                                                          ("Cardiomegaly", "R9")]
    assert boxes[0]["x_min"] == 691.0 / 2048 and boxes[0]["y_max"] == 1831.0 / 2500
    assert recs[0].meta["no_finding_readers"] == ["R8"]
    assert recs[1].images[0].boxes == [] and recs[1].meta["no_finding_readers"] == ["R2", "R3", "R5"]
    back = vindr_rows(_through_files(recs, tmp_path), SIZES)
    original = list(csv.DictReader(VINDR.splitlines()))

    def canon(rows):
        return sorted(tuple(row[c] if c not in ("x_min", "y_min", "x_max", "y_max") or not row[c] else
                            f"{float(row[c]):.6f}" for c in VINDR_COLUMNS) for row in rows)

    assert canon(back) == canon(original)
    out = tmp_path / "back.csv"
    write_csv_rows(back, out, VINDR_COLUMNS)
    assert canon(csv.DictReader(out.read_text().splitlines())) == canon(original)


def test_vindr_errors(tmp_path):
    p = tmp_path / "a.csv"
    p.write_text(VINDR)
    with pytest.raises(DataPrepError, match="no image size") as e:
        vindr_to_records(p, {})
    assert e.value.line == 2
    p.write_text(VINDR.replace("Cardiomegaly,3,R9,692.5", "Cardiomegaly,3,R9,"))
    with pytest.raises(DataPrepError, match="must be a number|coordinates") as e:
        vindr_to_records(p, SIZES)
    assert e.value.line == 4


def test_ms_cxr_phrases_and_round_trip(tmp_path):
    p = tmp_path / "MS_CXR_Local_Alignment_v1.0.0.csv"
    p.write_text(MS_CXR)
    recs = ms_cxr_to_records(p)
    assert [(r.study_id, r.patient_id) for r in recs] == [("50414267", "10000032"), ("51000011", "11000011")]
    g = recs[0].grounded_findings
    assert [(x["text"], len(x["boxes"])) for x in g] == [("right lower lobe pneumonia", 2), ("small left effusion", 1)]
    assert g[0]["boxes"][0] == {"x_min": 236 / 2544, "y_min": 725 / 3056, "x_max": 545 / 2544, "y_max": 1065 / 3056}
    assert [b["label"] for b in recs[0].images[0].boxes] == ["Pneumonia", "Pneumonia", "Pleural effusion"]
    back = ms_cxr_rows(_through_files(recs, tmp_path, ".parquet"))
    assert back == list(csv.DictReader(MS_CXR.splitlines()))
    out = tmp_path / "back.csv"
    write_csv_rows(back, out, MS_CXR_COLUMNS)
    assert out.read_text() == MS_CXR
