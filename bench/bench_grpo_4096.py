"""The rule-based rewards' share of a GRPO step at a 4,096-completion batch, on CPU.

    python bench/run_all.py --only grpo_4096        # or: python bench/bench_grpo_4096.py

RadVLM-GRPO scored 4,096 completions per step (on a reward node of its own). This measures whether the CPU
rule-based rewards need one: one GRPO step of the tiny random Qwen2.5-VL over 512 prompts x 8 rollouts
(one phantom image per prompt, 112x112 pixel budget, exactly ``MAX_TOKENS`` completion tokens), after a warm-up
step. As TRL does by default, the 4,096 completions are generated and rewarded at once (generation batch =
micro-batch x ``gradient_accumulation_steps``) and the loss runs over 16 micro-batches of 256; split as in ``bench_grpo.py`` (TRL's own timings). Two reward specs, in the same process: the clinical
composite of ``recipes/rewards/clinical.yaml`` (CheXpert-F1 + prior penalty + ROUGE-L) and the same plus the
measurement penalty. The reward time is also measured alone, over the same number of real IU X-ray report
texts (report i scored against report i + 1), so that it does not depend on what the untrained model
writes. All of it on the CPU threads torch has (``torch.get_num_threads()``).

On a GPU the model's share shrinks by orders of magnitude while the rewards stay on the CPU, so the rewards'
seconds per step (not their share here) is the number to set against a GPU step time.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PROMPTS, GENERATIONS, MAX_TOKENS, STEPS, ACCUMULATION = 32, 8, 32, 2, 16
N = PROMPTS * GENERATIONS * ACCUMULATION


def _specs() -> dict[str, object]:
    clinical = str(ROOT / "recipes" / "rewards" / "clinical.yaml")
    import yaml

    spec = yaml.safe_load(Path(clinical).read_text())
    entries = spec["rewards"] if isinstance(spec, dict) else spec
    return {"clinical composite (CheXpert-F1 + prior penalty + ROUGE-L)": clinical,
            "clinical composite + measurement penalty": [*entries, {"name": "measurement_penalty", "weight": 0.5}]}


def reward_alone(spec, n: int = N) -> float:
    """Seconds for the composite over ``n`` real report texts: IU report i scored against report i + 1."""
    from bench._iu import iu_report_texts
    from reward.trl import reward_funcs_and_weights

    texts = iu_report_texts(n + 1)
    if len(texts) < 2:
        raise RuntimeError("the IU X-ray archive (../shared/data/iu_xray) is needed for the reward-alone timing")
    hyps = [texts[i % len(texts)] for i in range(n)]
    refs = [texts[(i + 1) % len(texts)] for i in range(n)]
    funcs, _ = reward_funcs_and_weights(spec)
    t0 = time.perf_counter()
    for f in funcs:
        f(prompts=[""] * n, completions=hyps, reference=refs, has_prior=[False] * n)
    return time.perf_counter() - t0


def run() -> str:
    import torch

    from bench.bench_grpo import run_grpo
    from data_prep.phantom import make_phantom
    from mllm_cxr.data import grpo_dataset, load_split
    from mllm_cxr.prompts import PromptConfig
    from mllm_cxr.tiny import build_tiny_model

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model_dir = build_tiny_model(tmp / "tiny")
        make_phantom(tmp / "ph", n=PROMPTS * ACCUMULATION * STEPS, seed=0, lateral=False)
        data = grpo_dataset(load_split(tmp / "ph" / "studies.jsonl", "all"), tmp / "ph",
                            PromptConfig(max_images=1, context=["indication"]))
        for name, spec in _specs().items():
            r = run_grpo("grpo", spec, model_dir, data, tmp / "out", steps=STEPS, prompts=PROMPTS,
                         generations=GENERATIONS, max_tokens=MAX_TOKENS, gradient_accumulation_steps=ACCUMULATION)
            rows.append((name, r, reward_alone(spec)))
    lines = [f"## Rule-based rewards at a {N:,}-completion GRPO batch (CPU)", "",
             f"One GRPO step of the tiny random Qwen2.5-VL, {PROMPTS * ACCUMULATION} prompts x {GENERATIONS} rollouts "
             f"generated and rewarded at once, the loss in {ACCUMULATION} micro-batches, {MAX_TOKENS} completion tokens, after a warm-up step; {torch.get_num_threads()} CPU threads, torch "
             f"{torch.__version__}. \"Reward alone\": the same spec over {N:,} real IU report texts.", "",
             "| reward spec | step s | generation | reward (in the step) | reward share | reward alone, "
             f"{N:,} IU texts | completions/s of the reward alone |",
             "|---|---|---|---|---|---|---|"]
    for name, r, alone in rows:
        lines.append(f"| {name} | {r['step']:.1f} | {r['generate']:.1f} s | {r['reward']:.2f} s | "
                     f"{100 * r['reward'] / r['step']:.1f}% | {alone:.2f} s | {N / alone:,.0f} |")
    worst = max(alone for _, _, alone in rows)
    lines += ["", f"The slowest spec scores {N:,} real report texts in {worst:.1f} s on this machine's CPU threads, "
                  f"{N / worst:,.0f} completions/s; at the batch size of one step, that is the time a GPU step would "
                  "wait for the rewards unless they run beside the next generation or on a node of their own."]
    return "\n".join(lines)


if __name__ == "__main__":
    print(run())
