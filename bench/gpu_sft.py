"""SFT on a GPU: tokens/s, peak memory and MFU of our recipe vs a bare TRL script, LoRA and QLoRA.

Run on a CUDA machine with the project installed (``pip install -e '.[gpu]'`` for bitsandbytes):
``python bench/run_all.py --gpu --only sft`` or ``python bench/gpu_sft.py``. Not runnable on the
CPU-only development machine.

Model: the published Qwen2.5-VL-3B-Instruct architecture with random bf16 weights and the tiny
model's radiology tokenizer (``bench/gpu_generate.py``'s ``build_model``), saved locally, so nothing is
downloaded. Data: phantom studies, one 448x448 frontal image (256 visual tokens) and the impression.
Four runs in one process, each pairing ours (``mllm_cxr.data`` + ``mllm_cxr.modeling``, as
``recipes/sft.py`` builds them) with the bare TRL script of ``bench/bench_sft.py`` (PIL images in
memory, ``SFTTrainer`` + ``LoraConfig``): LoRA r=64 in bf16, and QLoRA (NF4 base, bf16 compute,
vision tower unquantised). Gradient checkpointing on, batch ``BATCH``.

MFU convention: model FLOPs per trained token = 6 x the language model's parameter count (the usual
dense-training estimate; LoRA's frozen weights still cost the forward and the activation-gradient
passes, about 4 of the 6), divided by the GPU's dense bf16 peak (``PEAK_TFLOPS``; H100 SXM 989).
"""

from __future__ import annotations

import gc
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for p in (str(ROOT), str(HERE)):
    if p not in sys.path:
        sys.path.insert(0, p)

BATCH, PIXELS = 8, (200704, 200704)  # 448x448 -> 256 visual tokens
#: Dense bf16 peak TFLOPS by device-name fragment (no sparsity).
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0}


def _peak_tflops(name: str) -> float | None:
    return next((v for k, v in PEAK_TFLOPS.items() if k in name), None)


def run(device: str = "cuda") -> str:
    import torch
    from bench_sft import STEPS, WARMUP, _bare, _ours
    from gpu_generate import build_model

    from data_prep.phantom import make_phantom

    if not torch.cuda.is_available():
        raise RuntimeError("gpu_sft needs a CUDA GPU (run it on a GPU machine)")
    name = torch.cuda.get_device_name()
    peak = _peak_tflops(name)
    args_kw = dict(use_cpu=False, bf16=True, gradient_checkpointing=True, learning_rate=1e-4)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model_dir, n_params = build_model(tmp / "qwen2.5-vl-3b-random", device)
        from transformers import AutoConfig

        text = AutoConfig.from_pretrained(model_dir).text_config
        make_phantom(tmp / "ph", n=160, seed=0, image_size=448)
        setups = [("LoRA r=64, bf16", False), ("QLoRA r=64, NF4 base", True)]
        for setup, q in setups:
            for who in ("bare TRL", "mllm-cxr recipe"):
                gc.collect()
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
                stats: dict = {}
                out = tmp / f"{who.split()[0]}-{int(q)}"
                if who == "bare TRL":
                    times = _bare(model_dir, tmp / "ph", out, lora_r=64, dtype="bfloat16", load_in_4bit=q,
                                  args_kw=args_kw, pixels=PIXELS, stats=stats)
                else:
                    times = _ours(model_dir, tmp / "ph", out, args_kw=args_kw, pixels=PIXELS, stats=stats,
                                  model_kw=dict(dtype="bfloat16", lora_r=64, lora_alpha=128, load_in_4bit=q,
                                                attn_implementation="sdpa"))
                step = statistics.median(times)
                tok_s = stats.get("tokens", 0.0) / STEPS / step
                rows.append((setup, who, step, tok_s, torch.cuda.max_memory_allocated() / 2**30))
    lm_params = _lm_params(text)
    lines = [f"## SFT on a GPU: Qwen2.5-VL-3B-sized model, recipe vs bare TRL ({name})", "",
             f"Random bf16 weights in the published Qwen2.5-VL-3B architecture ({n_params / 1e9:.2f} B parameters, "
             f"{lm_params / 1e9:.2f} B in the language model), batch {BATCH}, one 448x448 image per study, "
             f"gradient checkpointing; median step over {STEPS - WARMUP} steps after {WARMUP} warm-up; "
             f"torch {torch.__version__}. MFU = 6 x LM parameters x tokens/s / {peak or '?'} TFLOPS.", "",
             "| setup | pipeline | median step (s) | tokens/s | MFU | peak memory | step vs bare |",
             "|---|---|---|---|---|---|---|"]
    base = {}
    for setup, who, step, tok_s, mem in rows:
        base.setdefault(setup, step)
        mfu = f"{100 * 6 * lm_params * tok_s / (peak * 1e12):.1f}%" if peak else "n/a"
        lines.append(f"| {setup} | {who} | {step:.3f} | {tok_s:,.0f} | {mfu} | {mem:.1f} GiB | "
                     f"{step / base[setup]:.3f}x |")
    return "\n".join(lines)


def _lm_params(c) -> int:
    """Parameters of the language model (decoder layers + embeddings) from its config."""
    h, i, n, v = c.hidden_size, c.intermediate_size, c.num_hidden_layers, c.vocab_size
    kv = h // c.num_attention_heads * c.num_key_value_heads
    attn = h * h * 2 + h * kv * 2 + h + 2 * kv  # q, o, k, v (+ q/k/v biases)
    mlp = 3 * h * i
    return n * (attn + mlp + 2 * h) + v * h + h


if __name__ == "__main__":
    print(run())
