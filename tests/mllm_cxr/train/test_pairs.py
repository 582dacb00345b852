"""Preference-pair builders: prior suppression (Banerjee et al.) and reward-ranked samples (CheXalign)."""

from __future__ import annotations

import json

import pytest

from data_prep.errors import DataPrepError
from data_prep.schema import read_records
from mllm_cxr.prompts import PromptConfig, target_text
from mllm_cxr.train.pairs import (
    PAIR_KEYS,
    prior_suppression_pairs,
    rank_samples,
    read_pairs,
    reward_ranked_pairs,
    write_pairs,
)
from reward.prior import find_prior_references

pytest_plugins = ["tests.builders.alignment"]  # one_thread


def test_prior_pairs_cover_exactly_the_hallucinated_training_reports(phantom_dir):
    studies = read_records(phantom_dir / "studies.jsonl", split="train")
    pairs, summary = prior_suppression_pairs(studies, PromptConfig())
    expected = {s.study_id for s in studies if s.meta.get("hallucinated_prior")}
    assert expected, "the phantom data should contain hallucinated prior references"
    assert {p["study_id"] for p in pairs} == expected
    # every study is counted in exactly one bucket
    buckets = ("pairs", "skipped_with_prior", "skipped_no_prior_reference", "skipped_empty_target", "skipped_empty_after_strip")
    assert sum(summary[k] for k in buckets) == summary["studies"] == len(studies)
    assert summary["skipped_with_prior"] == sum(s.has_prior for s in studies)
    by_id = {s.study_id: s for s in studies}
    for p in pairs:
        s = by_id[p["study_id"]]
        assert p["chosen"] != p["rejected"]
        assert p["rejected"] == target_text(s, PromptConfig())
        assert s.meta["hallucinated_sentence"] in p["rejected"] and s.meta["hallucinated_sentence"] not in p["chosen"]
        assert find_prior_references(p["chosen"]) == [] and find_prior_references(p["rejected"])
        assert p["margin"] == p["chosen_score"] - p["rejected_score"] >= 1.0
        assert p["source"] == "prior_suppression"


def test_prior_pairs_drop_a_section_that_only_compared(tmp_path):
    from data_prep.schema import StudyRecord

    s = StudyRecord(study_id="s1", patient_id="p", dataset="x", split="train", comparison="None.",
                    findings="The lungs are clear.", impression="No interval change.")
    (pair,), summary = prior_suppression_pairs([s], PromptConfig())
    assert pair["chosen"] == "FINDINGS: The lungs are clear."  # no empty "IMPRESSION:" left behind
    assert summary["prior_sentences_removed"] == 1
    only_prior = StudyRecord(study_id="s2", patient_id="p", dataset="x", split="train",
                             findings="Unchanged from the prior examination.", impression="")
    pairs, summary = prior_suppression_pairs([only_prior], PromptConfig(sections=["findings"]))
    assert pairs == [] and summary["skipped_empty_after_strip"] == 1


class FakeGenerator:
    """A generator object with fixed samples per study (the interface reward_ranked_pairs needs)."""

    def __init__(self, samples: dict[str, list[str]], cfg: PromptConfig):
        self.samples, self.cfg, self.calls = samples, cfg, 0

    def generate(self, studies):
        self.calls += 1
        return [list(self.samples[s.study_id]) for s in studies]


_WRONG = {"Pneumothorax": "Large right pneumothorax.", "Cardiomegaly": "Moderate cardiomegaly.",
          "Pleural Effusion": "Large bilateral pleural effusions.", "Consolidation": "Left upper lobe consolidation."}


def _wrong_report(study) -> str:
    """A report asserting only findings the study does not have (CheXpert F1 0 against its reference)."""
    return " ".join(v for k, v in _WRONG.items() if k not in study.meta["findings"])


def test_reward_ranked_pairs_pick_best_and_worst_with_margin(phantom_dir):
    cfg = PromptConfig()
    studies = read_records(phantom_dir / "studies.jsonl", split="train")[:6]
    ref = {s.study_id: target_text(s, cfg) for s in studies}
    wrong = {s.study_id: _wrong_report(s) for s in studies}
    a, b, c, d, e, f = (s.study_id for s in studies)
    samples = {
        a: [ref[a], wrong[a], "", wrong[a] + " Small left pneumothorax."],  # the reference wins
        b: [wrong[b], wrong[b], wrong[b]],  # one distinct text: no pair
        c: ["", "  ", ref[c]],  # one non-empty sample: no pair
        d: [ref[d], ref[d] + " "],  # different texts, same score: margin 0
        e: [wrong[e], ref[e]],
        f: [ref[f], wrong[f]],
    }
    gen = FakeGenerator(samples, cfg)
    pairs, summary = reward_ranked_pairs(studies, gen, "chexpert_f1", margin_threshold=0.05, batch_size=4,
                                         progress=False, keep_samples=True)
    assert gen.calls == 2  # batches of 4 studies
    assert summary["samples"] == sum(len(v) for v in samples.values()) and summary["empty_samples"] == 3
    assert summary["skipped_too_few_samples"] == 2 and summary["skipped_low_margin"] == 1
    assert {p["study_id"] for p in pairs} == {a, e, f} and summary["pairs"] == 3
    for p in pairs:
        assert p["chosen"] == ref[p["study_id"]] and p["chosen_score"] == 1.0 == max(p["scores"])
        assert p["rejected"] != p["chosen"] and p["rejected"].strip()
        assert p["rejected_score"] == min(s for t, s in zip(p["samples"], p["scores"]) if t.strip())
        assert p["margin"] == pytest.approx(p["chosen_score"] - p["rejected_score"]) and p["margin"] > 0.05
        assert p["source"] == "reward_ranked"
    assert summary["mean_margin"] == pytest.approx(sum(p["margin"] for p in pairs) / len(pairs), abs=1e-4)
    strict, s2 = reward_ranked_pairs(studies, FakeGenerator(samples, cfg), "chexpert_f1", margin_threshold=1.0,
                                     progress=False)
    assert strict == [] and s2["skipped_low_margin"] == 4  # F1 margins are at most 1.0


def test_rank_samples_never_pairs_identical_texts():
    assert rank_samples(["a", "a"], [1.0, 0.0]) is None
    assert rank_samples(["a", "", "b"], [0.5, 9.0, 0.1]) == (0, 2)
    best, worst = rank_samples(["x", "x", "y"], [1.0, 1.0, 1.0])
    assert {best, worst} == {0, 2}  # ties: the first of the best, then a different text
    assert rank_samples(["a", "b"], [float("nan"), 1.0]) is None


def test_pairs_roundtrip_and_bad_lines_name_line_and_field(tmp_path):
    pairs = [{"study_id": "s1", "chosen": "A.", "rejected": "B.", "chosen_score": 1.0, "rejected_score": 0.0,
              "margin": 1.0, "source": "x"}]
    path = tmp_path / "pairs.jsonl"
    assert write_pairs(pairs, path) == 1
    assert list(json.loads(path.read_text().splitlines()[0])) == list(PAIR_KEYS)
    assert read_pairs(path) == pairs
    bad = tmp_path / "bad.jsonl"
    bad.write_text(path.read_text() + json.dumps({"study_id": "s2", "chosen": "Same.", "rejected": "Same."}) + "\n")
    with pytest.raises(DataPrepError) as e:
        read_pairs(bad)
    assert f"{bad}:2" in str(e.value) and "chosen" in str(e.value)
    bad.write_text('{"study_id": "s3", "chosen": "", "rejected": "x"}\n')
    with pytest.raises(DataPrepError, match="'chosen'"):
        read_pairs(bad)


def test_cli_pairs_prior_and_sample(one_thread, tmp_path, phantom_dir, tiny_model_dir, capsys):
    """Both verbs end to end; `sample` runs the HF generator of the tiny model (k samples per study)."""
    from mllm_cxr.cli import main

    out = tmp_path / "prior.jsonl"
    assert main(["pairs", "prior", "--studies", str(phantom_dir / "studies.jsonl"), "--out", str(out)]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    pairs = read_pairs(out)
    assert line.startswith(f"pairs prior_suppression: {len(pairs)} pairs from ") and str(out) in line

    out2 = tmp_path / "ranked.jsonl"
    summary = tmp_path / "summary.json"
    rc = main(["pairs", "sample", "--studies", str(phantom_dir / "studies.jsonl"), "--model", str(tiny_model_dir),
               "--dtype", "float32", "--max-pixels", "12544", "--min-pixels", "3136", "--k", "3", "--limit", "3",
               "--max-new-tokens", "12", "--margin", "-1", "--out", str(out2), "--summary-json", str(summary),
               "--keep-samples"])
    assert rc == 0
    s = json.loads(summary.read_text())
    assert s["studies"] == 3 and s["samples"] == 9
    assert s["pairs"] + s["skipped_too_few_samples"] + s["skipped_low_margin"] == 3
    if s["pairs"]:
        for p in read_pairs(out2):
            assert len(p["samples"]) == 3 and p["chosen"] != p["rejected"]
    assert main(["pairs", "sample", "--studies", str(phantom_dir / "studies.jsonl"), "--model",
                 str(tiny_model_dir), "--k", "1", "--out", str(out2)]) == 2
    assert "--k must be at least 2" in capsys.readouterr().err
