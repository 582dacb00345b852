"""GRPO: EditGRPO's defaults, rewards named in YAML, the collapse guard, and learning on phantom data."""

from __future__ import annotations

import json
import logging

import pytest

from tests.builders.repo import REPO

# The session fixtures align_phantom and sft_adapter; helpers are imported inside the tests, after pytest has
# loaded (and assert-rewritten) the plugin module.
pytest_plugins = ["tests.builders.alignment"]

GRPO_CFG = REPO / "recipes" / "configs" / "tiny" / "grpo.yaml"
KW = dict(output_dir="/tmp/unused", use_cpu=True, bf16=False, report_to="none")


def test_editgrpo_published_defaults_reach_a_parsed_run(tmp_path):
    """A GRPO config that sets none of them trains with the values ClinicalGRPOConfig overrides (EditGRPO's
    published setup), not TRL's: each override differs from TRL's default and survives the recipe's parser
    and TRL's __post_init__. An out-of-range edit key fails where it is parsed."""
    import dataclasses

    from trl import GRPOConfig

    from mllm_cxr.config import parse_recipe_args
    from mllm_cxr.train.grpo_config import ClinicalGRPOConfig, EditGRPOConfig

    ours = {f.name: f.default for f in dataclasses.fields(ClinicalGRPOConfig) if f.name in ClinicalGRPOConfig.__annotations__}
    trl_defaults = {f.name: f.default for f in dataclasses.fields(GRPOConfig)}
    assert {"loss_type", "scale_rewards", "beta", "learning_rate", "temperature"} <= set(ours)
    # equal to TRL 1.16's defaults today, kept on purpose so that a TRL upgrade cannot change the published setup
    same_as_trl = {k for k, v in ours.items() if k in trl_defaults and trl_defaults[k] == v}
    assert same_as_trl == {"learning_rate", "max_grad_norm", "temperature"}, same_as_trl
    cfg = tmp_path / "min.yaml"
    cfg.write_text("output_dir: %s\nuse_cpu: true\nbf16: false\nreport_to: none\n" % (tmp_path / "out"))
    for algorithm in ("grpo", "editgrpo"):
        args = parse_recipe_args(_grpo_recipe().CONFIG_CLASSES, ["--config", str(cfg), "--algorithm", algorithm])[-1]
        assert {k: getattr(args, k) for k in ours} == ours, algorithm
    with pytest.raises(ValueError, match="edit_fraction"):
        EditGRPOConfig(edit_fraction=0.75, **KW)


def _grpo_recipe():
    import importlib.util

    spec = importlib.util.spec_from_file_location("recipe_grpo", REPO / "recipes" / "grpo.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("where", ["yaml", "flag"])
def test_an_edit_key_with_algorithm_grpo_is_an_error(tmp_path, capsys, where):
    """`algorithm: grpo` with an edit_* key (in the YAML or as a flag): one line naming the key, exit 2, before
    anything is built; the same key with `algorithm: editgrpo` parses."""
    from mllm_cxr.config import parse_recipe_args
    from mllm_cxr.train.recipe import run_recipe

    recipe = _grpo_recipe()
    cfg = tmp_path / "grpo.yaml"
    extra = "edit_similarity_threshold: 0.4\n" if where == "yaml" else ""
    cfg.write_text(GRPO_CFG.read_text() + extra)
    argv = ["--config", str(cfg), "--output_dir", str(tmp_path / "out"), "--use_cpu", "true", "--bf16", "false"]
    flags = ["--edit_similarity_threshold", "0.4"] if where == "flag" else []
    with pytest.raises(SystemExit) as e:
        run_recipe(recipe.main, argv + flags + ["--dry-run"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert e.value.code == 2 and len(err) == 1, err
    assert "edit_similarity_threshold" in err[0] and "algorithm: grpo" in err[0], err[0]
    assert not (tmp_path / "out").exists()
    ok = parse_recipe_args(recipe.CONFIG_CLASSES, argv + flags + ["--algorithm", "editgrpo"],
                           check=recipe.check_algorithm_keys)
    assert ok[-1].edit_settings().similarity_threshold == 0.4
    plain = parse_recipe_args(recipe.CONFIG_CLASSES, ["--config", str(GRPO_CFG)] + argv[2:],
                              check=recipe.check_algorithm_keys)  # the shipped grpo config has no edit key
    assert plain[-2].algorithm == "grpo"


def test_reward_specs_become_trl_reward_funcs(phantom_dir):
    from data_prep.schema import read_records
    from mllm_cxr.prompts import PromptConfig
    from mllm_cxr.train.pairs import reward_columns
    from reward.base import available_scorers
    from reward.trl import load_reward_spec, reward_funcs_and_weights

    known = set(available_scorers())
    specs = sorted((REPO / "recipes" / "rewards").glob("*.yaml"))
    assert {p.name for p in specs} >= {"chexpert_f1.yaml", "clinical.yaml", "editgrpo.yaml"}
    for p in specs:
        assert {e["name"] for e in load_reward_spec(p)} <= known, p
    funcs, weights = reward_funcs_and_weights(str(REPO / "recipes" / "rewards" / "clinical.yaml"))
    assert [f.__name__ for f in funcs] == ["chexpert_f1", "prior_penalty", "rouge_l"] and weights == [1.0, 0.5, 0.2]
    balanced, w = reward_funcs_and_weights(str(REPO / "recipes" / "rewards" / "clinical_balanced.yaml"))  # demo GRPO
    assert [f.__name__ for f in balanced] == [f.__name__ for f in funcs] and w == [1.0, 0.25, 0.2]
    (single,), w = reward_funcs_and_weights("chexpert_f1")
    assert single.__name__ == "chexpert_f1" and w == [1.0]
    s = next(r for r in read_records(phantom_dir / "studies.jsonl") if r.meta.get("hallucinated_prior"))
    cols = {k: [v, v] for k, v in reward_columns(s, PromptConfig()).items()}
    ref = cols["reference"][0]
    scores = {f.__name__: f(prompts=None, completions=[[{"role": "assistant", "content": ref}], "asdf"], **cols)
              for f in funcs}
    assert scores["chexpert_f1"][0] == 1.0 and scores["prior_penalty"][0] == -1.0  # the report compares, no prior
    assert scores["rouge_l"][0] == pytest.approx(1.0) and scores["rouge_l"][1] < 0.2


def test_collapse_guard_logs_shares_and_warns_on_drift(caplog):
    from mllm_cxr.train.collapse import CollapseGuard

    normal = "FINDINGS: The lungs are clear. No pleural effusion or pneumothorax. Heart size is normal."
    sick = "FINDINGS: Large right pleural effusion. Moderate cardiomegaly."
    guard = CollapseGuard(normal_max=0.95, drift=0.3, window=3, baseline_steps=2)
    with caplog.at_level(logging.WARNING, logger="mllm_cxr.train.collapse"):
        for step in range(4):  # a healthy mix: 1 normal in 4
            stats = guard.observe([normal, sick, sick, sick], step=step)
            assert stats == {"normal_share": 0.25, "empty_share": 0.0}
        assert not guard.alarm and not caplog.records
        for step in range(4, 8):  # drifting to the generic normal report
            guard.observe([normal, normal, normal, sick], step=step)
    assert guard.alarm and guard.alerts and "normal share rose from 0.25" in caplog.text
    assert [h["normal_share"] for h in guard.history] == [0.25] * 4 + [0.75] * 4

    empty = CollapseGuard(empty_max=0.2, window=2, baseline_steps=1, stop=True)
    for step in range(3):
        assert empty.observe(["", "", sick, normal], step=step)["empty_share"] == 0.5

    class Control:
        should_training_stop = False

    class State:
        global_step = 3

    assert empty.alarm and empty.on_step_end(None, State(), Control()).should_training_stop


def test_reward_curve_text():
    from mllm_cxr.train.grpo import format_reward_curve, reward_curve

    hist = [{"loss": 0.1, "reward": 0.2, "step": 1, "collapse/normal_share": 0.1},
            {"loss": 0.1, "reward": 0.6, "step": 2, "collapse/normal_share": 0.2},
            {"train_runtime": 3.0, "reward": 0.4, "step": 2}]
    rows = reward_curve(hist)
    assert [r["step"] for r in rows] == [1, 2] and rows[1]["reward"] == 0.6
    text = format_reward_curve(rows)
    assert "first 1 logged step(s) 0.2000 -> last 1 0.6000 (+0.4000)" in text
    assert text.splitlines()[2].count("#") > text.splitlines()[1].count("#")


@pytest.mark.slow
def test_grpo_runs_with_two_images_and_logs_its_reward_curve(tmp_path, align_phantom, tiny_model_dir, sft_adapter):
    """GRPO from the tiny SFT adapter, CheXpert-F1 reward, frontal + lateral image per prompt: the mechanics
    (two images in every prompt, a reward and collapse shares logged at every step). Whether GRPO makes
    reports more accurate is a held-out question, answered in tests/e2e/test_demo_learning.py, not here."""
    from data_prep.schema import read_records
    from mllm_cxr.data import grpo_dataset
    from mllm_cxr.prompts import PromptConfig
    from tests.builders.alignment import adapter_settings, derived_config, run_recipe

    out = tmp_path / "grpo"
    settings = adapter_settings(sft_adapter)
    assert settings["max_images"] == 2
    cfg = derived_config(GRPO_CFG, tmp_path / "grpo.yaml", **settings)
    proc = run_recipe("grpo.py", "--config", str(cfg), "--studies", str(align_phantom / "studies.jsonl"),
                      "--model_name_or_path", str(tiny_model_dir), "--adapter_path", str(sft_adapter),
                      "--output_dir", str(out), "--reward_spec", "chexpert_f1", "--max_train_studies", "4",
                      "--per_device_train_batch_size", "16", "--num_generations", "4", "--learning_rate", "0.002",
                      "--max_steps", "3", "--logging_steps", "1", "--max_completion_length", "96", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "reward curve (grpo, rewards: chexpert_f1)" in proc.stdout
    saved = json.loads((out / "mllm_cxr_config.json").read_text())
    train = read_records(align_phantom / "studies.jsonl", split="train")[:4]
    ds = grpo_dataset(train, align_phantom, PromptConfig(**saved["PromptConfig"]))
    assert all(len(row["images"]) == 2 for row in ds)
    assert all(sum(part["type"] == "image" for m in row["prompt"] for part in m["content"]) == 2 for row in ds)

    curve = json.loads((out / "reward_curve.json").read_text())
    rewards = [r["reward"] for r in curve]
    assert len(rewards) == 3 and all("collapse/normal_share" in r for r in curve)
    assert all(0.0 <= r <= 1.0 for r in rewards)  # the CheXpert-F1 reward of each step, as logged
