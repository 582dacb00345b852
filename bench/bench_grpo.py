"""GRPO step time on CPU, split into generation / reward / other scoring / optimisation; EditGRPO overhead.

    python bench/run_all.py --only grpo        # or: python bench/bench_grpo.py

Setup: the tiny random Qwen2.5-VL (``mllm_cxr.tiny``), 48 phantom studies with a frontal and a lateral
image per prompt (112x112 pixel budget, 16 visual tokens per image), a new LoRA adapter, 2 prompts x 4
rollouts per step, exactly ``MAX_TOKENS`` completion tokens (the untrained model rarely stops earlier),
KL to the reference (beta 0.01), one intra-op thread. Three runs in the same process and with the same
seed: GRPO with the CheXpert-F1 reward (the baseline), GRPO with the CPU clinical composite of
``recipes/rewards/clinical.yaml`` (CheXpert-F1 + prior penalty + ROUGE-L), and EditGRPO with the composite.
Times are means over the steps after the first (warm-up). "Other scoring" is the rest of TRL's
generate-and-score stage: tokenising prompts, image preprocessing, old/reference-policy log-probs and
advantages; "optimisation" is the forward/backward/optimizer part of the step.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

STEPS, MAX_TOKENS, GENERATIONS, PROMPTS = 7, 64, 4, 2


def run_grpo(kind: str, spec: str, model_dir: Path, data, out: Path, *, model_kw: dict | None = None,
             steps: int = STEPS, prompts: int = PROMPTS, generations: int = GENERATIONS, max_tokens: int = MAX_TOKENS,
             **config_kw) -> dict[str, float]:
    """Train ``steps`` GRPO (``kind="grpo"``) or EditGRPO steps; mean per-stage seconds over steps 2..n.

    ``model_kw``: :class:`ModelArguments` fields (default: the tiny model on CPU); ``config_kw``:
    :class:`EditGRPOConfig` fields on top of the CPU defaults. Also used by ``bench/gpu_grpo.py``.
    """
    from mllm_cxr.modeling import ModelArguments, load_model, load_processor
    from mllm_cxr.train.editgrpo import EditGRPOTrainer
    from mllm_cxr.train.grpo import ClinicalGRPOTrainer
    from mllm_cxr.train.grpo_config import EditGRPOConfig
    from reward.trl import reward_funcs_and_weights

    margs = ModelArguments(model_name_or_path=str(model_dir), **{"dtype": "float32", "max_pixels": 12544,
                                                                  "min_pixels": 3136, **(model_kw or {})})
    model, peft_config = load_model(margs)
    funcs, weights = reward_funcs_and_weights(spec)
    kw = dict(output_dir=str(out), num_generations=generations, per_device_train_batch_size=prompts * generations,
              max_completion_length=max_tokens, max_steps=steps, logging_steps=1, learning_rate=1e-4,
              reward_weights=weights, use_cpu=True, bf16=False, report_to="none", save_strategy="no", seed=0,
              disable_tqdm=True)
    kw.update(config_kw)
    args = EditGRPOConfig(**kw)
    cls = EditGRPOTrainer if kind == "editgrpo" else ClinicalGRPOTrainer
    trainer = cls(model=model, reward_funcs=funcs, args=args, train_dataset=data,
                  processing_class=load_processor(margs), peft_config=peft_config, collapse_guard=False)
    t0 = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - t0
    rows = [h for h in trainer.state.log_history if "step_time" in h][1:]  # drop the warm-up step

    def mean(key: str) -> float:
        vals = [h.get(key, 0.0) or 0.0 for h in rows]
        return statistics.mean(vals) if vals else float("nan")

    step, score = mean("step_time"), mean("timing/score_s")
    gen, reward, edit = mean("timing/generate_s"), mean("timing/reward_s"), mean("timing/edit_s")
    res = {"step": step, "generate": gen, "edit": edit, "reward": reward,
           "other_scoring": score - gen - edit - reward, "optimisation": step - score, "wall": wall,
           "injected": mean("edit/injected"), "reward_mean": mean("reward"),
           "completions": float(prompts * generations),
           # TRL's cumulative token count (prompt + completion, padding excluded) over the run, per step
           "tokens_per_step": max((h.get("num_tokens", 0.0) for h in trainer.state.log_history), default=0.0) / steps,
           "completion_tokens": mean("completions/mean_length") * prompts * generations}
    del trainer, model
    return res


def run() -> str:
    import torch

    from data_prep.phantom import make_phantom
    from mllm_cxr.data import grpo_dataset, load_split
    from mllm_cxr.prompts import PromptConfig
    from mllm_cxr.tiny import build_tiny_model

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    clinical = str(ROOT / "recipes" / "rewards" / "clinical.yaml")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            model_dir = build_tiny_model(tmp / "tiny")
            make_phantom(tmp / "ph", n=48, seed=0)
            data = grpo_dataset(load_split(tmp / "ph" / "studies.jsonl", "train"), tmp / "ph",
                                PromptConfig(max_images=2, context=["indication"]))
            runs = {
                "GRPO, CheXpert-F1 reward (baseline)": run_grpo("grpo", "chexpert_f1", model_dir, data, tmp / "a"),
                "GRPO, clinical composite reward": run_grpo("grpo", clinical, model_dir, data, tmp / "b"),
                "EditGRPO, clinical composite reward": run_grpo("editgrpo", clinical, model_dir, data, tmp / "c"),
            }
    finally:
        torch.set_num_threads(threads)
    base = next(iter(runs.values()))["step"]
    lines = ["## GRPO step time on CPU (tiny model): generation / reward / optimisation, EditGRPO overhead", "",
             f"Tiny random Qwen2.5-VL, phantom studies with frontal + lateral images, {PROMPTS} prompts x "
             f"{GENERATIONS} rollouts per step, {MAX_TOKENS} completion tokens, beta 0.01, LoRA, one CPU thread, "
             f"torch {torch.__version__}. Means over steps 2-{STEPS} of each run; all runs in the same process.", "",
             "| run | step s | generation | edits | reward | other scoring | optimisation | reward share | "
             "step vs baseline | edits injected / step |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in runs.items():
        lines.append(f"| {name} | {r['step']:.2f} | {r['generate']:.2f} s | {r['edit']:.3f} s | {r['reward']:.3f} s | "
                     f"{r['other_scoring']:.2f} s | {r['optimisation']:.2f} s | {100 * r['reward'] / r['step']:.1f}% | "
                     f"{r['step'] / base:.2f}x | {r['injected']:.1f} |")
    comp, edit = runs["GRPO, clinical composite reward"], runs["EditGRPO, clinical composite reward"]
    lines += ["", f"The clinical composite reward takes {100 * comp['reward'] / comp['step']:.1f}% of a GRPO step "
                  f"(issue 3 goal: < 5%). EditGRPO's edits (CheXpert labelling of rollout and reference sentences, "
                  f"candidate checks, re-tokenising) add {edit['edit']:.3f} s per step, and the whole EditGRPO step is "
                  f"{edit['step'] / comp['step']:.2f}x the GRPO step with the same reward."]
    return "\n".join(lines)


if __name__ == "__main__":
    print(run())
