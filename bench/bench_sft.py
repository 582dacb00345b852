"""SFT step time: our recipe's pieces versus a bare TRL script, same tiny model, data and batch.

The bare baseline is what a user would write with TRL alone: PIL images in memory, a hand-written
chat prompt, ``SFTTrainer`` + ``LoraConfig``. Ours: study records -> ``mllm_cxr.data.sft_dataset``
(lazy image decoding from disk), ``mllm_cxr.modeling.load_model``. Goal: overhead ratio <= 1.05.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

STEPS, WARMUP, BATCH, REPEATS = 24, 4, 8, 2


class _StepTimer:
    def __init__(self):
        self.times: list[float] = []
        self._t = None

    def callback(self):
        from transformers import TrainerCallback

        timer = self

        class CB(TrainerCallback):
            def on_step_begin(self, args, state, control, **kw):
                timer._t = time.perf_counter()

            def on_step_end(self, args, state, control, **kw):
                timer.times.append(time.perf_counter() - timer._t)

        return CB()


def _args(out: Path, **overrides):
    from trl import SFTConfig

    kw = dict(output_dir=str(out), per_device_train_batch_size=BATCH, max_steps=STEPS, learning_rate=1e-3,
              logging_steps=1000, save_strategy="no", report_to="none", bf16=False, use_cpu=True, seed=0,
              dataloader_num_workers=0, disable_tqdm=True)
    return SFTConfig(**{**kw, **overrides})


#: Pixel budget of the CPU runs (one 112x112 image -> 16 visual tokens).
CPU_PIXELS = (56 * 56, 112 * 112)


def _tokens(trainer) -> float:
    """Tokens TRL counted over the run (its ``num_tokens`` metric), 0 when not logged."""
    logged = [h["num_tokens"] for h in trainer.state.log_history if "num_tokens" in h]
    return float(logged[-1]) if logged else 0.0


def _ours(model_dir: Path, phantom: Path, out: Path, *, model_kw: dict | None = None, args_kw: dict | None = None,
          pixels: tuple[int, int] = CPU_PIXELS, stats: dict | None = None, callbacks: list | None = None) -> list[float]:
    """Step times of our pieces (``stats`` gets ``tokens``: TRL's token count of the run)."""
    from trl import SFTTrainer

    from mllm_cxr.data import load_split, sft_dataset
    from mllm_cxr.modeling import ModelArguments, load_model, load_processor
    from mllm_cxr.prompts import PromptConfig

    margs = ModelArguments(model_name_or_path=str(model_dir), **{"dtype": "float32", "lora_dropout": 0.0,
                                                                  "min_pixels": pixels[0], "max_pixels": pixels[1],
                                                                  **(model_kw or {})})
    cfg = PromptConfig(max_images=1, context=[], sections=["impression"])
    ds = sft_dataset(load_split(phantom / "studies.jsonl", "train"), phantom, cfg)
    model, peft_cfg = load_model(margs)
    timer = _StepTimer()
    trainer = SFTTrainer(model=model, args=_args(out, **(args_kw or {})), train_dataset=ds,
                         processing_class=load_processor(margs), peft_config=peft_cfg,
                           callbacks=[timer.callback(), *(callbacks or [])])
    trainer.train()
    if stats is not None:
        stats["tokens"] = _tokens(trainer)
    return timer.times[WARMUP:]


def _bare(model_dir: Path, phantom: Path, out: Path, *, lora_r: int = 16, dtype: str = "float32",
          load_in_4bit: bool = False, args_kw: dict | None = None, pixels: tuple[int, int] = CPU_PIXELS,
          stats: dict | None = None) -> list[float]:
    """Step times of a bare TRL script (what a user writes with TRL, PEFT and bitsandbytes alone)."""
    import json

    from datasets import Dataset
    from peft import LoraConfig
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from trl import SFTTrainer

    from data_prep.schema import validate_record
    from mllm_cxr.prompts import PromptConfig, prompt_text

    # The same prompt text as ours (system prompt + instruction), so both pipelines train on the same
    # tokens and the ratio measures pipeline overhead only; written out by hand as a TRL user would.
    cfg = PromptConfig(max_images=1, context=[], sections=["impression"])
    rows = []
    for i, line in enumerate(open(phantom / "studies.jsonl"), start=1):
        r = json.loads(line)
        if r["split"] != "train":
            continue
        frontal = next(im for im in r["images"] if im["view"] in ("PA", "AP"))
        text = prompt_text(validate_record(r, file="studies.jsonl", line=i), cfg)
        rows.append({
            "images": [Image.open(phantom / frontal["path"]).convert("RGB")],
            "prompt": [{"role": "system", "content": [{"type": "text", "text": cfg.system_prompt}]},
                       {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}],
            "completion": [{"role": "assistant", "content": [{"type": "text", "text": r["impression"]}]}],
        })
    processor = AutoProcessor.from_pretrained(model_dir)
    processor.image_processor.size = {"shortest_edge": pixels[0], "longest_edge": pixels[1]}
    quant = {}
    if load_in_4bit:
        import torch
        from transformers import BitsAndBytesConfig

        quant["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16, llm_int8_skip_modules=["visual", "lm_head"])
    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=dtype, **quant)
    lora = LoraConfig(r=lora_r, lora_alpha=2 * lora_r, lora_dropout=0.0, task_type="CAUSAL_LM",
                      target_modules=r"^(?!.*visual).*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)$")
    timer = _StepTimer()
    trainer = SFTTrainer(model=model, args=_args(out, **(args_kw or {})), train_dataset=Dataset.from_list(rows),
                         processing_class=processor, peft_config=lora, callbacks=[timer.callback()])
    trainer.train()
    if stats is not None:
        stats["tokens"] = _tokens(trainer)
    return timer.times[WARMUP:]


def run() -> str:
    import torch

    from data_prep.phantom import make_phantom
    from mllm_cxr.tiny import build_tiny_model

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model_dir = build_tiny_model(tmp / "tiny")
        make_phantom(tmp / "ph", n=160, seed=0)
        res = {"bare TRL": [], "mllm-cxr recipe": []}
        toks = {k: {} for k in res}
        for i in range(REPEATS):  # interleave so drift in machine load hits both
            res["bare TRL"] += _bare(model_dir, tmp / "ph", tmp / f"bare{i}", stats=toks["bare TRL"])
            res["mllm-cxr recipe"] += _ours(model_dir, tmp / "ph", tmp / f"ours{i}", stats=toks["mllm-cxr recipe"])
    med = {k: statistics.median(v) for k, v in res.items()}
    ratio = med["mllm-cxr recipe"] / med["bare TRL"]
    lines = ["## SFT step time: recipe vs bare TRL (CPU)", "",
             f"Tiny Qwen2.5-VL (LoRA r=16 on the language model), phantom data, batch {BATCH}, one 112x112 "
             f"image per study, 1 thread; median over {REPEATS}x{STEPS - WARMUP} steps after {WARMUP} warm-up "
             "steps, the two runs interleaved in one process.", "",
             "| pipeline | median step (ms) | p90 step (ms) | tokens per run (TRL count) |", "|---|---|---|---|"]
    for k, v in res.items():
        p90 = sorted(v)[int(0.9 * (len(v) - 1))]
        lines.append(f"| {k} | {1000 * med[k]:.1f} | {1000 * p90:.1f} | {toks[k].get('tokens', 0):,.0f} |")
    lines += ["", f"**Overhead ratio (recipe / bare TRL): {ratio:.3f}** (goal <= 1.05)."]
    return "\n".join(lines)


if __name__ == "__main__":
    print(run())
