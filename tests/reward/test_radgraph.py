"""RadGraph F1 and processed annotations (model-free), the scorer with a fake annotator, and the
extractor on a random tiny RadGraph model when the backend (radeval) is installed."""

from __future__ import annotations

import copy
import importlib.util
import json
import math
import shutil

import pytest

from reward.base import MissingBackendError, RewardError, get_scorer
from reward.radgraph import (
    RadGraphExtractor,
    RadGraphF1Scorer,
    radgraph_f1,
    report_annotation,
)
from tests.builders.radgraph_processed import processed_annotations
from tests.builders.repo import require_shared


def _cases() -> dict:
    path = require_shared("metric_oracles", "radgraph.json")
    return {c["id"]: c for c in json.loads(path.read_text())["cases"]}


def _processed_items() -> list[tuple[str, dict]]:
    cases = _cases()
    items = [(it["test"], it["expected_processed"]) for it in cases["radgraph_xl_processed"]["items"]]
    items += [(f"report_{it['report_id']}", it["processed_annotations"])
              for it in cases["expected_processed_annotations"]["items"]]
    return items


# ---------------------------------------------------------------- processed annotations (oracle)

def test_processed_annotations_reproduce_radgraph_tests():
    items = _processed_items()
    assert len(items) == 9
    for name, expected in items:
        got = processed_annotations(copy.deepcopy(expected["radgraph_annotations"]))
        assert got == expected, name
        assert json.dumps(got) == json.dumps(expected), name  # same key order too


def test_processed_annotations_accepts_a_bare_report():
    _, expected = _processed_items()[0]
    bare = expected["radgraph_annotations"]["0"]
    assert processed_annotations(bare)["processed_annotations"] == expected["processed_annotations"]


def test_processed_annotations_modifier_loop_terminates():
    # two observations that modify each other: the mutual link is dropped, no infinite recursion
    ann = {"text": "a b", "entities": {
        "1": {"tokens": "a", "label": "Observation::definitely present", "start_ix": 0, "end_ix": 0,
              "relations": [["modify", "2"]]},
        "2": {"tokens": "b", "label": "Observation::uncertain", "start_ix": 1, "end_ix": 1,
              "relations": [["modify", "1"]]}}}
    assert processed_annotations(ann)["processed_annotations"] == []  # both modify: no main observation


# ---------------------------------------------------------------- F1 levels

def _ent(tokens, label, start, rels=()):
    return {"tokens": tokens, "label": label, "start_ix": start, "end_ix": start, "relations": [list(r) for r in rels]}


OBS, ABS, ANAT = "Observation::definitely present", "Observation::definitely absent", "Anatomy::definitely present"


def _report(*entities):
    return {"text": "t", "entities": {str(i + 1): e for i, e in enumerate(entities)}}


def test_levels_differ_on_relations():
    hyp = _report(_ent("effusion", OBS, 1, [("located_at", "2")]), _ent("pleural", ANAT, 0))
    no_rel = _report(_ent("effusion", OBS, 1), _ent("pleural", ANAT, 0))
    # same entities, the reference has no relation: simple 1; partial/complete 1 of 2 each side
    assert radgraph_f1(hyp, no_rel, "all") == (1.0, 0.5, 0.5)
    # the relation points to another anatomy in the reference
    other = _report(_ent("effusion", OBS, 2, [("located_at", "3")]), _ent("pleural", ANAT, 0), _ent("left", ANAT, 1))
    simple, partial, complete = radgraph_f1(hyp, other, "all")
    assert math.isclose(simple, 0.8) and math.isclose(partial, 0.8)  # P = 1, R = 2/3
    assert math.isclose(complete, 2 * (1 / 2) * (1 / 3) / (1 / 2 + 1 / 3))  # P = 1/2, R = 1/3
    # the certainty label is part of every level
    absent = _report(_ent("effusion", ABS, 1, [("located_at", "2")]), _ent("pleural", ANAT, 0))
    assert radgraph_f1(hyp, absent, "all") == (0.5, 0.5, 0.5)


def test_complete_level_lowercases_only_related_entities():
    hyp = _report(_ent("Effusion", OBS, 1, [("located_at", "2")]), _ent("pleural", ANAT, 0))
    ref = _report(_ent("effusion", OBS, 1, [("located_at", "2")]), _ent("pleural", ANAT, 0))
    assert radgraph_f1(hyp, ref, "all") == (0.5, 0.5, 1.0)


def test_empty_side_scores_zero_and_forms_are_equivalent():
    ann = _cases()["radgraph_test"]["single_annotation"]["expected"]  # {"0": {...}} as radgraph returns
    assert radgraph_f1(ann, ann, "all") == (1.0, 1.0, 1.0)
    assert radgraph_f1(ann, ann["0"], "complete") == 1.0
    empty = {"text": "", "entities": {}}
    assert radgraph_f1(ann, empty, "all") == (0.0, 0.0, 0.0)
    assert radgraph_f1(empty, empty, "simple") == 0.0


@pytest.mark.parametrize("bad, match", [
    ({"text": "x"}, "no 'entities'"),
    ({"entities": {"1": {"tokens": "a", "label": OBS, "relations": [["modify", "9"]]}}}, "unknown entity '9'"),
    ({"entities": {"1": {"tokens": "a", "label": OBS, "relations": ["modify"]}}}, "field 'relations'"),
    ({"entities": {"1": {"tokens": "a", "relations": []}}}, "no field 'label'"),
])
def test_malformed_annotations_are_named(bad, match):
    with pytest.raises(RewardError, match=match):
        report_annotation(bad)


def test_unknown_level():
    with pytest.raises(RewardError, match="level"):
        radgraph_f1({"entities": {}}, {"entities": {}}, "strict")


# ---------------------------------------------------------------- scorer with a fake annotator

class FakeAnnotator:
    """Returns stored annotations by text; records what it was asked; may fail on one text."""

    def __init__(self, by_text: dict[str, dict], fail_on: str | None = None):
        self.by_text = by_text
        self.fail_on = fail_on
        self.calls: list[list[str]] = []

    def __call__(self, texts):
        self.calls.append(list(texts))
        if self.fail_on in texts:
            raise RuntimeError("boom")
        return [copy.deepcopy(self.by_text.get(t, {"text": t, "entities": {}})) for t in texts]


@pytest.fixture
def xl_annotations() -> dict[str, dict]:
    return {exp["radgraph_text"]: exp["radgraph_annotations"]["0"] for _, exp in _processed_items()}


def test_scorer_with_fake_annotator(xl_annotations):
    texts = list(xl_annotations)
    fake = FakeAnnotator(xl_annotations)
    scorer = RadGraphF1Scorer(annotator=fake)  # level "partial" by default
    hyps = [texts[0], texts[1], texts[2], "", texts[3]]
    refs = [texts[0], texts[3], texts[2], texts[1], texts[1]]
    res = scorer(hyps, refs)
    # each distinct non-empty text once, in one batch; the empty hypothesis never reaches the model
    assert len(fake.calls) == 1 and sorted(fake.calls[0]) == sorted(set(hyps + refs) - {""})
    want = [radgraph_f1(xl_annotations[h], xl_annotations[r], "all") if h else (0.0, 0.0, 0.0)
            for h, r in zip(hyps, refs)]
    assert res.scores == [w[1] for w in want]
    assert res.scores[0] == res.scores[2] == 1.0 and res.scores[3] == 0.0
    for i, level in enumerate(("simple", "partial", "complete")):
        assert res.details[1][level] == want[1][i]
        assert math.isclose(res.corpus[f"radgraph_{level}"], sum(w[i] for w in want) / len(want))
    assert res.details[0]["hyp_entities"] == len(xl_annotations[texts[0]]["entities"])
    assert res.corpus["annotation_errors"] == 0
    # a second call hits the cache: nothing new to annotate
    again = scorer(hyps, refs)
    assert again.scores == res.scores and len(fake.calls) == 1
    complete = RadGraphF1Scorer(annotator=FakeAnnotator(xl_annotations), level="complete")(hyps, refs)
    assert complete.scores == [w[2] for w in want]


def test_scorer_survives_an_annotator_failure(xl_annotations):
    texts = list(xl_annotations)
    fake = FakeAnnotator(xl_annotations, fail_on=texts[1])
    res = RadGraphF1Scorer(annotator=fake)([texts[0], texts[1]], [texts[0], texts[0]])
    assert res.scores == [1.0, 0.0]
    assert res.corpus["annotation_errors"] == 1
    assert len(fake.calls) == 1 + 2  # the batch, then one text at a time


def test_scorer_needs_a_model(monkeypatch):
    monkeypatch.delenv("MLLM_CXR_RADGRAPH_DIR", raising=False)
    with pytest.raises(RewardError, match="model_dir"):
        get_scorer("radgraph_f1")
    with pytest.raises(RewardError, match="level"):
        RadGraphF1Scorer(annotator=FakeAnnotator({}), level="all")


# ---------------------------------------------------------------- extractor: folders, backend

def _fake_model_folder(path):
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps({"dataset_reader": {}, "model": {}}))
    (path / "vocabulary").mkdir(exist_ok=True)
    (path / "weights.th").write_bytes(b"")
    return path


def test_extractor_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        RadGraphExtractor(tmp_path / "nowhere")
    with pytest.raises(RewardError, match="no config.json"):
        RadGraphExtractor(tmp_path)
    archive = tmp_path / "radgraph-xl.tar.gz"
    archive.write_bytes(b"")
    with pytest.raises(RewardError, match="tar xzf"):
        RadGraphExtractor(archive)
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text("{}")
    with pytest.raises(RewardError, match="lacks vocabulary, weights.th"):
        RadGraphExtractor(tmp_path / "half")
    with pytest.raises(RewardError, match="model_type"):
        RadGraphExtractor(tmp_path, model_type="radgraph-xxl")


def test_missing_backend_says_how_to_install(tmp_path, monkeypatch):
    folder = _fake_model_folder(tmp_path / "radgraph-xl")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "radeval" else real(name, *a))
    with pytest.raises(MissingBackendError, match="pip install --no-deps"):
        RadGraphExtractor(tmp_path)  # the <model_dir>/<model_type>/ layout
    with pytest.raises(MissingBackendError):
        RadGraphF1Scorer(model_dir=folder)


def _backend_ok() -> bool:
    try:
        from reward.radgraph import _import_backend

        _import_backend()
    except MissingBackendError:
        return False
    return True


@pytest.mark.slow
def test_extractor_on_a_tiny_random_model(tmp_path):
    if not _backend_ok():
        pytest.skip("the RadGraph extractor backend (radeval) is not installed")
    from reward.radgraph import make_tiny_radgraph_model

    folder = make_tiny_radgraph_model(tmp_path / "rg")
    extractor = RadGraphExtractor(folder, device="cpu")
    texts = ["No acute cardiopulmonary process.", "", "The lungs are clear, no pleural effusion.", "ü <b>x</b>"]
    anns = extractor(texts)
    assert len(anns) == len(texts)
    assert anns[1]["entities"] == {}
    for ann in anns:
        report = report_annotation(ann)  # well-formed: relation targets exist, fields present
        words = report["text"].split()
        for ent in report["entities"].values():
            assert ent["tokens"] == " ".join(words[ent["start_ix"]:ent["end_ix"] + 1])
    assert anns[0]["text"] == "No acute cardiopulmonary process ."  # wordpunct tokenisation (XL)
    # deterministic, and the scorer runs on it (identical texts with entities score 1)
    assert extractor(texts[:1]) == anns[:1]
    res = RadGraphF1Scorer(annotator=extractor)([texts[0], texts[2]], [texts[0], texts[0]])
    assert all(math.isfinite(s) for s in res.scores)
    assert res.scores[0] == (1.0 if anns[0]["entities"] else 0.0)
    # the encoder can live elsewhere and be named explicitly
    moved = tmp_path / "bert"
    shutil.move(str(folder / "encoder"), moved)
    with pytest.raises(FileNotFoundError, match="encoder"):
        RadGraphExtractor(folder, encoder=tmp_path / "missing", device="cpu")
    assert RadGraphExtractor(folder, encoder=moved, device="cpu")(texts[:1]) == anns[:1]
