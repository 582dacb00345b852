"""The HTML evaluation report: highlight spans, escaping, images through the study records, CLI, demo hook."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from data_prep.errors import DataPrepError
from evaluation.report.build import build_report
from evaluation.report.highlights import (
    Highlight,
    label_highlights,
    label_view_from,
    prior_highlights,
    render_marked,
)
from evaluation.report.options import ReportOptions
from reward.chexpert import ChexpertRulesLabeler, normalize, normalize_with_offsets
from tests.builders.predictions import FAST, SCRIPT, make_eval, write_predictions
from tests.builders.repo import REPO


@pytest.fixture(scope="module")
def labeler():
    return ChexpertRulesLabeler()


def label_view(text: str, labeler, uncertain: str = "positive"):
    """What eval writes for one report (labels and mention spans from one labelling pass), as the page reads it."""
    return label_view_from(*labeler.label_with_spans(text), uncertain)


def prior_marks(text: str) -> list[Highlight]:
    from reward.prior import find_prior_spans

    return prior_highlights([[p.start, p.end, list(p.cues)] for p in find_prior_spans(text)])


def spans(hl: list[Highlight], text: str) -> set[tuple[int, int, str, str | None, str]]:
    return {(h.start, h.end, h.kind, h.observation, text[h.start:h.end]) for h in hl}


# ------------------------------------------------------------------------------------------------
# Highlight spans (labeler + prior detector) on hand-made pairs
# ------------------------------------------------------------------------------------------------
def test_labeler_spans_map_back_through_paragraph_breaks(labeler):
    hyp = "Small left Pleural Effusion. No pneumothorax."
    ref = "No pleural effusion.\n\nSmall right pneumothorax."  # the blank line becomes " . " when normalised
    hh, rh, outcome = label_highlights(label_view(hyp, labeler), label_view(ref, labeler))
    assert outcome == {"Pleural Effusion": "fp", "Pneumothorax": "fn"}
    assert spans(hh, hyp) == {(19, 27, "fp", "Pleural Effusion", "Effusion"),
                              (32, 44, "neg", "Pneumothorax", "pneumothorax")}
    assert spans(rh, ref) == {(11, 19, "neg", "Pleural Effusion", "effusion"),
                              (34, 46, "fn", "Pneumothorax", "pneumothorax")}
    fp = next(h for h in hh if h.kind == "fp")
    assert fp.label == "false positive: Pleural Effusion (reference: negated)"


def test_labeler_spans_glued_sentences_and_uncertain_convention(labeler):
    hyp, ref = "No edema.Possible pneumonia.", "No pneumonia."  # "edema.Possible": a space is inserted
    hh, rh, outcome = label_highlights(label_view(hyp, labeler), label_view(ref, labeler))
    assert outcome == {"No Finding": "fn", "Pneumonia": "fp"}
    assert spans(hh, hyp) == {(18, 27, "fp", "Pneumonia", "pneumonia")}
    assert spans(rh, ref) == {(3, 12, "neg", "Pneumonia", "pneumonia")}
    # uncertain counted as negative: "possible pneumonia" is no finding claimed, nothing to mark
    hh, rh, outcome = label_highlights(label_view(hyp, labeler, "negative"), label_view(ref, labeler, "negative"),
                                       "negative")
    assert outcome == {"No Finding": "fn"} and hh == [] and rh == []


def test_labeler_implication_marks_the_mention_that_adds_the_finding(labeler):
    hyp, ref = "LUNGS CLEAR.\r\nMild CHF.", "Normal heart size.  No edema."
    hh, rh, outcome = label_highlights(label_view(hyp, labeler), label_view(ref, labeler))
    assert outcome == {"No Finding": "fn", "Cardiomegaly": "fp", "Edema": "fp"}
    assert spans(hh, hyp) == {(19, 22, "fp", "Cardiomegaly", "CHF"), (19, 22, "fp", "Edema", "CHF")}
    assert spans(rh, ref) == {(7, 17, "neg", "Cardiomegaly", "heart size"), (23, 28, "neg", "Edema", "edema")}


@pytest.mark.parametrize("text", ["", "No acute disease.", "Mild CHF. Possible small effusion.\n\nET tube in place.",
                                  "Heart size is enlarged.No pneumothorax.", "   "])
def test_label_view_labels_are_the_labelers(labeler, text):
    from reward.chexpert import label_report

    assert label_view(text, labeler).labels == label_report(text)


def test_agreeing_reports_have_no_highlight(labeler):
    text = "Moderate cardiomegaly. Small left pleural effusion."
    hh, rh, outcome = label_highlights(label_view(text, labeler), label_view(text.upper(), labeler))
    assert hh == [] and rh == [] and outcome == {"Cardiomegaly": "tp", "Pleural Effusion": "tp"}


def test_prior_detector_spans():
    text = "Stable cardiomegaly. No effusion. Compared to the prior study, no change."
    got = [(h.start, h.end, h.kind, text[h.start:h.end]) for h in prior_marks(text)]
    assert got == [(0, 20, "prior", "Stable cardiomegaly."),
                   (34, 73, "prior", "Compared to the prior study, no change.")]
    assert "cues: stable" in prior_marks(text)[0].label
    assert prior_marks("Evidence of prior granulomatous disease. Clear lungs.") == []


@pytest.mark.parametrize("text", ["  A\r\n\r\n1. Foo  bar.Baz\tİx \n2) y", "x.Y", "", "\n\n", "ΟΔΟΣ.Α b"])
def test_normalised_offsets_rebuild_normalize(text):
    norm, off = normalize_with_offsets(text)
    assert norm == normalize(text) and len(off) == len(norm)
    for ch, j in zip(norm, off):
        if j >= 0 and ch != " ":
            assert ch in text[j].lower(), (ch, j)  # every kept character maps onto itself


def test_render_marked_escapes_and_splits_overlaps():
    text = f"{SCRIPT} Effusion & stable."
    s = text.index("Effusion")
    out = render_marked(text, [Highlight(s, s + 8, "fp", "FP <b>"), Highlight(0, len(text), "prior", "prior")])
    assert "<script>" not in out and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in out
    assert '<mark class="hl hl-fp hl-prior" title="FP &lt;b&gt;; prior">Effusion</mark>' in out
    assert out.count("<mark") == 3 and "&amp;" in out
    assert render_marked("a < b", []) == "a &lt; b"


# ------------------------------------------------------------------------------------------------
# Whole reports on phantom data
# ------------------------------------------------------------------------------------------------
def rows_of(doc: str) -> list[str]:
    return re.findall(r'<tr class=study [^>]*data-id="([^"]+)"', doc)


def test_report_from_eval_folder(tmp_path, phantom_dir):
    ev = make_eval(tmp_path, phantom_dir)
    s = build_report(ev)
    doc = (ev / "report.html").read_text()
    n = sum(1 for _ in open(phantom_dir / "studies.jsonl"))
    assert s["path"] == str(ev / "report.html") and s["studies"] == s["studies_shown"] == n
    assert s["images"] == 2 * n and s["images_missing"] == 0  # frontal + lateral of every phantom study
    assert len(rows_of(doc)) == n
    # self-contained: images inlined, no URL to fetch, a CSP that forbids the network
    assert doc.count('src="data:image/jpeg;base64,') == 2 * n
    assert not re.search(r'(src|href)="(https?:)?//', doc)
    assert "default-src 'none'" in doc
    # the prediction's <script> is text, and the only <script> element is the page's own
    assert doc.count("<script>") == 1 and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in doc
    # summary: every main metric with its CI, the paired comparison
    res = json.loads((ev / "metrics.json").read_text())
    for k, m in res["metrics"].items():
        if m.get("main") and m["value"] is not None:
            assert f"{m['value']:.{1 if k.startswith(('length_pred', 'length_ref')) else 3}f}" in doc, k
    assert "delta A−B" in doc and "show B: sys_b" in doc and "<svg class=plot" in doc
    assert (ev / "per_study_compare.jsonl").is_file() and doc.count("data-m-b-rouge-l=") == n
    assert "This file contains report text, chest X-ray images, study ids and local file paths" in doc
    # worst first by per-study CheXpert F1
    f1 = [float(x) for x in re.findall(r'data-m-chexpert-f1="([^"]+)"', doc)]
    assert f1 == sorted(f1) and f1[0] < f1[-1]


def test_images_from_the_rows_prior_images_and_missing_placeholder(tmp_path, phantom_dir):
    """The thumbnails are the files each prediction row names (here a prompt with prior images), in its order."""
    import shutil

    from data_prep.schema import read_records

    ph = tmp_path / "ph"
    shutil.copytree(phantom_dir, ph)
    recs = read_records(ph / "studies.jsonl")
    (ph / recs[0].images[0].path).unlink()  # one missing image
    (ph / recs[1].images[0].path).write_bytes(b"not a png")  # one unreadable image
    pred = write_predictions(ph, tmp_path / "p.jsonl", 1, images="prior")
    from evaluation.evaluate import run_eval

    run_eval(pred, tmp_path / "ev", metrics=["chexpert", "length"], n_boot=0, plots=False, progress=False)
    s = build_report(tmp_path / "ev", options=ReportOptions(max_thumbs=3))
    rows = [json.loads(x) for x in open(pred)]
    n_images = sum(len(r["images"]) for r in rows)
    assert any(len(r["images"]) == 3 for r in rows)  # studies with a prior: frontal, lateral, prior frontal
    assert s["images_missing"] == 1 and s["images_unreadable"] == 1 and s["studies_with_missing_image"] == 2
    doc = (tmp_path / "ev" / "report.html").read_text()
    assert doc.count('src="data:image/jpeg;base64,') == n_images - 2
    assert doc.count("image missing") == 1 and doc.count("image unreadable") == 1
    assert doc.count("<figcaption>image 3</figcaption>") == sum(len(r["images"]) == 3 for r in rows)
    assert "studies with a missing or unreadable image: <b>2</b>" in doc


def test_rows_without_image_paths_get_a_note_and_relative_paths_are_the_files(tmp_path, phantom_dir):
    pred = write_predictions(phantom_dir, tmp_path / "p.jsonl", 1, images="none")
    from evaluation.evaluate import run_eval

    run_eval(pred, tmp_path / "ev", metrics=["chexpert"], n_boot=0, plots=False, progress=False)
    s = build_report(tmp_path / "ev")
    assert s["images"] == 0
    doc = (tmp_path / "ev" / "report.html").read_text()
    assert f"{s['studies']:,} studies have no image paths in their prediction row" in doc
    assert doc.count("no image paths in the prediction row</div>") == s["studies"]  # one placeholder per row
    # relative paths: taken from the predictions file's folder
    rows = [json.loads(x) for x in open(write_predictions(phantom_dir, tmp_path / "abs.jsonl", 1))]
    with open(pred, "w") as fh:
        for r in rows:
            r["images"] = [str(Path(p).relative_to(phantom_dir.resolve())) for p in r["images"]]
            fh.write(json.dumps(r) + "\n")
    import shutil

    shutil.copytree(phantom_dir / "images", tmp_path / "images")
    s = build_report(tmp_path / "ev", options=ReportOptions(max_thumbs=1))
    assert s["images"] == s["studies"] and s["images_missing"] == 0


def _shareable(ev: Path, out: Path, *include: str) -> str:
    build_report(ev, out, options=ReportOptions(shareable=True, include=include))
    return (out / "report.html").read_text()


def test_shareable_report_holds_nothing_identifying_unless_included(tmp_path, phantom_dir):
    """``--no-text``: no report or indication text, no image (no data URI at all), no study id (rows are numbered
    by their predictions-file line), no local path (file names only, paths in free text replaced), and the page
    says so; ``--include`` brings each item back on its own."""
    ev = make_eval(tmp_path, phantom_dir)
    res = json.loads((ev / "metrics.json").read_text())
    res["skipped_metrics"] = {"radgraph": f"model folder {tmp_path}/models/radgraph not found"}
    (ev / "metrics.json").write_text(json.dumps(res))
    rows = [json.loads(x) for x in open(tmp_path / "sys_a.jsonl")]
    ids = [r["study_id"] for r in rows]
    doc = _shareable(ev, tmp_path / "share")
    body = doc.split("<h2>Studies</h2>")[1]
    for r in rows:
        assert r["reference"] not in doc and r["prediction"] not in doc
        assert r["context"]["indication"] not in body
    assert not [i for i in ids if i in doc]  # no study id anywhere
    assert "data:image" not in doc and "<img" not in doc.split("<div id=overlay>")[0]
    assert str(tmp_path) not in doc and str(phantom_dir) not in doc  # no local path (the pred file: its name)
    assert "<code>sys_a.jsonl</code>" in doc and "model folder &lt;path&gt; not found" in doc
    assert sorted(rows_of(doc), key=lambda x: int(x.split()[1])) == [f"row {i}" for i in range(1, len(rows) + 1)]
    assert "FN " in doc and "data-m-chexpert-f1=" in doc  # labels, outcomes and scores stay
    assert ("Shareable version (--no-text): it holds metrics with their confidence intervals, finding labels, "
            "per-study scores and splits. It holds no report and indication texts, chest X-ray images, study ids "
            "or local file paths.") in doc
    # each opt-in brings back its item, and only it
    imgs = _shareable(ev, tmp_path / "i", "images")
    assert imgs.count('src="data:image/jpeg;base64,') == 2 * len(rows) and not [i for i in ids if i in imgs]
    assert "and chest X-ray images (--include)" in imgs and "Share it only where chest X-ray images may be" in imgs
    with_ids = _shareable(ev, tmp_path / "d", "ids")
    assert sorted(rows_of(with_ids)) == sorted(ids) and "data:image" not in with_ids
    assert str(tmp_path) in _shareable(ev, tmp_path / "p", "paths")
    text = _shareable(ev, tmp_path / "t", "text")
    assert rows[0]["reference"] in text and str(tmp_path) not in text and not [i for i in ids if i in text]


def test_shareable_options_on_the_command_line(tmp_path, phantom_dir, capsys):
    from mllm_cxr.cli import main

    ev = make_eval(tmp_path, phantom_dir, compare=False)
    assert main(["report", "--eval", str(ev), "--out", str(tmp_path / "s"), "--no-text", "--include", "images",
                 "--quiet"]) == 0
    assert "shareable, holding images" in capsys.readouterr().out
    assert main(["report", "--eval", str(ev), "--no-text", "--include", "images,faces"]) == 2
    assert "--include 'faces': not an item of the shareable report" in capsys.readouterr().err
    assert main(["report", "--eval", str(ev), "--include", "ids"]) == 2
    assert "only with --no-text" in capsys.readouterr().err


def test_max_studies_keeps_the_worst_with_a_note_and_sort_choices(tmp_path, phantom_dir):
    from evaluation.report.options import ReportOptionError

    ev = make_eval(tmp_path, phantom_dir, compare=False)
    s = build_report(ev, options=ReportOptions(max_studies=5, sort="errors", thumb_size=0))
    doc = (ev / "report.html").read_text()
    assert s["studies_shown"] == 5 and len(rows_of(doc)) == 5
    assert f"5 of {s['studies']:,} studies are shown: the worst by errors (highest first)" in doc
    errs = [float(x) for x in re.findall(r'data-m-errors="([^"]+)"', doc)]
    assert errs == sorted(errs, reverse=True)
    with pytest.raises(ReportOptionError, match="--sort 'bleu'.*chexpert_f1"):
        build_report(ev, options=ReportOptions(sort="bleu"))


def test_measurement_marks_are_the_facts_eval_flagged(tmp_path, phantom_dir):
    """Whatever scorer eval ran as measurement_hallucination, the page marks the facts it flagged, and renders them
    after that scorer is gone (it scores nothing itself)."""
    from evaluation.evaluate import run_eval
    from reward.base import Scorer, ScoreResult
    from tests.builders.scorers import local_scorers

    class Fake(Scorer):
        name = "measurement_hallucination"

        def score(self, hyps, refs=None, **_):
            det = []
            for h in hyps:
                i = h.find("pneumothorax")
                items = ([{"kind": "device_position", "span": [i, i + 12],
                           "reference_fact": {"text": "ETT 4 cm above the carina"}}] if i >= 0 else [])
                det.append({"hallucinations": items, "n_hallucinations": len(items), "tp_hyp": 0, "n_hyp": 0,
                            "tp_ref": 0, "n_ref": 0, "carina_error_cm": None})
            return ScoreResult([float(len(d["hallucinations"])) for d in det], det, {})

    a = write_predictions(phantom_dir, tmp_path / "sys_a.jsonl", 1)
    with local_scorers([("measurement_hallucination", "test", Fake)]):
        run_eval(a, tmp_path / "eval", metrics=["chexpert", "measurement"], n_boot=20, plots=False, progress=False)
    s = build_report(tmp_path / "eval", options=ReportOptions(thumb_size=0))
    doc = (tmp_path / "eval" / "report.html").read_text()
    rows = [json.loads(x) for x in open(tmp_path / "sys_a.jsonl")]
    n = sum("pneumothorax" in r["prediction"] for r in rows)
    assert n > 0 and s["measurement_hook"] == "measurement_hallucination"
    assert len(re.findall(r'<mark class="hl[^"]*hl-meas[^"]*" title="[^"]*device_position \(reference: ETT 4 cm',
                          doc)) == n
    assert len(re.findall(r'data-m-measurement-hallucinations="1"', doc)) == n


def test_measurement_highlights_of_the_real_scorer():
    from evaluation.report.highlights import measurement_highlights
    from reward.base import get_scorer

    hyps = ["Endotracheal tube tip 9 cm above the carina. No pneumothorax."]
    refs = ["Endotracheal tube tip 4 cm above the carina. No pneumothorax."]
    res = get_scorer("measurement_hallucination")(hyps, refs)
    marks = measurement_highlights(hyps[0], res.details[0]["hallucinations"])
    assert res.scores[0] >= 1 and len(marks) == res.scores[0], (res.scores, marks)
    assert all(0 <= m.start < m.end <= len(hyps[0]) for m in marks)


# ------------------------------------------------------------------------------------------------
# CLI and demo
# ------------------------------------------------------------------------------------------------
def test_cli_eval_html_and_report_verb(tmp_path, phantom_dir, capsys):
    from mllm_cxr.cli import main

    a = write_predictions(phantom_dir, tmp_path / "a.jsonl", 1)
    b = write_predictions(phantom_dir, tmp_path / "b.jsonl", 2)
    out = tmp_path / "ev"
    rc = main(["eval", "--pred", str(a), "--compare", str(b), "--out", str(out), "--metrics", FAST, "--n-boot", "20",
               "--no-plots", "--quiet", "--html", "--thumb-size", "64", "--sort", "delta_chexpert_f1"])
    assert rc == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith("report: ") and lines[-1].endswith(str(out / "report.html"))
    doc = (out / "report.html").read_text()
    assert 'value="delta-chexpert-f1" data-dir=asc selected' in doc
    assert main(["report", "--eval", str(out), "--out", str(tmp_path / "r2"), "--redact", "--quiet"]) == 0
    assert "Shareable version (--no-text)" in (tmp_path / "r2" / "report.html").read_text()
    assert main(["report", "--eval", str(tmp_path / "nothing")]) == 2
    assert "metrics.json not found" in capsys.readouterr().err
    assert main(["report", "--eval", str(out), "--out", str(a)]) == 2  # never overwrite an input
    assert main(["report", "--eval", str(out), "--thumb-size", "-1"]) == 2
    capsys.readouterr()
    assert main(["eval", "--pred", str(a), "--out", str(tmp_path / "ev2"), "--html", "--sort", "bleu"]) == 2
    assert "--sort 'bleu': not a per-study metric" in capsys.readouterr().err
    assert not (tmp_path / "ev2").exists()  # refused before evaluating


def test_demo_writes_the_report_of_its_last_stage(tmp_path, phantom_dir, capsys):
    """The demo's last step (`write_stage_report`): eval of the last RL stage against SFT, then its HTML report."""
    from mllm_cxr.demo import write_stage_report

    (tmp_path / "pred").mkdir()
    write_predictions(phantom_dir, tmp_path / "pred" / "grpo.jsonl", 1)
    write_predictions(phantom_dir, tmp_path / "pred" / "sft.jsonl", 2)
    from mllm_cxr.train.curves import plot_curves

    png = plot_curves([{"step": 0, "chexpert_f1_greedy": 0.5}, {"step": 8, "chexpert_f1_greedy": 0.6}],
                      tmp_path / "curves.png")
    path = write_stage_report(tmp_path, "grpo", curves={"grpo": png})
    assert path == tmp_path / "eval" / "grpo" / "report.html" and path.is_file()
    doc = path.read_text()
    assert "<title>mllm-cxr demo, last stage: +GRPO (clinical reward)</title>" in doc
    assert json.loads((tmp_path / "eval" / "grpo" / "metrics.json").read_text())["compare"]["n_common"] > 0
    assert f"held-out learning curve, +GRPO (clinical reward) ({png})" in doc and 'src="data:image/png;base64,' in doc
    assert f"HTML report of the last stage (+GRPO (clinical reward)): {path}" in capsys.readouterr().out


def test_readme_report_commands_run(tmp_path, phantom_dir, monkeypatch, capsys):
    """The commands of README's "The evaluation report" section, run as written (from a folder with runs/)."""
    import shlex

    from mllm_cxr.cli import main

    for var in ("MLLM_CXR_RADGRAPH_DIR", "MLLM_CXR_GREEN_MODEL", "MLLM_CXR_GREEN_URL", "MLLM_CXR_CHEXBERT"):
        monkeypatch.delenv(var, raising=False)
    readme = (REPO / "README.md").read_text()
    block = readme.split("## The evaluation report", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    cmds = [shlex.split(x) for x in block.strip().splitlines()]
    assert [c[:2] for c in cmds] == [["mllm-cxr", "eval"], ["mllm-cxr", "report"]]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "pred").mkdir(parents=True)
    write_predictions(phantom_dir, tmp_path / "runs/pred/grpo.jsonl", 1)
    write_predictions(phantom_dir, tmp_path / "runs/pred/sft.jsonl", 2)
    for c in cmds:
        assert main(c[1:]) == 0, c
    assert (tmp_path / "runs/eval/grpo/report.html").is_file()
    doc = (tmp_path / "runs/eval/grpo-shareable/report.html").read_text()
    assert "Shareable version (--no-text)" in doc and 'value="errors" data-dir=desc selected' in doc
    assert "data:image" not in doc and "runs/pred" not in doc and "<div class=sid>row " in doc


def test_thumbnail_cache_is_reused_and_keyed_by_the_file(tmp_path, phantom_dir):
    import shutil

    ph = tmp_path / "ph"
    shutil.copytree(phantom_dir, ph)
    pred = write_predictions(ph, tmp_path / "p.jsonl", 1)
    from evaluation.evaluate import run_eval

    run_eval(pred, tmp_path / "ev", metrics=["chexpert"], n_boot=0, plots=False, progress=False)
    opt = ReportOptions(thumb_cache=str(tmp_path / "cache"))
    first = build_report(tmp_path / "ev", tmp_path / "r1", options=opt)
    assert first["images_from_cache"] == 0 and first["images"] > 0
    assert len(list((tmp_path / "cache").rglob("*.jpg"))) == first["images"]
    second = build_report(tmp_path / "ev", tmp_path / "r2", options=opt)
    assert second["images_from_cache"] == second["images"] == first["images"]
    uris = lambda d: re.findall(r'src="(data:image/jpeg[^"]+)"', (tmp_path / d / "report.html").read_text())  # noqa: E731
    assert uris("r1") == uris("r2")
    from data_prep.schema import read_records

    rec = read_records(ph / "studies.jsonl")[0]
    src = ph / rec.images[0].path
    from PIL import Image

    Image.new("L", (64, 64), 255).save(src)  # the image changed: its thumbnail is made again
    third = build_report(tmp_path / "ev", tmp_path / "r3", options=opt)
    assert third["images_from_cache"] == first["images"] - 1


# ------------------------------------------------------------------------------------------------
# The page shows what eval counted (issue 18): numbers and highlights from per_study.jsonl / metrics.json
# ------------------------------------------------------------------------------------------------
ETT_HYP = "Endotracheal tube tip 5.5 cm above the carina. No pneumothorax."
ETT_REF = "Endotracheal tube tip 4 cm above the carina. No pneumothorax."
PAIRS = [  # (prediction, reference); no study has a prior
    (ETT_HYP, ETT_REF),
    ("Possible small left pleural effusion. No pneumothorax.", "No pleural effusion. No pneumothorax."),
    ("Stable cardiomegaly. No edema.", "Cardiomegaly. No edema."),
    ("Mild pulmonary edema. Small right pleural effusion.", "Small right pleural effusion."),
    ("No acute cardiopulmonary process.", "No acute cardiopulmonary process."),
]


def _study_rows(doc: str) -> dict[str, str]:
    return dict(re.findall(r'<tr class=study [^>]*data-id="([^"]+)"[^>]*>(.*?)</tr>', doc, flags=re.S))


def _kinds_marked(row: str) -> dict[str, list[str]]:
    """Per highlight kind, the marked texts of a row (reference and generated cells)."""
    out: dict[str, list[str]] = {}
    for cls, txt in re.findall(r'<mark class="hl ([^"]+)" title="[^"]*">(.*?)</mark>', row):
        for k in cls.split():
            out.setdefault(k.removeprefix("hl-"), []).append(txt)
    return out


def _eval_and_report(tmp_path: Path, name: str, *extra: str) -> tuple[dict, dict[str, dict], str]:
    from mllm_cxr.cli import main

    pred = tmp_path / f"{name}.jsonl"
    pred.write_text("".join(json.dumps({"study_id": f"s{i}", "prediction": h, "reference": r,
                                        "context": {"has_prior": False}}) + "\n" for i, (h, r) in enumerate(PAIRS)))
    out = tmp_path / f"ev-{name}"
    assert main(["eval", "--pred", str(pred), "--out", str(out), "--metrics", "chexpert,prior,measurement,rouge_l",
                 "--n-boot", "20", "--no-plots", "--quiet", "--html", "--thumb-size", "0", *extra]) == 0
    per = {d["study_id"]: d for d in map(json.loads, open(out / "per_study.jsonl"))}
    return json.loads((out / "metrics.json").read_text()), per, (out / "report.html").read_text()


@pytest.mark.parametrize("extra", [(), ("--metric-kwargs", '{"measurement": {"carina_tolerance_cm": 2}}',
                                        "--uncertain", "negative")], ids=["defaults", "non-default-kwargs"])
def test_every_number_and_highlight_is_evals(tmp_path, extra):
    """eval --metric-kwargs with a 2 cm carina tolerance counts no hallucination on the ETT pair (5.5 vs 4 cm):
    the page must not count or mark one either; --uncertain negative must not make "possible effusion" an FP."""
    result, per, doc = _eval_and_report(tmp_path, "sys", *extra)
    rows = _study_rows(doc)
    # as many measurement marks as metrics.json counts hallucinations (0 on the ETT pair with 2 cm)
    total = result["metrics"]["measurement_hallucinations_per_report"]["value"] * result["n"]
    assert sum(len(_kinds_marked(r).get("meas", [])) for r in rows.values()) == round(total)
    assert set(rows) == set(per) == {f"s{i}" for i in range(len(PAIRS))}
    for sid, line in per.items():
        row = rows[sid]
        head = re.search(rf'<tr class=study [^>]*data-id="{sid}"[^>]*>', doc).group(0)
        for key in ("chexpert_f1", "errors", "rouge_l", "prior_hallucination", "measurement_hallucinations"):
            got = re.search(rf'data-m-{key.replace("_", "-")}="([^"]+)"', head)
            assert got is not None and float(got.group(1)) == pytest.approx(line[key], abs=1e-5), (sid, key)
        marked = _kinds_marked(row)
        assert len(marked.get("meas", [])) == line["measurement_hallucinations"], (sid, marked)
        assert bool(marked.get("prior")) == bool(line["prior_hallucination"]), (sid, marked)
        ch = line["details"]["chexpert"]
        unc = result["details"]["chexpert"]["uncertain"]
        pos = [{o for o, v in ch[k].items() if v == 1.0 or (v == -1.0 and unc == "positive")}
               for k in ("hyp_labels", "ref_labels")]
        n_fp, n_fn = len(pos[0] - pos[1]), len(pos[1] - pos[0])
        assert line["errors"] == n_fp + n_fn
        assert row.count('class="chip fp"') == n_fp and row.count('class="chip fn"') == n_fn, sid
        assert bool(marked.get("fp")) <= bool(n_fp) and bool(marked.get("fn")) <= bool(n_fn), (sid, marked)
    # the ETT pair: 1.5 cm apart, a hallucination under the default 1 cm tolerance only
    tol = result["details"]["measurement"]["tolerances"]["carina_cm"]
    assert per["s0"]["measurement_hallucinations"] == (1.0 if tol == 1.0 else 0.0)
    assert ("5.5 cm" in "".join(_kinds_marked(rows["s0"]).get("meas", []))) == (tol == 1.0)
    # "possible effusion" vs "no effusion": a false positive only when uncertain counts as present
    assert ("chip fp" in rows["s1"]) == (result["details"]["chexpert"]["uncertain"] == "positive")
    # the summary: every main metric as metrics.json has it, and the per-study counts as per_study.jsonl sums them
    for key, m in result["metrics"].items():
        if m.get("main", True) and m["value"] is not None:
            digits = 1 if key.startswith(("length_pred", "length_ref")) else 3
            assert f"<td>{m['label']}</td><td class=num>{m['value']:.{digits}f}</td>" in doc, key
    assert f"label disagreement (A): <b>{sum(d['errors'] > 0 for d in per.values())}</b>" in doc
    assert f"measurement/device hallucination (A): <b>" \
           f"{sum(d['measurement_hallucinations'] > 0 for d in per.values())}</b>" in doc


def test_the_report_neither_labels_nor_scores(tmp_path, monkeypatch):
    """Rendering runs no labeler and no scorer: with both made to fail, `mllm-cxr report` still renders the page."""
    from mllm_cxr.cli import main
    from reward import base, chexpert

    _eval_and_report(tmp_path, "sys")

    def boom(*a, **k):
        raise AssertionError("the report re-scored")

    monkeypatch.setattr(chexpert.ChexpertRulesLabeler, "mentions", boom)
    monkeypatch.setattr(base, "get_scorer", boom)
    assert main(["report", "--eval", str(tmp_path / "ev-sys"), "--out", str(tmp_path / "r"), "--quiet",
                 "--thumb-size", "0"]) == 0
    assert (tmp_path / "r" / "report.html").is_file()


def test_eval_labels_each_text_once(tmp_path, monkeypatch):
    """eval's CheXpert metric labels each prediction and each distinct reference once (labels and spans together)."""
    from reward import base, chexpert

    monkeypatch.setattr(base, "_CACHE", {})  # a fresh scorer: no reference labels kept from another test
    calls = []
    real = chexpert.ChexpertRulesLabeler.mentions
    monkeypatch.setattr(chexpert.ChexpertRulesLabeler, "mentions", lambda self, t: calls.append(t) or real(self, t))
    _eval_and_report(tmp_path, "once")
    texts = [h for h, _ in PAIRS] + list(dict.fromkeys(r for _, r in PAIRS))
    assert sorted(calls) == sorted(texts)


def test_an_eval_folder_without_details_asks_for_eval_again(tmp_path):
    """A per_study.jsonl from before the details (or with a study missing) is refused with one clear line."""
    _, per, _ = _eval_and_report(tmp_path, "old")
    p = tmp_path / "ev-old" / "per_study.jsonl"
    p.write_text("".join(json.dumps({k: v for k, v in d.items() if k != "details"}) + "\n" for d in per.values()))
    with pytest.raises(DataPrepError, match="without 'details'.*eval` again"):
        build_report(tmp_path / "ev-old")
    p.write_text(json.dumps(next(iter(per.values()))) + "\n")
    with pytest.raises(DataPrepError, match="4 evaluated studies have no line"):
        build_report(tmp_path / "ev-old")


def test_report_figure_option_is_checked(tmp_path, phantom_dir, capsys):
    from mllm_cxr.cli import main

    ev = make_eval(tmp_path, phantom_dir, compare=False)
    assert main(["report", "--eval", str(ev), "--figure", "no-equals-sign", "--quiet"]) == 2
    assert "give CAPTION=PATH.png" in capsys.readouterr().err
    assert main(["report", "--eval", str(ev), "--figure", f"curve={tmp_path / 'missing.png'}", "--quiet"]) == 2
    (tmp_path / "not.png").write_text("text")
    assert main(["report", "--eval", str(ev), "--figure", f"curve={tmp_path / 'not.png'}", "--quiet"]) == 2
    assert "not a PNG file" in capsys.readouterr().err
