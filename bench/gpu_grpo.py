"""GRPO / EditGRPO step time on a GPU for a Qwen2.5-VL-3B-sized model with HF generation.

Run on a CUDA machine with the project installed: ``python bench/run_all.py --gpu --only grpo`` or
``python bench/gpu_grpo.py``. Not runnable on the CPU-only development machine.

The model has the published Qwen2.5-VL-3B-Instruct architecture (``bench/gpu_generate.py``'s
``QWEN25_VL_3B``: 36 layers, hidden 2048, 16/2 heads, 32-block vision tower) with random bf16 weights
and the tiny model's radiology tokenizer, saved locally, so nothing is downloaded. Training as in
``recipes/configs/qwen2.5-vl-3b/grpo.yaml``: new LoRA r=64 on the language model, frozen vision tower,
bf16, gradient checkpointing, beta 0.01 (reference = the base with the adapter disabled), Dr.GRPO loss.
Prompts are phantom studies with a frontal and a lateral 448x448 image (256 visual tokens each);
``PROMPTS`` prompts x ``GENERATIONS`` rollouts per step, ``MAX_TOKENS`` completion tokens (random
weights practically never emit EOS, so every rollout has that length). Rewards: the CPU clinical
composite (``recipes/rewards/clinical.yaml``). Reported per run: mean seconds per step split into
generation / edits / reward / other scoring (old/ref log-probs, preprocessing) / optimisation,
rollouts per second of generation, and peak GPU memory; GRPO is the baseline of the same run.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for p in (str(ROOT), str(HERE)):
    if p not in sys.path:
        sys.path.insert(0, p)

STEPS, PROMPTS, GENERATIONS, MAX_TOKENS = 6, 4, 8, 256
MIN_PIXELS, MAX_PIXELS = 200704, 200704  # 448x448 -> 256 visual tokens per image


def run(device: str = "cuda") -> str:
    import torch
    from bench_grpo import run_grpo
    from gpu_generate import build_model

    from data_prep.phantom import make_phantom
    from mllm_cxr.data import grpo_dataset, load_split
    from mllm_cxr.prompts import PromptConfig

    if not torch.cuda.is_available():
        raise RuntimeError("gpu_grpo needs a CUDA GPU (run it on a GPU machine)")
    clinical = str(ROOT / "recipes" / "rewards" / "clinical.yaml")
    model_kw = dict(dtype="bfloat16", min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS, attn_implementation="sdpa",
                    lora_r=64, lora_alpha=128, lora_dropout=0.05)
    config_kw = dict(use_cpu=False, bf16=True, gradient_checkpointing=True, learning_rate=1e-6,
                     steps=STEPS, prompts=PROMPTS, generations=GENERATIONS, max_tokens=MAX_TOKENS)
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model_dir, n_params = build_model(tmp / "qwen2.5-vl-3b-random", device)
        make_phantom(tmp / "ph", n=64, seed=0, image_size=448)
        data = grpo_dataset(load_split(tmp / "ph" / "studies.jsonl", "train"), tmp / "ph",
                            PromptConfig(max_images=2, context=["indication"]))
        for name, kind in (("GRPO (baseline)", "grpo"), ("EditGRPO", "editgrpo")):
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            res = run_grpo(kind, clinical, model_dir, data, tmp / kind, model_kw=model_kw, **config_kw)
            res["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
            runs[name] = res
    base = runs["GRPO (baseline)"]["step"]
    lines = [f"## GRPO on a GPU: Qwen2.5-VL-3B-sized model, HF generation ({torch.cuda.get_device_name()})", "",
             f"Random bf16 weights in the published Qwen2.5-VL-3B architecture ({n_params / 1e9:.2f} B parameters), "
             f"new LoRA r=64 on the language model, frozen vision tower, gradient checkpointing, beta 0.01, "
             f"{PROMPTS} prompts x {GENERATIONS} rollouts per step, {MAX_TOKENS} completion tokens, frontal + "
             f"lateral 448x448 images, clinical composite reward (CPU); torch {torch.__version__}. Means over steps "
             f"2-{STEPS}.", "",
             "| run | step s | generation | edits | reward | other scoring | optimisation | rollouts/s (generation) "
             "| peak GPU memory | step vs GRPO |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in runs.items():
        lines.append(f"| {name} | {r['step']:.1f} | {r['generate']:.1f} s | {r['edit']:.2f} s | {r['reward']:.2f} s | "
                     f"{r['other_scoring']:.1f} s | {r['optimisation']:.1f} s | {r['completions'] / r['generate']:.2f} | "
                     f"{r['peak_gib']:.1f} GiB | {r['step'] / base:.2f}x |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(run())
