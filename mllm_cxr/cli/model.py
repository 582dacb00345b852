"""``mllm-cxr generate | merge-predictions | export | serve | tiny``: the model-side verbs (``score``, ``eval``, ``report``: :mod:`evaluation.cli`).

    mllm-cxr generate --studies S.jsonl --model BASE [--adapter DIR] --out pred.jsonl [--backend hf|vllm|openai]
    mllm-cxr generate ... --shard 0/4 --out pred.0.jsonl   (one per shard) ; mllm-cxr merge-predictions pred.*.jsonl --out pred.jsonl
    mllm-cxr export --base BASE --adapter DIR --out exports/cxr [--merge] [--verify-studies S.jsonl]
    mllm-cxr serve --model BASE --adapter exports/cxr [--backend vllm|hf] [--dry-run]
    mllm-cxr tiny runs/tiny-model
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

from cxr_io import check_output
from cxr_io.cli_args import (
    DTYPES,
    DataRootArgs,
    ModelLoadArgs,
    PixelBudgetArgs,
    QuietArgs,
    Verb,
    add_verb,
    opt,
    part,
    variant,
)
from mllm_cxr.config import ConfigError
from mllm_cxr.infer.generate import GenerationSettings
from mllm_cxr.prompts import PromptConfig
from mllm_cxr.tiny import TinyArgs

__all__ = ["DTYPES", "check_number_args"]  # DTYPES: cxr_io.cli_args, re-exported for the verbs' users


def check_number_args(args: argparse.Namespace) -> None:
    """The numeric and choice options of generate / export / serve / pairs, checked before anything loads
    (``--dry-run`` included): one line naming the option, the value and the accepted range."""
    import math

    def get(name):
        return getattr(args, name, None)

    def bad(flag, value, what):
        raise ConfigError(f"{flag} {value}: {what}")

    for name in ("limit", "batch_size", "max_new_tokens", "num_return_sequences", "max_lora_rank", "max_images",
                 "tensor_parallel_size", "max_model_len", "max_concurrency", "verify_n", "verify_max_new_tokens",
                 "min_pixels", "max_pixels"):
        v = get(name)
        if v is not None and v < 1:
            bad("--" + name.replace("_", "-"), v, "must be at least 1" + (" (leave it out for every study)"
                                                                         if name == "limit" else ""))
    t = get("temperature")
    if t is not None and not (math.isfinite(t) and t >= 0):
        bad("--temperature", t, "must be a finite number >= 0 (0 = greedy)")
    tp = get("top_p")
    if tp is not None and not (0 < tp <= 1):
        bad("--top-p", tp, "must be in (0, 1]")
    rp = get("repetition_penalty")
    if rp is not None and not (math.isfinite(rp) and rp > 0):
        bad("--repetition-penalty", rp, "must be a finite number > 0 (1 = none)")
    g = get("gpu_memory_utilization")
    if g is not None and not (0 < g <= 1):
        bad("--gpu-memory-utilization", g, "must be in (0, 1]")
    for name in ("timeout", "merge_atol"):
        v = get(name)
        if v is not None and not (math.isfinite(v) and v > 0):
            bad("--" + name.replace("_", "-"), v, "must be a finite number > 0")
    port = get("port")
    if port is not None and not (1 <= port <= 65535):
        bad("--port", port, "must be a TCP port, 1 to 65535")
    d = get("dtype")
    if d is not None and d not in DTYPES:
        bad("--dtype", repr(d), f"unknown dtype; use one of {', '.join(DTYPES)}")


def _split(value: str | None) -> str | None:
    from data_prep.schema import split_filter

    return split_filter(value)


def _prompt_overrides(args) -> dict:
    return dataclasses.asdict(args.prompt)


#: The help group of the prompt flags: each overrides the adapter's prompt (its ``mllm_cxr_config.json``).
PROMPT_GROUP = "prompt (default: the adapter's mllm_cxr_config.json, else PromptConfig defaults)"
#: :class:`~mllm_cxr.prompts.PromptConfig`'s fields as override flags (``None``: keep the adapter's).
PromptOverrides = variant(PromptConfig, "PromptOverrides", overrides=True, group=PROMPT_GROUP)
MODEL_GROUP = "model loading (hf / vllm)"


@dataclass(kw_only=True)
class VLLMEngineArgs:
    """The vLLM engine options of ``generate --backend vllm`` and ``serve``."""

    _argument_group_name: ClassVar[str | None] = MODEL_GROUP
    max_lora_rank: int | None = opt("vllm: the largest LoRA rank (default: the adapters' rank, rounded up)",
                                    default=None)
    gpu_memory_utilization: float | None = opt("vllm: share of the GPU memory to use", default=0.9)
    max_model_len: int | None = opt("vllm: longest sequence (default: the model's)", default=None)
    tensor_parallel_size: int | None = opt("vllm: GPUs per model", default=1)


# ------------------------------------------------------------------------------------------------
# generate
# ------------------------------------------------------------------------------------------------
def _check_generate_args(args: GenerateArgs) -> None:
    """The numbers, and what the backend needs (--model, --base-url); the model and adapter references checked."""
    check_number_args(args)
    if args.backend in ("hf", "vllm") and not args.model:
        raise ConfigError(f"--backend {args.backend} needs --model (hub id or folder of the base model)")
    if args.backend == "openai" and not args.base_url:
        raise ConfigError("--backend openai needs --base-url (e.g. http://127.0.0.1:8000)")
    if args.backend != "openai":
        from mllm_cxr.modeling import check_adapter_dir, check_model_ref

        check_model_ref(args.model, field="--model")
        if args.adapter:
            check_adapter_dir(args.adapter, field="--adapter")


def _task_config(args: GenerateArgs, prompt, root):
    """The :class:`mllm_cxr.tasks.TaskConfig` of ``--task`` (None without one); qwen2_5_vl boxes need a pixel budget."""
    if not args.task:
        return None
    from mllm_cxr.tasks import BOX_TASKS, TaskConfig, get_task

    get_task(args.task)
    if args.task in BOX_TASKS and args.box_family == "qwen2_5_vl" and (prompt.min_pixels is None
                                                                       or prompt.max_pixels is None):
        raise ConfigError(f"--task {args.task} with --box-family qwen2_5_vl: boxes are pixels of the resized "
                          "image; set --min-pixels and --max-pixels (or use an adapter whose config has them)")
    return TaskConfig(prompt=prompt.prompt, family=args.box_family, min_pixels=prompt.min_pixels,
                      max_pixels=prompt.max_pixels, data_root=root)


def _generator(args: GenerateArgs, prompt, root, settings):
    """The generator of ``--backend``: a local HF model, vLLM in this process, or an OpenAI-compatible server."""
    from mllm_cxr.infer.generate import OpenAIGenerator, VLLMGenerator, load_hf_generator

    if args.backend == "hf":
        return load_hf_generator(args.model, args.adapter, prompt, root, settings, dtype=args.dtype,
                                 attn_implementation=args.attn_implementation, load_in_4bit=args.load_in_4bit,
                                 trust_remote_code=args.trust_remote_code)
    if args.backend == "vllm":
        extra = {"enforce_eager": True} if args.enforce_eager else {}
        if args.max_model_len:
            extra["max_model_len"] = args.max_model_len
        return VLLMGenerator(args.model, prompt, root, settings, adapter=args.adapter,
                             max_lora_rank=args.max_lora_rank, dtype=args.dtype,
                             gpu_memory_utilization=args.gpu_memory_utilization,
                             tensor_parallel_size=args.tensor_parallel_size,
                             trust_remote_code=args.trust_remote_code, **extra)
    return OpenAIGenerator(args.base_url, prompt, root, settings, served_model=args.served_model,
                           api_key=args.api_key, timeout=args.timeout, max_concurrency=args.max_concurrency)


def run_generate(args: GenerateArgs) -> int:
    from data_prep.schema import resolve_data_root
    from evaluation.predictions import meta_path, part_path
    from mllm_cxr.data import load_split
    from mllm_cxr.infer.generate import check_resume, generate_predictions
    from mllm_cxr.run_config import resolve_prompt

    _check_generate_args(args)
    studies = load_split(args.studies, _split(args.split), args.limit)
    shard = None
    if args.shard:
        from mllm_cxr.infer.shard import parse_shard, shard_slice

        index, count = parse_shard(args.shard)
        shard = {"index": index, "count": count, "total": len(studies), "limit": args.limit}
        studies = shard_slice(studies, index, count)
    root = resolve_data_root(args.studies, args.data_root)
    prompt = resolve_prompt(args.adapter, args.model, overrides=_prompt_overrides(args),
                            min_pixels=args.min_pixels, max_pixels=args.max_pixels)
    settings = args.generation
    task_cfg = _task_config(args, prompt, root)
    model_id = args.model if args.backend != "openai" else f"{args.base_url}#{args.served_model or ''}"
    meta = {"model": model_id, "adapter": args.adapter, "backend": args.backend, "prompt": prompt.to_dict(),
            "prompt_source": prompt.source, "generation": dataclasses.asdict(settings),
            "studies": str(Path(args.studies).resolve()), "data_root": str(Path(root).resolve()),
            "split": args.split}
    if shard:
        meta["shard"] = shard
    if args.task:
        meta["task"] = {"name": args.task, "box_family": args.box_family}
    for o in (args.out, meta_path(args.out), part_path(args.out)):  # before --overwrite deletes anything
        check_output(o, [args.studies, args.adapter, args.model], flag="--out")
    check_resume(args.out, meta, overwrite=args.overwrite)
    gen = _generator(args, prompt, root, settings)
    if task_cfg is not None and task_cfg.family == "qwen2_vl":  # its box markers are special tokens: keep them
        gen.keep_box_tokens = True
    s = generate_predictions(gen, studies, args.out, batch_size=args.batch_size, progress=not args.quiet,
                             task=args.task, task_cfg=task_cfg)
    rate = f"{s['studies_per_s']} studies/s" if s["studies_per_s"] else "nothing to do"
    no_img = f", {s['skipped_no_images']} skipped: no images" if s["skipped_no_images"] else ""
    print(f"generated {s['generated']} studies ({s['skipped_done']} already done{no_img}) with the {args.backend} backend "
          f"in {s['seconds']} s ({rate}); {s['empty_predictions']} empty; prompt from {prompt.source} -> {s['out']}")
    return 0


TASK_GROUP = "tasks (mllm_cxr.tasks)"
OPENAI_GROUP = "OpenAI-compatible server (--backend openai)"


@dataclass(kw_only=True)
class GenerateArgs(Verb):
    """``mllm-cxr generate``."""

    studies: str = opt("study records (.jsonl/.parquet) from `mllm-cxr prepare`")
    roots: DataRootArgs = part(flat=True)
    split: str = opt("split to generate for: train, validate, test or all (every split)", default="test")
    limit: int | None = opt("at most this many studies (the first ones)", default=None)
    shard: str | None = opt("only the I-th (0-based) of N contiguous blocks of the studies; one --out per shard, "
                            "joined by `mllm-cxr merge-predictions`", default=None, metavar="I/N")
    out: str = opt("predictions JSONL to write (appended to when resuming)")
    overwrite: bool = opt("start --out afresh instead of resuming", default=False)
    backend: Literal["hf", "vllm", "openai"] = opt(default="hf")
    batch_size: int = opt("studies per generate call / per flush", default=8)
    task: str | None = opt("answer one task instead of writing reports: report, grounded_report, phrase_grounding, "
                           "detection, classification, vqa, view (one row per example, with what eval scores it by)",
                           default=None, group=TASK_GROUP)
    box_family: str = opt("box codec of the model's answers (qwen2_5_vl needs --min-pixels/--max-pixels); default "
                          "qwen2_5_vl", default="qwen2_5_vl", group=TASK_GROUP)
    generation: GenerationSettings = part()
    load: ModelLoadArgs = part(MODEL_GROUP)
    attn_implementation: str | None = opt("sdpa | flash_attention_2 | eager (hf)", default=None, group=MODEL_GROUP)
    load_in_4bit: bool = opt("4-bit NF4 base weights (hf)", default=False, group=MODEL_GROUP)
    vllm: VLLMEngineArgs = part()
    enforce_eager: bool = opt("vllm: no CUDA graphs", default=False, group=MODEL_GROUP)
    base_url: str | None = opt("server root, e.g. http://127.0.0.1:8000", default=None, group=OPENAI_GROUP)
    served_model: str | None = opt("model name on the server (a --lora-modules NAME)", default=None,
                                   group=OPENAI_GROUP)
    api_key: str | None = opt("bearer token (default: $OPENAI_API_KEY)", default=None, group=OPENAI_GROUP)
    max_concurrency: int = opt("requests in flight", default=8, group=OPENAI_GROUP)
    timeout: float = opt("seconds per request", default=600.0, group=OPENAI_GROUP)
    prompt: PromptOverrides = part()
    pixels: PixelBudgetArgs = part(PROMPT_GROUP)
    progress: QuietArgs = part(flat=True)


def _add_generate(sub) -> None:
    add_verb(sub, "generate", GenerateArgs, run_generate, check=check_number_args,
             help="generate reports for study records (HF, vLLM or an OpenAI-compatible server)",
             description="Generate a report per study into a predictions JSONL (study_id, prediction, "
                         "reference, context). Resumable: studies already in --out are skipped.")


# ------------------------------------------------------------------------------------------------
# export
# ------------------------------------------------------------------------------------------------
def run_export(args: ExportArgs) -> int:
    from mllm_cxr.infer.export import export

    check_number_args(args)
    if args.merge and args.allow_vision_lora:
        raise ConfigError("--merge and --allow-vision-lora conflict: --allow-vision-lora keeps vision-tower LoRA in "
                          "an adapter export (vLLM drops it); --merge folds every LoRA weight into the checkpoint. "
                          "Drop one of them")
    s = export(args.model, args.adapter, args.out, merge=args.merge, allow_vision_lora=args.allow_vision_lora,
               verify_studies=args.verify_studies, data_root=args.data_root, split=_split(args.split),
               n_verify=args.verify_n, metrics=args.metrics, dtype=args.dtype, max_new_tokens=args.max_new_tokens,
               verify_max_new_tokens=args.verify_max_new_tokens, merge_atol=args.merge_atol, name=args.name,
               overwrite=args.overwrite, verify_backend=args.verify_backend)
    a = s["adapter"]
    what = "merged checkpoint" if s["merged"] else f"vLLM-ready adapter ({len(a['language'])} LoRA modules)"
    v = s["verification"]
    ver = ("; verification: " + (f"{v['identical']}/{v['n']} identical reports, max |logit diff| "
                                 f"{v['max_abs_logit_diff']:.1e}: OK")) if v else "; not verified (no --verify-studies)"
    vv = s.get("vllm_verification")
    if vv:
        ver += f"; vLLM: {vv['identical']}/{vv['n']} identical greedy reports: OK"
    warn = f"; {len(s['warnings'])} warning(s)" if s["warnings"] else ""
    print(f"exported {what} from {args.adapter} (rank {a['rank']}) to {s['out']}{ver}{warn}")
    return 0


#: export's model options: the base is ``--base`` and the adapter is needed.
ExportLoadArgs = variant(ModelLoadArgs, "ExportLoadArgs", only=("model", "adapter", "dtype"),
                         required=("model", "adapter"), flags={"model": "--base"})


@dataclass(kw_only=True)
class ExportArgs(Verb):
    """``mllm-cxr export``."""

    load: ExportLoadArgs = part(flat=True)
    out: str = opt("output folder (must be empty or absent)")
    overwrite: bool = opt("replace a non-empty --out", default=False)
    merge: bool = opt("write a merged full checkpoint instead of an adapter", default=False)
    allow_vision_lora: bool = opt("keep LoRA on the vision tower (vLLM drops it: the served model then differs)",
                                  default=False)
    verify_studies: str | None = opt("study records: compare reloaded export vs in-memory model", default=None)
    roots: DataRootArgs = part(flat=True)
    split: str = opt("split of --verify-studies: train, validate, test or all (every split)", default="test")
    verify_n: int = opt("studies to verify on", default=4)
    verify_backend: Literal["hf", "vllm"] = opt("vllm: also compare vLLM's greedy reports for the export with the "
                                                "in-memory model's", default="hf")
    verify_max_new_tokens: int = opt(default=32)
    merge_atol: float | None = opt("merged export: largest next-token logit difference accepted (default: 1e-4 of "
                                   "the largest logit in float32, 5%% in bfloat16/float16)", default=None)
    metrics: str | None = opt("metrics.json (or its folder) from `mllm-cxr eval` for the card", default=None)
    max_new_tokens: int = opt("max_new_tokens in generation_config.json", default=512)
    name: str | None = opt("title of the model card (default: the --out folder name)", default=None)


def _add_export(sub) -> None:
    add_verb(sub, "export", ExportArgs, run_export, check=check_number_args,
             help="export an adapter vLLM can load (or a merged checkpoint), with a model card",
             description="Write a vLLM-loadable adapter (or, with --merge, a merged checkpoint), the "
                         "processor, chat template, generation config and a model card; optionally "
                         "verify the export against the in-memory model.")


# ------------------------------------------------------------------------------------------------
# serve
# ------------------------------------------------------------------------------------------------
def _adapters(values: list[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for v in values or []:
        name, sep, path = v.partition("=")
        if not sep:
            name, path = Path(v).name or "adapter", v
        if not (Path(path) / "adapter_config.json").is_file():
            raise FileNotFoundError(f"--adapter {v}: no adapter_config.json in {path}")
        if name in out:
            raise ConfigError(f"--adapter: the name {name!r} is given twice")
        out[name] = path
    return out


def _adapter_keys(adapter_dir: str) -> dict[str, None]:
    """The tensor names of an adapter (a readable safetensors header is checked; no tensor is loaded)."""
    from mllm_cxr.infer.export import read_adapter_weights

    st = Path(adapter_dir) / "adapter_model.safetensors"
    if not st.is_file():
        return dict.fromkeys(read_adapter_weights(adapter_dir))
    from safetensors import safe_open

    from cxr_io import check_safetensors

    check_safetensors(st, role="adapter weights")
    with safe_open(str(st), framework="pt") as f:
        return dict.fromkeys(f.keys())


def check_servable(adapters: dict[str, str], *, backend: str, max_lora_rank: int | None) -> None:
    """What ``serve`` checks before anything starts (``--dry-run`` included): readable adapter weights and,
    for vLLM, the adapter types ``export`` refuses and a ``--max-lora-rank`` that holds every adapter."""
    from mllm_cxr.infer.export import check_vllm_compatible, inspect_adapter
    from mllm_cxr.vllm_support import adapter_rank, check_max_lora_rank

    for d in adapters.values():
        keys = _adapter_keys(d)
        if backend == "vllm":
            check_vllm_compatible(inspect_adapter(d, keys))
    if backend == "vllm":
        check_max_lora_rank(max_lora_rank, {f"{name} ({d})": adapter_rank(d) for name, d in adapters.items()})


def _check_port(host: str, port: int) -> None:
    import socket

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError as e:
            raise ConfigError(f"--port {port}: cannot listen on {host}:{port} ({e.strerror or e}); stop the "
                              "other server or pick another --port") from None


def run_serve(args: ServeArgs) -> int:
    from mllm_cxr.infer.serve import ChatServer, run_vllm
    from mllm_cxr.modeling import check_model_ref
    from mllm_cxr.run_config import resolve_prompt
    from mllm_cxr.vllm_support import build_vllm_command

    check_number_args(args)
    check_model_ref(args.model, field="--model")
    adapters = _adapters(args.adapter)
    check_servable(adapters, backend=args.backend, max_lora_rank=args.max_lora_rank)
    try:
        extra_args = shlex.split(args.vllm_args or "")
    except ValueError as e:
        raise ConfigError(f"--vllm-args {args.vllm_args!r}: {e}; balance the quotes") from None
    if not args.dry_run:
        _check_port(args.host, args.port)
    first = next(iter(adapters.values()), None)
    prompt = resolve_prompt(first, args.model, min_pixels=args.min_pixels, max_pixels=args.max_pixels)
    max_images = args.max_images or prompt.prompt.max_images
    if args.backend == "vllm":
        cmd = build_vllm_command(args.model, adapters, max_lora_rank=args.max_lora_rank, max_images=max_images,
                                 min_pixels=prompt.min_pixels, max_pixels=prompt.max_pixels, host=args.host,
                                 port=args.port, dtype=args.dtype, max_model_len=args.max_model_len,
                                 gpu_memory_utilization=args.gpu_memory_utilization,
                                 tensor_parallel_size=args.tensor_parallel_size,
                                 served_model_name=args.served_model_name, extra=extra_args)
        return run_vllm(cmd, dry_run=args.dry_run)
    if len(adapters) > 1:
        raise ConfigError("--backend hf serves one adapter; give a single --adapter")
    name = args.served_model_name or next(iter(adapters), None)
    if args.dry_run:
        print(f"would serve {args.model}" + (f" + adapter {first}" if first else "") + f" as {name or args.model} "
              f"on http://{args.host}:{args.port}/v1 (transformers)")
        return 0
    server = ChatServer(args.model, first, served_model_name=name, host=args.host, port=args.port,
                        dtype=args.dtype or "auto", min_pixels=prompt.min_pixels, max_pixels=prompt.max_pixels,
                        max_images=max_images)
    print(f"serving {server.name} on {server.url}/v1 (transformers, one request at a time); Ctrl-C stops", flush=True)
    server.serve_forever()
    return 0


ServeModelArgs = variant(ModelLoadArgs, "ServeModelArgs", only=("model",), required=("model",))
#: serve passes no dtype unless given (vLLM's own default; the hf server's "auto").
ServeDtypeArgs = variant(ModelLoadArgs, "ServeDtypeArgs", only=("dtype",), defaults={"dtype": None})
ServeVLLMArgs = variant(VLLMEngineArgs, "ServeVLLMArgs", defaults={"gpu_memory_utilization": None,
                                                                   "tensor_parallel_size": None})


@dataclass(kw_only=True)
class ServeArgs(Verb):
    """``mllm-cxr serve``."""

    load: ServeModelArgs = part(flat=True)
    adapter: list[str] | None = opt("LoRA adapter to serve (repeatable); NAME defaults to the folder name",
                                    default=None, action="append", metavar="[NAME=]DIR")
    backend: Literal["vllm", "hf"] = opt(default="vllm")
    host: str = opt(default="127.0.0.1")
    port: int = opt(default=8000)
    served_model_name: str | None = opt("name of the base model (vllm) / the model (hf)", default=None)
    max_images: int | None = opt("images per request (default: the prompt's max_images)", default=None)
    pixels: PixelBudgetArgs = part(flat=True)
    dtypes: ServeDtypeArgs = part(flat=True)
    vllm: ServeVLLMArgs = part(flat=True)
    vllm_args: str | None = opt("more `vllm serve` arguments, one quoted string", default=None)
    dry_run: bool = opt("print the command and exit", default=False)


def _add_serve(sub) -> None:
    add_verb(sub, "serve", ServeArgs, run_serve, check=check_number_args,
             help="serve over an OpenAI-compatible API: `vllm serve` with the adapter, or transformers",
             description="Start `vllm serve BASE --enable-lora --lora-modules NAME=DIR ...` with the "
                         "adapter's rank, image limit and pixel budget (printed first), or a small "
                         "transformers server (--backend hf).")


# ------------------------------------------------------------------------------------------------
# tiny
# ------------------------------------------------------------------------------------------------
@dataclass(kw_only=True)
class TinyVerbArgs(Verb):
    """``mllm-cxr tiny``."""

    build: TinyArgs = part(flat=True)
    overwrite: bool = opt("replace a non-empty OUT_DIR", default=False)


def run_tiny(args: TinyVerbArgs) -> int:
    from cxr_io import abort_dir, begin_dir, commit_dir
    from mllm_cxr.tiny import build_tiny_model

    tmp = begin_dir(args.out_dir, overwrite=args.overwrite, flag="tiny OUT_DIR")  # never over an existing model
    try:
        build_tiny_model(tmp, seed=args.seed)
        commit_dir(tmp, args.out_dir)
    except BaseException:
        abort_dir(tmp)
        raise
    path = args.out_dir
    print(f"tiny Qwen2.5-VL written to {path}")
    return 0


# ------------------------------------------------------------------------------------------------
# merge-predictions
# ------------------------------------------------------------------------------------------------
@dataclass(kw_only=True)
class MergePredictionsArgs(Verb):
    """``mllm-cxr merge-predictions``."""

    shards: list[str] = opt("the shard predictions files (any order)", positional=True)
    out: str = opt("merged predictions JSONL (its .meta.json is written beside it)")
    overwrite: bool = opt("replace an existing --out", default=False)


def run_merge_predictions(args: MergePredictionsArgs) -> int:
    from mllm_cxr.infer.shard import merge_predictions

    s = merge_predictions(args.shards, args.out, overwrite=args.overwrite)
    extra = f" ({s['not_in_studies']} no longer in the studies file)" if s["not_in_studies"] else ""
    print(f"merged {s['shards']} shards: {s['rows']} studies{extra} -> {s['out']}")
    return 0


def _add_merge_predictions(sub) -> None:
    add_verb(sub, "merge-predictions", MergePredictionsArgs, run_merge_predictions,
             help="join `generate --shard i/n` outputs into one predictions file", description="Join the predictions files of `mllm-cxr generate --shard i/n` (and their "
                         ".meta.json side files) into the file the unsharded run would have written. "
                         "Refuses shards of different runs, a missing shard, a study in two shards, and "
                         "names the studies in no shard.")


def register(subparsers) -> None:
    """Add ``generate``, ``merge-predictions``, ``export``, ``serve`` and ``tiny``."""
    _add_generate(subparsers)
    _add_merge_predictions(subparsers)
    _add_export(subparsers)
    _add_serve(subparsers)
    add_verb(subparsers, "tiny", TinyVerbArgs, run_tiny,
             help="build the tiny random Qwen2.5-VL used by tests and the demo")
