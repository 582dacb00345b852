"""Images are found by default: `prepare` records where the images are, every consumer resolves image
paths with one function (data_prep.schema.resolve_data_root), and --data-root / data_root: only override."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from data_prep.errors import DataPrepError
from data_prep.schema import manifest_path, read_records, resolve_data_root
from tests.builders.datasets import make_mimic
from tests.builders.repo import REPO


def _cli(*argv: str) -> int:
    from mllm_cxr.cli import main

    return main([str(a) for a in argv])


@pytest.fixture
def cached_mimic(tmp_path) -> tuple[Path, Path]:
    """A MIMIC-CXR-JPG fixture prepared with --image-cache into a folder that is NOT the records' folder."""
    root = make_mimic(tmp_path / "mimic-cxr-jpg" / "2.1.0")
    studies, cache = tmp_path / "data" / "mimic" / "studies.jsonl", tmp_path / "cache" / "images"
    assert _cli("prepare", "mimic-cxr", root, "--out", studies, "--image-cache", cache,
                "--min-pixels", 3136, "--max-pixels", 12544, "--quiet") == 0
    return studies, cache


def test_prepare_records_the_image_folder_and_every_path_resolves(cached_mimic):
    studies, cache = cached_mimic
    info = json.loads(manifest_path(studies).read_text())
    assert info["data_root"] == str(cache.resolve())
    assert info["data_root_relative"] == os.path.relpath(cache.resolve(), studies.parent.resolve())
    root = resolve_data_root(studies)
    assert root == cache.resolve() and root != studies.parent.resolve()
    recs = read_records(studies)
    assert recs and all((root / im.path).is_file() for r in recs for im in r.images)
    # the override wins, even over a manifest
    assert resolve_data_root(studies, "/elsewhere") == Path("/elsewhere")


def test_moved_tree_still_resolves_and_a_lost_folder_is_a_clear_error(cached_mimic, tmp_path):
    studies, cache = cached_mimic
    moved = tmp_path / "moved"
    moved.mkdir()
    shutil.move(str(tmp_path / "data"), moved / "data")
    shutil.move(str(tmp_path / "cache"), moved / "cache")
    new = moved / "data" / "mimic" / "studies.jsonl"
    assert resolve_data_root(new) == (moved / "cache" / "images").resolve()  # via data_root_relative
    shutil.rmtree(moved / "cache")
    with pytest.raises(DataPrepError, match="does not exist.*--data-root") as e:
        resolve_data_root(new)
    assert "studies.summary.json" in str(e.value)


def test_records_without_a_manifest_use_their_folder(tmp_path):
    f = tmp_path / "x" / "studies.jsonl"
    f.parent.mkdir()
    f.write_text("")
    assert resolve_data_root(f) == f.parent.resolve()
    manifest_path(f).write_text("[1, 2]")
    with pytest.raises(DataPrepError, match="not a prepare manifest"):
        resolve_data_root(f)


def test_prepare_out_must_name_a_records_file(tmp_path):
    assert _cli("prepare", "phantom", "--n", 4, "--out", tmp_path / "runs" / "phantom") == 2
    assert not (tmp_path / "runs" / "phantom").is_file()


@pytest.mark.slow
def test_sft_generate_export_find_cached_images_without_data_root(cached_mimic, tmp_path, tiny_model_dir):
    """prepare --image-cache -> SFT (tiny, 2 steps) -> generate -> export --verify-studies, no data-root flag."""
    studies, cache = cached_mimic
    out = tmp_path / "runs" / "sft"
    cmd = [sys.executable, str(REPO / "recipes" / "sft.py"), "--config", str(REPO / "recipes/configs/tiny/sft.yaml"),
           "--studies", str(studies), "--model_name_or_path", str(tiny_model_dir), "--output_dir", str(out),
           "--max_steps", "2", "--per_device_train_batch_size", "2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path,
                          env=dict(os.environ, TOKENIZERS_PARALLELISM="false"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "adapter_model.safetensors").is_file()

    pred = tmp_path / "runs" / "pred.jsonl"
    assert _cli("generate", "--studies", studies, "--split", "test", "--model", tiny_model_dir, "--adapter", out,
                "--out", pred, "--max-new-tokens", "8", "--quiet") == 0
    rows = [json.loads(line) for line in pred.read_text().splitlines()]
    assert rows and all(r["images"] and all(Path(p).is_relative_to(cache.resolve()) and Path(p).is_file()
                                            for p in r["images"]) for r in rows)
    meta = json.loads(pred.with_name(pred.name + ".meta.json").read_text())
    assert meta["studies"] == str(studies.resolve()) and meta["data_root"] == str(cache.resolve())

    exp = tmp_path / "runs" / "export"
    assert _cli("export", "--base", tiny_model_dir, "--adapter", out, "--out", exp, "--merge",
                "--verify-studies", studies, "--verify-n", "1") == 0
    assert (exp / "model.safetensors").is_file() or any(exp.glob("model*.safetensors"))
