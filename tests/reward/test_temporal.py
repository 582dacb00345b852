"""Temporal F1: RadEval's test value, the keyword list, eps rules and RadEval's text cleaning."""

from __future__ import annotations

import json
import math

import pytest

from reward.base import RewardError, get_scorer
from reward.temporal import EPS, TEMPORAL_KEYWORDS, temporal_entities, temporal_f1, temporal_f1_from_sets
from tests.builders.repo import require_shared


def _case() -> dict:
    path = require_shared("metric_oracles", "radeval.json")
    return next(c for c in json.loads(path.read_text())["cases"] if c["id"] == "temporal_f1")


def test_keyword_list_is_radevals():
    path = require_shared("prior_refs", "radeval_temporal_keywords_biovilt.json")
    assert TEMPORAL_KEYWORDS == frozenset(json.loads(path.read_text())["keywords"])
    assert len(TEMPORAL_KEYWORDS) == 44


def test_radeval_test_value_reproduced():
    case = _case()
    per_pair = [temporal_f1(h, r) for h, r in zip(case["hyps"], case["refs"], strict=True)]
    assert per_pair == case["helper_reproduction"]["per_pair"]
    assert math.isclose(sum(per_pair) / len(per_pair), case["expected_upstream"], rel_tol=1e-12)
    res = get_scorer("temporal_f1")(case["hyps"], case["refs"])
    assert res.scores == per_pair
    assert math.isclose(res.corpus["temporal_f1"], case["expected_upstream"], rel_tol=1e-12)
    assert res.details[2] == {"hyp_terms": ["enlargement", "stable"], "ref_terms": ["enlargement", "stable"]}


def test_eps_rules():
    assert temporal_f1_from_sets(set(), set()) == 1.0  # nothing temporal on either side
    assert temporal_f1_from_sets({"new"}, set()) == EPS  # temporal words the reference does not have
    # reference has 2 words, hypothesis none: P = eps/eps = 1, R = eps/(2 + eps), F ~ eps
    f = temporal_f1_from_sets(set(), {"new", "stable"})
    assert 0 < f < 2 * EPS
    # half recall, full precision: F = 2 * 1 * 0.5 / 1.5
    assert math.isclose(temporal_f1_from_sets({"stable"}, {"stable", "new"}), 2 / 3, rel_tol=1e-8)


@pytest.mark.parametrize("text, expected", [
    ("Unchanged cardiomegaly. NEW opacity.", {"unchanged", "new"}),
    ("re-expanded lung", {"expanded"}),  # dashes become spaces
    ("new_stable", {"new", "stable"}),  # underscores too (they are word characters otherwise)
    ("stable/unchanged", set()),  # other symbols are deleted, gluing the words (RadEval's cleaning)
    ("patient's status is stable.", {"stable"}),
    ("changes unchangedness renewal", set()),  # whole words only
    ("(improved), worsening; resolved:", {"improved", "worsening", "resolved"}),
    ("<b>new</b>", set()),
    ("", set()),
])
def test_temporal_entities(text, expected):
    assert temporal_entities(text) == expected


def test_several_references_are_united():
    assert temporal_f1("new and stable", ["new effusion", "stable heart"]) == temporal_f1_from_sets(
        {"new", "stable"}, {"new", "stable"})


def test_scorer_options_and_strange_input():
    with pytest.raises(RewardError):
        get_scorer("temporal_f1", eps=0.0)
    hyps = ["", "x" * 20_000, "Épanchement stable ✓", "<b>new</b>", None]
    res = get_scorer("temporal_f1")(hyps, ["stable"] * len(hyps))
    assert all(math.isfinite(s) and 0 <= s <= 1 for s in res.scores)
    assert math.isclose(res.scores[2], 1.0, abs_tol=1e-9)  # eps keeps a perfect match just under 1
    assert res.scores[3] < 2 * EPS  # "<b>new</b>" is cleaned to "bnewb": no temporal word
