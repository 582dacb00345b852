"""`mllm-cxr eval` reports device/measurement hallucinations with bootstrap CIs next to the prior-hallucination rate."""

from __future__ import annotations

import json

import pytest

REFS = ["Endotracheal tube tip 3 cm above the carina. Enteric tube in the stomach. No pneumothorax.",
        "Right PICC with tip at the cavoatrial junction. Heart size is normal.",
        "No acute cardiopulmonary process.",
        "Endotracheal tube terminates 5 cm above the carina. 8 mm nodule in the right upper lobe."]
PREDS = ["Endotracheal tube tip 6 cm above the carina. Enteric tube in the stomach. No pneumothorax.",  # measurement
         "Right PICC with tip in the SVC. Heart size is normal.",                                       # agrees
         "Right chest tube. Stable since the prior exam.",                            # device + a prior reference
         "Endotracheal tube terminates 5.5 cm above the carina. 15 mm nodule in the right upper lobe."]  # size


def _write(path, preds, refs):
    with open(path, "w") as fh:
        for i, (p, r) in enumerate(zip(preds, refs)):
            fh.write(json.dumps({"study_id": f"s{i}", "prediction": p, "reference": r,
                                 "context": {"has_prior": False}}) + "\n")
    return path


def test_measurement_group_values_and_cis(tmp_path):
    from evaluation.evaluate import evaluate_predictions

    f = _write(tmp_path / "p.jsonl", PREDS, REFS)
    res, _ = evaluate_predictions(f, metrics=("prior", "measurement"), n_boot=200, seed=0, progress=False)
    m = res["metrics"]
    assert m["measurement_hallucinations_per_report"]["value"] == pytest.approx(3 / 4)
    assert m["measurement_hallucination_rate"]["value"] == pytest.approx(3 / 4)
    assert m["measurement_hallucination_rate"]["higher_is_better"] is False
    assert m["tube_carina_mae_cm"]["value"] == pytest.approx((3.0 + 0.5) / 2)
    assert res["details"]["measurement"]["n_carina_pairs"] == 2
    assert res["details"]["measurement"]["by_kind"] == {"measurement": 1, "device": 1, "size": 1}
    assert 0 < m["device_position_precision"]["value"] < 1 and 0 < m["device_position_recall"]["value"] <= 1
    for k in ("measurement_hallucination_rate", "device_position_f1", "tube_carina_mae_cm"):
        lo, hi = m[k]["ci"]
        assert lo <= m[k]["value"] <= hi
    assert m["prior_hallucination_rate"]["value"] == pytest.approx(1 / 4)  # reported beside it
    # the same file against itself: no hallucination, F1 1
    g = _write(tmp_path / "r.jsonl", REFS, REFS)
    res2, _ = evaluate_predictions(g, metrics=("measurement",), n_boot=50, progress=False)
    assert res2["metrics"]["measurement_hallucination_rate"]["value"] == 0.0
    assert res2["metrics"]["device_position_f1"]["value"] == 1.0 and res2["metrics"]["tube_carina_mae_cm"]["value"] == 0


def test_eval_command_reports_hallucination_metrics(tmp_path, capsys):
    """The README's command (section "Hallucination metrics"), paths replaced:
    mllm-cxr eval --pred runs/pred/grpo.jsonl --out runs/eval/grpo --metrics prior,measurement --compare runs/pred/sft.jsonl
    """
    from mllm_cxr.cli import main

    pred, ref = _write(tmp_path / "grpo.jsonl", PREDS, REFS), _write(tmp_path / "sft.jsonl", REFS, REFS)
    out = tmp_path / "eval"
    rc = main(["eval", "--pred", str(pred), "--out", str(out), "--metrics", "prior,measurement", "--compare", str(ref)])
    assert rc == 0
    line = capsys.readouterr().out
    assert "Reports with a device/measurement hallucination 0.750" in line and "Prior-hallucination rate" in line
    md = (out / "metrics.md").read_text()
    assert "| Device+position F1 |" in md and "| Tube-to-carina MAE (cm) |" in md
    assert "Device/measurement hallucinations (reward.measurements): by kind" in md
    res = json.loads((out / "metrics.json").read_text())
    assert res["compare"]["metrics"]["measurement_hallucination_rate"]["delta"] == pytest.approx(0.75)
    rows = [json.loads(x) for x in (out / "per_study.jsonl").read_text().splitlines()]
    assert [r["measurement_hallucinations"] for r in rows] == [1.0, 0.0, 1.0, 1.0]
