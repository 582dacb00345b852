"""Generation throughput on a GPU: HF ``generate`` vs vLLM for a Qwen2.5-VL-3B-sized model.

Run on a CUDA machine with the project installed (``pip install -e '.[gpu]'`` for vLLM; without vLLM only
the HF rows are measured): ``python bench/run_all.py --gpu --only generate`` or
``python bench/gpu_generate.py``.

The model has the published Qwen2.5-VL-3B-Instruct architecture (:data:`QWEN25_VL_3B`: 36 layers,
hidden 2048, 16 heads / 2 KV heads, MLP 11008, vocabulary 151,936; 32-block 1280-wide vision tower)
with random bf16 weights, saved to disk with a small radiology BPE tokenizer (the tiny model's) and the
official chat template, so nothing is downloaded. A random LoRA adapter (r=16, language model only)
is applied in every configuration, as a trained adapter would be. Studies are phantom chest
radiographs, one 448x448 image per study (max_pixels 401,408 as ``mllm-cxr prepare``'s default),
the prompt of ``mllm_cxr.prompts``. Random weights never emit EOS on purpose, so every configuration
decodes exactly ``MAX_NEW_TOKENS`` tokens (HF: no EOS token; vLLM: ``ignore_eos``), and tokens/s is
comparable. The baseline is HF at batch 1, measured in the same run.
"""

from __future__ import annotations

import gc
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

#: Qwen/Qwen2.5-VL-3B-Instruct's config.json (architecture fields; token ids come from our tokenizer).
QWEN25_VL_3B = {
    "text": dict(hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16,
                 num_key_value_heads=2, vocab_size=151936, max_position_embeddings=128000, rms_norm_eps=1e-6,
                 tie_word_embeddings=True, sliding_window=32768, use_sliding_window=False,
                 rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]}),
    "vision": dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=2048,
                   patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                   fullatt_block_indexes=[7, 15, 23, 31], tokens_per_second=2, hidden_act="silu"),
}
N_STUDIES, MAX_NEW_TOKENS, HF_BATCHES = 64, 128, (1, 8, 32)
MIN_PIXELS, MAX_PIXELS = 3136, 401408


def build_model(out: Path, device: str = "cuda") -> tuple[Path, int]:
    """Save a random-weight Qwen2.5-VL-3B (bf16) with processor and generation config into ``out``."""
    import torch
    from transformers import (
        GenerationConfig,
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
    )

    from mllm_cxr.tiny import SPECIAL_TOKENS, build_tokenizer, chat_template

    tok = build_tokenizer()
    tok.save_pretrained(out)
    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    text = dict(QWEN25_VL_3B["text"], bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
                pad_token_id=ids["<|endoftext|>"])
    cfg = Qwen2_5_VLConfig(text_config=text, vision_config=QWEN25_VL_3B["vision"], tie_word_embeddings=True,
                           image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
                           vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen2_5_VLForConditionalGeneration(cfg).to(torch.bfloat16)
    model.generation_config = GenerationConfig(eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
                                               do_sample=False)
    model.save_pretrained(out, safe_serialization=True)
    kw = {}
    try:
        from transformers import Qwen2VLVideoProcessor

        kw["video_processor"] = Qwen2VLVideoProcessor()
    except ImportError:
        pass
    Qwen2_5_VLProcessor(image_processor=Qwen2VLImageProcessor(min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS),
                        tokenizer=tok, chat_template=chat_template(), **kw).save_pretrained(out)
    n = sum(p.numel() for p in model.parameters())
    del model
    _free()
    return out, n


def _free() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def build_adapter(model_dir: Path, out: Path, rank: int = 16) -> Path:
    from peft import get_peft_model

    from mllm_cxr.modeling import ModelArguments, load_model, lora_config

    margs = ModelArguments(model_name_or_path=str(model_dir), dtype="bfloat16", lora_r=rank, lora_alpha=2 * rank,
                           lora_dropout=0.0)
    model, _ = load_model(margs, is_trainable=False)
    cfg = lora_config(margs)
    cfg.init_lora_weights = False
    get_peft_model(model, cfg).save_pretrained(str(out))
    del model
    _free()
    return out


def _time_predictions(gen, studies, out: Path, batch: int) -> float:
    from mllm_cxr.generate import generate_predictions

    if out.exists():
        out.unlink()
    _sync()
    t0 = time.perf_counter()
    generate_predictions(gen, studies, out, batch_size=batch, progress=False)
    _sync()
    return time.perf_counter() - t0


def run(device: str = "cuda") -> str:
    import importlib.util

    import torch

    from data_prep.phantom import make_phantom
    from mllm_cxr.data import load_split
    from mllm_cxr.generate import GenerationSettings, load_hf_generator, resolve_prompt

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("gpu_generate needs a CUDA GPU (run it on a GPU machine)")
    rows: list[tuple[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model_dir, n_params = build_model(tmp / "qwen2.5-vl-3b-random", device)
        adapter = build_adapter(model_dir, tmp / "adapter")
        make_phantom(tmp / "ph", n=N_STUDIES, seed=0, image_size=448)
        studies = load_split(tmp / "ph" / "studies.jsonl", None)[:N_STUDIES]
        prompt = resolve_prompt(adapter, model_dir, overrides={"max_images": 1, "context": ["indication"]},
                                min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS)
        settings = GenerationSettings(max_new_tokens=MAX_NEW_TOKENS)

        gen = load_hf_generator(str(model_dir), str(adapter), prompt, tmp / "ph", settings, dtype="bfloat16",
                                attn_implementation="sdpa", device=device)
        gen.model.generation_config.eos_token_id = None  # decode exactly MAX_NEW_TOKENS tokens
        gen.generate(studies[:2])  # warm-up
        for b in HF_BATCHES:
            rows.append((f"HF generate, batch {b}" + (" (baseline)" if b == 1 else ""),
                         _time_predictions(gen, studies, tmp / f"hf{b}.jsonl", b)))
        del gen
        _free()

        if device.startswith("cuda") and importlib.util.find_spec("vllm") is not None:
            from vllm import SamplingParams

            from mllm_cxr.generate import VLLMGenerator

            for with_lora in (True, False):
                v = VLLMGenerator(str(model_dir), prompt, tmp / "ph", settings,
                                  adapter=str(adapter) if with_lora else None, dtype="bfloat16",
                                  gpu_memory_utilization=0.6, max_model_len=4096)
                v.sampling = SamplingParams(**settings.vllm_kwargs(), ignore_eos=True)
                v.generate(studies[:2])  # warm-up
                label = "vLLM LLM.generate, all studies in one call" + (" + LoRARequest" if with_lora else ", no LoRA")
                rows.append((label, _time_predictions(v, studies, tmp / f"vllm{with_lora}.jsonl", len(studies))))
                del v
                _free()
            vllm_note = ""
        else:
            vllm_note = " vLLM is not installed here: its rows are missing (pip install -e '.[gpu]')."
    base = rows[0][1]
    name = torch.cuda.get_device_name() if device.startswith("cuda") else device
    lines = [f"## Generation throughput, Qwen2.5-VL-3B-sized model (GPU: {name})", "",
             f"Random bf16 weights in the published Qwen2.5-VL-3B architecture ({n_params / 1e9:.2f} B parameters), "
             f"random LoRA r=16 on the language model, {len(studies)} phantom studies with one 448x448 image "
             f"(max_pixels {MAX_PIXELS}), exactly {MAX_NEW_TOKENS} new tokens per study, greedy; torch "
             f"{torch.__version__}. The whole `generate_predictions` loop is timed (images, template, "
             f"generation, JSONL).{vllm_note}", "",
             "| backend | seconds | studies/s | new tokens/s | speed vs HF batch 1 |", "|---|---|---|---|---|"]
    for label, t in rows:
        lines.append(f"| {label} | {t:.1f} | {len(studies) / t:.2f} | {len(studies) * MAX_NEW_TOKENS / t:.0f} | "
                     f"{base / t:.1f}x |")
    return "\n".join(lines)


if __name__ == "__main__":  # vLLM starts worker processes by spawning: keep the guard
    print(run())
