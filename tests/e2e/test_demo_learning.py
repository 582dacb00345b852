"""Learning on held-out studies, proven by the demo itself (one `make demo` run per session, `demo_run`).

Every number comes from the phantom *test* split, which no stage trains on; every comparison is paired
over the same studies (two-sided permutation test, :func:`evaluation.statistics.paired_compare`). The fair
control for GRPO and EditGRPO is SFT continued for the same optimizer steps on the same studies.
"""

from __future__ import annotations

import re

import pytest

from tests.builders.repo import REPO

pytestmark = pytest.mark.slow

ALPHA = 0.05
#: DPO's non-inferiority margin on the phantom finding F1 that the issue asks for (lower end of the 95% CI of
#: the paired delta).
NI_MARGIN = 0.02


def _m(run, stage, key):
    return run["results"]["results"][stage]["metrics"][key]


def _vs(run, stage, against, key):
    return run["results"]["results"][stage][f"vs_{against}"][key]


def test_sft_sees_every_finding(demo_run):
    assert demo_run["results"]["test_studies"] == 1000  # the split the power analysis asked for
    assert _m(demo_run, "sft", "phantom_micro_f1")["value"] >= 0.75
    for finding in ("Cardiomegaly", "Pleural Effusion", "Consolidation", "Pneumothorax", "Support Devices"):
        assert _m(demo_run, "sft", f"phantom_f1::{finding}")["value"] >= 0.50, finding
    # and SFT is learning, not the base: the untrained base writes no report the labeler can score well
    assert _m(demo_run, "base", "phantom_micro_f1")["value"] < 0.5


def test_more_sft_does_not_help(demo_run):
    """SFT runs 12 epochs, so SFT continued for GRPO's 48 steps on GRPO's studies gains nothing (seed 0: +0.002,
    p=0.69, phantom F1; -0.000 CheXpert F1-14). After 8 epochs it gained on other seeds (+0.025, p=0.008 on
    seed 1), and every RL gain over SFT was then partly "more training"."""
    for key in ("phantom_micro_f1", "chexpert_micro_f1_14"):
        row = _vs(demo_run, "control", "sft", key)
        assert row["delta"] < 0.01 and not (row["delta"] > 0 and row["p_value"] < ALPHA), (key, row)


def test_grpo_beats_sft_and_the_control_and_cuts_prior_references(demo_run):
    """Issue 17's bar, on 1,000 test studies: GRPO with the clinical composite beats SFT (seed 0: +0.011 phantom
    F1, p=0.006; +0.008 CheXpert F1-14, p=0.032) and the continued-SFT control (+0.009, p=0.006; +0.008,
    p=0.008), and cuts the sampled prior-reference rate (0.488 -> 0.306). Since round five GRPO trains on the
    studies whose SFT samples differ in reward, at temperature 0.7, with the prior penalty at 0.25."""
    for against in ("sft", "control"):
        for key in ("chexpert_micro_f1_14", "phantom_micro_f1"):
            row = _vs(demo_run, "grpo", against, key)
            assert row["delta"] > 0 and row["p_value"] < ALPHA, (against, key, row)
        row = _vs(demo_run, "grpo", against, "prior_rate_sampled")
        assert row["delta"] < 0 and row["p_value"] < ALPHA, (against, row)
    sft, grpo = (_m(demo_run, s, "prior_rate_sampled")["value"] for s in ("sft", "grpo"))
    assert grpo <= 0.7 * sft, (sft, grpo)


def test_editgrpo_points_up_against_sft_and_the_control(demo_run):
    """EditGRPO with GRPO's settings and control, a quarter of each group edited (chosen on the tuning set), seed 0:
    phantom F1 over SFT +0.009 (p=0.028), CheXpert F1-14 +0.005 (p=0.17), over the control +0.007 (p=0.078) /
    +0.005 (p=0.14): up, significant over SFT on phantom F1 only on this seed (seed 2 and the three seeds pooled
    are significant on both metrics, docs/benchmarks.md). The test holds the direction, that it costs nothing,
    and the prior-reference cut."""
    for against in ("sft", "control"):
        for key in ("chexpert_micro_f1_14", "phantom_micro_f1"):
            row = _vs(demo_run, "editgrpo", against, key)
            assert row["delta"] > 0 and row["ci"][0] >= -NI_MARGIN, (against, key, row)
    row = _vs(demo_run, "editgrpo", "sft", "prior_rate_sampled")
    assert row["delta"] < 0 and row["p_value"] < ALPHA, row


def test_prior_suppression_dpo_halves_prior_references_and_is_non_inferior(demo_run):
    """The sampled prior-reference rate falls by 53% (0.488 -> 0.230, p<0.01), and the paired 95% CI of the phantom
    F1 delta, [-0.017, +0.003], stays above the issue's -0.02 margin (5x NLL of the chosen report, 5 epochs).
    Seeds 1 and 2: 66% and 59%, CI lower ends -0.015 and -0.020 (docs/benchmarks.md)."""
    sft, dpo = (_m(demo_run, s, "prior_rate_sampled")["value"] for s in ("sft", "dpo"))
    row = _vs(demo_run, "dpo", "sft", "prior_rate_sampled")
    assert dpo <= 0.5 * sft and row["p_value"] < ALPHA, (sft, dpo, row)
    assert _vs(demo_run, "dpo", "sft", "phantom_micro_f1")["ci"][0] >= -NI_MARGIN


def test_reward_ranked_dpo_raises_held_out_chexpert_f1(demo_run):
    """DPO on reward-ranked pairs from the SFT model (8 samples per train study at temperature 1.0 and again at
    0.7, best vs worst by CheXpert F1) raises held-out CheXpert F1-14 over SFT, the issue's bar: seed 0 +0.011
    (p=0.006), phantom F1 +0.015 (p=0.004); seeds 1 and 2 +0.010 and +0.011 (p <= 0.012)."""
    row = _vs(demo_run, "chexalign", "sft", "chexpert_micro_f1_14")
    assert row["delta"] > 0 and row["p_value"] < ALPHA, row
    row = _vs(demo_run, "chexalign", "sft", "phantom_micro_f1")
    assert row["delta"] > 0 and row["ci"][0] >= -NI_MARGIN, row


def test_export_reproduces_grpo(demo_run):
    for key in ("phantom_micro_f1", "chexpert_micro_f1_14", "prior_rate_sampled"):
        assert _m(demo_run, "export", key)["value"] == pytest.approx(_m(demo_run, "grpo", key)["value"], abs=1e-9)


def test_curves_are_written_and_named(demo_run):
    import json

    for stage in ("grpo", "editgrpo", "dpo", "chexalign"):
        run = demo_run["runs"] / f"demo-{stage}"
        doc = json.loads((run / "curves.json").read_text())
        assert len(doc["points"]) >= 3 and doc["points"][0]["step"] == 0, stage
        assert {"chexpert_f1_greedy", "chexpert_f1_sampled", "prior_rate_sampled", "normal_share",
                "reward_greedy"} <= set(doc["points"][-1]), stage
        assert (run / "curves.png").read_bytes()[:4] == b"\x89PNG"
        assert f"held-out learning curve of {stage}: {run / 'curves.png'}" in demo_run["stdout"]


def readme_demo_table() -> str:
    text = (REPO / "README.md").read_text()
    m = re.search(r"<!-- demo-table:start -->\n(.*?)<!-- demo-table:end -->", text, re.S)
    assert m, "README.md lacks the <!-- demo-table:start/end --> block"
    return m.group(1)


def test_readme_table_is_the_table_the_demo_writes(demo_run):
    """The README's table is the default run's table, as printed (a stale table fails here)."""
    assert readme_demo_table().strip() == demo_run["table"].strip()


def test_seeds_pooled_table_sums_each_study_over_seeds(demo_run):
    """`bench/demo_seeds.py`'s pooled comparison: one seed gives the demo's own deltas and p-values; the same seed
    twice (every study's counts doubled) leaves the micro F1s, their deltas and p-values as they are."""
    from bench.demo_seeds import POOLED, pooled_groups
    from evaluation.statistics import paired_compare
    from mllm_cxr.demo import N_BOOT

    runs = demo_run["runs"]
    for seeds in ([0], [0, 0]):
        groups = {st: pooled_groups(runs, seeds, st) for st in ("sft", "grpo")}
        n = len(groups["sft"]["phantom"].S)
        assert n == demo_run["results"]["test_studies"]
        cmp = paired_compare(groups["grpo"], groups["sft"], n, N_BOOT, 0)
        for key, _ in POOLED:
            want = _vs(demo_run, "grpo", "sft", key)
            assert cmp[key]["delta"] == pytest.approx(want["delta"], abs=1e-12), (seeds, key)
            assert cmp[key]["p_value"] == pytest.approx(want["p_value"]), (seeds, key)
    assert groups["grpo"]["phantom"].S.sum() > 0 and (groups["grpo"]["phantom"].S % 2 == 0).all()
