"""``mllm-cxr score``: join, per-metric output, skipped metrics, errors naming file/line/field."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

import pytest

from evaluation.cli import register
from evaluation.score import score_files
from reward.base import MissingBackendError, RewardError, Scorer, ScoreResult


class _Exact(Scorer):
    name = "_test_exact"

    def score(self, hyps: Sequence[str], refs: Sequence[str] | None = None, **_) -> ScoreResult:
        s = [float(h.strip() == r.strip()) for h, r in zip(hyps, refs)]
        return ScoreResult(s, corpus={"accuracy": sum(s) / len(s)})


def _no_model(**_):
    raise MissingBackendError("_test_no_model needs weights: pass model_dir=")


class _Flaky(Scorer):
    name = "_test_flaky"
    needs_reference = False

    def score(self, hyps, refs=None, **_) -> ScoreResult:
        if any("boom" in h for h in hyps):
            raise KeyError("boom")
        return ScoreResult([1.0] * len(hyps))


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def files(tmp_path):
    ref = _write(tmp_path / "ref.jsonl", [
        {"study_id": "a", "findings": "Stable cardiomegaly.", "impression": "x", "comparison": "None.", "prior": None},
        {"study_id": "b", "findings": "Clear lungs.", "impression": "y", "comparison": "XXXX", "prior": None},
        {"study_id": "c", "findings": "Unused.", "impression": "z", "comparison": "", "prior": None},
    ])
    pred = _write(tmp_path / "pred.jsonl", [
        {"study_id": "a", "prediction": "Unchanged cardiomegaly."},
        {"study_id": "b", "text": "Clear lungs."},
    ])
    return pred, ref


def _main(argv):
    from mllm_cxr.cli import main

    return main(argv)


def test_score_writes_metrics_and_refuses_a_named_metric_that_cannot_run(files, tmp_path, capsys):
    pred, ref = files
    out, per = tmp_path / "m.json", tmp_path / "per.jsonl"
    rc = _main(["score", "--pred", str(pred), "--ref", str(ref), "--metrics", "_test_exact,prior_penalty,_test_no_model",
                "--out", str(out), "--per-sample", str(per), "--quiet"])
    assert rc == 2 and not out.exists() and not per.exists()
    err = capsys.readouterr().err
    assert "'_test_no_model' was asked for but cannot run" in err and "needs weights: pass model_dir=" in err
    rc = _main(["score", "--pred", str(pred), "--ref", str(ref), "--metrics", "_test_exact,prior",
                "--out", str(out), "--per-sample", str(per), "--quiet"])
    assert rc == 0
    m = json.loads(out.read_text())
    assert m["n"] == 2 and m["ref_field"] == "findings" and m["n_references_without_prediction"] == 1
    assert m["metrics"]["_test_exact"]["mean"] == 0.5
    assert m["metrics"]["_test_exact"]["corpus"] == {"accuracy": 0.5}
    assert m["metrics"]["prior_penalty"]["mean"] == -0.5  # alias "prior"; study a had no prior; b had one
    assert m["skipped_metrics"] == {}
    rows = [json.loads(x) for x in per.read_text().splitlines()]
    assert rows == [{"study_id": "a", "_test_exact": 0.0, "prior_penalty": -1.0},
                    {"study_id": "b", "_test_exact": 1.0, "prior_penalty": 0.0}]
    assert "scored 2 studies" in capsys.readouterr().out


def test_score_all_lists_each_skip_with_its_full_reason(files, tmp_path):
    pred, ref = files
    out = tmp_path / "m.json"
    assert _main(["score", "--pred", str(pred), "--ref", str(ref), "--metrics", "all", "--out", str(out),
                  "--quiet"]) == 0
    m = json.loads(out.read_text())
    assert {"bleu", "rouge_l", "chexpert_f1", "prior_penalty"} <= set(m["metrics"])
    assert set(m["metrics"]).isdisjoint(m["skipped_metrics"])
    for name, reason in m["skipped_metrics"].items():  # e.g. radgraph_f1 / green / chexbert_f1 without models
        assert reason.split(":")[0].endswith("Error") and len(reason) > 40, (name, reason)
    if "radgraph_f1" in m["skipped_metrics"]:  # the whole reason, not cut at the environment variable's name
        assert "MLLM_CXR_RADGRAPH_DIR" in m["skipped_metrics"]["radgraph_f1"]


def test_ref_field_choice(files):
    pred, ref = files
    s, _ = score_files(pred, ref, [{"name": "_test_exact"}], ref_field="impression", progress=False)
    assert s["ref_field"] == "impression" and s["metrics"]["_test_exact"]["mean"] == 0.0
    s, _ = score_files(pred, ref, [{"name": "_test_exact"}], ref_field="findings+impression", progress=False)
    assert s["metrics"]["_test_exact"]["mean"] == 0.0


def test_failing_samples_are_counted(files, tmp_path):
    pred, ref = files
    _write(pred, [{"study_id": "a", "prediction": "boom"}, {"study_id": "b", "prediction": "fine"}])
    s, per = score_files(pred, ref, [{"name": "_test_flaky"}], progress=False)
    assert s["metrics"]["_test_flaky"]["n_errors"] == 1 and [r["_test_flaky"] for r in per] == [0.0, 1.0]


@pytest.mark.parametrize("pred_rows, match", [
    ([{"prediction": "x"}], r"pred.jsonl:1, field 'study_id': missing study id"),
    ([{"study_id": "a", "prediction": "x"}, {"study_id": "zz", "prediction": "y"}],
     r"pred.jsonl:2, field 'study_id': study_id 'zz' has no record in .*ref.jsonl"),
    ([{"study_id": "a", "answer": "x"}], r"pred.jsonl:1, field 'prediction' or 'text': missing \(study_id a\)"),
    ([{"study_id": "a", "prediction": "x"}, {"study_id": "a", "prediction": "y"}], r"pred.jsonl:2, field 'study_id', value 'a': study repeats line 1"),
    ([{"study_id": "a", "prediction": ["x"]}], r"pred.jsonl:1, field 'prediction', value 'list': expected a string"),
])
def test_bad_predictions_name_file_line_field(files, pred_rows, match):
    pred, ref = files
    _write(pred, pred_rows)
    with pytest.raises(RewardError, match=match):
        score_files(pred, ref, [{"name": "_test_exact"}], progress=False)


def test_bad_reference_field_and_json(files, tmp_path):
    pred, ref = files
    with pytest.raises(RewardError, match=r"ref.jsonl:1, field 'reference': missing"):
        score_files(pred, ref, [{"name": "_test_exact"}], ref_field="reference", progress=False)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"study_id": "a", "prediction": "x"}\n{oops\n')
    with pytest.raises(RewardError, match=r"bad.jsonl:2: not valid JSON"):
        score_files(bad, ref, [{"name": "_test_exact"}], progress=False)
    noref = _write(tmp_path / "noref.jsonl", [{"study_id": "a", "text": "x"}])
    with pytest.raises(RewardError, match=r"noref.jsonl:1: no reference field"):
        score_files(pred, noref, [{"name": "_test_exact"}], progress=False)


def test_skip_missing_counts(files):
    pred, ref = files
    _write(pred, [{"study_id": "a", "prediction": "x"}, {"study_id": "zz", "prediction": "y"},
                  {"study_id": "b", "answer": "?"}])
    s, _ = score_files(pred, ref, [{"name": "_test_exact"}], skip_missing=True, progress=False)
    assert s["n"] == 1
    assert s["skipped_records"] == {"prediction_without_reference": 1, "missing_prediction_field": 1,
                                    "missing_reference_field": 0}


def test_cli_user_errors_exit_2(files, tmp_path, capsys):
    pred, ref = files
    out = str(tmp_path / "m.json")
    assert _main(["score", "--pred", str(pred), "--ref", str(ref), "--metrics", "nope", "--out", out]) == 2
    assert "unknown scorer 'nope'" in capsys.readouterr().err
    assert _main(["score", "--pred", str(tmp_path / "missing.jsonl"), "--ref", str(ref), "--metrics", "_test_exact",
                  "--out", out]) == 2
    assert _main(["score", "--pred", str(pred), "--ref", str(ref), "--out", out]) == 2  # no metrics


def test_spec_file_adds_metrics_with_kwargs(files, tmp_path):
    pred, ref = files
    spec = tmp_path / "metrics.yaml"
    spec.write_text("- {name: prior_penalty, alias: prior2, kwargs: {penalty: 2.0}}\n")
    p = argparse.ArgumentParser()
    register(p.add_subparsers())
    out = tmp_path / "m.json"
    args = p.parse_args(["score", "--pred", str(pred), "--ref", str(ref), "--metrics", "prior_penalty", "--spec",
                         str(spec), "--out", str(out), "--quiet"])
    assert args.func(args) == 0
    m = json.loads(out.read_text())["metrics"]
    assert m["prior_penalty"]["mean"] == -0.5 and m["prior2"]["mean"] == -1.0 and m["prior2"]["kwargs"] == {"penalty": 2.0}


#: Test-local scorers, registered for this module only (other modules iterate the registry).
_LOCAL_SCORERS = [
    ("_test_exact", "test only: 1.0 when hypothesis == reference", _Exact),
    ("_test_no_model", "test only: needs a model that is not installed", _no_model),
    ("_test_flaky", "test only: fails on 'boom'", _Flaky),
]


@pytest.fixture(autouse=True, scope="module")
def _local_scorers():
    from tests.builders.scorers import local_scorers

    with local_scorers(_LOCAL_SCORERS):
        yield


@pytest.mark.parametrize("text", [
    '{"prediction": "x", "reference": "x"}\n',  # no study id
    '{"study_id": "a", "prediction": "x", "reference": "x"}\n{"study_id": "a", "prediction": "y", "reference": "x"}\n',
    '{"study_id": "a", "prediction": 3, "reference": "x"}\n',  # not a string
    '{"study_id": "a", "prediction": "x", "reference": "x"}\n{"study_id": "b", "predic',  # cut by a killed run
    '["not an object"]',
])
def test_score_and_eval_read_predictions_with_one_reader(files, tmp_path, text):
    """`score` and `eval` (and the HTML report) read a predictions file through evaluation.predictions.read_predictions:
    the same bad file gives the same error, naming the file and line, from both verbs."""
    from evaluation.predictions import predictions_to_evaluate

    _, ref = files
    bad = tmp_path / "pred.jsonl"
    bad.write_text(text)
    with pytest.raises(RewardError) as from_score:
        score_files(bad, ref, [{"name": "_test_exact"}], progress=False)
    with pytest.raises(RewardError) as from_eval:
        predictions_to_evaluate(bad)
    assert str(from_score.value) == str(from_eval.value) and "pred.jsonl:" in str(from_eval.value)


def test_eval_reads_a_json_list_like_score(tmp_path):
    from evaluation.predictions import predictions_to_evaluate

    p = tmp_path / "pred.json"
    p.write_text(json.dumps([{"study_id": 1, "prediction": "x", "reference": "y"},
                             {"study_id": 2, "prediction": "z", "reference": ""}]))
    got = predictions_to_evaluate(p)
    assert got.ids == ["1"] and got.skipped_rows == {"empty_reference": 1} and got.records[0]["prediction"] == "x"


def test_one_side_file_reader_strict_for_readers_lenient_for_the_writer(files, tmp_path):
    """<pred>.meta.json is read by evaluation.predictions.read_meta: `score` (and the report) name a corrupt one; the
    resuming writer treats it as absent and replaces it."""
    from evaluation.predictions import meta_path, read_meta
    from mllm_cxr.infer.generate import check_resume

    pred, ref = files
    assert read_meta(pred) == {}
    meta_path(pred).write_text('{"prompt": {"prompt": {"sections": ["impression"]}}}')
    s, _ = score_files(pred, ref, [{"name": "_test_exact"}], progress=False)
    assert s["ref_field"] == "impression"
    meta_path(pred).write_text("{cut")
    with pytest.raises(RewardError, match=r"pred.jsonl.meta.json.*not valid JSON"):
        score_files(pred, ref, [{"name": "_test_exact"}], progress=False)
    assert read_meta(pred, strict=False) == {}
    check_resume(pred, {"model": "m"})
    assert read_meta(pred) == {"model": "m"}
