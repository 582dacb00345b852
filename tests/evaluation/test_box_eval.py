"""Box metrics in `mllm-cxr eval` (evaluation.box_eval): generate --task rows carry what scoring needs, the
numbers equal reward.box_metrics on the same boxes, CIs come from resamples (mAP recomputed on each),
--compare gives paired p-values, per_study.jsonl keeps the boxes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cxr_io.boxes import encode_boxes, encode_grounded
from evaluation.evaluate import evaluate_predictions, run_eval
from mllm_cxr.data import load_split
from mllm_cxr.prompts import PromptConfig
from mllm_cxr.tasks import TaskConfig
from reward.base import RewardError
from reward.box_metrics import average_precision, box_f1_corpus, grounding_summary
from tests.builders.predictions import PIX, shifted, task_file


def _rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_generate_task_rows_carry_what_eval_needs_and_the_oracle_scores_one(phantom_dir, tmp_path):
    out = task_file(phantom_dir, tmp_path, "phrase_grounding", lambda ex: ex.target, "oracle")
    rows = _rows(out)
    assert rows and all(r["task"] == "phrase_grounding" and r["box_family"] == "qwen2_5_vl" for r in rows)
    r = rows[0]
    assert r["study_id"] == f"{r['study']}#0" and len(r["images"]) == 1 and Path(r["images"][0]).is_file()
    assert isinstance(r["boxes"], list) and r["boxes"] and len(r["image_size"]) == 2 and r["phrase"]
    assert (r["min_pixels"], r["max_pixels"]) == (PIX["min_pixels"], PIX["max_pixels"])
    assert len({x["study_id"] for x in rows}) == len(rows)
    res, _ = evaluate_predictions(out, metrics=["boxes"], n_boot=50, progress=False)
    m = res["metrics"]
    # the codec's round trip costs at most half a resized pixel: matched IoU stays near 1
    assert m["box_mean_iou"]["value"] > 0.9 and m["box_acc_iou_0.5"]["value"] == 1.0
    assert m["box_f1"]["value"] == 1.0 and m["box_parse_failure_rate"]["value"] == 0.0
    assert "box_map_0.5" not in m and "grounded_f1" not in m  # no detection / grounded rows
    assert res["details"]["boxes"]["rows_by_task"] == {"phrase_grounding": len(rows)}


def test_numbers_equal_box_metrics_and_compare_gives_paired_p_values(phantom_dir, tmp_path):
    good = task_file(phantom_dir, tmp_path, "phrase_grounding", lambda ex: ex.target, "good")
    # every other example shifted off its place, one answer cut off (a parse failure)
    def answer(ex):
        k = int(ex.row_id.split("#")[1]) + int("".join(c for c in ex.study_id if c.isdigit()) or 0)
        if ex.row_id.endswith("#1"):
            return '```json\n[{"bbox_2d": [1, 2, 3'
        return shifted(ex) if k % 2 else ex.target
    bad = task_file(phantom_dir, tmp_path, "phrase_grounding", answer, "bad")
    out = tmp_path / "eval"
    res = run_eval(bad, out, metrics=["boxes"], compare=good, n_boot=200, plots=False, progress=False)
    rows = _rows(bad)
    from cxr_io.boxes import decode_boxes

    preds = [[dict(b) for b in decode_boxes(r["prediction"], "qwen2_5_vl", r["image_size"], **PIX)] for r in rows]
    refs = [r["boxes"] for r in rows]
    want = grounding_summary(preds, refs)
    m = res["metrics"]
    assert m["box_mean_iou"]["value"] == pytest.approx(want["mean_iou"], abs=1e-4)
    assert m["box_acc_iou_0.5"]["value"] == pytest.approx(want["acc_at_iou_0.5"])
    assert m["box_f1"]["value"] == pytest.approx(box_f1_corpus(preds, refs)["f1"])
    n_failed = sum(r["study_id"].endswith("#1") for r in rows)
    assert n_failed and m["box_parse_failure_rate"]["value"] == pytest.approx(n_failed / len(rows))
    lo, hi = m["box_mean_iou"]["ci"]
    assert lo < m["box_mean_iou"]["value"] < hi
    c = res["compare"]["metrics"]["box_mean_iou"]
    assert c["delta"] < 0 and c["ci"][1] < 0 and c["p_value"] is not None and c["p_value"] < 0.05
    per = _rows(out / "per_study.jsonl")
    d = per[0]["details"]["boxes"]
    assert d["task"] == "phrase_grounding" and d["ref_boxes"] and set(d["ref_boxes"][0]) >= {"x_min", "label"}
    assert any(p["details"]["boxes"]["n_failed"] > 0 for p in per)
    assert (out / "per_study_compare.jsonl").is_file()


def _detection_rows(tmp_path: Path) -> Path:
    """Hand-made detection rows in the `normalized` family: known boxes, one miss, one false positive."""
    A = {"x_min": 0.1, "y_min": 0.1, "x_max": 0.4, "y_max": 0.4}
    B = {"x_min": 0.5, "y_min": 0.5, "x_max": 0.9, "y_max": 0.9}
    rows = []
    for i in range(8):
        ref = [A] if i % 2 else [B]
        pred = ref if i < 5 else ([] if i == 5 else [A if i % 2 == 0 else B])
        label = "Cardiomegaly" if i % 2 else "Effusion"
        text = encode_boxes([{**b, "label": label} for b in pred], "normalized", (1000, 1000)) if pred else "Not found."
        rows.append({"study_id": f"s{i}#0", "prediction": text, "reference": "x", "task": "detection",
                     "box_family": "normalized", "boxes": ref, "label": label})
    p = tmp_path / "det.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


def test_map_is_recomputed_on_each_resample(tmp_path):
    p = _detection_rows(tmp_path)
    rows = _rows(p)
    res, extras = evaluate_predictions(p, metrics=["boxes"], n_boot=100, progress=False)
    m = res["metrics"]
    preds, refs = [], []
    from cxr_io.boxes import decode_boxes

    for r in rows:
        preds.append([{**b, "label": r["label"]} for b in decode_boxes(r["prediction"], "normalized", (1000, 1000))])
        refs.append([{**b, "label": r["label"]} for b in r["boxes"]])
    assert m["box_map_0.5"]["value"] == pytest.approx(average_precision(preds, refs)["map"])
    assert 0 < m["box_map_0.5"]["value"] < 1
    lo, hi = m["box_map_0.5"]["ci"]
    assert lo < hi  # resamples differ: the CI is not a point
    g = extras["groups"]["boxes"]
    only_hits = np.zeros(len(rows))
    only_hits[:4] = 1  # the first four rows are exact answers: mAP 1 on them
    assert g.weighted_values(only_hits[None, :])["box_map_0.5"][0] == pytest.approx(1.0)
    assert m["box_f1"]["value"] == pytest.approx(box_f1_corpus(preds, refs)["f1"])
    # mAP has no permutation p-value (not a function of sums), its paired delta CI still exists
    res2, _ = evaluate_predictions(p, compare=p, metrics=["boxes"], n_boot=30, progress=False)
    c = res2["compare"]["metrics"]["box_map_0.5"]
    assert c["p_value"] is None and c["delta"] == 0.0 and c["ci"] == [0.0, 0.0]


def test_grounded_report_rows(phantom_dir, tmp_path):
    out = task_file(phantom_dir, tmp_path, "grounded_report", lambda ex: ex.target, "g", n=16)
    rows = _rows(out)
    assert rows and all(isinstance(r["grounded_findings"], list) for r in rows)
    res, _ = evaluate_predictions(out, metrics=["boxes"], n_boot=20, progress=False)
    assert res["metrics"]["grounded_f1"]["value"] == pytest.approx(1.0)

    def no_boxes(ex):  # the same sentences without any box: nothing grounded
        gf = json.loads(ex.columns["grounded_findings"])
        return encode_grounded([{"text": f["text"], "boxes": None} for f in gf], "qwen2_5_vl",
                               ex.columns["image_size"], **PIX)
    out2 = task_file(phantom_dir, tmp_path, "grounded_report", no_boxes, "g2", n=16)
    res2, _ = evaluate_predictions(out2, metrics=["boxes"], n_boot=20, progress=False)
    assert res2["metrics"]["grounded_recall"]["value"] == 0.0


def test_report_rows_skip_the_box_group_and_named_boxes_is_an_error(tmp_path):
    p = tmp_path / "r.jsonl"
    p.write_text(json.dumps({"study_id": "a", "prediction": "No effusion.", "reference": "No effusion."}) + "\n")
    res, _ = evaluate_predictions(p, metrics=["rouge_l", "boxes"], n_boot=0, progress=False)
    assert "boxes" in res["skipped_metrics"] and "rouge_l" in res["metrics"]
    with pytest.raises(RewardError, match="box task"):
        run_eval(p, tmp_path / "e", metrics=["boxes"], strict=True, n_boot=0, plots=False, progress=False)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"study_id": "a", "prediction": "[]", "reference": "x", "task": "detection",
                               "boxes": []}) + "\n")
    with pytest.raises(RewardError, match="box_family"):
        evaluate_predictions(bad, metrics=["boxes"], n_boot=0, progress=False)


def test_html_report_draws_evals_boxes_and_shows_the_box_metrics(phantom_dir, tmp_path):
    import re

    from evaluation.report.build import build_report
    from evaluation.report.options import BOX_COLOURS

    good = task_file(phantom_dir, tmp_path, "phrase_grounding", lambda ex: ex.target, "good", n=6)
    bad = task_file(phantom_dir, tmp_path, "phrase_grounding", shifted, "bad", n=6)
    out = tmp_path / "eval"
    res = run_eval(bad, out, metrics=["boxes"], compare=good, n_boot=20, plots=False, progress=False)
    build_report(out)
    doc = (out / "report.html").read_text()
    assert "id=bx-ref" in doc and "id=bx-pred" in doc  # the toggles
    assert BOX_COLOURS["ref"] in doc and BOX_COLOURS["pred"] in doc
    assert res["metrics"]["box_mean_iou"]["label"] in doc and "rows by task phrase_grounding" in doc
    per = {r["study_id"]: r["details"]["boxes"] for r in _rows(out / "per_study.jsonl")}
    per_b = {r["study_id"]: r["details"]["boxes"] for r in _rows(out / "per_study_compare.jsonl")}
    rows = re.findall(r'<tr class=study data-id="([^"]+)"(.*?)</tr>', doc, re.DOTALL)
    assert len(rows) == len(per)
    for sid, body in rows:
        rects = re.findall(r'<rect class="([^"]+)" x="([\d.]+)" y="([\d.]+)" width="([\d.]+)"', body)
        ref = [r for r in rects if r[0] == "bx-ref"]
        pred_a = [r for r in rects if r[0] == "bx-pred sysA"]
        pred_b = [r for r in rects if r[0] == "bx-pred sysB"]
        assert len(ref) == len(per[sid]["ref_boxes"]) and len(pred_a) == len(per[sid]["pred_boxes"])
        assert len(pred_b) == len(per_b[sid]["pred_boxes"])
        want = per[sid]["pred_boxes"][0]
        assert float(pred_a[0][1]) == pytest.approx(want["x_min"], abs=1e-4)
        assert float(pred_a[0][3]) == pytest.approx(want["x_max"] - want["x_min"], abs=1e-4)
        assert f'data-m-box-iou="{per[sid]["iou"]:.6g}"' in body  # sortable by eval's per-row IoU


def test_qwen2_vl_box_markers_survive_decoding(tiny_model_dir, phantom_dir):
    """qwen2_vl's <|box_start|>... are special tokens: a skip_special_tokens decode loses the boxes, the
    generators' decode for that family keeps them (and still drops end-of-turn and padding)."""
    from transformers import AutoTokenizer

    from cxr_io.boxes import decode_boxes
    from mllm_cxr.infer.generate import (
        OpenAIGenerator,
        decode_keeping_box_tokens,
        strip_special_text,
        task_items,
    )
    from mllm_cxr.run_config import resolve_prompt

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    boxes = [{"x_min": 0.1, "y_min": 0.2, "x_max": 0.5, "y_max": 0.6, "label": "effusion"}]
    text = encode_boxes(boxes, "qwen2_vl", (1000, 1000))
    ids = tok(text + "<|im_end|>")["input_ids"]
    assert decode_boxes(tok.decode(ids, skip_special_tokens=True), "qwen2_vl", (1000, 1000)) == []
    kept = decode_keeping_box_tokens(tok, [ids])[0]
    assert kept == text and "<|im_end|>" not in kept
    got = decode_boxes(kept, "qwen2_vl", (1000, 1000))
    assert got.ok and got[0]["x_min"] == pytest.approx(0.1, abs=1e-3)
    assert strip_special_text(text + "<|im_end|><|endoftext|>") == text
    # the OpenAI backend asks the server to keep them, and sends a task example's own prompt
    cfg = TaskConfig(prompt=PromptConfig(), family="qwen2_vl", data_root=phantom_dir)
    ex = task_items(load_split(phantom_dir / "studies.jsonl", None, 8), "phrase_grounding", cfg)[0]
    gen = OpenAIGenerator("http://127.0.0.1:9", resolve_prompt(None, None), phantom_dir, served_model="m")
    gen.keep_box_tokens = True
    body = gen.request_body(ex)
    user = body["messages"][-1]["content"]
    assert body["skip_special_tokens"] is False and "bounding boxes" in user[-1]["text"]
    assert sum(p["type"] == "image_url" for p in user) == 1
