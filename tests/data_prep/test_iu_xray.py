"""IU X-ray converter on the real Open-i archive (../shared/data/iu_xray) and on small derived trees."""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data_prep.errors import BadImageError, DataPrepError, UnknownLayoutError
from data_prep.iu_xray import convert_iu_xray, iter_reports
from data_prep.prepare import prepare
from data_prep.schema import read_records
from tests.builders.repo import require_shared


@pytest.fixture(scope="module")
def archive() -> Path:
    return require_shared("iu_xray", "NLMCXR_reports.tgz")


@pytest.fixture(scope="module")
def raw_xml(archive) -> dict[str, str]:
    """member name -> raw XML text, read with tarfile only (an oracle independent of the converter)."""
    out = {}
    with tarfile.open(archive) as tf:
        for m in tf:
            if m.isfile() and m.name.endswith(".xml"):
                out[m.name] = tf.extractfile(m).read().decode("utf-8")
    return out


@pytest.fixture(scope="module")
def converted(archive):
    return convert_iu_xray(archive, progress=False)


def _raw_section(xml: str, label: str) -> str:
    m = re.search(rf'<AbstractText Label="{label}">(.*?)</AbstractText>', xml, re.S)
    if not m:
        return ""
    text = m.group(1).replace("&gt;", ">").replace("&lt;", "<").replace("&amp;", "&")
    return " ".join(text.split())


def test_all_reports_parsed_with_sections_mesh_and_image_ids(converted, raw_xml):
    recs, summary = converted
    assert summary["reports_parsed"] == len(raw_xml) == 3955
    assert len(recs) == 3955 and summary["skipped"]["total"] == 0
    assert summary["empty_findings"] == 530 == sum(1 for r in recs if not r.findings)
    assert summary["without_images"] == 104  # 3,851 of 3,955 reports have images
    by_file = {r.meta["source_file"]: r for r in recs}
    assert set(by_file) == set(raw_xml)
    for name, xml in raw_xml.items():
        r = by_file[name]
        assert r.study_id == re.search(r'<uId id="([^"]+)"', xml).group(1)
        assert r.findings == _raw_section(xml, "FINDINGS")
        assert r.impression == _raw_section(xml, "IMPRESSION")
        assert r.comparison == _raw_section(xml, "COMPARISON")
        assert r.indication == _raw_section(xml, "INDICATION")
        assert r.meta["image_ids"] == re.findall(r'<parentImage id="([^"]+)"', xml)
        assert r.meta["mesh_major"] == [" ".join(x.split()) for x in re.findall(r"<major>(.*?)</major>", xml, re.S)]
        assert [im.path for im in r.images] == [f"{i}.png" for i in r.meta["image_ids"]]
    assert sum(1 for r in recs if r.meta["mesh_major"]) > 3800
    assert any("XXXX" in r.findings for r in recs)  # de-identified spans are kept as they are


def test_hash_split_is_patient_based_and_roughly_80_10_10(converted, archive, tmp_path):
    recs, _ = converted
    c = Counter(r.split for r in recs)
    assert 0.75 < c["train"] / len(recs) < 0.85 and c["validate"] > 300 and c["test"] > 300
    # the same reports read from an extracted folder get the same splits (the split depends on the patient only)
    folder = tmp_path / "r"
    for name, data in _subset(archive, 12):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    sub, _ = convert_iu_xray(folder, progress=False)
    split_of = {r.study_id: r.split for r in recs}
    assert len(sub) == 12 and all(r.split == split_of[r.study_id] for r in sub)


def test_r2gen_split_and_views_from_dicom_metadata(archive, tmp_path):
    splits_csv = require_shared("iu_xray", "r2gen_splits.csv")
    meta_csv = require_shared("iu_xray", "nlmcxr_dicom_metadata.csv.gz")
    with open(splits_csv, newline="") as fh:
        rows = list(csv.DictReader(fh))
    expected = Counter({"train": 0, "validate": 0, "test": 0})
    expected.update({"val": "validate"}.get(r["split"], r["split"]) for r in rows)
    out = tmp_path / "iu.jsonl"
    recs, summary = convert_iu_xray(archive, splits_csv=splits_csv, dicom_metadata=meta_csv, out=out,
                                    progress=False)
    assert summary["splits"] == dict(expected) and len(recs) == len(rows)
    assert summary["skipped"]["by_reason"]["not in the split file"]["count"] == 3955 - len(rows)
    split_of = {r["id"]: {"val": "validate"}.get(r["split"], r["split"]) for r in rows}
    for r in recs:
        assert r.split in {split_of[i] for i in r.meta["r2gen_ids"] if i in split_of}
    with gzip.open(meta_csv, "rt", newline="") as fh:
        raw_view = {row["imageid"]: row["View Position"] for row in csv.DictReader(fh)}
    n_checked = 0
    for r in recs:
        for iid, im in zip(r.meta["image_ids"], r.images):
            if iid not in raw_view:  # report CXR1 names its images CXR1_1_IM-...; the files are CXR1_IM-...
                assert raw_view.get(iid.replace("CXR1_1_", "CXR1_"), "UNKNOWN") in (im.view, "")
                continue
            v = raw_view[iid]
            if v in ("PA", "AP", "LATERAL", "LL"):
                assert im.view == v
                n_checked += 1
            elif v == "":
                assert im.view == "UNKNOWN"
    assert n_checked > 3000 and summary["views_known"] >= n_checked
    assert len(read_records(out)) == len(recs)


def test_unlisted_reports_policy(archive, tmp_path):
    subset = _subset(archive, 5)
    folder = tmp_path / "r"
    for name, data in subset:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    first_ids = [re.sub(r"-\d+$", "", re.search(rb'<parentImage id="([^"]+)"', d).group(1).decode()) for _, d in subset]
    splits_csv = tmp_path / "splits.csv"
    splits_csv.write_text("id,split\n" + f"{first_ids[0]},test\n{first_ids[1]},val\n")
    recs, s = convert_iu_xray(folder, splits_csv=splits_csv, progress=False)
    assert [r.split for r in recs] == ["test", "validate"] and s["skipped"]["by_reason"]["not in the split file"]["count"] == 3
    recs, s = convert_iu_xray(folder, splits_csv=splits_csv, unlisted="train", progress=False)
    assert [r.split for r in recs] == ["test", "validate", "train", "train", "train"]


def _subset(archive, n: int = 6) -> list[tuple[str, bytes]]:
    """The first n reports that have two or more images."""
    out = []
    with tarfile.open(archive) as tf:
        for m in tf:
            if m.isfile() and m.name.endswith(".xml"):
                data = tf.extractfile(m).read()
                if data.count(b"<parentImage") >= 2:
                    out.append((m.name, data))
                if len(out) == n:
                    break
    return out


def _tiny_png(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(len(str(path))).integers(0, 255, (30, 40), dtype=np.uint8)).save(path)


def test_extracted_folder_png_dir_naming_schemes_and_missing_images(archive, tmp_path):
    subset = _subset(archive)
    folder = tmp_path / "reports"
    for name, data in subset:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    recs, _ = convert_iu_xray(folder, progress=False)
    assert len(recs) == len(subset)
    ids = [r.meta["image_ids"] for r in recs]
    png = tmp_path / "png"
    _tiny_png(png / f"{ids[0][0]}.png")                           # Open-i name
    kaggle = re.sub(r"^CXR(\d+)_(\1_)?", r"\1_", ids[0][1]) + ".dcm.png"  # e.g. 1_IM-0001-4001.dcm.png
    _tiny_png(png / "sub" / kaggle)                               # Kaggle name (no CXR prefix, .dcm.png)
    r2 = re.sub(r"-\d+$", "", ids[1][0])
    _tiny_png(png / r2 / "0.png")                                 # R2Gen folder
    _tiny_png(png / r2 / "1.png")
    recs, summary = convert_iu_xray(folder, png_dir=png, skip_bad=True, progress=False)
    assert [im.path for im in recs[0].images] == [f"{ids[0][0]}.png", f"sub/{kaggle}"]
    assert [im.path for im in recs[1].images] == [f"{r2}/0.png", f"{r2}/1.png"]
    expected_missing = sum(len(i) for i in ids[2:]) + len(ids[0][2:]) + sum(
        1 for i in ids[1] if re.sub(r"-\d+$", "", i) != r2)
    assert summary["skipped"]["by_reason"]["image file missing"]["count"] == expected_missing
    with pytest.raises(BadImageError, match="not found below the PNG folder"):
        convert_iu_xray(folder, png_dir=png, progress=False)
    # the cached-image path: only the studies with images found go through the cache
    s = prepare("iu-xray", source=folder, png_dir=png, skip_bad=True, out=tmp_path / "iu.jsonl",
                image_cache=tmp_path / "cache", progress=False)
    assert s["images_cached"] == 4 and s["data_root"] == str(tmp_path / "cache")


def test_r2gen_annotation_layout_joined_with_xml(archive, tmp_path):
    subset = _subset(archive, 4)
    uids = []
    for _, data in subset:
        uids.append(re.search(rb'<uId id="([^"]+)"', data).group(1).decode())
    ann = {"train": [], "val": [], "test": []}
    for k, (_, data) in enumerate(subset):
        first = re.search(rb'<parentImage id="([^"]+)"', data).group(1).decode()
        sid = re.sub(r"-\d+$", "", first)
        split = ["train", "train", "val", "test"][k]
        ann[split].append({"id": sid, "report": f"report text {k}", "image_path": [f"{sid}/0.png", f"{sid}/1.png"],
                           "split": split})
        _tiny_png(tmp_path / "iu" / "images" / sid / "0.png")
        _tiny_png(tmp_path / "iu" / "images" / sid / "1.png")
    (tmp_path / "iu" / "annotation.json").write_text(json.dumps(ann))
    small = tmp_path / "small.tgz"
    with tarfile.open(small, "w:gz") as tf:
        for name, data in subset:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    recs, summary = convert_iu_xray(tmp_path / "iu", reports=small, progress=False)
    assert summary["layout"] == "r2gen" and summary["data_root"] == str(tmp_path / "iu" / "images")
    assert summary["splits"] == {"train": 2, "validate": 1, "test": 1} and summary["xml_reports_joined"] == 4
    xml = {r["uid"]: r for r in iter_reports(small)}
    for r in recs:
        assert r.patient_id in uids and r.findings.startswith("report text")
        assert r.impression == xml[r.patient_id]["impression"] and r.meta["mesh_major"] == xml[r.patient_id]["mesh_major"]
        assert all((tmp_path / "iu" / "images" / im.path).is_file() for im in r.images)
    (tmp_path / "iu" / "images" / ann["test"][0]["image_path"][1]).unlink()
    with pytest.raises(BadImageError, match="1.png"):
        convert_iu_xray(tmp_path / "iu" / "annotation.json", progress=False)


def test_bad_inputs_name_the_file(tmp_path):
    folder = tmp_path / "ecg" / "ecgen-radiology"
    folder.mkdir(parents=True)
    (folder / "1.xml").write_text("<eCitation><uId id='CXR1'/><Abstract>")
    with pytest.raises(DataPrepError, match=r"ecgen-radiology/1.xml.*malformed XML"):
        convert_iu_xray(tmp_path / "ecg", progress=False)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("x")
    with pytest.raises(UnknownLayoutError, match=r"expected NLMCXR_reports.tgz.*found \['notes.txt'\]"):
        convert_iu_xray(tmp_path / "other", progress=False)
    buf = io.BytesIO(b"not a tar")
    (tmp_path / "x.tgz").write_bytes(buf.getvalue())
    with pytest.raises(UnknownLayoutError, match="x.tgz"):
        convert_iu_xray(tmp_path / "x.tgz", progress=False)
    with pytest.raises(DataPrepError, match="unlisted"):
        convert_iu_xray(tmp_path / "x.tgz", unlisted="drop", progress=False)
