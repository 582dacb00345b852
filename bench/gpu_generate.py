"""Generation throughput on a GPU: HF ``generate`` at batch 1/8/32 (and vLLM where installed), Qwen2.5-VL-3B-sized.

    python bench/gpu_generate.py            # a CUDA GPU (bench/gpu_run.sh)
    python bench/gpu_generate.py --smoke    # the same code path on CPU with a toy model, in seconds

The model has the published Qwen2.5-VL-3B-Instruct architecture (``gpu_common.QWEN25_VL_3B``) with random
bf16 weights and the tiny model's radiology tokenizer, saved locally, so nothing is downloaded. A random
LoRA adapter (r=16, language model only) is applied in every configuration, as a trained adapter would
be. Studies are phantom chest radiographs, one 448x448 image per study, the prompt of ``mllm_cxr.prompts``.
Random weights never emit EOS on purpose, so every configuration decodes exactly ``MAX_NEW_TOKENS`` tokens
(HF: no EOS token; vLLM: ``ignore_eos``) and tokens/s is comparable. The baseline is HF at batch 1,
measured in the same run on the first ``BATCH1_STUDIES`` studies. The vLLM CUDA wheel cannot travel to
the lent GPU machine (over 300 MB, no network there), so its rows appear only where vLLM is installed.
"""

from __future__ import annotations

import time
from pathlib import Path

import gpu_common as G

N_STUDIES, BATCH1_STUDIES, MAX_NEW_TOKENS, HF_BATCHES = 32, 8, 64, (1, 8, 32)
SMOKE = dict(n=4, batch1=2, tokens=8, batches=(1, 2))


def build_adapter(model_dir: Path, out: Path, dtype: str, rank: int = 16) -> Path:
    from peft import get_peft_model

    from mllm_cxr.modeling import ModelArguments, load_model, lora_config

    margs = ModelArguments(model_name_or_path=str(model_dir), dtype=dtype, lora_r=rank, lora_alpha=2 * rank,
                           lora_dropout=0.0)
    model, _ = load_model(margs, is_trainable=False)
    cfg = lora_config(margs)
    cfg.init_lora_weights = False
    get_peft_model(model, cfg).save_pretrained(str(out))
    del model
    G.free()
    return out


def _time_predictions(gen, studies, out: Path, batch: int) -> float:
    from mllm_cxr.infer.generate import generate_predictions

    if out.exists():
        out.unlink()
    G.sync()
    t0 = time.perf_counter()
    generate_predictions(gen, studies, out, batch_size=batch, progress=False)
    G.sync()
    return time.perf_counter() - t0


def run(smoke: bool = False, results: dict | None = None) -> str:
    import importlib.util
    import tempfile

    import torch

    from data_prep.phantom import make_phantom
    from mllm_cxr.data import load_split
    from mllm_cxr.infer.generate import GenerationSettings, load_hf_generator
    from mllm_cxr.run_config import resolve_prompt

    m = G.mode(smoke)
    G.require_device(m, "gpu_generate")
    results = {} if results is None else results
    n, n1, tokens, batches = ((SMOKE["n"], SMOKE["batch1"], SMOKE["tokens"], SMOKE["batches"]) if smoke
                              else (N_STUDIES, BATCH1_STUDIES, MAX_NEW_TOKENS, HF_BATCHES))
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model_dir, n_params = G.build_model(tmp / "model", m)
        adapter = build_adapter(model_dir, tmp / "adapter", m.dtype)
        make_phantom(tmp / "ph", n=max(n, 8), seed=0, image_size=m.image_side)
        studies = load_split(tmp / "ph" / "studies.jsonl", None)[:n]
        prompt = resolve_prompt(adapter, model_dir, overrides={"max_images": 1, "context": ["indication"]},
                                min_pixels=m.image_pixels, max_pixels=m.image_pixels)
        settings = GenerationSettings(max_new_tokens=tokens)
        gen = load_hf_generator(str(model_dir), str(adapter), prompt, tmp / "ph", settings, dtype=m.dtype,
                                attn_implementation="sdpa", device=m.device)
        gen.model.generation_config.eos_token_id = None  # decode exactly `tokens` tokens
        gen.generate(studies[:2])  # warm-up
        G.reset_peak()
        for b in batches:
            sub = studies[:n1] if b == 1 else studies
            t = _time_predictions(gen, sub, tmp / f"hf{b}.jsonl", b)
            rows.append(dict(backend=f"HF generate, batch {b}" + (" (baseline)" if b == 1 else ""), seconds=t,
                             studies=len(sub), studies_s=len(sub) / t, tokens_s=len(sub) * tokens / t))
        results["hf_peak_gib"] = G.peak_gib()
        del gen
        G.free()
        if not smoke and importlib.util.find_spec("vllm") is not None:
            from vllm import SamplingParams

            from mllm_cxr.infer.generate import VLLMGenerator

            v = VLLMGenerator(str(model_dir), prompt, tmp / "ph", settings, adapter=str(adapter), dtype=m.dtype,
                              gpu_memory_utilization=0.6, max_model_len=4096)
            v.sampling = SamplingParams(**settings.vllm_kwargs(), ignore_eos=True)
            v.generate(studies[:2])  # warm-up
            t = _time_predictions(v, studies, tmp / "vllm.jsonl", len(studies))
            rows.append(dict(backend="vLLM LLM.generate + LoRARequest, all studies in one call", seconds=t,
                             studies=len(studies), studies_s=len(studies) / t, tokens_s=len(studies) * tokens / t))
            del v
            G.free()
            vllm_note = ""
        else:
            vllm_note = (" vLLM is not installed on this machine (its CUDA wheel cannot travel to the lent GPU): "
                         "its rows are missing.")
    name = G.device_name(m)
    results.update(rows=rows, device=name, parameters=n_params, new_tokens=tokens)
    base = rows[0]["tokens_s"]
    lines = [f"## Generation throughput, Qwen2.5-VL-3B-sized model ({name})", "",
             f"Random {m.dtype} weights in the {'toy smoke' if smoke else 'published Qwen2.5-VL-3B'} architecture "
             f"({n_params / 1e9:.3f} B parameters), random LoRA r=16 on the language model, phantom studies with one "
             f"{m.image_side}x{m.image_side} image, exactly {tokens} new tokens per study, greedy; torch "
             f"{torch.__version__}. The whole `generate_predictions` loop is timed (images, template, generation, "
             f"JSONL); batch 1 runs the first {n1} studies, the others all {len(studies)}. Peak GPU memory of the "
             f"HF runs: {results['hf_peak_gib']:.1f} GiB.{vllm_note}", "",
             "| backend | studies | seconds | studies/s | new tokens/s | speed vs HF batch 1 |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['backend']} | {r['studies']} | {r['seconds']:.1f} | {r['studies_s']:.2f} | "
                     f"{r['tokens_s']:.0f} | {r['tokens_s'] / base:.1f}x |")
    return "\n".join(lines)


if __name__ == "__main__":  # vLLM starts worker processes by spawning: keep the guard
    G.cli(run)
