"""SFT on a GPU: tokens/s, peak memory and MFU of our recipe vs a bare TRL script, LoRA and QLoRA.

    python bench/gpu_sft.py             # a CUDA GPU (bench/gpu_run.sh runs it on the lent machine)
    python bench/gpu_sft.py --smoke     # the same code path on CPU with a toy model, in seconds

Model: the published Qwen2.5-VL-3B-Instruct architecture with random bf16 weights and the tiny model's
radiology tokenizer (``gpu_common.build_model``), saved locally, so nothing is downloaded. Data: phantom
studies, one 448x448 frontal image (256 visual tokens) and the impression. Core runs pair ours
(``mllm_cxr.data`` + ``mllm_cxr.modeling``, as ``recipes/sft.py`` builds them) with the bare TRL script of
``bench/bench_sft.py`` (PIL images in memory, ``SFTTrainer`` + ``LoraConfig``): LoRA r=64 in bf16, and QLoRA
(NF4 base, bf16 compute, vision tower unquantised). Gradient checkpointing on, batch ``BATCH``.
Then, while the time budget lasts, the fixes the stack offers, each measured on our pipeline: gradient
checkpointing off, a larger micro-batch, Liger kernels, TRL's ``padding_free``, FlashAttention-2; and a
``torch.profiler`` trace of one step names where the time goes.

MFU convention: model FLOPs per trained token = 6 x the language model's parameter count (the usual
dense-training estimate; LoRA's frozen weights still cost the forward and the activation-gradient
passes, about 4 of the 6), divided by the GPU's dense bf16 peak (H100/H200 SXM: 989 TFLOPS).
"""

from __future__ import annotations

import importlib.util
import statistics
import tempfile
import time
from pathlib import Path

import gpu_common as G

BATCH = 8
STEPS_FULL, STEPS_SMOKE = 14, 6  # bench_sft times the steps after its first 4 (warm-up)


def _profile_callback(results: dict, at_step: int):
    """A TrainerCallback that records a torch.profiler table of one training step."""
    import torch
    from transformers import TrainerCallback

    acts = [torch.profiler.ProfilerActivity.CPU]
    if torch.cuda.is_available():
        acts.append(torch.profiler.ProfilerActivity.CUDA)

    class Prof(TrainerCallback):
        prof = None

        def on_step_begin(self, args, state, control, **kw):
            if state.global_step == at_step:
                self.prof = torch.profiler.profile(activities=acts)
                self.prof.__enter__()

        def on_step_end(self, args, state, control, **kw):
            if self.prof is not None:
                G.sync()
                self.prof.__exit__(None, None, None)
                key = "self_device_time_total" if torch.cuda.is_available() else "self_cpu_time_total"
                ev = sorted(self.prof.key_averages(), key=lambda e: getattr(e, key, 0.0), reverse=True)
                total = sum(getattr(e, key, 0.0) for e in ev) or 1.0
                results["profile"] = [{"op": e.key, "share": getattr(e, key, 0.0) / total,
                                       "ms": getattr(e, key, 0.0) / 1000, "calls": e.count} for e in ev[:12]]
                self.prof = None

    return Prof()


def run(smoke: bool = False, results: dict | None = None) -> str:
    import torch
    from bench_sft import _bare, _ours
    from transformers import AutoConfig

    from data_prep.phantom import make_phantom

    m = G.mode(smoke)
    G.require_device(m, "gpu_sft")
    results = {} if results is None else results
    name = G.device_name(m)
    peak = None if smoke else G.peak_tflops(name)
    steps = STEPS_SMOKE if smoke else STEPS_FULL
    batch = 2 if smoke else BATCH
    pixels = (m.image_pixels, m.image_pixels)
    args_kw = dict(use_cpu=smoke, bf16=not smoke, gradient_checkpointing=True, learning_rate=1e-4, max_steps=steps,
                   per_device_train_batch_size=batch)
    rows, notes = [], []
    has_bnb = importlib.util.find_spec("bitsandbytes") is not None
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model_dir, n_params = G.build_model(tmp / "model", m)
        text = AutoConfig.from_pretrained(model_dir).text_config
        make_phantom(tmp / "ph", n=40 if smoke else 160, seed=0, image_size=m.image_side)

        def measure(setup: str, who: str, *, q: bool = False, extra_args: dict | None = None,
                    extra_model: dict | None = None, callbacks_results: dict | None = None) -> None:
            G.free()
            G.reset_peak()
            stats: dict = {}
            out = tmp / f"run{len(rows)}"
            a = {**args_kw, **(extra_args or {})}
            t0 = time.perf_counter()
            try:
                if who == "bare TRL":
                    times = _bare(model_dir, tmp / "ph", out, lora_r=64, dtype=m.dtype, load_in_4bit=q,
                                  args_kw=a, pixels=pixels, stats=stats)
                else:
                    mk = dict(dtype=m.dtype, lora_r=64, lora_alpha=128, load_in_4bit=q, attn_implementation="sdpa")
                    times = _ours(model_dir, tmp / "ph", out, args_kw=a, pixels=pixels, stats=stats,
                                  model_kw={**mk, **(extra_model or {})})
            except Exception as e:  # a fix the stack does not support is a finding, not a crash of the bench
                rows.append(dict(setup=setup, pipeline=who, error=f"{type(e).__name__}: {str(e)[:160]}"))
                return
            step = statistics.median(times)
            tok_s = stats.get("tokens", 0.0) / a["max_steps"] / step
            mfu = 6 * G.lm_params(text) * tok_s / (peak * 1e12) if peak else None
            rows.append(dict(setup=setup, pipeline=who, step_s=step, tokens_s=tok_s, mfu=mfu, peak_gib=G.peak_gib(),
                             batch=a["per_device_train_batch_size"], wall_s=time.perf_counter() - t0))

        setups = [("LoRA r=64", False)] + ([("QLoRA r=64, NF4 base", True)] if has_bnb else [])
        if not has_bnb:
            notes.append("bitsandbytes is not installed: the QLoRA rows are missing.")
        for setup, q in setups:
            for who in ("bare TRL", "mllm-cxr recipe"):
                measure(setup, who, q=q)
        # Fixes the stack offers, each on our LoRA pipeline, while the lent machine's time lasts.
        fixes = [
            ("LoRA r=64, gradient checkpointing off", {"gradient_checkpointing": False}, {}),
            ("LoRA r=64, checkpointing off, batch 2x", {"gradient_checkpointing": False,
                                                        "per_device_train_batch_size": 2 * batch}, {}),
            ("LoRA r=64, Liger kernels", {"use_liger_kernel": True}, {}),
            ("LoRA r=64, TRL padding_free", {"padding_free": True}, {}),
            ("LoRA r=64, FlashAttention-2", {}, {"attn_implementation": "flash_attention_2"}),
        ]
        for setup, a, mk in fixes:
            if "use_liger_kernel" in a and importlib.util.find_spec("liger_kernel") is None:
                rows.append(dict(setup=setup, pipeline="mllm-cxr recipe", error="liger-kernel not installed"))
                continue
            if "attn_implementation" in mk and importlib.util.find_spec("flash_attn") is None:
                rows.append(dict(setup=setup, pipeline="mllm-cxr recipe",
                                 error="flash-attn not installed (no wheel for this torch/CUDA offline)"))
                continue
            if G.time_left() < 60:
                rows.append(dict(setup=setup, pipeline="mllm-cxr recipe", error="skipped: lent machine's time budget"))
                continue
            measure(setup, "mllm-cxr recipe", extra_args=a, extra_model=mk)
        # Where does a step go? One profiled step of our LoRA pipeline.
        if G.time_left() > 45:
            _ours(model_dir, tmp / "ph", tmp / "prof", args_kw={**args_kw, "max_steps": 5}, pixels=pixels,
                  model_kw=dict(dtype=m.dtype, lora_r=64, lora_alpha=128, attn_implementation="sdpa"),
                  callbacks=[_profile_callback(results, at_step=2)])
    results["rows"] = rows
    results["device"], results["parameters"] = name, n_params
    lines = [f"## SFT on a GPU: Qwen2.5-VL-3B-sized model, recipe vs bare TRL ({name})", "",
             f"Random {m.dtype} weights in the {'toy smoke' if smoke else 'published Qwen2.5-VL-3B'} architecture "
             f"({n_params / 1e9:.3f} B parameters, {G.lm_params(text) / 1e9:.3f} B in the language model), batch "
             f"{batch}, one {m.image_side}x{m.image_side} image per study, gradient checkpointing unless stated; "
             f"median step over {steps - 4} steps after 4 warm-up; torch {torch.__version__}. "
             f"MFU = 6 x LM parameters x tokens/s / {peak or '?'} TFLOPS (goal: >= 40%).", "",
             "| setup | pipeline | median step (s) | tokens/s | MFU | peak memory | step vs bare TRL |",
             "|---|---|---|---|---|---|---|"]
    base = {r["setup"]: r["step_s"] for r in rows if r.get("pipeline") == "bare TRL" and "step_s" in r}
    lora_base = base.get("LoRA r=64")
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['setup']} | {r['pipeline']} | - | - | - | - | {r['error']} |")
            continue
        b = base.get(r["setup"], lora_base)
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "n/a"
        ratio = f"{r['step_s'] / b:.3f}x" if b else "-"
        lines.append(f"| {r['setup']} | {r['pipeline']} | {r['step_s']:.3f} | {r['tokens_s']:,.0f} | {mfu} | "
                     f"{r['peak_gib']:.1f} GiB | {ratio} |")
    if results.get("profile"):
        lines += ["", "One profiled step of our LoRA pipeline, top operators by device time:", "",
                  "| operator | share | ms | calls |", "|---|---|---|---|"]
        lines += [f"| `{p['op'][:60]}` | {100 * p['share']:.1f}% | {p['ms']:.1f} | {p['calls']} |"
                  for p in results["profile"]]
    if notes:
        lines += [""] + notes
    return "\n".join(lines)


if __name__ == "__main__":
    G.cli(run)
