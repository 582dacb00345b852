"""Generation throughput of the HF backend on CPU: studies/s at batch 1 (baseline) vs batch 8.

Tiny random Qwen2.5-VL with a random LoRA adapter (r=16 on the language model), phantom studies,
one 112x112 image per study, greedy decoding up to 32 new tokens, one torch thread; the whole
``generate_predictions`` loop (image loading, chat template, processor, generate, decoding, JSONL
writing) is timed. Also timed: the OpenAI-compatible client against the transformers server of
``mllm_cxr.infer.serve`` (one request at a time on the server), the overhead of the HTTP path (PNG data URLs)
relative to the in-process batch-1 baseline. Runs are interleaved and the best of ``REPEATS`` is kept.

    python bench/bench_generate.py
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

N_STUDIES, MAX_NEW_TOKENS, REPEATS = 32, 32, 3


def _random_adapter(base: Path, out: Path) -> Path:
    import torch
    from peft import get_peft_model

    from mllm_cxr.modeling import ModelArguments, load_model, lora_config

    margs = ModelArguments(model_name_or_path=str(base), dtype="float32", lora_r=16, lora_dropout=0.0)
    model, _ = load_model(margs, is_trainable=False)
    cfg = lora_config(margs)
    cfg.init_lora_weights = False
    torch.manual_seed(0)
    get_peft_model(model, cfg).save_pretrained(str(out))
    return out


def _timed(gen, studies, out: Path, batch: int) -> float:
    from mllm_cxr.infer.generate import generate_predictions

    if out.exists():
        out.unlink()
    t0 = time.perf_counter()
    generate_predictions(gen, studies, out, batch_size=batch, progress=False)
    return time.perf_counter() - t0


def run() -> str:
    import torch

    from data_prep.phantom import make_phantom
    from mllm_cxr.data import load_split
    from mllm_cxr.infer.generate import GenerationSettings, OpenAIGenerator, load_hf_generator
    from mllm_cxr.infer.serve import ChatServer
    from mllm_cxr.run_config import resolve_prompt
    from mllm_cxr.tiny import build_tiny_model

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model_dir = build_tiny_model(tmp / "tiny")
        make_phantom(tmp / "ph", n=N_STUDIES, seed=0)
        adapter = _random_adapter(model_dir, tmp / "adapter")
        studies = load_split(tmp / "ph" / "studies.jsonl", None)[:N_STUDIES]
        prompt = resolve_prompt(adapter, model_dir, overrides={"max_images": 1, "context": ["indication"]},
                                min_pixels=56 * 56, max_pixels=112 * 112)
        settings = GenerationSettings(max_new_tokens=MAX_NEW_TOKENS)
        gen = load_hf_generator(str(model_dir), str(adapter), prompt, tmp / "ph", settings, dtype="float32")
        gen.generate(studies[:8])  # warm-up
        times: dict[str, list[float]] = {"HF, batch 1 (baseline)": [], "HF, batch 8": [],
                                         "OpenAI client -> transformers server, 1 in flight": []}
        with ChatServer(model_dir, adapter, served_model_name="cxr", port=0, dtype="float32",
                        min_pixels=prompt.min_pixels, max_pixels=prompt.max_pixels) as srv:
            client = OpenAIGenerator(srv.url, prompt, tmp / "ph", settings, served_model="cxr", max_concurrency=1)
            client.generate(studies[:1])
            for _ in range(REPEATS):
                times["HF, batch 1 (baseline)"].append(_timed(gen, studies, tmp / "b1.jsonl", 1))
                times["HF, batch 8"].append(_timed(gen, studies, tmp / "b8.jsonl", 8))
                times["OpenAI client -> transformers server, 1 in flight"].append(
                    _timed(client, studies, tmp / "oa.jsonl", 1))
    best = {k: min(v) for k, v in times.items()}
    base = best["HF, batch 1 (baseline)"]
    lines = ["## Generation throughput, HF backend (CPU)", "",
             f"Tiny random Qwen2.5-VL + random LoRA (r=16), {len(studies)} phantom studies, one 112x112 image each, "
             f"greedy, up to {MAX_NEW_TOKENS} new tokens, 1 torch thread, torch {torch.__version__}; the whole "
             f"`generate_predictions` loop timed, best of {REPEATS} interleaved runs.", "",
             "| backend | seconds | studies/s | speed vs batch 1 |", "|---|---|---|---|"]
    for k, t in best.items():
        lines.append(f"| {k} | {t:.2f} | {len(studies) / t:.1f} | {base / t:.2f}x |")
    from bench._prose import speed_ratios, speed_sentence, speed_verdict

    b8 = speed_ratios(times["HF, batch 1 (baseline)"], times["HF, batch 8"])
    why = {"faster": "The tiny model's decoding step costs little arithmetic, so the fixed per-step cost of `generate` "
                     "(Python, kernel launches) weighs most and batching amortizes it.",
           "slower": "Batching does not pay here: padding to the longest study and the larger per-step work outweigh "
                     "the fixed per-step cost it saves.",
           "within noise": "Batching neither helps nor hurts measurably at this size."}[speed_verdict(b8)]
    lines += ["", "**" + speed_sentence("Batch 8", "batch 1", b8) + f"** {why} Real 3B-7B models on a GPU: "
              "bench/gpu_generate.py."]
    return "\n".join(lines)


if __name__ == "__main__":
    print(run())
