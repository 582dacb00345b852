"""The task mixture wired into the SFT recipe: `tasks:` / `--tasks` builds prompt/completion rows from
the mixture (dry run and a two-step run of the tiny model), and the box family's pixel budget is required."""

from __future__ import annotations

import importlib.util
import json
from collections import Counter

import pytest

from data_prep.schema import read_records
from mllm_cxr.boxes import decode_boxes
from mllm_cxr.config import ConfigError
from mllm_cxr.data import task_sft_dataset
from mllm_cxr.prompts import PromptConfig
from mllm_cxr.tasks import parse_mixture_arg
from tests.builders.repo import REPO

TINY_CFG = REPO / "recipes" / "configs" / "tiny" / "sft.yaml"


def _recipe():
    spec = importlib.util.spec_from_file_location("recipe_sft_tasks", REPO / "recipes" / "sft.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_mixture_flag_forms(tmp_path):
    assert [(e.name, e.weight) for e in parse_mixture_arg("report:3, vqa")] == [("report", 0.75), ("vqa", 0.25)]
    p = tmp_path / "m.yaml"
    p.write_text("tasks: [{name: detection, weight: 2}, {name: view}]\n")
    assert [e.name for e in parse_mixture_arg(str(p))] == ["detection", "view"]
    with pytest.raises(ConfigError, match="must be a number"):
        parse_mixture_arg("report:lots")
    with pytest.raises(ConfigError, match="unknown task"):
        parse_mixture_arg("reprot:1")


def test_task_rows(phantom_dir):
    recs = read_records(phantom_dir / "studies.jsonl")
    mix = parse_mixture_arg("report:1,phrase_grounding:1,vqa:1")
    with pytest.raises(ConfigError, match="min_pixels and max_pixels"):
        task_sft_dataset(recs, phantom_dir, PromptConfig(), mixture=mix)
    ds = task_sft_dataset(recs, phantom_dir, PromptConfig(), mixture=mix, min_pixels=3136, max_pixels=12544, seed=0)
    assert len(ds) == len(recs)
    counts = Counter(ds["task"])
    assert set(counts) == {"report", "phrase_grounding", "vqa"} and min(counts.values()) >= 8
    row = next(r for r in ds if r["task"] == "phrase_grounding")
    text = row["completion"][0]["content"][0]["text"]
    assert len(row["images"]) == 1 and row["images"][0].size == (224, 224)  # the phantom image, decoded lazily
    got = decode_boxes(text, "qwen2_5_vl", (224, 224), min_pixels=3136, max_pixels=12544)
    assert got.ok and len(got) >= 1
    user = row["prompt"][-1]["content"]
    assert [p["type"] for p in user] == ["image", "text"] and "bounding boxes" in user[-1]["text"]
    vqa = next(r for r in ds if r["task"] == "vqa")
    assert vqa["completion"][0]["content"][0]["text"] in ("Yes.", "No.", "Uncertain.")


def test_sft_recipe_dry_run_with_tasks(tmp_path, phantom_dir, capsys):
    out = tmp_path / "out"
    _recipe().main(["--config", str(TINY_CFG), "--studies", str(phantom_dir / "studies.jsonl"),
                    "--model_name_or_path", str(tmp_path / "no-model"), "--output_dir", str(out),
                    "--tasks", "report:0.5,detection:0.5", "--box_family", "qwen3_vl", "--dry-run"])
    line = capsys.readouterr().out
    assert "dry run" in line and "train " in line and not out.exists()
    with pytest.raises(ConfigError, match="box family"):
        _recipe().main(["--config", str(TINY_CFG), "--studies", str(phantom_dir / "studies.jsonl"),
                        "--model_name_or_path", str(tmp_path / "no-model"), "--output_dir", str(out),
                        "--tasks", "detection", "--box_family", "llava", "--dry-run"])


def test_sft_recipe_trains_two_steps_on_a_mixture(tmp_path, phantom_dir, tiny_model_dir):
    out = tmp_path / "out"
    _recipe().main(["--config", str(TINY_CFG), "--studies", str(phantom_dir / "studies.jsonl"),
                    "--model_name_or_path", str(tiny_model_dir), "--output_dir", str(out),
                    "--tasks", "report:1,phrase_grounding:1,detection:1,view:1", "--max_steps", "2",
                    "--per_device_train_batch_size", "4", "--logging_steps", "1"])
    assert (out / "adapter_model.safetensors").is_file()
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 2 and all(l.get("loss", 1.0) > 0 for l in state["log_history"])  # noqa: E741
    saved = (out / "config.yaml").read_text()  # the run's resolved config reruns the same mixture
    assert "tasks: report:1,phrase_grounding:1,detection:1,view:1" in saved
