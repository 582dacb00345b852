"""``mllm-cxr prepare nih-bbox | chestx-det | radfact | vindr-cxr | ms-cxr`` in a real process: the records
written equal what the reader of data_prep/grounding.py returns (real files in ../shared/data/boxes; VinDr-CXR
and MS-CXR on the fixtures of tests/builders/grounding.py), images given with --images-dir are checked or
cached, and bad input is one ``error:`` line with exit 2 (no traceback, nothing written)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from data_prep.grounding import (
    chestx_det_to_records,
    ms_cxr_to_records,
    nih_bbox_to_records,
    radfact_examples_to_records,
    vindr_to_records,
)
from data_prep.schema import read_records
from tests.builders.grounding import MS_CXR, SIZES, VINDR, nih_subset
from tests.builders.repo import REPO, require_shared


def _prepare(*args: str | Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("MLLM_CXR_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "mllm_cxr.cli", "prepare", *map(str, args), "--quiet"],
                          capture_output=True, text=True, env=env, timeout=300)


def _ok(proc: subprocess.CompletedProcess, out: Path) -> tuple[list, dict]:
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1].startswith("prepared ")
    return read_records(out), json.loads(out.with_name(out.stem + ".summary.json").read_text())


def _one_error_line(proc: subprocess.CompletedProcess, *needles: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mllm-cxr prepare: error: "), proc.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def _n_boxes(records) -> int:
    return sum(len(im.boxes or []) for r in records for im in r.images)


# -- the real files ---------------------------------------------------------------------------------
def test_nih_bbox_real_file(tmp_path):
    src = require_shared("boxes", "nih_bbox_list_2017.csv")
    out = tmp_path / "nih.jsonl"
    proc = _prepare("nih-bbox", src, "--out", out)
    recs, summary = _ok(proc, out)
    assert recs == nih_bbox_to_records(src)
    assert len(recs) == 880 and _n_boxes(recs) == 984 and summary["boxes"] == 984
    assert summary["data_root"] is None and summary["splits"]["test"] == 880
    assert "984 boxes" in proc.stdout
    proc = _prepare("nih-bbox", src, "--out", tmp_path / "nih_train.jsonl", "--split", "train")
    assert {r.split for r in _ok(proc, tmp_path / "nih_train.jsonl")[0]} == {"train"}


def test_chestx_det_real_file(tmp_path):
    src = require_shared("boxes", "chestx_det_test.json")
    out = tmp_path / "cd.parquet"
    recs, summary = _ok(_prepare("chestx-det", src, "--out", out), out)
    assert recs == chestx_det_to_records(src)
    assert len(recs) == 553 and _n_boxes(recs) == 1734 and summary["no_finding_images"] == 64


def test_radfact_real_file(tmp_path):
    src = require_shared("boxes", "radfact_grounded_reporting_examples.json")
    out = tmp_path / "rf.jsonl"
    recs, summary = _ok(_prepare("radfact", src, "--out", out, "--skip-bad"), out)  # text-only: none dropped
    assert recs == radfact_examples_to_records(src)
    assert len(recs) == 20 and summary["grounded_phrases"] == sum(len(r.grounded_findings) for r in recs)
    assert summary["skipped"]["total"] == 0 and summary["images"] == 0
    _one_error_line(_prepare("radfact", src, "--out", tmp_path / "x.jsonl", "--image-cache", tmp_path / "c"),
                    "radfact has no images")


# -- images: --images-dir, --image-cache, --skip-bad ------------------------------------------------
def test_nih_bbox_images_dir_sizes_cache_and_skip(tmp_path):
    sub, lines, images, names = nih_subset(tmp_path, 7)
    for n in names[1:]:  # the first is missing; the second twice the stated size
        Image.new("L", (2048, 2048) if n == names[1] else (1024, 1024)).save(images / n)
    out = tmp_path / "nih.jsonl"
    _one_error_line(_prepare("nih-bbox", sub, "--images-dir", images, "--out", out), names[0], "image not found")
    assert not out.exists()

    proc = _prepare("nih-bbox", sub, "--images-dir", images, "--out", out, "--skip-bad")
    recs, summary = _ok(proc, out)
    expected = nih_bbox_to_records(sub, images_dir=images, image_prefix="", on_bad_image=lambda *a: None)
    assert recs == expected and [r.images[0].path for r in recs] == names[1:]
    assert recs[0].images[0].boxes[0]["x_min"] == nih_bbox_to_records(sub)[1].images[0].boxes[0]["x_min"] / 2
    assert summary["data_root"] == str(images) and summary["skipped"]["total"] == 1
    assert summary["skipped"]["by_reason"] == {"bad image: image not found":
                                               {"count": 1, "examples": [str(images / names[0])]}}
    assert summary["images_checked"] == len(names) - 1

    cache = tmp_path / "cache"
    cached, summary = _ok(_prepare("nih-bbox", sub, "--images-dir", images, "--out", out, "--skip-bad",
                                   "--image-cache", cache), out)
    assert [r.images[0].boxes for r in cached] == [r.images[0].boxes for r in expected]  # fractions survive
    assert all((cache / r.images[0].path).is_file() for r in cached) and summary["data_root"] == str(cache)
    assert summary["boxes"] == _n_boxes(expected)


def test_chestx_det_images_dir_and_cache(tmp_path):
    src = require_shared("boxes", "chestx_det_test.json")
    data = json.loads(src.read_text())[:3]
    sub = tmp_path / "sub.json"
    sub.write_text(json.dumps(data))
    images = tmp_path / "imgs"
    images.mkdir()
    for item in data:
        Image.new("L", (1024, 1024)).save(images / item["file_name"])
    (images / data[2]["file_name"]).write_bytes(b"not a png")
    out = tmp_path / "cd.jsonl"
    _one_error_line(_prepare("chestx-det", sub, "--images-dir", images, "--out", out), data[2]["file_name"],
                    "not a readable image")
    recs, summary = _ok(_prepare("chestx-det", sub, "--images-dir", images, "--out", out, "--skip-bad",
                                 "--image-cache", tmp_path / "cache"), out)
    assert [r.images[0].boxes for r in recs] == [r.images[0].boxes for r in chestx_det_to_records(sub)[:2]]
    assert summary["images_cached"] == 2 and summary["skipped"]["total"] == 1


def _vindr_files(tmp_path: Path) -> tuple[Path, Path]:
    ann = tmp_path / "annotations_test.csv"
    ann.write_text(VINDR)
    sizes = tmp_path / "sizes.csv"
    sizes.write_text("image_id,width,height\n" + "".join(f"{k},{w},{h}\n" for k, (w, h) in SIZES.items()))
    return ann, sizes


def test_vindr_sizes_csv_and_images_dir(tmp_path):
    ann, sizes = _vindr_files(tmp_path)
    out = tmp_path / "v.jsonl"
    recs, summary = _ok(_prepare("vindr-cxr", ann, "--sizes-csv", sizes, "--out", out), out)
    assert recs == vindr_to_records(ann, SIZES)
    assert len(recs) == 2 and _n_boxes(recs) == 3 and summary["no_finding_images"] == 1
    assert summary["data_root"] is None and summary["image_sizes"] == "sizes CSV"

    images = tmp_path / "png"  # full-resolution stand-ins: their headers give the sizes
    images.mkdir()
    for iid, wh in SIZES.items():
        Image.new("L", wh).save(images / f"{iid}.png")
    recs, summary = _ok(_prepare("vindr-cxr", ann, "--images-dir", images, "--image-suffix", ".png", "--out", out,
                                 "--split", "train"), out)
    assert recs == vindr_to_records(ann, SIZES, image_suffix=".png", split="train")
    assert summary["data_root"] == str(images) and summary["images_checked"] == 2

    missing = next(iter(SIZES))
    (images / f"{missing}.png").unlink()
    _one_error_line(_prepare("vindr-cxr", ann, "--images-dir", images, "--image-suffix", ".png", "--out", out),
                    f"{missing}.png", "not found")
    recs, summary = _ok(_prepare("vindr-cxr", ann, "--images-dir", images, "--image-suffix", ".png", "--out", out,
                                 "--skip-bad"), out)
    assert [r.study_id for r in recs] == [k for k in SIZES if k != missing] and summary["skipped"]["total"] == 1


def test_ms_cxr_records_and_images_dir(tmp_path):
    ann = tmp_path / "MS_CXR_Local_Alignment_v1.0.0.csv"
    ann.write_text(MS_CXR)
    out = tmp_path / "ms.jsonl"
    recs, summary = _ok(_prepare("ms-cxr", ann, "--out", out), out)
    assert recs == ms_cxr_to_records(ann)
    assert len(recs) == 2 and _n_boxes(recs) == 4 and summary["grounded_phrases"] == 3

    root = tmp_path / "mimic-cxr-jpg"
    paths = [row["path"] for row in csv.DictReader(MS_CXR.splitlines())]
    (root / paths[0]).parent.mkdir(parents=True)
    Image.new("L", (64, 77)).save(root / paths[0])
    _one_error_line(_prepare("ms-cxr", ann, "--images-dir", root, "--out", out), paths[-1], "image not found")
    recs, summary = _ok(_prepare("ms-cxr", ann, "--images-dir", root, "--out", out, "--skip-bad",
                                 "--image-cache", tmp_path / "cache"), out)
    assert [r.grounded_findings for r in recs] == [ms_cxr_to_records(ann)[0].grounded_findings]
    assert summary["skipped"]["total"] == 1 and summary["images_cached"] == 1 and summary["boxes"] == 3


# -- bad input: one line, exit 2 ------------------------------------------------------------------------
def _bad_files(tmp: Path) -> dict[str, tuple[Path, list[str], list[str]]]:
    """dataset -> (malformed file, extra arguments, what the error line must name)."""
    nih = tmp / "nih.csv"
    nih.write_text("Image Index,Finding Label,Bbox [x,y,w,h],,,\n00000001_000.png,Mass,1,2,three,4\n")
    cd = tmp / "cd.json"
    cd.write_text(json.dumps([{"file_name": "a.png", "syms": ["Mass"], "boxes": [[1, 2, 3, 4]], "polygons": [[]]},
                              {"file_name": "b.png", "syms": ["Mass"], "polygons": [[]]}]))
    rf = tmp / "rf.json"
    rf.write_text(json.dumps([{"example_id": 0, "prediction": [{"text": "x", "boxes": None}]}]))
    ann, sizes = _vindr_files(tmp)
    vindr = tmp / "vindr.csv"
    vindr.write_text(VINDR.replace("Cardiomegaly,3,R9,692.5", "Cardiomegaly,3,R9,abc"))
    ms = tmp / "ms.csv"
    ms.write_text(MS_CXR.replace(",420,1100,", ",420,eleven,"))
    return {"nih-bbox": (nih, [], [f"{nih}:2", "x, y, w, h must be numbers"]),
            "chestx-det": (cd, [], [str(cd), "field '[1]'", "expected {file_name, syms, boxes"]),
            "radfact": (rf, [], [str(rf), "field '[0]'", "expected {example_id, prediction, target}"]),
            "vindr-cxr": (vindr, ["--sizes-csv", str(sizes)], [f"{vindr}:4", "field 'x_min'", "must be a number"]),
            "ms-cxr": (ms, [], [f"{ms}:3", "field 'y'", "must be a number"])}


@pytest.mark.parametrize("dataset", ["nih-bbox", "chestx-det", "radfact", "vindr-cxr", "ms-cxr"])
def test_bad_input_is_one_line(tmp_path, dataset):
    bad, extra, needles = _bad_files(tmp_path)[dataset]
    out = tmp_path / "out" / "studies.jsonl"
    _one_error_line(_prepare(dataset, bad, *extra, "--out", out), *needles)
    missing = tmp_path / ("missing" + bad.suffix)
    _one_error_line(_prepare(dataset, missing, *extra, "--out", out), str(missing))
    assert not out.exists()


def test_vindr_needs_sizes(tmp_path):
    ann, sizes = _vindr_files(tmp_path)
    out = tmp_path / "v.jsonl"
    _one_error_line(_prepare("vindr-cxr", ann, "--out", out), "--sizes-csv", "--images-dir")
    sizes.write_text("image_id,width,height\n" + f"{next(iter(SIZES))},2048,0\n")
    _one_error_line(_prepare("vindr-cxr", ann, "--sizes-csv", sizes, "--out", out), f"{sizes}:2", "field 'height'")
    sizes.write_text("image_id,width,height\n")
    _one_error_line(_prepare("vindr-cxr", ann, "--sizes-csv", sizes, "--out", out), f"{ann}:2", "no image size")
    assert not out.exists()
