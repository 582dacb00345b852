"""GRPO / EditGRPO with clinical rewards named in YAML, from an SFT adapter.

    mllm-cxr launch recipes/grpo.py --config recipes/configs/tiny/grpo.yaml
    mllm-cxr launch recipes/grpo.py --config recipes/configs/tiny/editgrpo.yaml
    mllm-cxr launch --config_file recipes/accelerate/single_gpu.yaml recipes/grpo.py \
        --config recipes/configs/qwen2.5-vl-3b/grpo.yaml

``reward_spec`` names the rewards (a YAML spec under ``recipes/rewards/`` or one registered scorer),
``algorithm`` picks plain GRPO or EditGRPO (post-rollout edits toward the reference report; its
``edit_*`` keys are an error with ``algorithm: grpo``). The
defaults are EditGRPO's published setup (:class:`mllm_cxr.train.grpo_config.ClinicalGRPOConfig`); rollouts use
``model.generate`` unless ``use_vllm`` (colocate or server mode, see the qwen2.5-vl-3b configs).
At the end the reward curve is printed and written to ``output_dir/reward_curve.json``.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

from mllm_cxr.config import DataArguments
from mllm_cxr.data import grpo_dataset, recipe_datasets, task_grpo_dataset
from mllm_cxr.modeling import ModelArguments, load_model, load_processor
from mllm_cxr.prompts import PromptConfig
from mllm_cxr.run_config import check_adapter_prompt
from mllm_cxr.tasks import parse_mixture_arg, task_reward_funcs
from mllm_cxr.train.collapse import CollapseGuard
from mllm_cxr.train.curves import CurveArguments, curve_callback, print_curve_location
from mllm_cxr.train.editgrpo import EditGRPOTrainer
from mllm_cxr.train.grpo import ClinicalGRPOTrainer, format_reward_curve, reward_curve
from mllm_cxr.train.grpo_config import EditGRPOConfig, GRPOScriptArguments, check_algorithm_keys
from mllm_cxr.train.recipe import run_recipe, run_training
from reward.trl import check_reward_spec, reward_funcs_and_weights

#: The dataclasses this recipe's YAML keys and --flags map to (EditGRPOConfig = GRPOConfig + edit_* keys).
CONFIG_CLASSES = (DataArguments, ModelArguments, PromptConfig, CurveArguments, GRPOScriptArguments, EditGRPOConfig)


def datasets(data_args, model_args, prompt_cfg, curve_args, script, args) -> dict:
    check_adapter_prompt(model_args, prompt_cfg)
    check_reward_spec(script.reward_spec)  # every reward name known before any model loads (and in --dry-run)
    if data_args.tasks:  # a task mixture: rows carry their task, which routes their rewards (trainer below)
        return recipe_datasets(data_args, functools.partial(
            task_grpo_dataset, mixture=parse_mixture_arg(data_args.tasks), family=data_args.box_family,
            min_pixels=model_args.min_pixels, max_pixels=model_args.max_pixels, seed=args.seed), prompt_cfg)
    return recipe_datasets(data_args, grpo_dataset, prompt_cfg)


def trainer(configs, data, model_args):
    data_args, _, prompt_cfg, curve_args, script, args = configs
    if data_args.tasks:  # report rows: reward_spec; other tasks: their own rewards (mllm_cxr.tasks)
        reward_funcs, weights = task_reward_funcs(
            [e.name for e in parse_mixture_arg(data_args.tasks)], script.reward_spec, family=data_args.box_family,
            min_pixels=model_args.min_pixels, max_pixels=model_args.max_pixels,
            reference_column=script.reward_reference_column)
    else:
        reward_funcs, weights = reward_funcs_and_weights(script.reward_spec,
                                                         reference_column=script.reward_reference_column)
    if args.reward_weights is None:
        args.reward_weights = weights
    processor = load_processor(model_args, trust_remote_code=args.trust_remote_code)
    model, peft_config = load_model(model_args, gradient_checkpointing=args.gradient_checkpointing,
                                    trust_remote_code=args.trust_remote_code)
    guard = CollapseGuard(normal_max=script.collapse_normal_max, empty_max=script.collapse_empty_max,
                          drift=script.collapse_drift, window=script.collapse_window, stop=script.collapse_stop)
    curve = curve_callback(curve_args, data_args, prompt_cfg, processor, args.output_dir,
                           reward_spec=script.reward_spec, title=f"{script.algorithm}: {args.output_dir}", seed=args.seed)
    trainer_cls = EditGRPOTrainer if script.algorithm == "editgrpo" else ClinicalGRPOTrainer
    return trainer_cls(model=model, reward_funcs=reward_funcs, args=args, train_dataset=data["train"],
                       eval_dataset=data["eval"], processing_class=processor, peft_config=peft_config,
                       callbacks=[guard] + ([curve] if curve else [])), processor


def print_reward_curve(tr, configs) -> None:
    script, args = configs[-2], configs[-1]
    if tr.is_world_process_zero():
        curve = reward_curve(tr.state.log_history)
        Path(args.output_dir, "reward_curve.json").write_text(json.dumps(curve, indent=2))
        print(f"\nreward curve ({script.algorithm}, rewards: {', '.join(f.__name__ for f in tr.reward_funcs)}):")
        print(format_reward_curve(curve), flush=True)
        print_curve_location(args.output_dir)


def main(argv=None) -> None:
    run_training(CONFIG_CLASSES, argv, datasets=datasets, trainer=trainer, stage="grpo", after=print_reward_curve,
                 check=check_algorithm_keys)


if __name__ == "__main__":
    run_recipe(main)
