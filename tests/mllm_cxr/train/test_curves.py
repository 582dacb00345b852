"""Held-out learning curves (mllm_cxr.train.curves): the numbers of one point, the files, the guards."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from mllm_cxr.train.curves import (
    CURVES_JSON,
    CURVES_PNG,
    CurveArguments,
    HeldOutCurve,
    curve_callback,
    curve_point,
)

EFF = "Moderate right pleural effusion."
NORMAL = "The lungs are clear. No pleural effusion or pneumothorax. Heart size is normal."
PRIOR = "Unchanged compared to the prior study."


def _rows():
    return [{"prompt": [], "images": [], "reference": EFF, "has_prior": False, "study_id": "a"},
            {"prompt": [], "images": [], "reference": NORMAL, "has_prior": False, "study_id": "b"},
            {"prompt": [], "images": [], "reference": f"{EFF} {PRIOR}", "has_prior": True, "study_id": "c"}]


def test_point_scores_greedy_and_sampled_reports_against_the_references():
    rows = _rows()
    perfect = [r["reference"] for r in rows]
    p = curve_point(perfect, [NORMAL, f"{NORMAL} {PRIOR}", NORMAL], rows)
    assert p["chexpert_f1_greedy"] == pytest.approx(1.0)
    assert p["chexpert_f1_sampled"] < 0.9  # two missed effusions
    # prior references are counted on the studies without a prior only (a and b): one of two
    assert p["prior_rate_greedy"] == 0.0 and p["prior_rate_sampled"] == pytest.approx(0.5)
    assert p["normal_share"] == pytest.approx(1 / 3)
    assert "reward_greedy" not in p


def test_point_scores_the_reward_on_greedy_reports():
    calls = {}

    def reward(prompts=None, completions=None, **cols):
        calls.update(cols)
        return [1.0 if "Moderate" in c[0]["content"] else 0.0 for c in completions]

    rows = _rows()
    p = curve_point([EFF, NORMAL, EFF], [EFF] * 3, rows, reward)
    assert p["reward_greedy"] == pytest.approx(2 / 3)
    assert calls["reference"] == [r["reference"] for r in rows] and "images" not in calls


def test_curve_writes_json_and_png_after_every_point(tmp_path):
    curve = HeldOutCurve(_rows(), processor=None, every=2, output_dir=tmp_path, title="t")
    for step, f1 in ((0, 0.5), (2, 0.7)):
        curve.points.append({"step": step, "chexpert_f1_greedy": f1, "chexpert_f1_sampled": f1 - 0.1,
                             "prior_rate_greedy": 0.1, "prior_rate_sampled": 0.2, "normal_share": 0.3,
                             "reward_greedy": f1})
        curve.write()
    doc = json.loads((tmp_path / CURVES_JSON).read_text())
    assert [p["step"] for p in doc["points"]] == [0, 2] and doc["study_ids"] == ["a", "b", "c"]
    assert (tmp_path / CURVES_PNG).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("kw", [{"curve_every": -1}, {"curve_studies": 0}, {"curve_max_new_tokens": 0}])
def test_bad_curve_settings_are_refused(kw):
    with pytest.raises(ValueError, match=next(iter(kw))):
        CurveArguments(**kw)


def test_curve_is_never_drawn_from_the_training_split():
    data = SimpleNamespace(train_split="train", studies="x.jsonl")
    with pytest.raises(ValueError, match="training split"):
        curve_callback(CurveArguments(curve_every=5, curve_split="train"), data, None, None, "out")
    assert curve_callback(CurveArguments(curve_every=0), data, None, None, "out") is None
