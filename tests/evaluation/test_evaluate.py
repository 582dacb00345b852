"""mllm-cxr eval: known numbers on hand-made prediction files, bootstrap CIs, paired comparison, outputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from evaluation.evaluate import evaluate_predictions, run_eval
from evaluation.groups import f1_group
from evaluation.predictions import predictions_to_evaluate
from reward.base import RewardError, get_scorer

#: Reports with clear CheXpert findings (rule labeler) and a few sentences about a previous exam.
REPORTS = [
    "Moderate cardiomegaly. Small left pleural effusion. No pneumothorax.",
    "Right lower lobe consolidation. No pleural effusion. Heart size is normal.",
    "Large right pneumothorax. No consolidation. Heart size is normal.",
    "Mild pulmonary edema. Cardiomegaly. Bilateral pleural effusions.",
    "Bibasilar atelectasis. No pneumothorax. No pleural effusion.",
    "The lungs are clear. No acute cardiopulmonary process.",
    "Left upper lobe consolidation, concerning for pneumonia. Small right pleural effusion.",
    "Cardiomegaly with vascular congestion. No focal consolidation.",
    "Endotracheal tube terminates above the carina. Right pneumothorax. Left basilar atelectasis.",
    "No focal consolidation, pleural effusion or pneumothorax. Normal heart size.",
    "Large left pleural effusion with adjacent atelectasis. Cardiomegaly.",
    "Pulmonary edema. Right pleural effusion. Consolidation in the left lower lobe.",
]


def write_preds(path: Path, predictions: list[str], references: list[str], has_prior: list[bool] | None = None,
                ids: list[str] | None = None) -> Path:
    ids = ids or [f"s{i:03d}" for i in range(len(predictions))]
    has_prior = has_prior or [False] * len(predictions)
    with open(path, "w", encoding="utf-8") as fh:
        for sid, p, r, hp in zip(ids, predictions, references, has_prior):
            fh.write(json.dumps({"study_id": sid, "prediction": p, "reference": r,
                                 "context": {"has_prior": hp, "comparison": "None."}}) + "\n")
    return path


@pytest.fixture(autouse=True)
def _no_model_env(monkeypatch):
    for var in ("MLLM_CXR_RADGRAPH_DIR", "MLLM_CXR_GREEN_MODEL", "MLLM_CXR_GREEN_URL", "MLLM_CXR_CHEXBERT"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def files(tmp_path):
    swapped = REPORTS[1:] + REPORTS[:1]
    perfect = write_preds(tmp_path / "perfect.jsonl", REPORTS, REPORTS)
    worse = write_preds(tmp_path / "swapped.jsonl", swapped, REPORTS)
    return perfect, worse


FAST = ("bleu", "rouge_l", "chexpert", "prior", "length")


def test_perfect_predictions_score_one_and_swapped_lower(files):
    perfect, swapped = files
    a, _ = evaluate_predictions(perfect, metrics=FAST, n_boot=200, seed=1, progress=False)
    b, _ = evaluate_predictions(swapped, metrics=FAST, n_boot=200, seed=1, progress=False)
    m, w = a["metrics"], b["metrics"]
    for key in ("bleu_4", "bleu_1", "rouge_l", "chexpert_micro_f1_14", "chexpert_micro_f1_5"):
        assert m[key]["value"] == pytest.approx(1.0), key
        assert w[key]["value"] < 0.9, key
    # per observation: 1.0 wherever the references have a positive (F1 is defined there)
    support = a["details"]["chexpert"]["support"]
    defined = [o for o, n in support.items() if n > 0]
    assert len(defined) >= 6
    for o in defined:
        assert m[f"chexpert_f1::{o}"]["value"] == pytest.approx(1.0)
        assert w[f"chexpert_f1::{o}"]["value"] <= m[f"chexpert_f1::{o}"]["value"]
    assert w["chexpert_macro_f1_5"]["value"] < m["chexpert_macro_f1_5"]["value"]
    assert m["length_ratio"]["value"] == pytest.approx(1.0)
    assert a["details"]["chexpert"]["uncertain"] == "positive"
    assert "uncertain=positive" in a["details"]["chexpert"]["convention"]


def test_every_ci_contains_its_point_estimate(files):
    for f in files:
        res, _ = evaluate_predictions(f, metrics=FAST, n_boot=300, seed=3, progress=False)
        checked = 0
        for key, m in res["metrics"].items():
            if m["value"] is None or m["ci"] is None:
                continue
            lo, hi = m["ci"]
            assert lo - 1e-9 <= m["value"] <= hi + 1e-9, (f.name, key, m)
            checked += 1
        assert checked >= 20


def test_corpus_values_match_the_reference_implementations(files):
    """Corpus BLEU and F1 come from summed per-study counts: same numbers as the registry scorers."""
    from reward.f1 import f1_report

    _, swapped = files
    res, extras = evaluate_predictions(swapped, metrics=("bleu", "chexpert"), n_boot=0, progress=False)
    p = extras["pred"]
    bleu = get_scorer("bleu")(p.hyps, p.refs).corpus
    assert res["metrics"]["bleu_4"]["value"] == pytest.approx(bleu["bleu_4"], rel=1e-9)
    assert res["metrics"]["bleu_1"]["value"] == pytest.approx(bleu["bleu_1"], rel=1e-9)
    from reward.chexpert import label_reports

    rep = f1_report(label_reports(p.hyps), label_reports(p.refs), "positive")
    for sub in ("14", "5"):
        for avg in ("micro", "macro"):
            assert res["metrics"][f"chexpert_{avg}_f1_{sub}"]["value"] == pytest.approx(rep[f"f1_{sub}"][avg]), (sub, avg)
    assert res["metrics"]["chexpert_micro_f1_14"]["ci"] is None  # n_boot=0: no interval


def test_f1_bootstrap_recomputes_corpus_f1_on_resampled_label_sets():
    """A resample that drops the only positive study of a class must give that class F1 0, not a mean."""
    h = np.zeros((4, 14), dtype=int)
    r = np.zeros((4, 14), dtype=int)
    r[0, 2] = h[0, 2] = 1          # one true positive
    h[1, 2] = 1                    # one false positive
    g = f1_group("chexpert", h, r, {})
    vals = g.values(g.S.sum(axis=0))
    assert vals["chexpert_micro_f1_14"] == pytest.approx(2 / 3)           # 2TP / (2TP + FP + FN) = 2/3
    only_fp = g.values(np.array([0, 2, 0, 0], dtype=float) @ g.S)        # study 1 drawn twice
    assert only_fp["chexpert_micro_f1_14"] == 0.0
    per_study_mean = np.mean([1.0, 0.0, 1.0, 1.0])  # what averaging per-study F1 (empty = 1) would say
    assert vals["chexpert_micro_f1_14"] != pytest.approx(per_study_mean)


def test_paired_comparison_with_itself_is_zero(files):
    perfect, swapped = files
    res, _ = evaluate_predictions(swapped, compare=swapped, metrics=FAST, n_boot=200, seed=0, progress=False)
    c = res["compare"]
    assert c["n_common"] == len(REPORTS) and c["reference_mismatch"] == 0
    for key, m in c["metrics"].items():
        if m["delta"] is None:
            continue
        assert m["delta"] == 0.0, key
        assert m["ci"] == [0.0, 0.0], key
        assert m["p_value"] == 1.0, key
    res2, _ = evaluate_predictions(perfect, compare=swapped, metrics=("rouge_l", "chexpert"), n_boot=300, seed=0,
                                   progress=False)
    d = res2["compare"]["metrics"]["rouge_l"]
    assert d["delta"] > 0.3 and d["ci"][0] > 0 and d["p_value"] < 0.05


def test_prior_hallucination_rate_counts_only_studies_without_prior(tmp_path):
    preds = ["Stable cardiomegaly, unchanged from the prior study.", "Cardiomegaly.",
             "No interval change in the pleural effusion.", "Pleural effusion.",
             "Compared to the prior exam, no change.", "Clear lungs."]
    refs = ["Cardiomegaly."] * 2 + ["Pleural effusion."] * 2 + ["Clear lungs."] * 2
    has_prior = [False, False, False, False, True, True]
    f = write_preds(tmp_path / "p.jsonl", preds, refs, has_prior)
    res, _ = evaluate_predictions(f, metrics=("prior",), n_boot=100, progress=False)
    assert res["metrics"]["prior_hallucination_rate"]["value"] == pytest.approx(2 / 4)
    assert res["metrics"]["reference_prior_rate"]["value"] == 0.0
    assert res["details"]["prior"]["n_no_prior"] == 4
    assert res["metrics"]["prior_hallucination_rate"]["higher_is_better"] is False


def test_missing_models_are_listed_as_skipped_with_reason(files):
    perfect, _ = files
    res, _ = evaluate_predictions(perfect, metrics=("rouge_l", "radgraph", "green", "chexbert"), n_boot=0,
                                  progress=False)
    assert set(res["skipped_metrics"]) >= {"radgraph", "green", "chexbert"}
    assert "model_dir" in res["skipped_metrics"]["radgraph"]
    assert res["skipped_metrics"]["green"].startswith("MissingBackendError")
    assert "rouge_l" in res["metrics"]


def test_bad_prediction_files_name_line_and_field(tmp_path):
    f = tmp_path / "bad.jsonl"
    f.write_text('{"study_id": "a", "prediction": "x", "reference": "y"}\n{"study_id": "b", "reference": "y"}\n')
    with pytest.raises(RewardError) as e:
        predictions_to_evaluate(f)
    assert "bad.jsonl:2" in str(e.value) and "prediction" in str(e.value)
    f.write_text('{"study_id": "a", "prediction": "x", "reference": "y"}\n{"study_id": "a", "prediction": "x", '
                 '"reference": "y"}\n')
    with pytest.raises(RewardError, match="repeats line 1"):
        predictions_to_evaluate(f)
    f.write_text('{"study_id": "a", "prediction": "x", "reference": ""}\n{"study_id": "b", "prediction": "x", '
                 '"reference": "y"}\n{"study_id": "c", "predic')
    with pytest.raises(RewardError, match="bad.jsonl:3"):
        predictions_to_evaluate(f)
    f.write_text('{"study_id": "a", "prediction": "x", "reference": ""}\n{"study_id": "b", "prediction": "x", '
                 '"reference": "y"}\n')
    p = predictions_to_evaluate(f)
    assert p.ids == ["b"] and p.skipped_rows == {"empty_reference": 1} and p.n_rows == 2


def test_bootstrap_is_seeded(files):
    _, swapped = files
    a, _ = evaluate_predictions(swapped, metrics=("rouge_l",), n_boot=100, seed=5, progress=False)
    b, _ = evaluate_predictions(swapped, metrics=("rouge_l",), n_boot=100, seed=5, progress=False)
    c, _ = evaluate_predictions(swapped, metrics=("rouge_l",), n_boot=100, seed=6, progress=False)
    assert a["metrics"]["rouge_l"]["ci"] == b["metrics"]["rouge_l"]["ci"] != c["metrics"]["rouge_l"]["ci"]


def test_cli_writes_json_markdown_and_plots(files, tmp_path, capsys):
    from mllm_cxr.cli import main

    perfect, swapped = files
    out = tmp_path / "eval"
    rc = main(["eval", "--pred", str(swapped), "--out", str(out), "--compare", str(perfect), "--n-boot", "50",
               "--metrics", "bleu,rouge_l,chexpert,prior,length,radgraph", "--quiet"])
    assert rc == 2 and not out.exists()  # radgraph was asked for by name and has no model here
    assert "radgraph: RewardError" in capsys.readouterr().err
    rc = main(["eval", "--pred", str(swapped), "--out", str(out), "--compare", str(perfect), "--n-boot", "50",
               "--metrics", "bleu,rouge_l,chexpert_f1,prior_penalty,length", "--quiet"])  # score names work too
    assert rc == 0
    line = capsys.readouterr().out
    assert line.startswith(f"evaluated {len(REPORTS)} studies")
    res = json.loads((out / "metrics.json").read_text())
    assert res["compare"]["n_common"] == len(REPORTS) and "chexpert" in res["details"]
    md = (out / "metrics.md").read_text()
    assert "| F1-CheXpert micro (5) |" in md and "Paired comparison" in md and "uncertain=positive" in md
    res = run_eval(swapped, tmp_path / "all", metrics=("bleu", "radgraph"), n_boot=0, plots=False, progress=False)
    md = (tmp_path / "all" / "metrics.md").read_text()
    assert "radgraph:" in md and "MLLM_CXR_RADGRAPH_DIR" in md  # skipped, with its full reason
    for png in ("per_finding_f1.png", "length_distribution.png", "metrics.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    rows = [json.loads(x) for x in (out / "per_study.jsonl").read_text().splitlines()]
    assert len(rows) == len(REPORTS) and "rouge_l" in rows[0]
    assert main(["eval", "--pred", str(swapped), "--out", str(out), "--metrics", "bleu,nope"]) == 2


def test_a_plot_that_fails_leaves_the_last_one_whole(files, tmp_path, monkeypatch):
    """Plots are written like every other output: to a temporary name, renamed on success."""
    from matplotlib.figure import Figure

    perfect, _ = files
    out = tmp_path / "e"
    run_eval(perfect, out, metrics=("length",), n_boot=0, progress=False)
    before = (out / "length_distribution.png").read_bytes()

    def half_then_fail(self, fh, **kw):
        fh.write(b"\x89PNG half a plot")
        raise OSError("disk full")

    monkeypatch.setattr(Figure, "savefig", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        run_eval(perfect, out, metrics=("length",), n_boot=0, progress=False)
    assert (out / "length_distribution.png").read_bytes() == before
    assert sorted(p.name for p in out.iterdir() if "tmp" in p.name) == []


def test_run_eval_without_plots(files, tmp_path):
    perfect, _ = files
    res = run_eval(perfect, tmp_path / "e", metrics=("length",), n_boot=0, plots=False, progress=False)
    assert not list((tmp_path / "e").glob("*.png"))
    assert res["metrics"]["length_pred_words"]["value"] == pytest.approx(
        np.mean([len(r.split()) for r in REPORTS]))


def _null_and_win_groups(rng: np.random.Generator, n: int, shift: float):
    """Two systems on ``n`` studies: a mean metric and corpus CheXpert F1, system a better by ``shift``."""
    from evaluation.groups import mean_group

    ref = rng.random((n, 14)) < 0.3
    groups = []
    for s in (shift, 0.0):
        score = np.clip(rng.normal(0.5 + s, 0.2, n), 0, 1)
        flip = rng.random((n, 14)) < max(0.0, 0.3 - s)   # the better system flips fewer labels
        groups.append({"m": mean_group("m", "m", "M", score), "f1": f1_group("chexpert", ref ^ flip, ref, {})})
    return groups


def test_paired_p_value_is_uniform_for_systems_from_one_distribution():
    """Same distribution: about 5% of p-values below 0.05 (and about half below 0.5), for a mean metric and for
    corpus micro F1 recomputed from per-study counts. On 10 studies the percentile-bootstrap p-value used
    before gave about 11% below 0.05."""
    from evaluation.statistics import paired_compare

    ps = {"m": [], "chexpert_micro_f1_14": []}
    for seed in range(300):
        a, b = _null_and_win_groups(np.random.default_rng(seed), n=10, shift=0.0)
        for g in (a, b):   # only the stat under test (the per-class F1 values would triple the time)
            g["f1"].stats = {"chexpert_micro_f1_14": g["f1"].stats["chexpert_micro_f1_14"]}
        res = paired_compare(a, b, 10, n_boot=199, seed=seed)
        for k in ps:
            ps[k].append(res[k]["p_value"])
    for k, v in ps.items():
        v = np.asarray(v)
        assert np.all((v > 0) & (v <= 1)), k
        assert 0.02 <= np.mean(v < 0.05) <= 0.085, (k, np.mean(v < 0.05))   # 300 draws: 95% band of Bin(300, .05)
        assert 0.42 <= np.mean(v < 0.5) <= 0.58, (k, np.mean(v < 0.5))


def test_paired_p_value_for_a_clear_win_and_names_the_test(tmp_path, files):
    from evaluation.statistics import paired_compare

    a, b = _null_and_win_groups(np.random.default_rng(0), n=60, shift=0.25)
    res = paired_compare(a, b, 60, n_boot=999, seed=0)
    assert res["m"]["delta"] > 0.15 and res["m"]["p_value"] < 0.01
    assert res["chexpert_micro_f1_14"]["delta"] > 0.2 and res["chexpert_micro_f1_14"]["p_value"] < 0.01
    perfect, swapped = files
    run_eval(perfect, tmp_path / "ev", compare=swapped, metrics=("rouge_l",), n_boot=50, plots=False, progress=False)
    md = (tmp_path / "ev" / "metrics.md").read_text()
    assert "paired permutation (randomisation) test" in md
    assert "permutation" in json.loads((tmp_path / "ev" / "metrics.json").read_text())["compare"]["p_value_test"]


def test_paired_p_value_needs_two_studies():
    """One shared study has no permutation distribution: the p-value is absent, not a crash."""
    import numpy as np

    from evaluation.statistics import permutation_p_value

    one = np.array([[1.0, 2.0]])
    assert permutation_p_value(one, one + 1, lambda t: t[..., 0] / t[..., 1], 100, 0) is None


def test_answers_group_scores_only_question_rows():
    """Answer accuracy is the mean answer_match over classification/VQA/view rows; other rows weigh 0, and a
    file without question rows is a skip (skippable), not a score of 0."""
    from evaluation.groups import NoQuestionRows, answers_group

    records = [{"task": "vqa"}, {"task": "vqa"}, {"task": "view"}, {"task": "report"}]
    hyps = ["Yes.", "No.", "PA", "Yes."]
    refs = ["Yes.", "Yes.", "PA", "Yes."]
    g = answers_group(records, hyps, refs)
    value = float(g.stats["answer_accuracy"].fn(g.S.sum(axis=0)))
    assert value == pytest.approx(2 / 3) and g.info["n_questions"] == 3 and g.info["tasks"] == ["view", "vqa"]
    with pytest.raises(NoQuestionRows) as e:
        answers_group([{"task": "report"}], ["x"], ["y"])
    assert e.value.skippable


def test_question_tasks_are_the_tasks_rewarded_by_answer_match():
    """evaluation may not import mllm_cxr (layering), so its list of question tasks is a copy: it must
    name exactly the tasks whose reward is answer_match."""
    from evaluation.groups import QUESTION_TASKS
    from mllm_cxr.tasks import TASKS

    assert set(QUESTION_TASKS) == {name for name, t in TASKS.items() if "answer_match" in t.rewards}
