"""GRPO and DPO per task: rows carry their task, rewards are routed by it (report rows -> the clinical
spec, box rows -> iou/box_f1/box_format), `pairs sample --task` ranks a task's samples by its rewards, and
the DPO dataset rebuilds each task pair's prompt."""

from __future__ import annotations

import importlib.util
import json
from collections import Counter
from pathlib import Path

import pytest

from data_prep.schema import read_records
from mllm_cxr.config import ConfigError
from mllm_cxr.data import dpo_dataset, grpo_dataset, recipe_datasets, task_grpo_dataset
from mllm_cxr.infer.generate import task_items
from mllm_cxr.prompts import PromptConfig
from mllm_cxr.tasks import TaskConfig, parse_mixture_arg, task_reward_funcs
from mllm_cxr.train.pairs import reward_ranked_pairs
from reward.trl import TaskRoutedReward
from tests.builders.repo import REPO

PIX = {"min_pixels": 3136, "max_pixels": 12544}


def _recipe(name: str):
    spec = importlib.util.spec_from_file_location(f"recipe_{name}_tasks_rl", REPO / "recipes" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _answer(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def test_routed_reward_scores_only_its_tasks_rows():
    seen = {}

    def f(prompts=None, completions=None, completion_ids=None, **cols):
        seen.update(cols, n=len(completions))
        return [float(len(c)) for c in completions]

    r = TaskRoutedReward(f, ["detection"])
    out = r(prompts=["p0", "p1", "p2"], completions=["a", "bb", "ccc"], task=["report", "detection", "vqa"],
            boxes=["", "[]", ""], trainer_state=object())
    assert out == [None, 2.0, None]
    assert seen["n"] == 1 and seen["boxes"] == ["[]"] and seen["task"] == ["detection"]
    assert r.__name__ == "f@detection"
    assert r(completions=["x"], task=["report"]) == [None]


def test_task_grpo_rows_and_rewards_follow_the_task(phantom_dir):
    recs = read_records(phantom_dir / "studies.jsonl")
    mix = parse_mixture_arg("report:1,phrase_grounding:1,detection:1,vqa:1")
    with pytest.raises(ConfigError, match="min_pixels and max_pixels"):
        task_grpo_dataset(recs, phantom_dir, PromptConfig(), mixture=mix)
    ds = task_grpo_dataset(recs, phantom_dir, PromptConfig(), mixture=mix, seed=0, **PIX)
    assert len(ds) == len(recs) and set(Counter(ds["task"])) == {"report", "phrase_grounding", "detection", "vqa"}
    funcs, weights = task_reward_funcs(["report", "phrase_grounding", "detection", "vqa"],
                                       "recipes/rewards/clinical.yaml", family="qwen2_5_vl", **PIX)
    names = [f.__name__ for f in funcs]
    assert "iou@phrase_grounding" in names and "box_f1@detection" in names
    assert "box_format@detection" in names and "answer_match@vqa" in names
    assert not any(n.startswith("box_format") and "phrase_grounding" in n for n in names)  # IoU alone there
    assert any(n.endswith("@report") and n.startswith("chexpert") for n in names) and len(weights) == len(funcs)
    rows = list(ds)
    by_id = {r.study_id: r for r in recs}
    cfg = TaskConfig(prompt=PromptConfig(), family="qwen2_5_vl", data_root=phantom_dir, **PIX)
    from mllm_cxr.tasks import get_task

    for r in rows:  # a task row's reference is the target of one of its study's examples of that task
        if r["task"] != "report":
            assert r["reference"] in [ex.target for ex in get_task(r["task"]).examples(by_id[r["study_id"]], cfg)]
    comps = [_answer(r["reference"]) for r in rows]  # the oracle answer of each row
    cols = {k: [r[k] for r in rows] for k in rows[0] if k not in ("prompt", "images")}
    for f in funcs:
        got = f(prompts=[r["prompt"] for r in rows], completions=comps, **cols)
        mine = [t in f.tasks for t in cols["task"]]
        assert all((g is None) == (not m) for g, m in zip(got, mine)), f.__name__
        if f.__name__.split("@")[0] in ("box_f1", "box_format", "answer_match"):
            assert min(g for g in got if g is not None) == 1.0, f.__name__  # the oracle answer
        if f.__name__.startswith("iou"):  # 112 x 112 resized pixels: small boxes lose some IoU to rounding
            assert min(g for g in got if g is not None) > 0.5
    iou = next(f for f in funcs if f.__name__ == "iou@phrase_grounding")
    bad = iou(completions=[_answer("no idea")] * len(rows), **cols)
    assert all(b in (None, 0.0) for b in bad) and any(b == 0.0 for b in bad)


def test_report_only_builders_still_refuse_a_mixture(phantom_dir):
    from types import SimpleNamespace

    args = SimpleNamespace(tasks="report:1,vqa:1", studies=str(phantom_dir / "studies.jsonl"), data_root=None)
    with pytest.raises(ConfigError, match="report task's alone"):
        recipe_datasets(args, grpo_dataset, PromptConfig())


def test_grpo_recipe_dry_run_with_tasks(tmp_path, phantom_dir, capsys):
    out = tmp_path / "out"
    _recipe("grpo").main(["--config", str(REPO / "recipes/configs/tiny/grpo.yaml"), "--studies",
                          str(phantom_dir / "studies.jsonl"), "--model_name_or_path", str(tmp_path / "m"),
                          "--adapter_path", "", "--output_dir", str(out),
                          "--tasks", "report:1,phrase_grounding:1", "--dry-run"])
    assert "dry run" in capsys.readouterr().out and not out.exists()


class Scripted:
    """k answers per item: the oracle target, a box moved off, and garbage (no model)."""

    def __init__(self, data_root):
        self.cfg, self.data_root = PromptConfig(), Path(data_root)

    MOVED = '```json\n[{"bbox_2d": [0, 0, 3, 3], "label": "x"}]\n```'

    def generate(self, items):
        return [[x.target, self.MOVED, "garbage"] for x in items]


def test_pairs_sample_per_task_and_the_dpo_dataset_rebuilds_the_prompts(phantom_dir, tmp_path):
    from mllm_cxr.tasks import task_reward

    recs = read_records(phantom_dir / "studies.jsonl")[:8]
    cfg = TaskConfig(prompt=PromptConfig(), family="qwen2_5_vl", data_root=phantom_dir, **PIX)
    items = task_items(recs, "phrase_grounding", cfg)
    reward = task_reward("phrase_grounding", None, family="qwen2_5_vl", **PIX)
    pairs, summary = reward_ranked_pairs(items, Scripted(phantom_dir), reward, margin_threshold=0.5,
                                         progress=False)
    assert summary["pairs"] == len(items) > 0
    p = pairs[0]
    assert p["task"] == "phrase_grounding" and isinstance(p["example"], int)
    # IoU alone: the target scores 1; the box moved off the region and the unparsable answer both score 0
    assert p["chosen"] == items[0].target and p["rejected"] in ("garbage", Scripted.MOVED)
    ds = dpo_dataset(pairs, {r.study_id: r for r in recs}, phantom_dir, PromptConfig(), task_cfg=cfg)
    text = ds[0]["prompt"][-1]["content"][-1]["text"]  # the example's question, rebuilt from the pair
    assert text == items[0].messages[-1]["content"][-1]["text"] and "bounding boxes" in text
    assert ds[0]["task"] == "phrase_grounding" and len(ds[0]["images"]) == 1
    assert ds[0]["chosen"][0]["content"][0]["text"] == items[0].target
    with pytest.raises(Exception, match="task settings"):
        dpo_dataset(pairs, {r.study_id: r for r in recs}, phantom_dir, PromptConfig())
    # the DPO recipe reads such a pairs file (dry run), and checks the pairs' tasks against `tasks`
    pf = tmp_path / "pairs.jsonl"
    pf.write_text("".join(json.dumps(x) + "\n" for x in pairs))
    base = ["--config", str(REPO / "recipes/configs/tiny/dpo.yaml"), "--studies", str(phantom_dir / "studies.jsonl"),
            "--model_name_or_path", str(tmp_path / "m"), "--adapter_path", "", "--output_dir", str(tmp_path / "o"),
            "--pairs", str(pf), "--dry-run"]
    _recipe("dpo").main(base)
    _recipe("dpo").main(base + ["--tasks", "phrase_grounding"])
    with pytest.raises(ConfigError, match="not in tasks"):
        _recipe("dpo").main(base + ["--tasks", "report:1,vqa:1"])


def test_grpo_trains_two_steps_on_a_report_and_grounding_mixture(tmp_path, phantom_dir, tiny_model_dir):
    """TRL gets None from a reward for the other tasks' rows and logs each routed reward over its rows."""
    out = tmp_path / "out"
    _recipe("grpo").main(["--config", str(REPO / "recipes/configs/tiny/grpo.yaml"), "--studies",
                          str(phantom_dir / "studies.jsonl"), "--model_name_or_path", str(tiny_model_dir),
                          "--adapter_path", "", "--output_dir", str(out), "--tasks", "report:1,phrase_grounding:1",
                          "--max_steps", "2", "--per_device_train_batch_size", "4", "--num_generations", "2",
                          "--max_completion_length", "12", "--max_train_studies", "16", "--beta", "0"])
    state = json.loads((out / "trainer_state.json").read_text())
    logs = [x for x in state["log_history"] if "reward" in x]
    assert state["global_step"] == 2 and logs
    keys = set().union(*logs)
    assert any(k.startswith("rewards/iou@phrase_grounding") for k in keys)
    assert any(k.startswith("rewards/chexpert_f1@report") for k in keys)


def test_collapse_guard_watches_report_rollouts_only():
    from mllm_cxr.train.collapse import report_texts

    texts = ["No acute process.", '```json\n[]\n```', "Yes.", "Small effusion."]
    rows = [{"task": "report"}, {"task": "detection"}, {"task": "vqa"}, {}]
    assert report_texts(texts, rows) == ["No acute process.", "Small effusion."]
    assert report_texts(texts, None) == texts  # no task column: every rollout is a report
