"""The phantom data set: deterministic, valid records, visible findings, readable reports."""

from __future__ import annotations

import argparse
import hashlib
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data_prep.errors import DataPrepError
from data_prep.phantom import PHANTOM_FINDINGS, finding_scores, make_phantom, phantom_findings, register
from data_prep.schema import SPLITS, read_records
from reward.constants import CHEXPERT_LABELS

N = 60

#: Words that refer to an earlier examination (all comparison wording the phantom writes uses one).
PRIOR_WORDS = re.compile(r"\b(prior|previous(ly)?|interval|unchanged|stable|persistent|new|since|change|now|resolved)\b",
                         re.I)


@pytest.fixture(scope="module")
def phantom(tmp_path_factory) -> tuple[Path, dict, list]:
    out = tmp_path_factory.mktemp("phantom60")
    summary = make_phantom(out, n=N, seed=0)
    return out, summary, read_records(out / "studies.jsonl")


@pytest.fixture(scope="module")
def many(tmp_path_factory) -> list:
    """400 small frontal-only studies, for rates and report checks."""
    out = tmp_path_factory.mktemp("phantom400")
    make_phantom(out, n=400, seed=11, image_size=56, lateral=False)
    return read_records(out / "studies.jsonl")


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# -- determinism ---------------------------------------------------------------------------------
def test_same_seed_same_files_different_seed_different(tmp_path):
    a = make_phantom(tmp_path / "a", n=12, seed=5, image_size=112)
    make_phantom(tmp_path / "b", n=12, seed=5, image_size=112)
    make_phantom(tmp_path / "c", n=12, seed=6, image_size=112)
    da, db, dc = _digest(tmp_path / "a"), _digest(tmp_path / "b"), _digest(tmp_path / "c")
    assert len(da) == 1 + a["images"] == 1 + 2 * 12
    assert da == db
    assert (tmp_path / "a" / "studies.jsonl").read_text() == (tmp_path / "b" / "studies.jsonl").read_text()
    assert da["studies.jsonl"] != dc["studies.jsonl"]
    changed = [k for k in da if k != "studies.jsonl" and da[k] != dc.get(k)]
    assert len(changed) == len(da) - 1  # every image differs


# -- records ---------------------------------------------------------------------------------------
def test_records_validate_and_point_at_images(phantom):
    out, summary, recs = phantom
    assert len(recs) == N == summary["studies"]
    assert len({r.study_id for r in recs}) == N
    for r in recs:
        assert r.dataset == "phantom" and r.split in SPLITS
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", r.study_time)
        assert [im.view for im in r.images] == r.meta["views"] and r.meta["views"][1] == "LATERAL"
        assert r.meta["views"][0] in ("PA", "AP") and r.technique.startswith(r.meta["views"][0])
        for im in r.images:
            assert not Path(im.path).is_absolute() and im.path == f"images/{r.study_id}_{im.view}.png"
            with Image.open(out / im.path) as pic:
                assert pic.size == (224, 224) and pic.mode == "L"
        assert r.findings and r.impression
        assert set(r.labels) == set(CHEXPERT_LABELS)
        for name in PHANTOM_FINDINGS:
            assert (r.labels[name] == 1.0) == (name in r.meta["findings"])
        others = set(r.meta["findings"]) - {"Support Devices"}
        assert r.labels["No Finding"] == (None if others else 1.0)
    assert summary["normal"] == sum(not r.meta["findings"] for r in recs)
    assert summary["findings"] == {f: sum(f in r.meta["findings"] for r in recs) for f in PHANTOM_FINDINGS}


def test_finding_rates_near_target(many):
    recs = many
    assert all(len(r.images) == 1 for r in recs)
    normal = sum(not r.meta["findings"] for r in recs) / len(recs)
    assert 0.25 < normal < 0.42
    for name in PHANTOM_FINDINGS:
        rate = sum(name in r.meta["findings"] for r in recs) / len(recs)
        assert 0.2 < rate < 0.4, (name, rate)


# -- images: every finding is visible after a resize to 112 pixels ----------------------------------
def _frontal(out: Path, rec) -> np.ndarray:
    with Image.open(out / rec.images[0].path) as im:
        return np.asarray(im.resize((112, 112), Image.Resampling.BICUBIC), dtype=np.float32)


def _box(a: np.ndarray, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    s = a.shape[0]
    return a[int(y0 * s):int(y1 * s), int(x0 * s):int(x1 * s)]


def _heart_width(a: np.ndarray) -> float:
    """Width of the bright run through the image centre at heart level (mediastinum + heart)."""
    band = _box(a, 0.0, 0.56, 1.0, 0.70).mean(axis=0) > 95
    c = len(band) // 2
    left = c - int(np.argmin(band[c::-1])) if not band[c::-1].all() else 0
    right = c + int(np.argmin(band[c:])) if not band[c:].all() else len(band)
    return (right - left) / len(band)


def _auc(pos: list[float], neg: list[float]) -> float:
    p, n = np.asarray(pos)[:, None], np.asarray(neg)[None, :]
    return float((p > n).mean() + 0.5 * (p == n).mean())


def _statistics(a: np.ndarray) -> dict[str, float]:
    return {
        "Cardiomegaly": _heart_width(a),
        # brightness of the lower lateral corners of the lungs (costophrenic angles)
        "Pleural Effusion": max(_box(a, 0.1, 0.66, 0.24, 0.78).mean(), _box(a, 0.76, 0.66, 0.9, 0.78).mean()),
        # the brightest of six lung-zone windows
        "Consolidation": max(_box(a, x, y, x + 0.14, y + 0.12).mean() for x in (0.2, 0.66) for y in (0.22, 0.38, 0.52)),
        # share of very dark pixels inside the chest (air outside the lung)
        "Pneumothorax": float((_box(a, 0.15, 0.15, 0.85, 0.6) < 28).mean()),
        # share of saturated pixels (metal)
        "Support Devices": float((a > 215).mean()),
    }


def test_each_finding_is_visible(phantom):
    out, _, recs = phantom
    stats = [_statistics(_frontal(out, r)) for r in recs]
    normal = [s for s, r in zip(stats, recs) if not r.meta["findings"]]
    assert len(normal) >= 8
    for name in PHANTOM_FINDINGS:
        pos = [s[name] for s, r in zip(stats, recs) if name in r.meta["findings"]]
        neg = [s[name] for s, r in zip(stats, recs) if name not in r.meta["findings"]]
        assert len(pos) >= 8, name
        assert np.mean(pos) > np.mean(neg), name  # differs between studies with and without it
        assert _auc(pos, [s[name] for s in normal]) > 0.85, name  # and separates them from normal studies


def test_cardiothoracic_ratio_drawn_as_recorded(phantom):
    out, _, recs = phantom
    ratio = [r.meta["details"]["ctr"] for r in recs]
    width = [_heart_width(_frontal(out, r)) for r in recs]
    assert np.corrcoef(ratio, width)[0, 1] > 0.7
    big = [r.meta["details"]["ctr"] for r in recs if "Cardiomegaly" in r.meta["findings"]]
    small = [r.meta["details"]["ctr"] for r in recs if "Cardiomegaly" not in r.meta["findings"]]
    assert min(big) > 0.55 > 0.47 > max(small)


# -- reports ------------------------------------------------------------------------------------------
def test_report_findings_match_truth(phantom):
    _, _, recs = phantom
    for r in recs:
        truth = set(r.meta["findings"])
        assert phantom_findings(r.findings) == truth, r.findings
        assert phantom_findings(f"FINDINGS: {r.findings}\nIMPRESSION: {r.impression}") == truth
        if not truth:
            assert "No acute cardiopulmonary process." in r.impression


def test_report_findings_match_truth_over_many_studies(many):
    recs = many
    wrong = [r.study_id for r in recs if phantom_findings(f"{r.findings} {r.impression}") != set(r.meta["findings"])]
    assert wrong == []
    for r in recs:  # explicit negatives become 0.0 labels
        for name in PHANTOM_FINDINGS:
            if r.labels[name] == 0.0:
                assert name not in r.meta["findings"]


def test_project_chexpert_labeler_agrees_with_labels(many):
    """``labels`` is what a negation-aware CheXpert rule labeler finds: check with ours (reward.chexpert)."""
    chexpert = pytest.importorskip("reward.chexpert")
    wrong = [(r.study_id, k) for r in many for k, v in chexpert.label_report(f"{r.findings} {r.impression}").items()
             if r.labels[k] != v]
    assert wrong == []


def test_project_prior_detector_sees_exactly_the_prior_references(many):
    """The prior-reference detector (reward.prior) finds the inserted sentence, and only there."""
    prior = pytest.importorskip("reward.prior")
    for r in many:
        refs = prior.find_prior_references(f"{r.findings} {r.impression}")
        if r.prior is not None:
            assert refs, r.findings
        elif r.meta["hallucinated_prior"]:
            assert refs == [r.meta["hallucinated_sentence"]]
        else:
            assert refs == [], refs


@pytest.mark.parametrize("text, expected", [
    ("No pleural effusion or pneumothorax.", set()),
    ("Heart size is normal. The heart is not enlarged. Normal heart size.", set()),
    ("The lungs are clear. No acute cardiopulmonary process.", set()),
    ("Interval resolution of the right pleural effusion. The endotracheal tube has been removed.", set()),
    ("Small right apical pneumothorax.", {"Pneumothorax"}),
    ("Moderate cardiomegaly. Right lower lobe consolidation.", {"Cardiomegaly", "Consolidation"}),
    ("The heart is moderately enlarged. No pneumothorax. Stable small left pleural effusion.",
     {"Cardiomegaly", "Pleural Effusion"}),
    ("Endotracheal tube terminates about 4 cm above the carina.", {"Support Devices"}),
    ("No pericardial effusion.", set()),
    ("Small pericardial effusion.", set()),
])
def test_phantom_findings_reads_phrasings(text, expected):
    assert phantom_findings(text) == expected


@pytest.mark.parametrize("junk", [None, "", 17, ["Cardiomegaly"], "\x00\ufffd" * 50, "<think>" * 1000,
                                  "asdf qwer " * 20000, "ÄÖÜ 心脏 🫁"])
def test_phantom_findings_garbage_is_empty(junk):
    assert phantom_findings(junk) == set()


# -- priors and hallucinated prior references --------------------------------------------------------
def test_priors_link_earlier_studies_of_the_same_patient(phantom):
    _, summary, recs = phantom
    by_id = {r.study_id: r for r in recs}
    with_prior = [r for r in recs if r.prior is not None]
    assert len(with_prior) == summary["with_prior"] == round(0.3 * N)
    for r in with_prior:
        earlier = by_id[r.prior.study_id]
        assert earlier.patient_id == r.patient_id and earlier.prior is None
        assert earlier.study_time < r.study_time
        assert r.prior.findings == earlier.findings and r.prior.impression == earlier.impression
        assert r.prior.images == earlier.images and r.prior.study_time == earlier.study_time
        assert r.comparison == f"Chest radiograph of {earlier.study_time[:10]}."
        assert r.has_prior and not r.meta["hallucinated_prior"]
        assert PRIOR_WORDS.search(f"{r.findings} {r.impression}")  # genuine comparison language
        for name, change in r.meta["changes"].items():
            assert change == {(True, True): "same", (True, False): "new", (False, True): "resolved"}[
                (name in r.meta["findings"], name in earlier.meta["findings"])]
    for r in recs:
        if r.prior is None:
            assert r.comparison == "None." and not r.has_prior


def test_hallucinated_prior_references(phantom):
    _, summary, recs = phantom
    no_prior = [r for r in recs if r.prior is None]
    marked = [r for r in no_prior if r.meta["hallucinated_prior"]]
    assert len(marked) == summary["hallucinated_prior"] == round(0.3 * len(no_prior))
    for r in marked:
        sentence = r.meta["hallucinated_sentence"]
        report = f"{r.findings} {r.impression}"
        assert sentence in report and PRIOR_WORDS.search(sentence)
        clean = report.replace(sentence, "")
        assert not PRIOR_WORDS.search(clean), clean  # the only reference is the inserted one
        assert phantom_findings(clean) == phantom_findings(report) == set(r.meta["findings"])
    for r in no_prior:
        if not r.meta["hallucinated_prior"]:
            assert r.meta["hallucinated_sentence"] is None
            assert not PRIOR_WORDS.search(f"{r.findings} {r.impression}"), r.findings


@pytest.mark.parametrize("prior_fraction, rate", [(0.0, 0.0), (0.5, 1.0), (0.1, 0.5)])
def test_prior_and_hallucination_fractions(tmp_path, prior_fraction, rate):
    s = make_phantom(tmp_path, n=40, seed=2, image_size=56, lateral=False, prior_fraction=prior_fraction,
                     hallucinated_prior_rate=rate)
    assert s["with_prior"] == round(prior_fraction * 40)
    assert s["hallucinated_prior"] == round(rate * (40 - s["with_prior"]))
    assert s["patients"] == 40 - s["with_prior"]


# -- splits ----------------------------------------------------------------------------------------------
def test_patients_never_cross_splits(phantom):
    _, summary, recs = phantom
    split_of: dict[str, set[str]] = {}
    for r in recs:
        split_of.setdefault(r.patient_id, set()).add(r.split)
    assert all(len(s) == 1 for s in split_of.values())
    assert summary["splits"] == {s: sum(r.split == s for r in recs) for s in SPLITS}
    assert all(summary["splits"][s] > 0 for s in SPLITS)
    assert 0.55 < summary["splits"]["train"] / N < 0.85


def test_split_fractions_are_obeyed(tmp_path):
    s = make_phantom(tmp_path, n=30, seed=1, image_size=56, lateral=False, prior_fraction=0.0,
                     split_fractions=(0.5, 0.0, 0.5))
    assert s["splits"] == {"train": 15, "validate": 0, "test": 15}


def test_extra_test_studies_leave_the_corpus_as_it_was(tmp_path):
    """Growing the test split (the demo's power) must not change one byte of the studies it is added to."""
    plain = make_phantom(tmp_path / "plain", n=20, seed=3, image_size=56, lateral=False)
    grown = make_phantom(tmp_path / "grown", n=20, seed=3, image_size=56, lateral=False, extra_test=14)
    lines = (tmp_path / "grown" / "studies.jsonl").read_text().splitlines()
    assert lines[:20] == (tmp_path / "plain" / "studies.jsonl").read_text().splitlines()
    d_plain, d_grown = _digest(tmp_path / "plain"), _digest(tmp_path / "grown")
    assert all(d_grown[k] == v for k, v in d_plain.items() if k != "studies.jsonl")
    recs = read_records(tmp_path / "grown" / "studies.jsonl")
    extra = recs[20:]
    assert len(extra) == 14 and {r.split for r in extra} == {"test"}
    assert grown["splits"]["test"] == plain["splits"]["test"] + 14
    assert grown["splits"]["train"] == plain["splits"]["train"]
    assert len({r.study_id for r in recs}) == 34  # ids continue, never repeat
    assert not {r.patient_id for r in extra} & {r.patient_id for r in recs[:20]}  # new patients
    assert grown["with_prior"] - plain["with_prior"] == round(0.3 * 14)  # the same follow-up share
    assert all(r.prior is None or r.prior.study_id in {x.study_id for x in extra} for r in extra)
    # the added studies are drawn, not copied: different images, different reports
    assert len({r.findings for r in extra}) > 7


# -- the finding-level score ------------------------------------------------------------------------------
def test_finding_scores_perfect_and_empty(phantom):
    _, _, recs = phantom
    reports = [f"{r.findings} {r.impression}" for r in recs]
    perfect = finding_scores(reports, recs)
    assert perfect["n"] == N and perfect["exact_match"] == 1.0
    assert perfect["micro_f1"] == perfect["macro_f1"] == 1.0
    assert all(v == 1.0 for v in perfect["f1"].values())
    empty = finding_scores([""] * N, recs)
    assert empty["micro_f1"] == 0.0 and empty["macro_f1"] == 0.0
    assert empty["exact_match"] == sum(not r.meta["findings"] for r in recs) / N
    # truth given as records, record dicts, name lists or reference reports gives the same numbers
    as_dicts = finding_scores(reports, [r.to_dict() for r in recs])
    as_names = finding_scores(reports, [list(r.meta["findings"]) for r in recs])
    as_text = finding_scores(reports, reports)
    assert perfect == as_dicts == as_names == as_text


def test_finding_scores_match_scikit_learn():
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(0)
    truth = rng.random((80, len(PHANTOM_FINDINGS))) < 0.3
    pred = np.where(rng.random(truth.shape) < 0.7, truth, ~truth)
    as_set = [{f for f, on in zip(PHANTOM_FINDINGS, row) if on} for row in pred]
    texts = [" ".join({"Cardiomegaly": "Cardiomegaly.", "Pleural Effusion": "Small left pleural effusion.",
                       "Consolidation": "Right lower lobe consolidation.", "Pneumothorax": "Small right pneumothorax.",
                       "Support Devices": "Enteric tube courses below the diaphragm."}[f] for f in s) or "Normal."
             for s in as_set]
    true_names = [[f for f, on in zip(PHANTOM_FINDINGS, row) if on] for row in truth]
    got = finding_scores(texts, true_names)
    assert got == finding_scores(as_set, true_names)
    assert got["micro_f1"] == pytest.approx(f1_score(truth, pred, average="micro", zero_division=0))
    assert got["macro_f1"] == pytest.approx(f1_score(truth, pred, average="macro", zero_division=0))
    per = f1_score(truth, pred, average=None, zero_division=0)
    assert [got["f1"][f] for f in PHANTOM_FINDINGS] == pytest.approx(list(per))
    assert got["exact_match"] == pytest.approx(float((truth == pred).all(axis=1).mean()))


def test_finding_scores_bad_input():
    with pytest.raises(DataPrepError, match="length"):
        finding_scores(["a"], [])
    with pytest.raises(DataPrepError, match="Atelectasis"):
        finding_scores(["a"], [["Atelectasis"]])
    with pytest.raises(DataPrepError, match=r"records_or_truth\[0\]"):
        finding_scores(["a"], [3.5])


# -- arguments and command line ---------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, field", [
    ({"n": 0}, "n"), ({"prior_fraction": 0.6}, "prior_fraction"), ({"hallucinated_prior_rate": -0.1},
                                                                   "hallucinated_prior_rate"),
    ({"image_size": 20}, "image_size"), ({"split_fractions": (0.5, 0.5, 0.5)}, "split_fractions"),
    ({"extra_test": -1}, "extra_test"), ({"extra_test": 2.5}, "extra_test"),
])
def test_bad_arguments_name_the_field(tmp_path, kwargs, field):
    with pytest.raises(DataPrepError) as e:
        make_phantom(tmp_path, **{"n": 4, **kwargs})
    assert e.value.field == field and field in str(e.value)


def test_cli_verb(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["phantom", str(tmp_path), "--n", "5", "--image-size", "64", "--no-lateral"])
    assert args.func(args) == 0
    assert len(read_records(tmp_path / "studies.jsonl")) == 5
    assert len(list((tmp_path / "images").glob("*.png"))) == 5
    assert "5 studies" in capsys.readouterr().out
