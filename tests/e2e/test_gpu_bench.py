"""The GPU benchmarks cannot rot on CPU: `bench/gpu_run.sh` in smoke mode runs every one end to end.

Smoke mode is the same code path (model build, our pipeline and the bare-TRL baseline, timing, tables, raw
JSON) with a toy Qwen2.5-VL on CPU, so a change that breaks a GPU benchmark fails here, not in the next
session that is lent a GPU.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from tests.builders.repo import REPO, require_shared


@pytest.mark.slow
def test_gpu_run_smoke_runs_every_gpu_benchmark(tmp_path):
    require_shared("iu_xray", "NLMCXR_reports.tgz")  # the CheXbert benchmark labels real IU reports
    out = tmp_path / "out"
    env = dict(os.environ, OUT=str(out), GPU_BENCH_SMOKE="1", PYTHON=sys.executable,
               MLLM_CXR_BENCH_MODEL=str(tmp_path / "model"), OMP_NUM_THREADS="1")
    proc = subprocess.run(["bash", str(REPO / "bench" / "gpu_run.sh")], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=1500)
    log = (out / "gpu_run.log").read_text() if (out / "gpu_run.log").exists() else ""
    assert proc.returncode == 0, proc.stdout + proc.stderr + log[-4000:]
    for name in ("sft", "grpo", "generate", "chexbert"):
        assert f"== gpu_{name}" in proc.stdout and f"gpu_{name}: no result" not in log, log[-4000:]
    md = (out / "gpu_benchmarks.md").read_text()
    res = json.loads((out / "gpu_results.json").read_text())
    assert set(res) == {"sft", "grpo", "generate", "chexbert"}
    assert "CPU smoke run (not a GPU number)" in md

    sft = {(r["setup"], r["pipeline"]): r for r in res["sft"]["rows"]}
    for key in [("LoRA r=64", "bare TRL"), ("LoRA r=64", "mllm-cxr recipe"),
                ("LoRA r=64, gradient checkpointing off", "mllm-cxr recipe")]:
        assert key in sft and "error" not in sft[key], sft.get(key)
        assert sft[key]["step_s"] > 0 and sft[key]["tokens_s"] > 0
    # both pipelines train on the same tokens, so tokens/s differ only through the step time
    a, b = sft[("LoRA r=64", "bare TRL")], sft[("LoRA r=64", "mllm-cxr recipe")]
    assert math.isclose(a["tokens_s"] * a["step_s"], b["tokens_s"] * b["step_s"], rel_tol=1e-6)
    # an unsupported fix is reported as a finding with TRL's reason, not a crash
    pf = sft[("LoRA r=64, TRL padding_free", "mllm-cxr recipe")]
    assert "error" in pf and ("vision" in pf["error"] or "budget" in pf["error"])
    assert res["sft"]["profile"] and abs(sum(p["share"] for p in res["sft"]["profile"]) - 1) < 1

    grpo = res["grpo"]["runs"]["GRPO (baseline)"]
    assert grpo["step"] > 0 and grpo["tokens_s"] > 0 and grpo["generate"] > 0 and grpo["optimisation"] > 0
    gen = res["generate"]["rows"]
    assert [r["backend"].split(",")[1].strip() for r in gen[:2]] == ["batch 1 (baseline)", "batch 2"]
    assert all(r["tokens_s"] > 0 for r in gen)
    chex = res["chexbert"]
    assert chex["real_iu_reports"] and all(r["reports_s"] > 0 for r in chex["rows"])
    assert md.count("\n## ") + md.startswith("## ") == 4


def test_gpu_wheel_pins_are_single_sourced():
    """`make gpu-wheels` reads every pin from bench/gpu-wheels.txt, and the set matches what the project needs."""
    pins = [ln.split("==")[0] for ln in (REPO / "bench" / "gpu-wheels.txt").read_text().splitlines()
            if ln and not ln.startswith("#")]
    assert {"trl", "datasets", "pydicom", "rouge-score", "transformers", "bitsandbytes"} <= set(pins)
    make = (REPO / "Makefile").read_text()
    assert "gpu-wheels:" in make and "bench/gpu-wheels.txt" in make
    assert not any(p in make.split("gpu-wheels:")[1].split("\n\n")[0] for p in ("==1.16", "==5.24"))
    import tomllib

    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    needed = {d.split(">")[0].split("<")[0].split("=")[0].strip().lower() for d in deps}
    on_device = {"torch", "torchvision", "accelerate", "safetensors", "pillow", "numpy", "pyyaml", "tqdm",
                 "scikit-learn", "matplotlib", "requests", "scipy", "huggingface-hub", "jinja2", "pandas"}
    assert needed - on_device <= set(pins) | {"peft"}, needed - on_device - set(pins)


def test_gpu_benchmarks_refuse_cpu_without_smoke():
    sys.path.insert(0, str(REPO / "bench"))
    try:
        import gpu_common as G
        import torch

        if torch.cuda.is_available():
            pytest.skip("a GPU is present")
        with pytest.raises(RuntimeError, match="--smoke"):
            G.require_device(G.mode(False), "gpu_sft")
    finally:
        sys.path.remove(str(REPO / "bench"))


