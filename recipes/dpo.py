"""Direct preference optimisation (sigmoid DPO, optionally length-controlled R-DPO) from an SFT adapter.

    mllm-cxr pairs prior --studies runs/phantom/studies.jsonl --out runs/pairs/prior.jsonl
    accelerate launch recipes/dpo.py --config recipes/configs/tiny/dpo.yaml
    accelerate launch --config_file recipes/accelerate/single_gpu.yaml recipes/dpo.py \
        --config recipes/configs/qwen2.5-vl-3b/dpo.yaml

``adapter_path`` is the SFT adapter: it is trained further and TRL keeps a frozen copy of it as the
reference policy (adapter "ref"). Without it, a new LoRA adapter is trained against the base model.
Any YAML key can be overridden on the command line (``--beta 0.05 --length_alpha 0.01``).
"""

from __future__ import annotations

from mllm_cxr.config import DataArguments, parse_recipe_args
from mllm_cxr.dpo import (
    ClinicalDPOConfig,
    ClinicalDPOTrainer,
    PairsArguments,
    check_adapter_prompt,
    load_pair_dataset,
)
from mllm_cxr.modeling import ModelArguments, load_model, load_processor
from mllm_cxr.prompts import PromptConfig
from mllm_cxr.training import finish_run, run_recipe, start_run

#: The dataclasses this recipe's YAML keys and --flags map to (tests check every shipped config against them).
CONFIG_CLASSES = (DataArguments, ModelArguments, PromptConfig, PairsArguments, ClinicalDPOConfig)


def check_loss_type(args) -> None:
    """An unknown ``loss_type`` is a config error now, not a crash at the first training step."""
    import dataclasses
    import re

    from mllm_cxr.config import ConfigError

    help_text = next(f.metadata.get("help", "") for f in dataclasses.fields(args) if f.name == "loss_type")
    known = re.findall(r"`'(\w+)'`", help_text)  # the loss types this TRL version documents
    values = [args.loss_type] if isinstance(args.loss_type, str) else list(args.loss_type or [])
    unknown = [v for v in values if v not in known]
    if known and unknown:
        raise ConfigError(f"loss_type: unknown {', '.join(map(repr, unknown))}; known: {', '.join(known)}")


def main(argv=None) -> None:
    data_args, model_args, prompt_cfg, pairs_args, args = parse_recipe_args(CONFIG_CLASSES, argv)
    check_loss_type(args)
    start_run(args, data_args, model_args, prompt_cfg, pairs_args)
    check_adapter_prompt(model_args, prompt_cfg)
    train = load_pair_dataset(pairs_args, data_args, prompt_cfg)
    processor = load_processor(model_args, trust_remote_code=args.trust_remote_code)
    model, peft_config = load_model(model_args, gradient_checkpointing=args.gradient_checkpointing,
                                    trust_remote_code=args.trust_remote_code)
    trainer = ClinicalDPOTrainer(model=model, args=args, train_dataset=train, processing_class=processor,
                                 peft_config=peft_config)
    finish_run(trainer, args, processor)


if __name__ == "__main__":
    run_recipe(main)
