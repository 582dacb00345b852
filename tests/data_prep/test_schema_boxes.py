"""Boxes in the study record: grounded_findings (RadFact GroundedPhrase) and per-image detection boxes;
validation naming file, line and field; JSONL and Parquet round trips; old records unchanged."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from data_prep.errors import DataPrepError
from data_prep.schema import read_records, validate_record, write_records


def rec(**kw) -> dict:
    d = {"study_id": "s1", "patient_id": "p1", "dataset": "test", "split": "test",
         "images": [{"path": "a.png", "view": "PA"}, {"path": "b.png", "view": "LATERAL"}]}
    d.update(kw)
    return d


BOX = {"x_min": 0.1, "y_min": 0.2, "x_max": 0.4, "y_max": 0.5}


def test_record_with_boxes_validates_and_round_trips_jsonl_and_parquet(tmp_path):
    d = rec(grounded_findings=[{"text": "Left basal opacity.", "boxes": [BOX, {**BOX, "x_min": 0.0}], "image": 0},
                               {"text": "No pneumothorax.", "boxes": None, "image": 1}],
            images=[{"path": "a.png", "view": "PA", "boxes": [{"label": "Nodule", **BOX, "polygon": [[0.1, 0.2], [0.4, 0.5],
                                                                                                  [0.2, 0.5]]},
                                                               {"label": "Mass", **BOX}]},
                    {"path": "b.png", "view": "LATERAL"}])
    r = validate_record(d)
    assert r.grounded_findings[0]["boxes"][1]["x_min"] == 0.0 and r.grounded_findings[1]["boxes"] is None
    assert r.images[0].boxes[0]["label"] == "Nodule" and r.images[1].boxes is None
    d["prior"] = {"study_id": "s0", "images": [{"path": "p.png", "view": "PA", "boxes": [{"label": "Mass", **BOX}]}]}
    r = validate_record(d)
    plain = validate_record(rec(study_id="s2"))
    assert "grounded_findings" not in plain.to_dict() and "boxes" not in plain.to_dict()["images"][0]
    for suffix in (".jsonl", ".parquet"):
        path = tmp_path / f"r{suffix}"
        write_records([r, plain], path)
        back = read_records(path)
        assert [b.to_dict() for b in back] == [r.to_dict(), plain.to_dict()], suffix
    # the JSONL line of a record without boxes is exactly what it was before boxes existed
    write_records([plain], tmp_path / "p.jsonl")
    assert set(json.loads((tmp_path / "p.jsonl").read_text())) == {
        "study_id", "patient_id", "dataset", "split", "study_time", "images", "indication", "technique",
        "comparison", "findings", "impression", "prior", "labels", "meta"}


@pytest.mark.parametrize(("patch", "field", "message"), [
    ({"grounded_findings": [{"text": "x", "boxes": [{**BOX, "x_max": 1.5}], "image": 0}]},
     "grounded_findings[0].boxes[0].x_max", "[0, 1]"),
    ({"grounded_findings": [{"text": "x", "boxes": [{**BOX, "y_min": -0.1}], "image": 0}]},
     "grounded_findings[0].boxes[0].y_min", "[0, 1]"),
    ({"grounded_findings": [{"text": "x", "boxes": None, "image": 0},
                            {"text": "y", "boxes": [{**BOX, "x_min": 0.4}], "image": 0}]},
     "grounded_findings[1].boxes[0].x_min", "smaller than x_max"),
    ({"grounded_findings": [{"text": "x", "boxes": [BOX], "image": 2}]},
     "grounded_findings[0].image", "out of range"),
    ({"grounded_findings": [{"text": "x", "boxes": [BOX], "image": -1}]},
     "grounded_findings[0].image", "out of range"),
    ({"grounded_findings": [{"text": 3, "boxes": None, "image": 0}]}, "grounded_findings[0].text", "string"),
    ({"grounded_findings": [{"text": "x", "boxes": [BOX], "image": 0, "score": 1}]},
     "grounded_findings[0].score", "unknown"),
    ({"grounded_findings": {"text": "x"}}, "grounded_findings", "list"),
    ({"images": [{"path": "a.png", "boxes": [{**BOX}]}]}, "images[0].boxes[0].label", "label"),
    ({"images": [{"path": "a.png", "boxes": [{"label": "Mass", **BOX, "y_max": 0.2}]}]},
     "images[0].boxes[0].y_min", "smaller than y_max"),
    ({"images": [{"path": "a.png", "boxes": [{"label": "Mass", **BOX, "x_min": "0.1"}]}]},
     "images[0].boxes[0].x_min", "finite number"),
    ({"images": [{"path": "a.png", "boxes": [{"label": "Mass", **BOX, "polygon": [[0.1, 2.0]]}]}]},
     "images[0].boxes[0].polygon", "polygon"),
    ({"images": [{"path": "a.png", "size": 3}]}, "images[0].size", "unknown"),
])
def test_validation_names_file_line_and_field(tmp_path, patch, field, message):
    good = rec(study_id="ok")
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps(rec(**patch)) + "\n", encoding="utf-8")
    with pytest.raises(DataPrepError) as e:
        read_records(path)
    assert e.value.file == str(path) and e.value.line == 2 and e.value.field == field
    assert message in str(e.value) and f"{path}:2" in str(e.value)


def test_text_only_grounded_report_uses_image_zero():
    r = validate_record(rec(images=[], grounded_findings=[{"text": "x", "boxes": [BOX], "image": 0}]))
    assert r.grounded_findings[0]["image"] == 0
    with pytest.raises(DataPrepError, match="out of range"):
        validate_record(rec(images=[], grounded_findings=[{"text": "x", "boxes": [BOX], "image": 1}]))


coord = st.floats(0.0, 1.0, allow_nan=False)


@st.composite
def box(draw):
    x1, x2 = sorted(draw(st.lists(coord, min_size=2, max_size=2, unique=True)))
    y1, y2 = sorted(draw(st.lists(coord, min_size=2, max_size=2, unique=True)))
    return {"x_min": x1, "y_min": y1, "x_max": x2, "y_max": y2}


@settings(max_examples=40, deadline=None)
@given(findings=st.lists(st.fixed_dictionaries({"text": st.text(max_size=30),
                                                "boxes": st.one_of(st.none(), st.lists(box(), max_size=3)),
                                                "image": st.integers(0, 1)}), max_size=4),
       det=st.lists(box().map(lambda b: {"label": "Effusion", **b}), max_size=3))
def test_round_trip_property(tmp_path_factory, findings, det):
    d = rec(grounded_findings=findings, images=[{"path": "a.png", "view": "PA", "boxes": det}, {"path": "b.png"}])
    r = validate_record(d)
    out = tmp_path_factory.mktemp("rt")
    for suffix in (".jsonl", ".parquet"):
        write_records([r], out / f"r{suffix}")
        assert read_records(out / f"r{suffix}")[0].to_dict() == r.to_dict()
    assert r.to_dict()["grounded_findings"] == findings  # floats kept exactly


def test_prepare_cache_keeps_boxes_and_renumbers_findings_when_an_image_is_dropped(tmp_path):
    from PIL import Image

    from data_prep._util import SkipLog
    from data_prep.images import ImageCache
    from data_prep.prepare import cache_images

    Image.new("L", (300, 200), 90).save(tmp_path / "b.png")
    (tmp_path / "a.png").write_bytes(b"not a png")  # unreadable: dropped with skip_bad
    det = [{"label": "Mass", **BOX}]
    r = validate_record(rec(images=[{"path": "a.png", "view": "PA"}, {"path": "b.png", "view": "LATERAL", "boxes": det}],
                            grounded_findings=[{"text": "on a", "boxes": [BOX], "image": 0},
                                               {"text": "on b", "boxes": [BOX], "image": 1}]))
    records = [r]
    cache_images(records, tmp_path, ImageCache(tmp_path / "cache", min_pixels=3136, max_pixels=50176),
                 skip_bad=True, skips=SkipLog(), progress=False)
    (kept,) = records
    assert len(kept.images) == 1 and kept.images[0].boxes == det  # fractions hold for the resized copy
    assert kept.grounded_findings == [{"text": "on a", "boxes": None, "image": 0},
                                      {"text": "on b", "boxes": [BOX], "image": 0}]
    validate_record(kept.to_dict())  # still a valid record
