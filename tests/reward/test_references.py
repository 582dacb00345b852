"""Which field is the reference: one rule (reward.references) and one default for score, the reward
functions, GRPO's reward spec and EditGRPO; eval reads the format's ``reference`` field."""

from __future__ import annotations

import argparse

from reward.references import (
    AUTO,
    DEFAULT_REFERENCE_FIELDS,
    choose_reference_field,
    join_reference,
    reference_candidates,
)


def test_the_rule():
    assert DEFAULT_REFERENCE_FIELDS == ("reference", "findings", "impression")
    assert reference_candidates(None) == reference_candidates(AUTO) == DEFAULT_REFERENCE_FIELDS
    assert reference_candidates("impression") == ("impression",)
    assert reference_candidates(["x", "findings+impression"]) == ("x", "findings+impression")
    have = {"findings", "impression"}.__contains__
    assert choose_reference_field(None, have) == "findings"
    assert choose_reference_field("findings+impression", have) == "findings+impression"
    assert choose_reference_field("reference", have) is None
    assert join_reference(["  Clear lungs. ", "", " No effusion."]) == "Clear lungs. No effusion."


def test_every_knob_has_the_one_default():
    from evaluation.cli import register
    from mllm_cxr.train.editor import EditSettings
    from mllm_cxr.train.grpo_config import GRPOScriptArguments
    from reward.trl import DEFAULT_REFERENCE_COLUMNS

    assert DEFAULT_REFERENCE_COLUMNS is DEFAULT_REFERENCE_FIELDS
    assert EditSettings().reference_column is None and GRPOScriptArguments().reward_reference_column is None
    sub = argparse.ArgumentParser().add_subparsers()
    register(sub)
    score = sub.choices["score"].parse_args(["--pred", "p", "--ref", "r", "--out", "o"])
    assert score.ref_field == AUTO


def test_score_and_the_reward_functions_read_the_same_reference():
    from evaluation.score import _ref_text, choose_ref_field
    from reward.trl import resolve_references

    rec = {"study_id": "a", "findings": " Clear lungs. ", "impression": "No effusion."}
    cols = {k: [v] for k, v in rec.items()}
    for field in (None, "findings", "impression", "findings+impression"):
        name = choose_ref_field("r.jsonl", [(1, rec)], field or AUTO)
        assert [_ref_text(rec, name)] == resolve_references(cols, field, 1), field
