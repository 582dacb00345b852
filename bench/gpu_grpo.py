"""GRPO / EditGRPO step time on a GPU for a Qwen2.5-VL-3B-sized model with HF generation.

    python bench/gpu_grpo.py            # a CUDA GPU (bench/gpu_run.sh)
    python bench/gpu_grpo.py --smoke    # the same code path on CPU with a toy model, in seconds

The model has the published Qwen2.5-VL-3B-Instruct architecture (``gpu_common.QWEN25_VL_3B``) with random
bf16 weights and the tiny model's radiology tokenizer, saved locally, so nothing is downloaded. Training as in
``recipes/configs/qwen2.5-vl-3b/grpo.yaml``: new LoRA r=64 on the language model, frozen vision tower, bf16,
gradient checkpointing, beta 0.01 (reference = the base with the adapter disabled), Dr.GRPO loss. Prompts are
phantom studies with a frontal and a lateral 448x448 image (256 visual tokens each); ``PROMPTS`` prompts x
``GENERATIONS`` rollouts per step, ``MAX_TOKENS`` completion tokens (random weights practically never emit EOS,
so every rollout has that length). Rewards: the CPU clinical composite (``recipes/rewards/clinical.yaml``).
Reported per run: mean seconds per step split into generation / edits / reward / other scoring (old/ref
log-probs, preprocessing) / optimisation, rollouts/s of generation, tokens/s (prompt + completion tokens that
TRL counts, per second of step: EasyR1 reports about 1,800 tokens/s/GPU, our goal), peak GPU memory. GRPO is
the baseline of the same run.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import gpu_common as G

STEPS, PROMPTS, GENERATIONS, MAX_TOKENS = 5, 4, 8, 128
SMOKE = dict(steps=3, prompts=2, generations=2, max_tokens=8)


def run(smoke: bool = False, results: dict | None = None) -> str:
    import torch
    from bench_grpo import run_grpo

    from data_prep.phantom import make_phantom
    from mllm_cxr.data import grpo_dataset, load_split
    from mllm_cxr.prompts import PromptConfig

    m = G.mode(smoke)
    G.require_device(m, "gpu_grpo")
    results = {} if results is None else results
    sizes = SMOKE if smoke else dict(steps=STEPS, prompts=PROMPTS, generations=GENERATIONS, max_tokens=MAX_TOKENS)
    clinical = str(G.ROOT / "recipes" / "rewards" / "clinical.yaml")
    model_kw = dict(dtype=m.dtype, min_pixels=m.image_pixels, max_pixels=m.image_pixels, attn_implementation="sdpa",
                    lora_r=64, lora_alpha=128, lora_dropout=0.05)
    config_kw = dict(use_cpu=smoke, bf16=not smoke, gradient_checkpointing=True, learning_rate=1e-6, **sizes)
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model_dir, n_params = G.build_model(tmp / "model", m)
        make_phantom(tmp / "ph", n=64, seed=0, image_size=m.image_side)
        data = grpo_dataset(load_split(tmp / "ph" / "studies.jsonl", "train"), tmp / "ph",
                            PromptConfig(max_images=2, context=["indication"]))
        for name, kind in (("GRPO (baseline)", "grpo"), ("EditGRPO", "editgrpo")):
            if runs and G.time_left() < 120:
                runs[name] = {"error": "skipped: lent machine's time budget"}
                continue
            G.free()
            G.reset_peak()
            res = run_grpo(kind, clinical, model_dir, data, tmp / kind, model_kw=model_kw, **config_kw)
            res["peak_gib"] = G.peak_gib()
            res["tokens_s"] = res["tokens_per_step"] / res["step"]
            runs[name] = res
    name = G.device_name(m)
    results.update(runs=runs, device=name, parameters=n_params, sizes=sizes)
    base = runs["GRPO (baseline)"]["step"]
    lines = [f"## GRPO on a GPU: Qwen2.5-VL-3B-sized model, HF generation ({name})", "",
             f"Random {m.dtype} weights in the {'toy smoke' if smoke else 'published Qwen2.5-VL-3B'} architecture "
             f"({n_params / 1e9:.3f} B parameters), new LoRA r=64 on the language model, frozen vision tower, "
             f"gradient checkpointing, beta 0.01, {sizes['prompts']} prompts x {sizes['generations']} rollouts per "
             f"step, {sizes['max_tokens']} completion tokens, frontal + lateral {m.image_side}x{m.image_side} images, "
             f"clinical composite reward (CPU); torch {torch.__version__}. Means over steps 2-{sizes['steps']}. "
             "tokens/s = prompt + completion tokens TRL counts per step / step time (goal: EasyR1's ~1,800 "
             "tokens/s/GPU).", "",
             "| run | step s | generation | edits | reward | other scoring | optimisation | rollouts/s (generation) "
             "| tokens/s | peak GPU memory | step vs GRPO |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for run_name, r in runs.items():
        if "error" in r:
            lines.append(f"| {run_name} | - | - | - | - | - | - | - | - | - | {r['error']} |")
            continue
        lines.append(f"| {run_name} | {r['step']:.2f} | {r['generate']:.2f} s | {r['edit']:.2f} s | "
                     f"{r['reward']:.2f} s | {r['other_scoring']:.2f} s | {r['optimisation']:.2f} s | "
                     f"{r['completions'] / r['generate']:.2f} | {r['tokens_s']:,.0f} | {r['peak_gib']:.1f} GiB | "
                     f"{r['step'] / base:.2f}x |")
    g = runs["GRPO (baseline)"]
    lines += ["", f"Generation is {100 * g['generate'] / g['step']:.0f}% of the GRPO step and optimisation "
                  f"{100 * g['optimisation'] / g['step']:.0f}%."]
    return "\n".join(lines)


if __name__ == "__main__":
    G.cli(run)
