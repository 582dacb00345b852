"""Box metrics (reward.box_metrics) on hand-computed cases, and the box rewards (reward.box_rewards)
through the TRL adapter: values, registry, and 0 (never an exception) for strange completions."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cxr_io.boxes import FAMILIES, decode_boxes, encode_boxes, encode_grounded, iou
from reward.base import RewardError, available_scorers
from reward.box_metrics import (
    average_precision,
    box_f1,
    box_f1_corpus,
    grounded_report_corpus,
    grounded_report_score,
    grounding_summary,
    hungarian,
    iou_matrix,
    matched_iou,
    parse_failure_rate,
    pixel_precision,
    voc_ap,
)
from reward.trl import reward_funcs_and_weights, reward_function
from tests.builders.repo import REPO


def B(x1, y1, x2, y2, label=None, score=None):
    b = {"x_min": x1, "y_min": y1, "x_max": x2, "y_max": y2}
    if label is not None:
        b["label"] = label
    if score is not None:
        b["score"] = score
    return b


A = B(0.0, 0.0, 0.5, 0.5)
A_SHIFT = B(0.25, 0.0, 0.75, 0.5)  # IoU with A: 0.125 / 0.375 = 1/3


def test_iou_matrix_matches_pairwise_iou():
    boxes = [A, A_SHIFT, B(0.6, 0.6, 0.9, 0.9), B(0.5, 0.5, 0.1, 0.1)]
    m = iou_matrix(boxes, boxes)
    for i, a in enumerate(boxes):
        for j, b in enumerate(boxes):
            assert m[i, j] == pytest.approx(iou(a, b))
    assert m[0, 1] == pytest.approx(1 / 3) and m[3, 3] == 0.0


def test_matched_iou_and_grounding_summary():
    assert matched_iou([A], [A]) == 1.0 and matched_iou([], []) == 1.0
    assert matched_iou([A], []) == 0.0 and matched_iou([], [A]) == 0.0
    assert matched_iou([A_SHIFT], [A]) == pytest.approx(1 / 3)
    assert matched_iou([A, A_SHIFT], [A]) == pytest.approx(0.5)  # the extra box halves it
    s = grounding_summary([[A], [A_SHIFT], [], [A]], [[A], [A], [], [B(0.6, 0.6, 0.9, 0.9)]])
    assert s["mean_iou"] == pytest.approx((1 + 1 / 3 + 1 + 0) / 4) and s["acc_at_iou_0.5"] == 0.5


def test_hungarian_maximises_the_summed_iou():
    # p0 overlaps both references (IoU 0.6 with r0, 1/3 with r1), p1 only r0 (0.75): pairing p0-r0 would
    # leave p1 with nothing (sum 0.6); the optimum pairs p0-r1 and p1-r0 (sum 1.083)
    r0, r1 = B(0.0, 0.0, 0.4, 0.4), B(0.3, 0.0, 0.7, 0.4)
    p0, p1 = B(0.1, 0.0, 0.5, 0.4), B(0.0, 0.0, 0.3, 0.4)
    pairs = hungarian([p0, p1], [r0, r1])
    assert {(i, j) for i, j, _ in pairs} == {(0, 1), (1, 0)}
    assert sum(v for _, _, v in pairs) == pytest.approx(0.75 + 1 / 3)
    f = box_f1([p0, p1], [r0, r1], threshold=0.5)
    assert (f["tp"], f["precision"], f["recall"]) == (1, 0.5, 0.5)  # only the 0.75 pair clears 0.5
    assert box_f1([p0, p1], [r0, r1], threshold=0.3)["f1"] == 1.0
    assert box_f1([A], [A]) == {"tp": 1, "n_pred": 1, "n_ref": 1, "precision": 1.0, "recall": 1.0, "f1": 1.0}
    assert box_f1([], [])["f1"] == 1.0 and box_f1([A], [])["f1"] == 0.0
    lab = box_f1([B(0, 0, .5, .5, "Mass")], [B(0, 0, .5, .5, "Nodule")], match_labels=True)
    assert lab["tp"] == 0
    c = box_f1_corpus([[A], [A, A_SHIFT]], [[A], [A]])
    assert (c["precision"], c["recall"]) == (pytest.approx(2 / 3), 1.0)


def test_voc_ap_hand_computed():
    # two references in one image; detections by score: TP, FP (duplicate of the first), TP
    ref = [[B(0, 0, .2, .2, "Nodule"), B(.5, .5, .7, .7, "Nodule")]]
    pred = [[B(0, 0, .2, .2, "Nodule", .9), B(0, 0, .2, .2, "Nodule", .8), B(.5, .5, .7, .7, "Nodule", .7)]]
    r = average_precision(pred, ref)
    # recall .5 .5 1, precision 1 .5 .667; envelope 1 .667 .667 -> AP = .5 * 1 + .5 * 2/3
    assert r["per_class"]["Nodule"] == pytest.approx(0.5 + 0.5 * 2 / 3) and r["map"] == r["per_class"]["Nodule"]
    # a class without references is not in the mean; a class never predicted has AP 0
    r2 = average_precision([[B(0, 0, .2, .2, "Mass")], []], [[B(0, 0, .2, .2, "Mass")], [B(0, 0, .1, .1, "Effusion")]])
    assert r2["per_class"] == {"Mass": 1.0, "Effusion": 0.0} and r2["map"] == 0.5
    assert voc_ap(np.array([0.5, 1.0]), np.array([1.0, 0.5])) == pytest.approx(0.75)


def test_voc_ap_not_below_the_step_ap():
    rng = np.random.default_rng(0)
    refs, preds = [], []
    for _ in range(30):
        refs.append([B(x, y, x + .2, y + .2, "c") for x, y in rng.uniform(0, .8, (2, 2))])
        preds.append([B(x, y, x + .2, y + .2, "c", float(s)) for (x, y), s in zip(rng.uniform(0, .8, (3, 2)),
                                                                                   rng.uniform(size=3))])
        preds[-1].append({**refs[-1][0], "score": 0.5})
    ap = average_precision(preds, refs)["map"]
    assert 0 < ap <= 1


def test_pixel_precision_and_grounded_score():
    assert pixel_precision([B(0, 0, .5, .5)], [B(0, 0, 1, 1)]) == 1.0
    assert pixel_precision([B(0, 0, .5, .5)], [B(.25, 0, 1, 1)]) == pytest.approx(0.5, abs=0.01)
    assert pixel_precision([], [A]) == 0.0
    ref = [{"text": "The heart size is normal.", "boxes": None},
           {"text": "There is a small left pleural effusion.", "boxes": [B(.6, .6, .9, .9)]}]
    good = [{"text": "Small left pleural effusion.", "boxes": [B(.62, .62, .88, .9)]}]
    wrong_place = [{"text": "Small left pleural effusion.", "boxes": [B(.0, .0, .3, .3)]}]
    wrong_finding = [{"text": "Right upper lobe pneumothorax.", "boxes": [B(.62, .62, .88, .9)]}]
    assert grounded_report_score(good, ref)["score"] == 1.0
    assert grounded_report_score(wrong_place, ref)["score"] == 0.0
    assert grounded_report_score(wrong_finding, ref)["score"] == 0.0
    half = grounded_report_score(good + wrong_place, ref)
    assert half["grounding_precision"] == 0.5 and half["grounding_recall"] == 1.0
    c = grounded_report_corpus([good, wrong_place], [ref, ref])
    assert c["grounding_precision"] == 0.5 and c["grounding_recall"] == 0.5


def test_parse_failure_rate():
    decoded = [decode_boxes(t, "qwen2_vl", (10, 10)) for t in
               ["<|box_start|>(1,2),(3,4)<|box_end|>", "garbage", "No boxes.", "<|box_start|>(1,2<|box_end|>"]]
    assert parse_failure_rate(decoded) == 0.5
    assert math.isnan(parse_failure_rate([]))


# -- rewards ---------------------------------------------------------------------------------------
def test_box_rewards_are_registered_and_reachable_from_a_spec():
    assert {"iou", "box_f1", "box_format", "grounded_report"} <= set(available_scorers())
    funcs, weights = reward_funcs_and_weights([{"name": "iou", "weight": 1.0, "kwargs": {"family": "qwen3_vl"}},
                                               {"name": "box_format", "weight": 0.2, "kwargs": {"family": "qwen3_vl"}}])
    assert [f.__name__ for f in funcs] == ["iou", "box_format"] and weights == [1.0, 0.2]


def test_box_reward_values():
    ref = [B(0.1, 0.1, 0.5, 0.5)]
    size = [1024, 768]
    good = encode_boxes(ref, "qwen2_5_vl", size)
    half = encode_boxes([B(0.1, 0.1, 0.5, 0.5), B(0.6, 0.6, 0.9, 0.9)], "qwen2_5_vl", size)
    outside = '```json\n[{"bbox_2d": [10, 10, 5000, 300]}]\n```'
    cols = {"boxes": [json.dumps(ref)] * 4, "image_size": [size] * 4}
    comps = [good, half, outside, "I cannot tell."]
    iou_f = reward_function("iou", family="qwen2_5_vl")
    got = iou_f(completions=comps, **cols)
    assert got[0] == pytest.approx(1.0, abs=0.01) and got[1] == pytest.approx(0.5, abs=0.01) and got[3] == 0.0
    assert reward_function("box_f1", family="qwen2_5_vl")(completions=comps, **cols)[:2] == \
        [1.0, pytest.approx(2 / 3)]
    fmt = reward_function("box_format", family="qwen2_5_vl")(completions=comps + ["[]", "[{]"], **{
        "image_size": [size] * 6})
    assert fmt == [1.0, 1.0, 0.0, 0.0, 1.0, 0.0]
    # "not found" is right when there is nothing to find
    assert iou_f(completions=["[]", good], boxes=[[], []], image_size=[size, size]) == [1.0, 0.0]


def test_grounded_report_reward():
    ref = [{"text": "Small left pleural effusion.", "boxes": [B(.6, .6, .9, .9)]}]
    f = reward_function("grounded_report", family="maira2")
    good = encode_grounded([{"text": "There is a left pleural effusion.", "boxes": [B(.6, .6, .9, .9)]}],
                           "maira2", (512, 512))
    assert f(completions=[good, "No acute findings."], grounded_findings=[ref, json.dumps(ref)],
             image_size=[[512, 512]] * 2) == [1.0, 0.0]


def test_configuration_errors_still_raise():
    with pytest.raises(RewardError, match="image_size"):
        reward_function("iou", family="qwen2_5_vl")(completions=["[]"], boxes=[[]])
    with pytest.raises(RewardError, match="'boxes'"):
        reward_function("iou", family="qwen3_vl")(completions=["[]"])
    with pytest.raises(RewardError, match="unknown box family"):
        reward_function("box_f1", family="llava")
    with pytest.raises(RewardError, match="family"):
        reward_function("box_format")


strange = st.one_of(st.none(), st.text(max_size=200), st.integers(), st.binary(max_size=50),
                    st.lists(st.dictionaries(st.sampled_from(["role", "content"]), st.text(max_size=30)), max_size=2),
                    st.sampled_from(["```json\n[{\"bbox_2d\": [1e308, -1e308, NaN, 4]}]```", "<obj><box><x99>",
                                     "<|box_start|>(1000000,2),(3,4)<|box_end|>", "[" * 500, "{" * 3000,
                                     '[{"text": 5, "bbox_2d": [[1,2,3,4]]}]', "\x00\ud7ff" * 10]))


@settings(max_examples=120, deadline=None)
@given(comps=st.lists(strange, min_size=1, max_size=4), family=st.sampled_from(FAMILIES),
       name=st.sampled_from(["iou", "box_f1", "box_format", "grounded_report"]))
def test_strange_completions_score_zero_or_a_finite_value_and_never_raise(comps, family, name):
    n = len(comps)
    f = reward_function(name, family=family)
    cols = {"boxes": [[B(.1, .1, .4, .4)]] * n, "image_size": [[640, 512]] * n,
            "grounded_findings": [[{"text": "Left pleural effusion.", "boxes": [B(.1, .1, .4, .4)]}]] * n}
    out = f(completions=comps, **cols)
    assert len(out) == n and all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in out)
    assert f.n_errors == 0  # scored, not rescued by the adapter's error path
    for c, v in zip(comps, out):
        if c is None or (isinstance(c, str) and not c.strip()):
            assert v == 0.0


def test_map_equals_the_plain_python_voc_of_the_benchmark():
    import importlib.util

    path = REPO / "bench" / "bench_boxes.py"
    spec = importlib.util.spec_from_file_location("bench_boxes_t", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    for seed in range(3):
        preds, refs = bench.detection_set(600, seed=seed)
        assert average_precision(preds, refs)["map"] == pytest.approx(bench.naive_map(preds, refs), abs=1e-12)
    section = bench.run(scale=0.02)
    assert section.startswith("## Box codecs") and "| qwen2_5_vl |" in section and "mAP" in section
