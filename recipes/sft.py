"""Supervised fine-tuning (LoRA / QLoRA) of a vision-language model on chest X-ray study records.

    accelerate launch recipes/sft.py --config recipes/configs/tiny/sft.yaml
    accelerate launch --config_file recipes/accelerate/zero2.yaml recipes/sft.py \
        --config recipes/configs/qwen2.5-vl-3b/sft.yaml

Any YAML key can be overridden on the command line (``--learning_rate 1e-4``).
"""

from __future__ import annotations

from trl import SFTConfig, SFTTrainer

from mllm_cxr.config import DataArguments, parse_recipe_args
from mllm_cxr.data import load_split, sft_dataset
from mllm_cxr.modeling import ModelArguments, load_model, load_processor
from mllm_cxr.prompts import PromptConfig
from mllm_cxr.training import finish_run, run_recipe, start_run


def main(argv=None) -> None:
    data_args, model_args, prompt_cfg, args = parse_recipe_args(
        (DataArguments, ModelArguments, PromptConfig, SFTConfig), argv)
    start_run(args, data_args, model_args, prompt_cfg)
    train = sft_dataset(load_split(data_args.studies, data_args.train_split, data_args.max_train_studies),
                        data_args.root(), prompt_cfg)
    evald = None
    if data_args.eval_split:
        evald = sft_dataset(load_split(data_args.studies, data_args.eval_split, data_args.max_eval_studies),
                            data_args.root(), prompt_cfg)
    processor = load_processor(model_args, trust_remote_code=args.trust_remote_code)
    model, peft_config = load_model(model_args, gradient_checkpointing=args.gradient_checkpointing,
                                    trust_remote_code=args.trust_remote_code)
    trainer = SFTTrainer(model=model, args=args, train_dataset=train, eval_dataset=evald,
                         processing_class=processor, peft_config=peft_config)
    finish_run(trainer, args, processor)


if __name__ == "__main__":
    run_recipe(main)
