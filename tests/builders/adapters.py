"""Helpers for the generate/export/serve tests: a random LoRA adapter on the tiny model, written as a run."""

from __future__ import annotations

from pathlib import Path

import pytest

#: Prompt and pixel budget the helper writes into the adapter's run config (as the recipes do).
RUN_PROMPT = {"sections": ["findings", "impression"], "context": ["indication"], "max_images": 1,
              "include_prior_report": False, "include_prior_images": False, "frontal_first": True}
RUN_PIXELS = {"min_pixels": 56 * 56, "max_pixels": 112 * 112}


def make_random_adapter(base: Path, out: Path, *, rank: int = 8, on_vision: bool = False, seed: int = 0,
                        run_config: bool = True) -> Path:
    """A LoRA adapter with random (non-zero) A and B on the tiny model, saved like a recipe's output_dir."""
    import torch
    from peft import get_peft_model

    from mllm_cxr.modeling import ModelArguments, load_model, lora_config

    margs = ModelArguments(model_name_or_path=str(base), dtype="float32", lora_r=rank, lora_alpha=2 * rank,
                           lora_dropout=0.0, lora_on_vision=on_vision)
    model, _ = load_model(margs, is_trainable=False)
    cfg = lora_config(margs)
    cfg.init_lora_weights = False  # random B as well: the adapter changes the outputs
    torch.manual_seed(seed)
    peft_model = get_peft_model(model, cfg)
    with torch.no_grad():  # keep the change moderate so that greedy text stays stable under float noise
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.mul_(0.5)
    peft_model.save_pretrained(str(out))
    if run_config:
        from mllm_cxr.prompts import PromptConfig
        from mllm_cxr.run_config import write_run_config

        write_run_config(out, [PromptConfig(**RUN_PROMPT), ModelArguments(model_name_or_path=str(base), **RUN_PIXELS)])
    return out


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Run the module's tiny-model work on one thread (restored afterwards).

    On a 2-core machine shared with other jobs, torch's default two intra-op threads spin against each
    other and the tiny model generates 4-20 times slower than on one thread.
    """
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
