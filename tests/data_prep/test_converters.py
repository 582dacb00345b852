"""MIMIC-CXR-JPG, CheXpert Plus and ReXGradient converters, prepare() and the CLI, on fixture trees in the
published layouts (a few patients, several studies each, tiny generated images: tests/builders/datasets.py)."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from data_prep.chexpert_plus import convert_chexpert_plus
from data_prep.errors import BadImageError, DataPrepError, UnknownLayoutError
from data_prep.images import FACTOR
from data_prep.mimic import convert_mimic
from data_prep.prepare import prepare
from data_prep.rexgradient import convert_rexgradient
from data_prep.schema import read_records
from tests.builders.datasets import (
    CXP_STUDIES,
    MIMIC_STUDIES,
    make_chexpert_plus,
    make_mimic,
    make_rexgradient,
    write_csv,
)


# == MIMIC-CXR-JPG ===================================================================================
@pytest.fixture
def mimic_root(tmp_path) -> Path:
    return make_mimic(tmp_path / "mimic-cxr-jpg")


def test_mimic_converts_studies_views_labels_and_priors(mimic_root, tmp_path):
    out = tmp_path / "m.jsonl"
    recs, summary = convert_mimic(mimic_root, out=out, progress=False)
    by_id = {r.study_id: r for r in recs}
    n_studies = sum(len(v) for v in MIMIC_STUDIES.values())
    assert len(recs) == summary["studies"] == n_studies
    assert summary["images"] == sum(len(s[3]) for v in MIMIC_STUDIES.values() for s in v)
    assert summary["splits"] == {"train": 4, "validate": 2, "test": 1}
    r = by_id["53189527"]
    assert r.patient_id == "10000032" and r.split == "train"
    assert [im.view for im in r.images] == ["PA", "LL"]
    assert r.images[0].path == "files/p10/p10000032/s53189527/d2a.jpg" and (mimic_root / r.images[0].path).is_file()
    assert r.findings == "Lungs are clear in study 53189527." and r.impression == "No acute process 53189527."
    assert r.indication == "___F with cough 53189527" and r.comparison == "None."
    assert r.meta["examination"] == "CHEST (PA AND LAT)"
    assert r.study_time == "2180-06-26T16:51:23.000"
    assert r.labels["Cardiomegaly"] == 1.0 and r.labels["Edema"] == -1.0 and r.labels["No Finding"] == 0.0
    assert r.labels["Pneumothorax"] is None
    assert [im.view for im in by_id["50000001"].images] == ["AP", "UNKNOWN"]
    # priors follow StudyDate+StudyTime, not study-id order, and same-day studies are ordered by time
    assert by_id["50414267"].prior is None
    assert by_id["53189527"].prior.study_id == "50414267"
    assert by_id["50000001"].prior.study_id == "53911762"
    assert by_id["57375967"].prior.study_id == "51000000"
    assert by_id["51000000"].prior is None and by_id["56699142"].prior is None
    assert by_id["53189527"].prior.findings == by_id["50414267"].findings
    assert summary["priors_linked"] == 4
    # a report without section headers falls back to its last paragraph as the impression
    assert by_id["53911762"].impression == "Conclusion line for 53911762." and by_id["53911762"].findings == ""
    assert by_id["53911762"].meta["impression_source"] == "last_paragraph"
    assert [x.to_dict() for x in read_records(out)] == [x.to_dict() for x in recs]


def test_mimic_reports_in_separate_tree_and_plain_csv(tmp_path):
    a, _ = convert_mimic(make_mimic(tmp_path / "a"), progress=False)
    root_b = make_mimic(tmp_path / "b", reports_separate=True, gz=False)
    b, summary = convert_mimic(root_b, progress=False)
    assert [r.to_dict() for r in a] == [r.to_dict() for r in b]
    assert str(root_b / "mimic-cxr-reports") in summary["report_roots"]
    c, _ = convert_mimic(root_b, reports_root=root_b / "mimic-cxr-reports" / "files", progress=False)
    assert len(c) == len(b)


def test_mimic_missing_image_and_report(mimic_root):
    (mimic_root / "files/p10/p10000032/s53189527/d2b.jpg").unlink()
    (mimic_root / "files/p11/p11000011/s56699142.txt").unlink()
    with pytest.raises(BadImageError, match="d2b.jpg"):
        convert_mimic(mimic_root, progress=False)
    recs, summary = convert_mimic(mimic_root, skip_bad=True, progress=False)
    assert summary["skipped"]["by_reason"]["image file missing"]["count"] == 1
    assert summary["skipped"]["by_reason"]["report missing"]["examples"] == ["files/p11/p11000011/s56699142.txt"]
    assert {r.study_id for r in recs} == {s[0] for v in MIMIC_STUDIES.values() for s in v} - {"56699142"}
    assert [im.view for r in recs if r.study_id == "53189527" for im in r.images] == ["PA"]


def test_mimic_unknown_layouts(tmp_path, mimic_root):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("x")
    with pytest.raises(UnknownLayoutError, match=r"expected .*files/p1x.*found \['readme.txt'\]"):
        convert_mimic(tmp_path / "empty", progress=False)
    (mimic_root / "mimic-cxr-2.0.0-metadata.csv.gz").unlink()
    with pytest.raises(UnknownLayoutError, match="metadata CSV not found"):
        convert_mimic(mimic_root, progress=False)
    write_csv(mimic_root / "mimic-cxr-2.0.0-metadata.csv", ["dicom_id", "subject_id", "study_id"],
              [{"dicom_id": "x", "subject_id": "1", "study_id": "2"}])
    with pytest.raises(UnknownLayoutError, match="ViewPosition"):
        convert_mimic(mimic_root, progress=False)


def test_mimic_without_split_file_hashes_by_patient(mimic_root):
    (mimic_root / "mimic-cxr-2.0.0-split.csv.gz").unlink()
    recs, summary = convert_mimic(mimic_root, progress=False)
    assert summary["split_source"] == "hash(patient_id)" and summary["split_hashed"] == len(recs)
    per_patient = {}
    for r in recs:
        per_patient.setdefault(r.patient_id, set()).add(r.split)
    assert all(len(s) == 1 for s in per_patient.values())


# == CheXpert Plus ===================================================================================
def test_chexpert_plus_groups_studies_links_priors_and_finds_pngs(tmp_path):
    root = make_chexpert_plus(tmp_path / "cxp")
    recs, summary = convert_chexpert_plus(root, image_root=root / "PNG", out=tmp_path / "c.jsonl", progress=False)
    by_id = {r.study_id: r for r in recs}
    assert summary["studies"] == len(CXP_STUDIES) and summary["images"] == 6
    assert summary["splits"] == {"train": 3, "validate": 1, "test": 0}
    s1 = by_id["patient00001_r1"]
    assert [im.view for im in s1.images] == ["PA", "LATERAL"]
    assert s1.images[0].path == "train/patient00001/study1/view1_frontal.png"  # .jpg in the CSV, .png on disk
    assert s1.findings == "findings patient00001 1" and s1.impression == "impression patient00001 1"
    assert s1.indication == "history patient00001 1"
    assert s1.meta["sex"] == "Female" and s1.meta["age"] == 62.0 and s1.meta["examination"] == "Chest 2 View"
    assert [im.view for im in by_id["patient00002_r1"].images] == ["AP", "LL"]
    assert [im.view for im in by_id["patient00001_r3"].images] == ["UNKNOWN"]
    assert by_id["patient00001_r2"].prior.study_id == "patient00001_r1"
    assert by_id["patient00001_r3"].prior.study_id == "patient00001_r2"
    assert by_id["patient00001_r3"].prior.images == by_id["patient00001_r2"].images
    assert by_id["patient00002_r1"].prior is None and summary["priors_linked"] == 2
    assert summary["empty_findings"] == 1
    assert len(read_records(tmp_path / "c.jsonl")) == len(recs)


def test_chexpert_plus_errors(tmp_path):
    root = make_chexpert_plus(tmp_path / "cxp")
    (root / "PNG/train/patient00001/study2/view1_frontal.png").unlink()
    with pytest.raises(BadImageError, match="view1_frontal.jpg"):
        convert_chexpert_plus(root, image_root=root / "PNG", progress=False)
    recs, summary = convert_chexpert_plus(root, image_root=root / "PNG", skip_bad=True, progress=False)
    assert "patient00001_r2" not in {r.study_id for r in recs}
    assert summary["skipped"]["by_reason"]["no images on disk"]["examples"] == ["patient00001_r2"]
    # without an image root the paths are taken as listed (unchecked)
    recs, _ = convert_chexpert_plus(root / "df_chexpert_plus_240401.csv", progress=False)
    assert recs[0].images[0].path.endswith(".jpg")
    bad = tmp_path / "bad.csv"
    write_csv(bad, ["path_to_image", "deid_patient_id"], [{"path_to_image": "a.jpg", "deid_patient_id": "p"}])
    with pytest.raises(UnknownLayoutError, match="patient_report_date_order"):
        convert_chexpert_plus(bad, progress=False)
    (tmp_path / "nocsv").mkdir()
    with pytest.raises(UnknownLayoutError, match="df_chexpert_plus_240401.csv"):
        convert_chexpert_plus(tmp_path / "nocsv", progress=False)


# == ReXGradient-160K ================================================================================
def test_rexgradient_paths_views_splits_and_priors(tmp_path):
    root = make_rexgradient(tmp_path / "rex")
    recs, summary = convert_rexgradient(root, progress=False)
    by_id = {r.study_id: r for r in recs}
    assert summary["splits"] == {"train": 2, "validate": 1, "test": 1} and summary["images_verified"]
    r = by_id["GRDN1_A1_1.2.1"]
    assert r.images[0].path == "deid_png/GRDN1/A1/studies/1.2.1/series/1.2.1.0/instances/1.2.1.0.1.png"
    assert all((root / im.path).is_file() for x in recs for im in x.images)
    assert [im.view for im in r.images] == ["PA", "LATERAL"]  # from the view-position JSON, normalised
    assert [im.view for im in by_id["GRDN2_A2_1.2.2"].images] == ["AP"]
    assert r.study_time == "2020-01-01" and r.findings == "findings GRDN1_A1_1.2.1" and r.comparison == "None."
    assert r.meta["examination"] == "XR CHEST 2V" and r.meta["sex"] == "F"
    # two studies on the same later day: both get the earlier one, neither gets the other
    assert by_id["GRDN1_A3_1.2.3"].prior.study_id == "GRDN1_A1_1.2.1"
    assert by_id["GRDN1_A4_1.2.4"].prior.study_id == "GRDN1_A1_1.2.1"
    assert summary["priors_linked"] == 2


def test_rexgradient_csv_only_views_and_split_selection(tmp_path):
    root = make_rexgradient(tmp_path / "rex", with_json=False)
    recs, _ = convert_rexgradient(root, splits=("test",), progress=False)
    assert [r.study_id for r in recs] == ["GRDN1_A4_1.2.4"]
    assert [im.view for im in recs[0].images] == ["AP", "LL"]


def test_rexgradient_missing_image_and_unknown_layout(tmp_path):
    root = make_rexgradient(tmp_path / "rex")
    victim = root / "deid_png/GRDN2/A2/studies/1.2.2/series/1.2.2.0/instances/1.2.2.0.1.png"
    victim.unlink()
    with pytest.raises(BadImageError, match="1.2.2.0.1.png"):
        convert_rexgradient(root, progress=False)
    recs, summary = convert_rexgradient(root, skip_bad=True, progress=False)
    assert "GRDN2_A2_1.2.2" not in {r.study_id for r in recs} and summary["skipped"]["total"] == 2
    shutil.rmtree(root / "deid_png")  # metadata-only download: paths kept, not checked
    recs, summary = convert_rexgradient(root, progress=False)
    assert len(recs) == 4 and not summary["images_verified"]
    with pytest.raises(UnknownLayoutError, match=r"expected metadata/\{train,valid,test\}_metadata.csv"):
        convert_rexgradient(tmp_path, progress=False)


# == prepare() and the CLI ===========================================================================
def test_prepare_caches_images_and_reports_tokens(mimic_root, tmp_path):
    cache = tmp_path / "cache"
    out = tmp_path / "out" / "mimic.jsonl"
    s = prepare("mimic_cxr", source=mimic_root, out=out, image_cache=cache, max_pixels=16 * FACTOR * FACTOR,
                min_pixels=4 * FACTOR * FACTOR, progress=False)
    recs = read_records(out)
    n_images = sum(len(st[3]) for v in MIMIC_STUDIES.values() for st in v)
    assert s["studies"] == len(recs) == 7 and s["images_cached"] == s["images"] == n_images and s["images_reused"] == 0
    assert s["data_root"] == str(cache) and s["priors_linked"] == 4
    for r in recs:
        assert len(r.meta["source_images"]) == len(r.images) == len(r.meta["vision_tokens"])
        for im, tok in zip(r.images, r.meta["vision_tokens"]):
            with Image.open(cache / im.path) as img:
                assert img.width % FACTOR == 0 and img.height % FACTOR == 0
                assert tok == (img.width // FACTOR) * (img.height // FACTOR) and 4 <= tok <= 16
        if r.prior is not None:
            assert all((cache / im.path).is_file() for im in r.prior.images)
    assert s["vision_tokens_per_study"]["total"] == sum(sum(r.meta["vision_tokens"]) for r in recs)
    assert s["elapsed_s"] > 0 and s["studies_per_s"] > 0
    assert json.loads(Path(s["summary_file"]).read_text())["studies"] == 7
    again = prepare("mimic-cxr", source=mimic_root, out=out, image_cache=cache, max_pixels=16 * FACTOR * FACTOR,
                    min_pixels=4 * FACTOR * FACTOR, progress=False)
    assert again["images_reused"] == n_images and again["images_cached"] == 0


def test_prepare_skips_corrupt_images_and_lists_them(mimic_root, tmp_path):
    (mimic_root / "files/p10/p10000032/s53911762/d3a.jpg").write_bytes(b"\xff\xd8 broken jpeg")
    out = tmp_path / "m.jsonl"
    with pytest.raises(BadImageError, match="d3a.jpg"):
        prepare("mimic-cxr", root=mimic_root, out=out, image_cache=tmp_path / "c", progress=False)
    s = prepare("mimic-cxr", root=mimic_root, out=out, image_cache=tmp_path / "c", skip_bad=True, progress=False)
    assert s["studies"] == 6 and s["images_failed"] == 1
    reasons = s["skipped"]["by_reason"]
    assert reasons["bad image: unreadable or corrupt image"]["examples"] == ["files/p10/p10000032/s53911762/d3a.jpg"]
    assert reasons["all images unreadable"]["examples"] == ["53911762"]
    lines = [json.loads(x) for x in Path(s["skipped_file"]).read_text().splitlines()]
    assert {x["item"] for x in lines} == {"files/p10/p10000032/s53911762/d3a.jpg", "53911762"}
    # the study after the dropped one now gets the one before it as its prior
    by_id = {r.study_id: r for r in read_records(out)}
    assert by_id["50000001"].prior.study_id == "53189527"


def test_prepare_rejects_bad_requests(tmp_path, mimic_root):
    with pytest.raises(DataPrepError, match="unknown dataset"):
        prepare("padchest", source=tmp_path, out=tmp_path / "x.jsonl")
    with pytest.raises(DataPrepError, match=r"unknown option\(s\) \['png_dir'\]"):
        prepare("mimic-cxr", source=mimic_root, out=tmp_path / "x.jsonl", png_dir="x", progress=False)
    root = make_chexpert_plus(tmp_path / "cxp")
    with pytest.raises(DataPrepError, match="no image folder"):
        prepare("chexpert-plus", source=root, out=tmp_path / "x.jsonl", image_cache=tmp_path / "c", progress=False)
    with pytest.raises(DataPrepError, match="needs the dataset location"):
        prepare("rexgradient", out=tmp_path / "x.jsonl")


def _cli(argv: list[str]) -> int:
    from data_prep.cli import register

    parser = argparse.ArgumentParser(prog="mllm-cxr")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_prepare_prints_summary_line(tmp_path, capsys):
    root = make_rexgradient(tmp_path / "rex")
    out = tmp_path / "rex.jsonl"
    rc = _cli(["prepare", "rexgradient", str(root), "--out", str(out), "--image-cache", str(tmp_path / "cache"),
               "--max-pixels", str(8 * FACTOR * FACTOR), "--quiet", "--workers", "2"])
    assert rc == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("prepared rexgradient: 4 studies (train 2 / validate 1 / test 1), 6 images, 2 with a prior")
    assert all(r.images and r.images[0].path.startswith("px") for r in read_records(out))
    with pytest.raises(SystemExit):
        _cli(["prepare", "nosuchdataset", "--out", "x"])


def test_prepare_phantom(tmp_path):
    pytest.importorskip("data_prep.phantom")
    out = tmp_path / "ph" / "studies.jsonl"
    s = prepare("phantom", out=out, n=6, seed=1, image_cache=tmp_path / "cache", progress=False)
    recs = read_records(out)
    assert s["studies"] == len(recs) == 6 and s["images"] > 0 and s["data_root"] == str(tmp_path / "cache")
    assert all((tmp_path / "cache" / im.path).is_file() for r in recs for im in r.images)
