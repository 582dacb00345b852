"""``mllm-cxr pairs prior|sample``: build DPO preference pairs (JSONL) from study records.

    mllm-cxr pairs prior  --studies runs/phantom/studies.jsonl --out runs/pairs/prior.jsonl
    mllm-cxr pairs sample --studies data/mimic/studies.jsonl --model Qwen/Qwen2.5-VL-3B-Instruct \\
        --adapter runs/qwen2.5-vl-3b-sft --k 4 --reward chexpert_f1 --margin 0.2 --out runs/pairs/ranked.jsonl

Both end with a one-line summary (counts of pairs and of skipped studies, by reason).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from cxr_io import check_output, write_text_atomic
from cxr_io.cli_args import DataRootArgs, ModelLoadArgs, PixelBudgetArgs, Verb, add_verb, opt, part, variant
from mllm_cxr.cli.model import PROMPT_GROUP
from mllm_cxr.infer.generate import GenerationSettings
from mllm_cxr.prompts import PromptConfig


@dataclass(kw_only=True)
class PairsArgs(Verb):
    """``mllm-cxr pairs prior`` (and the options ``pairs sample`` shares)."""

    studies: str = opt("study records (.jsonl/.parquet) from `mllm-cxr prepare`")
    out: str = opt("pairs JSONL to write")
    split: str = opt("split to build pairs from: train (default), validate, test or all (every split)",
                     default="train")
    limit: int | None = opt("at most this many studies", default=None)
    sections: str | None = opt("report sections of the target text (default findings,impression; for `sample`: "
                               "the adapter's)", default=None)
    summary_json: str | None = opt("also write the summary to this JSON file", default=None)


#: The decoding options ``pairs sample`` has (it always samples, ``--k`` times per study).
SampleSettings = variant(GenerationSettings, "SampleSettings", only=("temperature", "top_p", "max_new_tokens", "seed"),
                         group=None)
SampleLoadArgs = variant(ModelLoadArgs, "SampleLoadArgs", only=("model", "adapter"), required=("model",))
SampleDtypeArgs = variant(ModelLoadArgs, "SampleDtypeArgs", only=("dtype",))
SamplePromptArgs = variant(PromptConfig, "SamplePromptArgs", only=("max_images", "context"), overrides=True)


@dataclass(kw_only=True)
class PairsSampleArgs(PairsArgs):
    """``mllm-cxr pairs sample``."""

    load: SampleLoadArgs = part(flat=True)
    backend: Literal["hf", "vllm"] = opt(default="hf")
    k: int = opt("samples per study (default 4)", default=4)
    reward: str | None = opt("registered scorer name (default chexpert_f1; with --task: the task's rewards, e.g. "
                             "iou + box_format for phrase_grounding)", default=None)
    task: str | None = opt("sample answers to one task's examples (mllm_cxr/tasks.py) instead of reports; pairs "
                           "then carry task and example", default=None)
    box_family: str = opt("box codec of the samples (with a box --task)", default="qwen2_5_vl")
    reward_spec: str | None = opt("reward spec YAML (weighted composite); overrides --reward", default=None)
    margin: float = opt("keep pairs with best - worst > margin (default 0.1)", default=0.1)
    generation: SampleSettings = part(flat=True)
    batch_size: int = opt("studies per generate call", default=4)
    dtypes: SampleDtypeArgs = part(flat=True)
    pixels: PixelBudgetArgs = part(PROMPT_GROUP)
    prompt: SamplePromptArgs = part(PROMPT_GROUP)
    roots: DataRootArgs = part(flat=True)
    keep_samples: bool = opt("also write all samples and scores per pair", default=False)


def _sections(args) -> list[str]:
    args.sections_given = args.sections is not None
    return [x.strip() for x in (args.sections or "findings,impression").split(",") if x.strip()]


def _inputs(args) -> list:
    return [args.studies, getattr(args, "reward_spec", None), getattr(args, "adapter", None),
            getattr(args, "model", None)]


def _check_outputs(args) -> None:
    """Before any work: the numeric options in range; --out / --summary-json must not be an input (nor lie
    inside an input folder or under a file)."""
    from mllm_cxr.cli.model import check_number_args

    check_number_args(args)
    check_output(args.out, _inputs(args))
    if args.summary_json:
        check_output(args.summary_json, [*_inputs(args), args.out], flag="--summary-json")


def _studies(args):
    from data_prep.schema import split_filter
    from mllm_cxr.data import load_split

    return load_split(args.studies, split_filter(args.split), args.limit)


def _finish(pairs: list[dict[str, Any]], summary: dict[str, Any], args) -> int:
    from mllm_cxr.train.pairs import write_pairs

    write_pairs(pairs, args.out, inputs=_inputs(args))
    summary = {**summary, "out": str(args.out)}
    if args.summary_json:
        write_text_atomic(args.summary_json, json.dumps(summary, indent=2), inputs=[*_inputs(args), args.out],
                          flag="--summary-json")
    skipped = ", ".join(f"{k[len('skipped_'):]} {v}" for k, v in summary.items() if k.startswith("skipped_") and v)
    print(f"pairs {summary['source']}: {summary['pairs']} pairs from {summary['studies']} studies"
          + (f" (skipped: {skipped})" if skipped else "")
          + (f", mean margin {summary['mean_margin']}" if summary.get("mean_margin") is not None else "")
          + f" -> {args.out}", flush=True)
    return 0


def _cmd_prior(args) -> int:
    from mllm_cxr.prompts import PromptConfig
    from mllm_cxr.train.pairs import prior_suppression_pairs

    _check_outputs(args)
    cfg = PromptConfig(sections=_sections(args))
    pairs, summary = prior_suppression_pairs(_studies(args), cfg, progress=True)
    return _finish(pairs, summary, args)


def make_generator(args, prompt, settings, data_root):
    """The generator object for ``--backend``: HF ``generate`` or vLLM offline (:mod:`mllm_cxr.infer.generate`)."""
    from mllm_cxr.infer.generate import VLLMGenerator, load_hf_generator

    if args.backend == "vllm":
        return VLLMGenerator(args.model, prompt, data_root, settings, adapter=args.adapter, dtype=args.dtype)
    return load_hf_generator(args.model, args.adapter, prompt, data_root, settings, dtype=args.dtype)


def _cmd_sample(args) -> int:
    from data_prep.schema import resolve_data_root
    from mllm_cxr.config import ConfigError
    from mllm_cxr.run_config import resolve_prompt
    from mllm_cxr.train.pairs import reward_ranked_pairs

    _check_outputs(args)
    args.sections = _sections(args)
    args.reward_given = args.reward is not None
    args.reward = args.reward or "chexpert_f1"
    if args.task:
        from mllm_cxr.tasks import get_task

        get_task(args.task)
    if args.k < 2:
        raise ConfigError(f"--k must be at least 2 (best and worst of k samples), got {args.k}")
    overrides = {"max_images": args.max_images}
    if args.context is not None:
        overrides["context"] = [c for c in args.context.split(",") if c.strip()]
    if args.sections_given:
        overrides["sections"] = args.sections
    # the adapter's own prompt and pixel budget (its mllm_cxr_config.json), flags on top
    prompt = resolve_prompt(args.adapter, args.model, overrides=overrides, min_pixels=args.min_pixels,
                            max_pixels=args.max_pixels)
    settings = GenerationSettings(max_new_tokens=args.max_new_tokens, do_sample=True, temperature=args.temperature,
                                  top_p=args.top_p, num_return_sequences=args.k, seed=args.seed)
    data_root = resolve_data_root(args.studies, args.data_root)
    generator = make_generator(args, prompt, settings, data_root)
    reward = args.reward_spec or args.reward
    items = _studies(args)
    if args.task and args.task != "report":  # one sample set per task example, ranked by the task's rewards
        from mllm_cxr.infer.generate import task_items
        from mllm_cxr.tasks import BOX_TASKS, TaskConfig, task_reward

        if args.task in BOX_TASKS and args.box_family == "qwen2_5_vl" and (prompt.min_pixels is None
                                                                           or prompt.max_pixels is None):
            raise ConfigError(f"--task {args.task} with --box-family qwen2_5_vl: set --min-pixels and --max-pixels")
        task_cfg = TaskConfig(prompt=prompt.prompt, family=args.box_family, min_pixels=prompt.min_pixels,
                              max_pixels=prompt.max_pixels, data_root=data_root)
        items = task_items([s for s in items if s.images], args.task, task_cfg)
        generator.keep_box_tokens = args.box_family == "qwen2_vl"  # its box markers are special tokens
        if not (args.reward_spec or args.reward_given):
            reward = task_reward(args.task, None, family=args.box_family, min_pixels=prompt.min_pixels,
                                 max_pixels=prompt.max_pixels)
    pairs, summary = reward_ranked_pairs(items, generator, reward, margin_threshold=args.margin,
                                         batch_size=args.batch_size, cfg=prompt.prompt, progress=True,
                                         keep_samples=args.keep_samples)
    return _finish(pairs, summary, args)


def register(subparsers) -> None:
    """Add ``pairs prior`` and ``pairs sample``."""
    p = subparsers.add_parser("pairs", help="build DPO preference pairs (prior suppression, reward-ranked samples)",
                              description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="pairs_kind", metavar="<kind>", required=True)

    add_verb(sub, "prior", PairsArgs, _cmd_prior, help="chosen = report without prior-exam references, rejected = "
             "original (training studies without a prior)")
    add_verb(sub, "sample", PairsSampleArgs, _cmd_sample,
             help="sample k reports per study, chosen = best / rejected = worst by a clinical reward")
