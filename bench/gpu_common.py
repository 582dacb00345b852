"""What the GPU benchmarks share: the model they build, their sizes, the smoke mode and the time budget.

Every ``bench/gpu_*.py`` has two modes with the same code path:

* **full** (a CUDA GPU): the published Qwen2.5-VL-3B architecture with random bf16 weights, the sizes
  below, timings reported in ``docs/benchmarks.md``;
* **smoke** (``--smoke`` or ``run(smoke=True)``, CPU, seconds): a tiny model of the same architecture
  family and a few steps, so that ``make test`` runs every GPU benchmark end to end (model build, both
  pipelines, timing, table) and a benchmark broken by a code change fails CI, not the next GPU session.

Nothing is downloaded: the model is built from its config with random weights and the tiny model's
radiology tokenizer. ``MLLM_CXR_BENCH_MODEL`` names a folder where the built model is kept and reused
across benchmark processes (``bench/gpu_run.sh`` sets it); ``MLLM_CXR_BENCH_DEADLINE`` (Unix time) lets
optional measurements be skipped, with a note, when the lent machine's time runs short.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for _p in (str(ROOT), str(HERE)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

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
#: The smoke model: the same classes and code path at toy size (head_dim 32, M-RoPE sections summing to 16).
SMOKE_ARCH = {
    "text": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                 num_key_value_heads=1, vocab_size=4096, max_position_embeddings=4096, rms_norm_eps=1e-6,
                 tie_word_embeddings=True, sliding_window=4096, use_sliding_window=False,
                 rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [4, 6, 6]}),
    "vision": dict(depth=2, hidden_size=64, intermediate_size=128, num_heads=2, out_hidden_size=64,
                   patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                   fullatt_block_indexes=[1], tokens_per_second=2, hidden_act="silu"),
}
#: Dense bf16 peak TFLOPS by device-name fragment (no sparsity).
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0}


@dataclass(frozen=True)
class Mode:
    """Device, dtype and sizes of one benchmark mode."""

    smoke: bool
    device: str
    dtype: str
    arch: dict
    image_pixels: int  # per image (square phantom images of this area)

    @property
    def image_side(self) -> int:
        return int(round(self.image_pixels ** 0.5))


def mode(smoke: bool) -> Mode:
    if smoke:
        return Mode(True, "cpu", "float32", SMOKE_ARCH, 112 * 112)
    return Mode(False, "cuda", "bfloat16", QWEN25_VL_3B, 448 * 448)


def require_device(m: Mode, name: str) -> None:
    import torch

    if m.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"{name} needs a CUDA GPU; run it with --smoke on a CPU machine")


def device_name(m: Mode) -> str:
    import torch

    return torch.cuda.get_device_name() if m.device == "cuda" else "CPU smoke run (not a GPU number)"


def peak_tflops(name: str) -> float | None:
    return next((v for k, v in PEAK_TFLOPS.items() if k in name), None)


def time_left() -> float:
    """Seconds until ``MLLM_CXR_BENCH_DEADLINE`` (infinite when unset)."""
    deadline = os.environ.get("MLLM_CXR_BENCH_DEADLINE")
    return float("inf") if not deadline else float(deadline) - time.time()


def free() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def reset_peak() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def peak_gib() -> float:
    import torch

    return torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else float("nan")


def build_model(out: Path, m: Mode) -> tuple[Path, int]:
    """Save a random-weight Qwen2.5-VL of ``m.arch`` with processor and generation config into ``out``.

    Reuses ``$MLLM_CXR_BENCH_MODEL/<full|smoke>`` when it already holds one (several benchmark processes).
    """
    import torch
    from transformers import (
        GenerationConfig,
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
    )

    from mllm_cxr.tiny import SPECIAL_TOKENS, build_tokenizer, chat_template

    cache = os.environ.get("MLLM_CXR_BENCH_MODEL")
    if cache:
        out = Path(cache) / ("smoke" if m.smoke else "full")
        meta = out / "bench_model.json"
        if meta.exists():
            return out, json.loads(meta.read_text())["parameters"]
    out.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer()
    tok.save_pretrained(out)
    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    text = dict(m.arch["text"], bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
                pad_token_id=ids["<|endoftext|>"])
    text["vocab_size"] = max(text["vocab_size"], len(tok))
    cfg = Qwen2_5_VLConfig(text_config=text, vision_config=m.arch["vision"], tie_word_embeddings=True,
                           image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
                           vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])
    torch.manual_seed(0)
    with torch.device(m.device):
        model = Qwen2_5_VLForConditionalGeneration(cfg).to(getattr(torch, m.dtype))
    model.generation_config = GenerationConfig(eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
                                               do_sample=False)
    model.save_pretrained(out, safe_serialization=True)
    Qwen2_5_VLProcessor(image_processor=Qwen2VLImageProcessor(min_pixels=3136, max_pixels=401408), tokenizer=tok,
                        chat_template=chat_template(), video_processor=Qwen2VLVideoProcessor()).save_pretrained(out)
    n = sum(p.numel() for p in model.parameters())
    (out / "bench_model.json").write_text(json.dumps({"parameters": n, "smoke": m.smoke}))
    del model
    free()
    return out, n


def lm_params(c) -> int:
    """Parameters of the language model (decoder layers + embeddings) from its text config."""
    h, i, n, v = c.hidden_size, c.intermediate_size, c.num_hidden_layers, c.vocab_size
    kv = h // c.num_attention_heads * c.num_key_value_heads
    attn = h * h * 2 + h * kv * 2 + h + 2 * kv  # q, o, k, v (+ q/k/v biases)
    mlp = 3 * h * i
    return n * (attn + mlp + 2 * h) + v * h + h


def cli(run) -> None:
    """``python bench/gpu_X.py [--smoke] [--json FILE]``: print the Markdown section, save raw results."""
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("--smoke", action="store_true", help="tiny model on CPU (seconds): checks the code path")
    ap.add_argument("--json", help="also write the raw results here")
    ap.add_argument("--md", help="also write the Markdown section here")
    args = ap.parse_args()
    results: dict = {}
    body = run(smoke=args.smoke, results=results)
    print(body, flush=True)
    if args.md:
        Path(args.md).write_text(body + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))
