"""The vLLM plumbing that runs without vLLM (part of `make test`): argument handling, the prompt guard, messages."""

from __future__ import annotations

import importlib.util

import pytest

from tests.builders.adapters import make_random_adapter

HAS_VLLM = importlib.util.find_spec("vllm") is not None


def test_vllm_args_are_taken_as_written(tiny_model_dir, capsys):
    from mllm_cxr.cli import join_flag_values, main

    assert join_flag_values(["serve", "--vllm-args", "--enforce-eager", "--dry-run"]) == [
        "serve", "--vllm-args=--enforce-eager", "--dry-run"]
    for value in ("--enforce-eager --max-num-seqs 8", "--enforce-eager"):
        rc = main(["serve", "--model", str(tiny_model_dir), "--vllm-args", value, "--dry-run"])
        out = capsys.readouterr().out.strip()
        assert rc == 0 and out.startswith(f"vllm serve {tiny_model_dir}") and out.endswith(value), out


def test_collapse_image_runs_gives_one_placeholder_per_image():
    from mllm_cxr.train.upstream_fixes import collapse_image_runs

    pad, start, end = 9, 7, 8
    ids = [1, start] + [pad] * 16 + [end, 2, start] + [pad] * 4 + [end, 3]
    assert collapse_image_runs(ids, pad) == [1, start, pad, end, 2, start, pad, end, 3]
    assert collapse_image_runs([1, 2, 3], pad) == [1, 2, 3]


def test_rollout_prompt_guard_names_the_versions():
    from mllm_cxr.train.upstream_fixes import VLLMRolloutMismatch, check_rollout_prompts

    ok = [[1, 9, 9, 2], [3, 9, 4]]
    check_rollout_prompts(ok, ok, 9, "colocate")
    doubled = [[1] + [9] * 4 + [2], [3, 9, 4]]
    with pytest.raises(VLLMRolloutMismatch) as e:
        check_rollout_prompts(doubled, ok, 9, "colocate")
    msg = str(e.value)
    assert "rollout 0" in msg and "vLLM saw 6 prompt tokens (4 image tokens)" in msg
    assert "the trainer has 4 (2 image tokens)" in msg and "trl " in msg and "vllm" in msg and "trl#6294" in msg
    with pytest.raises(VLLMRolloutMismatch, match="returned 1 prompts for 2 rollouts"):
        check_rollout_prompts(ok[:1], ok, 9, "server")


def test_server_feature_check_compares_token_counts():
    from mllm_cxr.train.upstream_fixes import VLLMRolloutMismatch, checked_place_features

    def place(features, ids):  # TRL's placement: the runs of image tokens in the trainer's ids
        if features is None:
            return None
        return {**features, "mm_placeholders": {"image": [{"offset": 1, "length": ids.count(9)}]}}

    served = {"mm_placeholders": {"image": [{"offset": 5, "length": 4}]}}
    assert checked_place_features(place, served, [1, 9, 9, 9, 9, 2])["mm_placeholders"]["image"][0]["offset"] == 1
    assert checked_place_features(place, None, [1, 2]) is None
    with pytest.raises(VLLMRolloutMismatch, match=r"into \[4\] tokens.*runs of \[2\] image tokens"):
        checked_place_features(place, served, [1, 9, 9, 2])


@pytest.mark.skipif(HAS_VLLM, reason="vllm is installed here (the vllm tests cover the real path)")
def test_export_verify_backend_vllm_says_how_to_get_vllm(tiny_model_dir, phantom_dir, tmp_path, capsys):
    from mllm_cxr.cli import main

    adapter = make_random_adapter(tiny_model_dir, tmp_path / "a")
    rc = main(["export", "--base", str(tiny_model_dir), "--adapter", str(adapter), "--out", str(tmp_path / "e"),
               "--verify-studies", str(phantom_dir / "studies.jsonl"), "--verify-backend", "vllm"])
    err = capsys.readouterr().err
    assert rc == 2 and "make vllm-env" in err and "vllm is not importable" in err
    assert not (tmp_path / "e").exists()  # nothing written before the check
    rc = main(["export", "--base", str(tiny_model_dir), "--adapter", str(adapter), "--out", str(tmp_path / "e"),
               "--verify-backend", "vllm"])
    assert rc == 2 and "--verify-backend vllm needs --verify-studies" in capsys.readouterr().err


def test_vllm_never_samples_image_placeholders():
    from types import SimpleNamespace

    from mllm_cxr.train.upstream_fixes import suppress_image_tokens

    proc = SimpleNamespace(image_token_id=151655, video_token_id=151656)
    assert suppress_image_tokens(None, proc) == {"logit_bias": {151655: -100.0, 151656: -100.0}}
    mine = suppress_image_tokens({"seed": 1, "logit_bias": {151655: 0.0, 7: 2.0}}, proc)
    assert mine == {"seed": 1, "logit_bias": {151655: 0.0, 151656: -100.0, 7: 2.0}}
    assert suppress_image_tokens({"seed": 1}, SimpleNamespace()) == {"seed": 1}


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_grpo_trainer_with_use_vllm_says_how_to_get_vllm():
    """Issue 19: without vLLM, use_vllm stops in the trainer's first line with the way out, not with TRL's
    ``module 'trl.generation.vllm_generation' has no attribute 'LLM'``."""
    from types import SimpleNamespace

    from mllm_cxr.config import ConfigError
    from mllm_cxr.train.editgrpo import EditGRPOTrainer
    from mllm_cxr.train.grpo import ClinicalGRPOTrainer

    for cls in (ClinicalGRPOTrainer, EditGRPOTrainer):
        with pytest.raises(ConfigError, match=r"make vllm-env.*--use_vllm false"):
            cls(model=None, reward_funcs=[], args=SimpleNamespace(use_vllm=True, vllm_mode="colocate"))
