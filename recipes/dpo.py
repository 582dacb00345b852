"""Direct preference optimisation (sigmoid DPO, optionally length-controlled R-DPO) from an SFT adapter.

    mllm-cxr pairs prior --studies runs/phantom/studies.jsonl --out runs/pairs/prior.jsonl
    mllm-cxr launch recipes/dpo.py --config recipes/configs/tiny/dpo.yaml
    mllm-cxr launch --config_file recipes/accelerate/single_gpu.yaml recipes/dpo.py \
        --config recipes/configs/qwen2.5-vl-3b/dpo.yaml

``adapter_path`` is the SFT adapter: it is trained further and TRL keeps a frozen copy of it as the
reference policy (adapter "ref"). Without it, a new LoRA adapter is trained against the base model.
Any YAML key can be overridden on the command line (``--beta 0.05 --length_alpha 0.01``).
"""

from __future__ import annotations

from mllm_cxr.config import DataArguments
from mllm_cxr.modeling import ModelArguments, load_model, load_processor
from mllm_cxr.prompts import PromptConfig
from mllm_cxr.run_config import check_adapter_prompt
from mllm_cxr.train.curves import CurveArguments, curve_callback, print_curve_location
from mllm_cxr.train.dpo import (
    ClinicalDPOConfig,
    ClinicalDPOTrainer,
    PairsArguments,
    check_loss_type,
    load_pair_dataset,
)
from mllm_cxr.train.recipe import run_recipe, run_training

#: The dataclasses this recipe's YAML keys and --flags map to (tests check every shipped config against them).
CONFIG_CLASSES = (DataArguments, ModelArguments, PromptConfig, CurveArguments, PairsArguments, ClinicalDPOConfig)


def datasets(data_args, model_args, prompt_cfg, curve_args, pairs_args, args) -> dict:
    check_loss_type(args)  # pairs of a task (`pairs sample --task`) carry it: their prompts are the task's
    check_adapter_prompt(model_args, prompt_cfg)
    return {"train": load_pair_dataset(pairs_args, data_args, prompt_cfg, min_pixels=model_args.min_pixels,
                                       max_pixels=model_args.max_pixels), "eval": None}


def trainer(configs, data, model_args):
    data_args, _, prompt_cfg, curve_args, _, args = configs
    processor = load_processor(model_args, trust_remote_code=args.trust_remote_code)
    model, peft_config = load_model(model_args, gradient_checkpointing=args.gradient_checkpointing,
                                    trust_remote_code=args.trust_remote_code)
    curve = curve_callback(curve_args, data_args, prompt_cfg, processor, args.output_dir,
                           title=f"dpo: {args.output_dir}", seed=args.seed)
    return ClinicalDPOTrainer(model=model, args=args, train_dataset=data["train"], processing_class=processor,
                              peft_config=peft_config, callbacks=[curve] if curve else None), processor


def after(tr, configs) -> None:
    if tr.is_world_process_zero():
        print_curve_location(configs[-1].output_dir)


def main(argv=None) -> None:
    run_training(CONFIG_CLASSES, argv, datasets=datasets, trainer=trainer, stage="dpo", after=after)


if __name__ == "__main__":
    run_recipe(main)
