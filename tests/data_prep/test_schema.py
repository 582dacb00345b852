"""The canonical study record: validation errors, IO round trips, view/split normalisation, priors."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from data_prep.errors import DataPrepError
from data_prep.schema import (
    SPLITS,
    VIEWS,
    ImageRef,
    Prior,
    StudyRecord,
    comparison_is_empty,
    iter_records,
    link_priors,
    normalize_split,
    normalize_view,
    read_records,
    validate_record,
    write_records,
)
from reward.constants import CHEXPERT_LABELS


def rec(**kw) -> dict:
    d = {"study_id": "s1", "patient_id": "p1", "dataset": "test", "split": "train"}
    d.update(kw)
    return d


@pytest.mark.parametrize(("raw", "view"), [
    ("PA", "PA"), ("pa", "PA"), ("postero-anterior", "PA"), ("POSTERO_ANTERIOR", "PA"), ("ANTERO_POSTERIOR", "AP"),
    ("AP AXIAL", "AP"), ("ap supine", "AP"), ("LATERAL", "LATERAL"), ("lat", "LATERAL"), ("LL", "LL"),
    ("left lateral", "LL"), ("XTABLE LATERAL", "LATERAL"), ("", "UNKNOWN"), (None, "UNKNOWN"), ("LAO", "UNKNOWN"),
])
def test_normalize_view(raw, view):
    assert normalize_view(raw) == view


def test_normalize_split_and_comparison_is_empty():
    assert [normalize_split(s) for s in ("train", "VAL", "valid", "validation", "dev", " test ")] == [
        "train", "validate", "validate", "validate", "validate", "test"]
    with pytest.raises(DataPrepError, match="split"):
        normalize_split("holdout")
    for c in (None, "", "None.", "NONE", "n/a", "  No prior studies. "):
        assert comparison_is_empty(c)
    for c in ("Chest radiograph from ___.", "PA and lateral 2/2/2020"):
        assert not comparison_is_empty(c)


def test_validate_record_builds_and_normalises_labels():
    r = validate_record(rec(images=["a.png", {"path": "b.png", "view": "LATERAL"}], labels={"Edema": 1, "Cardiomegaly": -1},
                            prior={"study_id": "s0", "findings": "f", "images": [{"path": "c.png", "view": "PA"}]},
                            meta={"k": 1}, findings=None))
    assert r.images == [ImageRef("a.png", "UNKNOWN"), ImageRef("b.png", "LATERAL")]
    assert r.labels["Edema"] == 1.0 and r.labels["Cardiomegaly"] == -1.0 and r.labels["Pneumothorax"] is None
    assert set(r.labels) == set(CHEXPERT_LABELS) and r.findings == ""
    assert r.prior.images == [ImageRef("c.png", "PA")] and r.has_prior
    assert not validate_record(rec(comparison="None.")).has_prior
    assert validate_record(rec(comparison="Prior from 2019")).has_prior


@pytest.mark.parametrize(("bad", "field"), [
    (rec(study_id=""), "study_id"), (rec(split="val"), "split"), (rec(findings=3), "findings"),
    (rec(images="a.png"), "images"), (rec(images=[{"path": "a.png", "view": "pa"}]), "images[0].view"),
    (rec(images=[{"view": "PA"}]), "images[0]"), (rec(labels={"Edema": 2}), "labels.Edema"),
    (rec(labels={"Fever": 1}), "labels.Fever"), (rec(prior={"findings": "x"}), "prior"), (rec(meta=[1]), "meta"),
    (rec(extra=1), "extra"),
])
def test_validation_errors_name_the_field(bad, field):
    with pytest.raises(DataPrepError) as e:
        validate_record(bad, file="x.jsonl", line=7)
    assert e.value.field == field and e.value.file == "x.jsonl" and e.value.line == 7
    assert "x.jsonl:7" in str(e.value) and field in str(e.value)


def test_iter_records_reports_file_and_line(tmp_path):
    p = tmp_path / "r.jsonl"
    p.write_text(json.dumps(rec()) + "\n\n" + "{not json\n")
    with pytest.raises(DataPrepError, match=r"r.jsonl:3.*not valid JSON"):
        list(iter_records(p))
    p.write_text(json.dumps(rec()) + "\n" + json.dumps(rec(split="nope")) + "\n")
    with pytest.raises(DataPrepError, match=r"r.jsonl:2.*field 'split'"):
        read_records(p)
    with pytest.raises(DataPrepError, match="file not found"):
        read_records(tmp_path / "missing.jsonl")


texts = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)
records = st.builds(
    StudyRecord,
    study_id=st.text("abc123", min_size=1, max_size=6), patient_id=st.text("xyz", min_size=1, max_size=3),
    dataset=st.just("d"), split=st.sampled_from(SPLITS), study_time=st.text("0123456789-", max_size=10),
    images=st.lists(st.builds(ImageRef, path=st.text("abc/.png", min_size=1, max_size=10),
                              view=st.sampled_from(VIEWS)), max_size=3),
    findings=texts, impression=texts, comparison=texts,
    labels=st.none() | st.fixed_dictionaries({k: st.sampled_from([None, 1.0, 0.0, -1.0]) for k in CHEXPERT_LABELS}),
    meta=st.dictionaries(st.text("kv", min_size=1, max_size=3), st.integers() | texts, max_size=3),
)


@settings(max_examples=40, deadline=None)
@given(st.lists(records, max_size=5, unique_by=lambda r: r.study_id))  # a studies file holds each study once
def test_jsonl_and_parquet_round_trip(tmp_path_factory, recs):
    d = tmp_path_factory.mktemp("rt")
    for name in ("r.jsonl", "r.parquet"):
        assert write_records(recs, d / name) == len(recs)
        back = read_records(d / name) if recs else []
        assert [r.to_dict() for r in back] == [r.to_dict() for r in recs]


def test_read_records_filters_split(tmp_path):
    write_records([validate_record(rec(study_id=f"s{i}", split=s)) for i, s in enumerate(SPLITS)], tmp_path / "a.jsonl")
    assert [r.study_id for r in read_records(tmp_path / "a.jsonl", split="validate")] == ["s1"]


def test_frontal_first():
    r = validate_record(rec(images=[{"path": "l", "view": "LATERAL"}, {"path": "u", "view": "UNKNOWN"},
                                    {"path": "a", "view": "AP"}]))
    assert [im.path for im in r.frontal_first()] == ["a", "l", "u"]


def _s(sid, pid, t, **kw):
    return StudyRecord(study_id=sid, patient_id=pid, dataset="d", split="train", study_time=t,
                       findings=f"f{sid}", images=[ImageRef(f"{sid}.png")], **kw)


def test_link_priors_latest_strictly_earlier_study():
    recs = [_s("c", "p", "2020-03-01"), _s("a", "p", "2020-01-01"), _s("d", "p", "2020-03-01"),
            _s("b", "p", "2020-01-01"), _s("e", "p", "2020-05-01"), _s("x", "q", "2020-01-01"),
            _s("n", "p", ""), _s("y", "q", "2021-01-01", prior=Prior(study_id="given"))]
    assert link_priors(recs) == 3  # c, d, e
    by = {r.study_id: r for r in recs}
    assert by["a"].prior is None and by["b"].prior is None  # same earliest time: not linked to each other
    assert by["c"].prior.study_id == "b" and by["d"].prior.study_id == "b"  # tie at the earlier time -> larger id
    assert by["e"].prior.study_id == "d" and by["e"].prior.findings == "fd" and by["e"].prior.images == by["d"].images
    assert by["n"].prior is None and by["y"].prior.study_id == "given" and by["x"].prior is None
    assert by["e"].prior.study_time == "2020-03-01"
    assert link_priors(recs) == 0  # idempotent


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("pq"), st.integers(0, 5)), min_size=1, max_size=12))
def test_link_priors_property(specs):
    recs = [_s(f"s{i}", p, f"{t:04d}") for i, (p, t) in enumerate(specs)]
    link_priors(recs)
    by = {r.study_id: r for r in recs}
    for r in recs:
        earlier = [o for o in recs if o.patient_id == r.patient_id and o.study_time < r.study_time]
        if not earlier:
            assert r.prior is None
        else:
            latest = max(o.study_time for o in earlier)
            assert r.prior is not None and by[r.prior.study_id].study_time == latest
            assert by[r.prior.study_id].patient_id == r.patient_id


def test_a_repeated_study_id_names_both_lines(tmp_path):
    p = tmp_path / "r.jsonl"
    p.write_text("".join(json.dumps(rec(study_id=s)) + "\n" for s in ("a", "b", "a")))
    with pytest.raises(DataPrepError, match=r"r.jsonl:3.*field 'study_id'.*repeated \(first at line 1\)"):
        read_records(p)
