"""BLEU (COCO/RadEval) and ROUGE: RadEval's own test values, hand-computed cases, robustness."""

from __future__ import annotations

import json
import math

import pytest

from reward.base import RewardError, get_scorer
from reward.nlg import corpus_bleu, corpus_rouge, rouge_scores, sentence_bleu
from tests.builders.repo import require_shared


def _radeval_cases() -> dict:
    path = require_shared("metric_oracles", "radeval.json")
    return {c["id"]: c for c in json.loads(path.read_text())["cases"]}


# ---------------------------------------------------------------- RadEval oracle cases

def test_regression_cpu_bleu_matches_radeval():
    case = _radeval_cases()["regression_cpu"]
    res = corpus_bleu(case["hyps"], case["refs"])
    exp = case["expected"]["detailed"]
    # RadEval rounds its corpus numbers to 4 decimals before returning them
    for k in (1, 2, 3):
        assert round(res.corpus[k - 1], 4) == exp[f"bleu_{k}"]
    assert round(res.bleu, 4) == exp["bleu"] == case["expected"]["default"]["bleu"]
    # per-sample values are returned unrounded: they must agree to the last bit or nearly
    for got, want in zip([s[-1] for s in res.per_sample], case["expected"]["per_sample"]["bleu"], strict=True):
        assert math.isclose(got, want, rel_tol=1e-12)


def test_regression_cpu_rouge_matches_radeval():
    case = _radeval_cases()["regression_cpu"]
    per = rouge_scores(case["hyps"], case["refs"])
    for key in ("rouge1", "rouge2", "rougeL"):
        for got, want in zip(per[key], case["expected"]["per_sample"][key], strict=True):
            assert math.isclose(got, want, rel_tol=1e-12, abs_tol=1e-15)
    corpus = corpus_rouge(case["hyps"], case["refs"])
    for key in ("rouge1", "rouge2", "rougeL"):
        assert round(corpus[key], 4) == case["expected"]["default"][key]


def test_basics_6pairs_bleu_and_rouge():
    case = _radeval_cases()["basics_6pairs"]
    exp = case["expected"]
    assert math.isclose(corpus_bleu(case["hyps"], case["refs"]).bleu, exp["bleu"]["value"], rel_tol=1e-12)
    corpus = corpus_rouge(case["hyps"], case["refs"])
    for key in ("rouge1", "rouge2", "rougeL"):
        assert math.isclose(corpus[key], exp[key]["value"], rel_tol=1e-12)


def test_divergence_gallery_per_sample_bleu():
    case = _radeval_cases()["divergence_gallery_8pairs"]
    for pair in case["pairs"]:
        got = sentence_bleu(pair["hyp"], pair["ref"])
        assert math.isclose(got, pair["scores"]["bleu"], rel_tol=1e-12), pair["id"]


# ---------------------------------------------------------------- BLEU semantics

def test_bleu_tokens_are_case_and_punctuation_sensitive():
    # white-space tokens as is: only "acute" matches ("No" != "no", "process." != "process")
    b1 = corpus_bleu(["No acute process."], ["no acute process"], n=1).per_sample[0][0]
    assert math.isclose(b1, 1 / 3, rel_tol=1e-8)


def test_bleu_closest_reference_length_and_tie_goes_to_shorter():
    # 3 hypothesis tokens; references of 2 and 4 tokens are equally close -> 2 is used -> no brevity penalty
    two_refs = corpus_bleu(["a b c"], [["a b", "a b c d"]], n=1)
    assert two_refs.reflen == 2
    assert math.isclose(two_refs.corpus[0], 1.0, rel_tol=1e-8)
    # with only the 4-token reference the brevity penalty is exp(1 - 4/3)
    one_ref = corpus_bleu(["a b c"], ["a b c d"], n=1)
    assert math.isclose(one_ref.corpus[0], math.exp(1 - 4 / 3), rel_tol=1e-8)


def test_bleu_clipping_by_reference_counts():
    # "the" x4 against a reference with one "the": clipped unigram precision 1/4 (BP: 4 vs 4 tokens)
    b1 = corpus_bleu(["the the the the"], ["the cat is here"], n=1).corpus[0]
    assert math.isclose(b1, 0.25, rel_tol=1e-8)


def test_corpus_bleu_pools_counts_not_sentence_scores():
    hyps, refs = ["a b c d", "x y"], ["a b c d", "p q"]
    res = corpus_bleu(hyps, refs, n=2)
    # unigram: 4 of 6 correct; bigram: 3 of 4 correct; equal total lengths -> no brevity penalty
    assert math.isclose(res.corpus[0], 4 / 6, rel_tol=1e-8)
    assert math.isclose(res.corpus[1], math.sqrt(4 / 6 * 3 / 4), rel_tol=1e-8)
    mean_sentence = sum(s[1] for s in res.per_sample) / 2
    assert not math.isclose(res.corpus[1], mean_sentence, rel_tol=1e-3)


def test_add1_smoothing_hand_computed():
    # p1 = 2/3 (unsmoothed); p2 = (1+1)/(2+1); p3 = (0+1)/(1+1); p4 = (0+1)/(0+1)
    got = sentence_bleu("a b c", "a b d", smoothing="add1")
    want = (2 / 3 * 2 / 3 * 1 / 2 * 1) ** 0.25
    assert math.isclose(got, want, rel_tol=1e-8)
    assert sentence_bleu("a b c", "a b d") < 1e-5 < got  # the COCO value of the same pair is ~0


def test_bleu_scorer_registry_result():
    scorer = get_scorer("bleu")
    hyps = ["No acute cardiopulmonary process.", "Small left pleural effusion."]
    refs = ["No acute cardiopulmonary process.", "Small right pleural effusion."]
    res = scorer(hyps, refs)
    direct = corpus_bleu(hyps, refs)
    assert res.scores == [s[-1] for s in direct.per_sample]
    assert res.corpus["bleu"] == res.corpus["bleu_4"] == direct.bleu
    assert res.corpus["smoothing"] == "coco"
    assert res.details[1]["bleu_1"] == direct.per_sample[1][0]
    smooth = get_scorer("bleu", smoothing="add1")(hyps, refs)
    assert smooth.scores[1] > res.scores[1]
    assert smooth.corpus["bleu"] == res.corpus["bleu"]  # smoothing never touches corpus numbers


@pytest.mark.parametrize("kwargs", [{"smoothing": "exp"}, {"n": 0}])
def test_bleu_bad_options(kwargs):
    with pytest.raises(RewardError):
        get_scorer("bleu", **kwargs)


def test_bleu_length_mismatch_is_an_error():
    with pytest.raises(RewardError, match="2 hypotheses but 1 references"):
        corpus_bleu(["a", "b"], ["a"])


# ---------------------------------------------------------------- ROUGE semantics

def test_rouge_l_hand_computed_and_stemmer_on():
    per = rouge_scores(["the cat sat"], ["the cat sat on the mat"], types=["rougeL"])
    assert math.isclose(per["rougeL"][0], 2 * 1.0 * 0.5 / 1.5)  # LCS 3: P = 1, R = 1/2
    # Porter stemming: "effusions" and "effusion" are the same token
    assert rouge_scores(["pleural effusions"], ["Pleural effusion"], types=["rouge1"])["rouge1"] == [1.0]


def test_rouge_scorers():
    hyps = ["Mild cardiomegaly.", "No pneumothorax."]
    refs = ["Mild cardiomegaly with edema.", "Small right pneumothorax."]
    rl = get_scorer("rouge_l")(hyps, refs)
    per = rouge_scores(hyps, refs)
    assert rl.scores == per["rougeL"]
    assert math.isclose(rl.corpus["rougeL"], sum(per["rougeL"]) / 2)
    r = get_scorer("rouge", key="rouge2")(hyps, refs)
    assert r.scores == per["rouge2"]
    assert set(r.corpus) == {"rouge1", "rouge2", "rougeL"}
    with pytest.raises(RewardError):
        get_scorer("rouge", key="rougeLsum")


# ---------------------------------------------------------------- robustness

STRANGE = ["", "   ", "\n\n", "x" * 20_000, "Épanchement pleural ✓ 肺", "<b>No</b> <i>effusion</i>", None, 42,
           [{"role": "assistant", "content": "No acute process."}]]


@pytest.mark.parametrize("name", ["bleu", "rouge", "rouge_l"])
def test_strange_completions_give_finite_scores(name):
    scorer = get_scorer(name)
    refs = ["No acute cardiopulmonary process."] * len(STRANGE)
    res = scorer(STRANGE, refs)
    assert len(res.scores) == len(STRANGE)
    assert all(math.isfinite(s) and 0.0 <= s <= 1.0 for s in res.scores)
    assert res.scores[0] == 0.0  # an empty completion earns nothing
    # the conversational completion is scored as its text
    assert res.scores[-1] == scorer(["No acute process."], refs[:1]).scores[0]
