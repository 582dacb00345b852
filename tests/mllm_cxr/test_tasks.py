"""Tasks (mllm_cxr.tasks): each turns phantom studies into prompt + target through the one prompt
builder, names registered rewards, and round-trips its boxes through the family codec; the weighted
mixture spec is validated."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from data_prep.schema import read_records
from mllm_cxr.boxes import decode_boxes, decode_grounded
from mllm_cxr.config import ConfigError
from mllm_cxr.prompts import PromptConfig, build_messages, target_text
from mllm_cxr.tasks import NOT_FOUND, TASKS, TaskConfig, decode_answer, get_task, load_mixture, mix_examples
from reward.base import available_scorers
from reward.task_rewards import answer_match


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    from data_prep.phantom import make_phantom

    out = tmp_path_factory.mktemp("phantom_tasks")
    make_phantom(out, n=40, seed=2, image_size=200)
    return out, read_records(out / "studies.jsonl")


def test_every_task_names_registered_rewards():
    registered = set(available_scorers())
    assert set(TASKS) == {"report", "grounded_report", "phrase_grounding", "detection", "classification", "vqa", "view"}
    for t in TASKS.values():
        assert t.rewards and set(t.rewards) <= registered, t.name
        assert t.metrics, t.name


def test_report_task_is_todays_prompt_and_target(studies):
    _, recs = studies
    cfg = TaskConfig(prompt=PromptConfig())
    for s in recs[:5]:
        (ex,) = get_task("report").examples(s, cfg)
        assert (ex.messages, ex.images) == build_messages(s, cfg.prompt)
        assert ex.target == target_text(s, cfg.prompt) == ex.columns["reference"]


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen2_vl", "qwen3_vl", "maira2", "normalized"])
def test_box_tasks_round_trip_through_the_codec(studies, family):
    root, recs = studies
    cfg = TaskConfig(family=family, data_root=root)
    n = Counter()
    for s in recs:
        for ex in get_task("phrase_grounding").examples(s, cfg):
            n["pg"] += 1
            assert len(ex.images) == 1 and ex.images[0].view in ("PA", "AP")
            assert ex.columns["phrase"] in ex.messages[-1]["content"][-1]["text"]
            got = decode_answer(ex, ex.target, cfg)
            ref = json.loads(ex.columns["boxes"])
            assert got.ok and len(got) == len(ref)
            for g, r in zip(got, ref):
                assert all(abs(g[k] - r[k]) <= 0.011 for k in r), (family, g, r)
        for ex in get_task("detection").examples(s, cfg):
            n["det"] += 1
            got = decode_boxes(ex.target, family, ex.columns["image_size"])
            assert got.ok and len(got) == len(json.loads(ex.columns["boxes"]))
        for ex in get_task("grounded_report").examples(s, cfg):
            n["gr"] += 1
            got = decode_grounded(ex.target, family, ex.columns["image_size"])
            ref = json.loads(ex.columns["grounded_findings"])
            assert got.ok and [g["text"] for g in got] == [r["text"] for r in ref]
            assert [bool(g["boxes"]) for g in got] == [bool(r["boxes"]) for r in ref]
    assert n["pg"] > 5 and n["det"] > 20 and n["gr"] > 5


def test_detection_says_not_found_for_absent_findings(studies):
    root, recs = studies
    cfg = TaskConfig(family="qwen3_vl", detection_labels=["Pneumothorax", "Pleural Effusion"])
    exs = [ex for s in recs for ex in get_task("detection").examples(s, cfg)]
    absent = [ex for ex in exs if ex.target == NOT_FOUND]
    assert absent and all(json.loads(ex.columns["boxes"]) == [] for ex in absent)
    got = decode_boxes(absent[0].target, "qwen3_vl", (1000, 1000))
    assert list(got) == [] and got.empty_answer and got.ok
    # unannotated images (the lateral views) get no detection question
    assert all(ex.images[0].view != "LATERAL" for ex in exs)


def test_question_tasks(studies):
    _, recs = studies
    cfg = TaskConfig()
    s = next(r for r in recs if r.labels and r.labels.get("Cardiomegaly") == 1.0)
    vqa = {ex.columns["label"]: ex for ex in get_task("vqa").examples(s, cfg)}
    assert vqa["Cardiomegaly"].target == "Yes." and "cardiomegaly" in vqa["Cardiomegaly"].messages[-1]["content"][-1]["text"]
    assert answer_match("Yes, the heart is enlarged.", vqa["Cardiomegaly"].target) == 1.0
    (cls,) = get_task("classification").examples(s, cfg)
    assert "Cardiomegaly: yes" in cls.target.splitlines()
    assert answer_match(cls.target, cls.target) == 1.0 and answer_match("nonsense", cls.target) == 0.0
    assert answer_match("Yes.", "") == 0.0 and answer_match("", "No.") == 0.0 and answer_match("no", "No.") == 1.0
    views = get_task("view").examples(s, cfg)
    assert sorted(ex.target for ex in views) == sorted(["Lateral", {"PA": "PA", "AP": "AP"}[s.images[0].view]])
    assert all(len(ex.images) == 1 for ex in views)


def test_qwen2_5_vl_needs_image_sizes():
    with pytest.raises(ConfigError, match="family"):
        TaskConfig(family="llava")
    from data_prep.schema import validate_record

    s = validate_record({"study_id": "s", "patient_id": "p", "dataset": "d", "split": "test",
                         "images": [{"path": "a.png", "view": "PA"}],
                         "grounded_findings": [{"text": "x", "boxes": [{"x_min": .1, "y_min": .1, "x_max": .2,
                                                                       "y_max": .2}], "image": 0}]})
    with pytest.raises(ConfigError, match="data_root"):
        get_task("phrase_grounding").examples(s, TaskConfig(family="qwen2_5_vl"))
    (ex,) = get_task("phrase_grounding").examples(s, TaskConfig(family="qwen2_5_vl",
                                                                image_size=lambda st, im: (2000, 1000)))
    assert ex.columns["image_size"] == [2000, 1000]


def test_mixture_spec(tmp_path, studies):
    p = tmp_path / "mix.yaml"
    p.write_text("tasks:\n  - {name: report, weight: 0.6}\n  - {name: phrase_grounding, weight: 0.3}\n  - vqa\n")
    mix = load_mixture(p)
    assert [(e.name, round(e.weight, 4)) for e in mix] == [("report", 0.3158), ("phrase_grounding", 0.1579),
                                                           ("vqa", 0.5263)]  # 0.6, 0.3, 1 over 1.9
    for bad, msg in [({"tasks": []}, "non-empty"), ({"tasks": [{"name": "reports"}]}, "unknown task"),
                     ({"tasks": [{"name": "report", "weight": 0}]}, "positive"),
                     ({"tasks": [{"name": "report", "weight": float("nan")}]}, "positive"),
                     ({"tasks": ["report", "report"]}, "twice"),
                     ({"tasks": [{"name": "report", "wieght": 1}]}, "unknown key"),
                     ({"task": []}, "unknown key")]:
        with pytest.raises(ConfigError, match=msg):
            load_mixture(bad)
    root, recs = studies
    cfg = TaskConfig(family="qwen3_vl", data_root=root)
    mix = load_mixture({"tasks": [{"name": "report", "weight": 3}, {"name": "detection", "weight": 1}]})
    a = mix_examples(recs, mix, cfg, n=400, seed=1)
    assert [(e.task, e.study_id, e.target) for e in a] == [(e.task, e.study_id, e.target)
                                                           for e in mix_examples(recs, mix, cfg, n=400, seed=1)]
    share = Counter(e.task for e in a)["report"] / 400
    assert 0.68 < share < 0.82
    with pytest.raises(ConfigError, match="no example"):
        mix_examples([], load_mixture(["vqa"]), cfg, n=3)
