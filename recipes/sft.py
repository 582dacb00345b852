"""Supervised fine-tuning (LoRA / QLoRA) of a vision-language model on chest X-ray study records.

    mllm-cxr launch recipes/sft.py --config recipes/configs/tiny/sft.yaml
    mllm-cxr launch --config_file recipes/accelerate/zero2.yaml recipes/sft.py \
        --config recipes/configs/qwen2.5-vl-3b/sft.yaml

``tasks: report:0.6,phrase_grounding:0.4`` (or a mixture YAML file, see mllm_cxr/tasks.py) trains on a
weighted task mixture instead of the report task alone (``box_family`` says how boxes are written).
Any YAML key can be overridden on the command line (``--learning_rate 1e-4``); ``--dry-run`` parses the
config and builds the datasets without loading the model; ``output_dir/config.yaml`` reruns the run.
"""

from __future__ import annotations

import functools

from mllm_cxr.config import DataArguments
from mllm_cxr.data import recipe_datasets, sft_dataset, task_sft_dataset
from mllm_cxr.modeling import ModelArguments, load_model, load_processor
from mllm_cxr.prompts import PromptConfig
from mllm_cxr.tasks import parse_mixture_arg
from mllm_cxr.train.recipe import run_recipe, run_training

# isort: off
from trl import SFTConfig, SFTTrainer  # after mllm_cxr, which quiets bitsandbytes' import-time kernel warning
# isort: on

#: The dataclasses this recipe's YAML keys and --flags map to (the TRL config last).
CONFIG_CLASSES = (DataArguments, ModelArguments, PromptConfig, SFTConfig)


def datasets(data_args, model_args, prompt_cfg, args) -> dict:
    if data_args.tasks:  # a task mixture (mllm_cxr/tasks.py) instead of the report task alone
        build = functools.partial(task_sft_dataset, mixture=parse_mixture_arg(data_args.tasks),
                                  family=data_args.box_family, min_pixels=model_args.min_pixels,
                                  max_pixels=model_args.max_pixels, seed=args.seed)
        return recipe_datasets(data_args, build, prompt_cfg)
    return recipe_datasets(data_args, sft_dataset, prompt_cfg)


def trainer(configs, data, model_args):
    args = configs[-1]
    processor = load_processor(model_args, trust_remote_code=args.trust_remote_code)
    model, peft_config = load_model(model_args, gradient_checkpointing=args.gradient_checkpointing,
                                    trust_remote_code=args.trust_remote_code)
    return SFTTrainer(model=model, args=args, train_dataset=data["train"], eval_dataset=data["eval"],
                      processing_class=processor, peft_config=peft_config), processor


def main(argv=None) -> None:
    run_training(CONFIG_CLASSES, argv, datasets=datasets, trainer=trainer, stage="sft")


if __name__ == "__main__":
    run_recipe(main)
