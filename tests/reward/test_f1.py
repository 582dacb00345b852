"""F1-CheXbert-style aggregation (reward.f1) against the f1chexbert / RadEval oracles."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reward.base import RewardError
from reward.constants import CHEXPERT_5, CHEXPERT_LABELS
from reward.f1 import (
    f1_report,
    per_sample_exact_match,
    per_sample_f1,
    per_sample_hamming,
    to_binary,
    to_matrix,
)
from tests.builders.repo import require_shared


def _oracle_case() -> dict:
    cases = json.loads(require_shared("metric_oracles", "radeval.json").read_text())["cases"]
    return next(c for c in cases if c["id"] == "f1chexbert_5pairs")


def _oracle_labels(case: dict) -> tuple[list[dict], list[dict]]:
    """The 5 pairs' label dicts.

    The oracle's labels come from the CheXbert model, which we do not run here. The binary 14-label
    vectors below were reconstructed from the expected classification reports and supports (by the
    helper that recorded the oracle, file field ``derived_label_matrix_by_helper``): they are not
    published upstream. Positive sets only; every other observation is blank.
    """
    d = case["derived_label_matrix_by_helper"]
    assert sorted(d["label_order"]) == sorted(CHEXPERT_LABELS)
    hyp = [dict.fromkeys(names, 1.0) for names in d["hyps_positive"]]
    ref = [dict.fromkeys(names, 1.0) for names in d["refs_positive"]]
    return hyp, ref


def test_reproduces_f1chexbert_oracle_exactly():
    case = _oracle_case()
    hyp, ref = _oracle_labels(case)
    exp = case["expected"]
    rep = f1_report(hyp, ref, uncertain="positive")
    assert rep["accuracy_5"] == exp["accuracy_5"]
    assert rep["exact_match_5"] == exp["per_pair_exact_match_5"]
    for tag in ("14", "5"):
        got, want = rep[f"classification_report_{tag}"], exp[f"classification_report_{tag}"]
        assert set(got) == set(want)
        for key, metrics in want.items():
            for m, v in metrics.items():
                assert got[key][m] == v, (tag, key, m)  # exact, not approximate
    assert rep["f1_14"]["micro"] == exp["classification_report_14"]["micro avg"]["f1-score"]
    assert rep["f1_5"]["macro"] == exp["classification_report_5"]["macro avg"]["f1-score"]
    assert rep["uncertain"] == "positive" and "uncertain->1" in rep["convention"]


def test_f1chexbert_json_points_to_the_same_case():
    meta = json.loads(require_shared("metric_oracles", "f1chexbert.json").read_text())
    assert meta["case_ref"] == "radeval.json#f1chexbert_5pairs"
    case = _oracle_case()
    hyp, ref = _oracle_labels(case)
    rep = f1_report(hyp, ref)
    # the note states accuracy 0.6 and per-pair [1,0,0,1,1]
    assert "accuracy 0.6" in meta["note"] and rep["accuracy_5"] == 0.6
    assert rep["exact_match_5"] == [1.0, 0.0, 0.0, 1.0, 1.0]


def test_to_binary_conventions():
    labels = [{"Cardiomegaly": 1.0, "Edema": -1.0, "Pleural Effusion": 0.0, "Atelectasis": None},
              {"Edema": "", "Consolidation": "1.0", "Pneumonia": float("nan")}]
    pos = to_binary(labels, uncertain="positive")
    neg = to_binary(labels, uncertain="negative")
    i = {n: k for k, n in enumerate(CHEXPERT_LABELS)}
    assert pos.shape == (2, 14) and pos.dtype.kind == "i"
    assert pos[0, i["Cardiomegaly"]] == 1 and pos[0, i["Edema"]] == 1 and neg[0, i["Edema"]] == 0
    assert pos[0, i["Pleural Effusion"]] == 0 and pos[0, i["Atelectasis"]] == 0
    assert pos[1, i["Consolidation"]] == 1 and pos[1].sum() == 1
    # a matrix in CHEXPERT_LABELS order gives the same result as dicts
    m = to_matrix(labels)
    assert np.array_equal(to_binary(m, "positive"), pos)
    assert np.array_equal(to_binary(m.tolist(), "negative"), neg)


def test_bad_labels_are_named():
    with pytest.raises(RewardError, match="row 0, column 'Edema'.*'2'"):
        to_binary([{"Edema": "2"}])
    with pytest.raises(RewardError, match="unknown observation 'Edemaa'"):
        to_binary([{"Edemaa": 1}])
    with pytest.raises(RewardError, match="13 columns"):
        to_binary(np.zeros((2, 13)))
    with pytest.raises(RewardError, match="uncertain must be"):
        to_binary([{}], uncertain="maybe")
    with pytest.raises(RewardError, match="2 hypothesis label rows but 1 reference"):
        f1_report([{}, {}], [{}])


def test_per_sample_f1_and_edge_cases():
    hyp = [{}, {"Edema": 1}, {"Edema": 1, "Atelectasis": 1}, {"Edema": -1}, {"No Finding": 1}]
    ref = [{}, {}, {"Edema": 1}, {"Edema": 1}, {"No Finding": 1}]
    f = per_sample_f1(hyp, ref, uncertain="positive", subset="14")
    assert f.tolist() == pytest.approx([1.0, 0.0, 2 / 3, 1.0, 1.0])
    assert per_sample_f1(hyp, ref, uncertain="negative")[3] == 0.0
    # No Finding is outside the 5: both positive sets are empty there
    assert per_sample_f1(hyp, ref, subset="5")[4] == 1.0
    assert per_sample_exact_match(hyp, ref).tolist() == [1.0, 0.0, 0.0, 1.0, 1.0]
    with pytest.raises(RewardError):
        per_sample_f1(hyp, ref, subset="13")


def test_per_sample_hamming_costs_every_error_the_same():
    # one spurious finding on a normal study (No Finding lost too: 2 of 14 disagree) and one missed
    # finding among four: per-sample F1 charges 1.0 and 0.14, the Hamming score 2/14 and 1/14
    four = {"Cardiomegaly": 1, "Edema": 1, "Pleural Effusion": 1, "Pneumothorax": 1}
    hyp = [{"Edema": 1}, {k: v for k, v in four.items() if k != "Pneumothorax"}, four, {"Edema": -1}]
    ref = [{"No Finding": 1}, four, four, {"Edema": 1}]
    assert per_sample_f1(hyp, ref).tolist() == pytest.approx([0.0, 6 / 7, 1.0, 1.0])
    assert per_sample_hamming(hyp, ref).tolist() == pytest.approx([12 / 14, 13 / 14, 1.0, 1.0])
    assert per_sample_hamming(hyp, ref, uncertain="negative")[3] == pytest.approx(13 / 14)
    assert per_sample_hamming(hyp, ref, subset="5").tolist() == pytest.approx([4 / 5, 1.0, 1.0, 1.0])
    with pytest.raises(RewardError):
        per_sample_hamming(hyp, ref, subset="13")


label_value = st.sampled_from([1.0, 0.0, -1.0, None])
label_row = st.fixed_dictionaries({}, optional={n: label_value for n in CHEXPERT_LABELS})


@settings(max_examples=15, deadline=None)
@given(st.lists(st.tuples(label_row, label_row), min_size=1, max_size=12))
def test_properties(pairs):
    hyp, ref = [p[0] for p in pairs], [p[1] for p in pairs]
    f = per_sample_f1(hyp, ref)
    assert ((f >= 0) & (f <= 1)).all()
    assert (per_sample_f1(ref, ref) == 1.0).all()
    rep = f1_report(hyp, ref)
    for tag in ("f1_14", "f1_5"):
        assert all(0.0 <= v <= 1.0 for v in rep[tag].values())
    assert rep["accuracy_5"] == pytest.approx(np.mean(rep["exact_match_5"]))
    # micro F1 pools the per-sample counts: recompute it by hand
    h, r = to_binary(hyp), to_binary(ref)
    tp, fp, fn = (h & r).sum(), (h & ~r.astype(bool)).sum(), (~h.astype(bool) & r).sum()
    want = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
    assert rep["f1_14"]["micro"] == pytest.approx(want)
    five = [CHEXPERT_LABELS.index(n) for n in CHEXPERT_5]
    assert rep["exact_match_5"] == (h[:, five] == r[:, five]).all(axis=1).astype(float).tolist()
