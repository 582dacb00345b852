"""GRPO with vLLM rollouts colocated in the trainer, on the tiny model (real vLLM; marked ``vllm``).

Run by ``make test-vllm`` inside ./.venv-vllm; ``make test`` deselects them. One vLLM engine for the
module: the trainer's. Without vLLM the tests fail (they never skip in the vLLM venv).
"""

from __future__ import annotations

import json
import os

import pytest

from tests.builders.repo import REPO, require_vllm

pytestmark = pytest.mark.vllm
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

STEPS = 3
PROMPTS_PER_STEP, GENERATIONS = 2, 4
GAP_MAX = 0.15  # nats/token; a prompt vLLM expands twice gives ~0.6 (huggingface/trl#6294)
TIE_NATS = 0.05  # a greedy token this close to HF's argmax is a near tie, not a different policy




@pytest.fixture(scope="module")
def run(tiny_model_dir, phantom_dir, tmp_path_factory):
    """A ClinicalGRPOTrainer with use_vllm + colocate, built from the pieces recipes/grpo.py uses; 3 steps."""
    require_vllm()
    import torch

    from mllm_cxr.data import grpo_dataset, load_split
    from mllm_cxr.modeling import ModelArguments, load_model, load_processor
    from mllm_cxr.prompts import PromptConfig
    from mllm_cxr.train.grpo import ClinicalGRPOTrainer, reward_curve
    from mllm_cxr.train.grpo_config import ClinicalGRPOConfig
    from reward.trl import reward_funcs_and_weights

    torch.set_num_threads(1)
    saved_env = dict(os.environ)
    out = tmp_path_factory.mktemp("grpo-vllm")
    prompt = PromptConfig(sections=["impression"], context=[], max_images=1)
    train = grpo_dataset(load_split(phantom_dir / "studies.jsonl", "train", 16), phantom_dir, prompt)
    margs = ModelArguments(model_name_or_path=str(tiny_model_dir), dtype="float32", min_pixels=3136,
                           max_pixels=12544, lora_r=8, lora_alpha=16, lora_dropout=0.0)
    processor = load_processor(margs)
    model, peft_config = load_model(margs)
    funcs, weights = reward_funcs_and_weights(str(REPO / "recipes" / "rewards" / "clinical.yaml"))
    args = ClinicalGRPOConfig(
        output_dir=str(out), use_cpu=True, bf16=False, report_to="none", save_strategy="no", seed=0,
        dataloader_num_workers=0, use_vllm=True, vllm_mode="colocate", vllm_max_model_length=1024,
        num_generations=GENERATIONS, per_device_train_batch_size=PROMPTS_PER_STEP * GENERATIONS,
        max_completion_length=24, max_steps=STEPS, logging_steps=1, learning_rate=2e-3, reward_weights=weights)
    trainer = ClinicalGRPOTrainer(model=model, reward_funcs=funcs, args=args, train_dataset=train,
                                  processing_class=processor, peft_config=peft_config)
    trainer.train()
    curve = reward_curve(trainer.state.log_history)
    (out / "reward_curve.json").write_text(json.dumps(curve, indent=2))
    yield trainer, out, train
    # TRL's colocate mode sets RANK/WORLD_SIZE/MASTER_* and starts a process group for vLLM: later modules'
    # subprocesses must not inherit them
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    os.environ.clear()
    os.environ.update(saved_env)


def test_colocate_rollouts_see_the_trainers_prompt(run):
    trainer, out, _ = run
    steps = [e for e in trainer.state.log_history if "reward" in e and "train_runtime" not in e]
    assert len(steps) == STEPS
    # every rollout's prompt ids, as vLLM processed them, were compared with the trainer's (else: an error)
    assert trainer.vllm_prompt_checks == STEPS * PROMPTS_PER_STEP * GENERATIONS
    gaps = [e["sampling/sampling_logp_difference/mean"] for e in steps]
    assert all(g < GAP_MAX for g in gaps), gaps
    assert all(e["timing/sync_s"] > 0 for e in steps[1:])  # the weights were pushed after each optimizer step
    # vLLM never samples an image placeholder (TRL only suppresses it for model.generate)
    assert trainer.vllm_generation.generation_kwargs["logit_bias"][trainer.processing_class.image_token_id] == -100
    curve = json.loads((out / "reward_curve.json").read_text())
    assert [r["step"] for r in curve] == [1, 2, 3] and all("reward" in r for r in curve)


def test_weight_sync_reaches_vllm(run):
    """After training, vLLM's greedy tokens are the trained policy's greedy tokens (merged LoRA pushed by the
    sync): teacher-forced through the trained HF model, every token vLLM chose is HF's argmax, or within
    TIE_NATS of it where two tokens nearly tie (CPU kernels differ in the last bits); the stale base weights
    would not be."""
    import torch

    trainer, _, train = run
    from vllm import SamplingParams

    from mllm_cxr.train.upstream_fixes import collapse_image_runs

    row = train[0]
    proc = trainer.processing_class
    text = proc.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=False)
    enc = proc(text=[text], images=[row["images"]], return_tensors="pt")
    prompt_ids = enc["input_ids"][0].tolist()
    trainer.vllm_generation.sync_weights()
    (o,) = trainer.vllm_generation.llm.generate(
        [{"prompt_token_ids": collapse_image_runs(prompt_ids, proc.image_token_id),
          "multi_modal_data": {"image": row["images"][0]}}],
        SamplingParams(temperature=0.0, max_tokens=16), use_tqdm=False)
    assert list(o.prompt_token_ids) == prompt_ids
    chosen = list(o.outputs[0].token_ids)
    assert len(chosen) >= 4

    model = trainer.accelerator.unwrap_model(trainer.model).eval()
    n0, n = len(prompt_ids), len(chosen)
    inputs = {k: (torch.cat([v, torch.tensor([chosen], dtype=v.dtype) if k == "input_ids" else
                             torch.full((1, n), 1 if k == "attention_mask" else 0, dtype=v.dtype)], dim=1)
                  if torch.is_tensor(v) and v.dim() == 2 and v.shape == (1, n0) else v) for k, v in enc.items()}

    def gaps() -> list[float]:
        with torch.no_grad():
            logp = model(**inputs).logits[0, n0 - 1:n0 - 1 + n].float().log_softmax(-1)
        return (logp.max(-1).values - logp[torch.arange(n), torch.tensor(chosen)]).tolist()

    trained = gaps()
    assert max(trained) < TIE_NATS, trained
    with model.disable_adapter():  # what a vLLM engine that never received the weights would follow
        stale = gaps()
    assert max(stale) > TIE_NATS, stale


def test_guard_stops_on_trls_expanded_prompt(run):
    """The regression: TRL's own colocate path (processor-expanded ids + images) must stop with a clear error."""
    import trl

    from mllm_cxr.train.upstream_fixes import VLLMRolloutMismatch

    trainer, _, train = run
    inputs = [dict(train[i]) for i in range(PROMPTS_PER_STEP) for _ in range(GENERATIONS)]
    trainer.vllm_unexpand_images = False
    try:
        with pytest.raises(VLLMRolloutMismatch) as e:
            trainer._generate_and_score_completions(inputs)
    finally:
        trainer.vllm_unexpand_images = True
    msg = str(e.value)
    assert "different prompt" in msg and "trl#6294" in msg
    assert f"trl {trl.__version__}" in msg and "vllm 0." in msg
    # the counts say what went wrong: vLLM expanded the 16 image tokens a second time
    assert "image tokens), the trainer has" in msg and "(16 image tokens)" in msg
