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
from pathlib import Path

from cxr_io import check_output
from mllm_cxr.config import ConfigError

#: The ``--dtype`` values every verb accepts (what :func:`mllm_cxr.modeling.resolve_dtype` knows).
DTYPES = ("auto", "hardware", "bfloat16", "bf16", "float16", "fp16", "float32", "fp32")


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


def _prompt_overrides(args: argparse.Namespace) -> dict:
    return {"sections": args.sections, "context": args.context, "max_images": args.max_images,
            "include_prior_report": args.include_prior_report, "include_prior_images": args.include_prior_images,
            "frontal_first": args.frontal_first, "system_prompt": args.system_prompt}


def _add_prompt_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("prompt (default: the adapter's mllm_cxr_config.json, else PromptConfig defaults)")
    g.add_argument("--sections", default=None, help="report sections to write, e.g. findings,impression")
    g.add_argument("--context", default=None, help="context fields in the prompt, e.g. indication,comparison ('none')")
    g.add_argument("--max-images", type=int, default=None, help="images per study in the prompt")
    g.add_argument("--include-prior-report", action=argparse.BooleanOptionalAction, default=None)
    g.add_argument("--include-prior-images", action=argparse.BooleanOptionalAction, default=None)
    g.add_argument("--frontal-first", action=argparse.BooleanOptionalAction, default=None)
    g.add_argument("--system-prompt", default=None)
    g.add_argument("--min-pixels", type=int, default=None, help="image pixel budget, lower bound")
    g.add_argument("--max-pixels", type=int, default=None, help="image pixel budget, upper bound")


# ------------------------------------------------------------------------------------------------
# generate
# ------------------------------------------------------------------------------------------------
def run_generate(args: argparse.Namespace) -> int:
    from data_prep.schema import resolve_data_root
    from evaluation.predictions import meta_path, part_path
    from mllm_cxr.data import load_split
    from mllm_cxr.infer.generate import (
        GenerationSettings,
        OpenAIGenerator,
        VLLMGenerator,
        check_resume,
        generate_predictions,
        load_hf_generator,
    )
    from mllm_cxr.run_config import resolve_prompt

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
    settings = GenerationSettings(max_new_tokens=args.max_new_tokens, do_sample=args.do_sample,
                                  temperature=args.temperature, top_p=args.top_p,
                                  num_return_sequences=args.num_return_sequences,
                                  repetition_penalty=args.repetition_penalty, seed=args.seed)
    task_cfg = None
    if args.task:
        from mllm_cxr.tasks import BOX_TASKS, TaskConfig, get_task

        get_task(args.task)
        if args.task in BOX_TASKS and args.box_family == "qwen2_5_vl" and (prompt.min_pixels is None
                                                                           or prompt.max_pixels is None):
            raise ConfigError(f"--task {args.task} with --box-family qwen2_5_vl: boxes are pixels of the resized "
                              "image; set --min-pixels and --max-pixels (or use an adapter whose config has them)")
        task_cfg = TaskConfig(prompt=prompt.prompt, family=args.box_family, min_pixels=prompt.min_pixels,
                              max_pixels=prompt.max_pixels, data_root=root)
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
    if args.backend == "hf":
        gen = load_hf_generator(args.model, args.adapter, prompt, root, settings, dtype=args.dtype,
                                attn_implementation=args.attn_implementation, load_in_4bit=args.load_in_4bit,
                                trust_remote_code=args.trust_remote_code)
    elif args.backend == "vllm":
        extra = {"enforce_eager": True} if args.enforce_eager else {}
        if args.max_model_len:
            extra["max_model_len"] = args.max_model_len
        gen = VLLMGenerator(args.model, prompt, root, settings, adapter=args.adapter, max_lora_rank=args.max_lora_rank,
                            dtype=args.dtype, gpu_memory_utilization=args.gpu_memory_utilization,
                            tensor_parallel_size=args.tensor_parallel_size, trust_remote_code=args.trust_remote_code,
                            **extra)
    else:
        gen = OpenAIGenerator(args.base_url, prompt, root, settings, served_model=args.served_model,
                              api_key=args.api_key, timeout=args.timeout, max_concurrency=args.max_concurrency)
    if task_cfg is not None and task_cfg.family == "qwen2_vl":  # its box markers are special tokens: keep them
        gen.keep_box_tokens = True
    s = generate_predictions(gen, studies, args.out, batch_size=args.batch_size, progress=not args.quiet,
                             task=args.task, task_cfg=task_cfg)
    rate = f"{s['studies_per_s']} studies/s" if s["studies_per_s"] else "nothing to do"
    no_img = f", {s['skipped_no_images']} skipped: no images" if s["skipped_no_images"] else ""
    print(f"generated {s['generated']} studies ({s['skipped_done']} already done{no_img}) with the {args.backend} backend "
          f"in {s['seconds']} s ({rate}); {s['empty_predictions']} empty; prompt from {prompt.source} -> {s['out']}")
    return 0


def _add_generate(sub) -> None:
    p = sub.add_parser("generate", help="generate reports for study records (HF, vLLM or an OpenAI-compatible server)",
                       description="Generate a report per study into a predictions JSONL (study_id, prediction, "
                                   "reference, context). Resumable: studies already in --out are skipped.")
    p.add_argument("--studies", required=True, help="study records (.jsonl/.parquet) from `mllm-cxr prepare`")
    p.add_argument("--data-root", default=None, help="root of the image paths (default: the one `prepare` recorded next to the studies, else their folder)")
    p.add_argument("--split", default="test", help="split to generate for: train, validate, test or all (every split)")
    p.add_argument("--limit", type=int, default=None, help="at most this many studies (the first ones)")
    p.add_argument("--shard", default=None, metavar="I/N",
                   help="only the I-th (0-based) of N contiguous blocks of the studies; one --out per shard, joined "
                        "by `mllm-cxr merge-predictions`")
    p.add_argument("--model", default=None, help="base model (hub id or folder), or a merged export")
    p.add_argument("--adapter", default=None, help="LoRA adapter folder (a recipe's output_dir or an export)")
    p.add_argument("--out", required=True, help="predictions JSONL to write (appended to when resuming)")
    p.add_argument("--overwrite", action="store_true", help="start --out afresh instead of resuming")
    p.add_argument("--backend", choices=("hf", "vllm", "openai"), default="hf")
    p.add_argument("--batch-size", type=int, default=8, help="studies per generate call / per flush")
    t = p.add_argument_group("tasks (mllm_cxr.tasks)")
    t.add_argument("--task", default=None, help="answer one task instead of writing reports: report, grounded_report, "
                   "phrase_grounding, detection, classification, vqa, view (one row per example, with what eval "
                   "scores it by)")
    t.add_argument("--box-family", default="qwen2_5_vl", help="box codec of the model's answers (qwen2_5_vl needs "
                   "--min-pixels/--max-pixels); default qwen2_5_vl")
    g = p.add_argument_group("generation")
    g.add_argument("--max-new-tokens", type=int, default=256)
    g.add_argument("--do-sample", action="store_true", help="sample instead of greedy decoding")
    g.add_argument("--temperature", type=float, default=1.0)
    g.add_argument("--top-p", type=float, default=1.0)
    g.add_argument("--num-return-sequences", type=int, default=1, help="samples per study (with --do-sample)")
    g.add_argument("--repetition-penalty", type=float, default=1.0)
    g.add_argument("--seed", type=int, default=0)
    m = p.add_argument_group("model loading (hf / vllm)")
    m.add_argument("--dtype", default="auto", help="auto | bfloat16 | float16 | float32")
    m.add_argument("--attn-implementation", default=None, help="sdpa | flash_attention_2 | eager (hf)")
    m.add_argument("--load-in-4bit", action="store_true", help="4-bit NF4 base weights (hf)")
    m.add_argument("--trust-remote-code", action="store_true")
    m.add_argument("--max-lora-rank", type=int, default=None, help="vllm: default the adapter's rank, rounded up")
    m.add_argument("--gpu-memory-utilization", type=float, default=0.9, help="vllm")
    m.add_argument("--max-model-len", type=int, default=None, help="vllm")
    m.add_argument("--tensor-parallel-size", type=int, default=1, help="vllm")
    m.add_argument("--enforce-eager", action="store_true", help="vllm: no CUDA graphs")
    o = p.add_argument_group("OpenAI-compatible server (--backend openai)")
    o.add_argument("--base-url", default=None, help="server root, e.g. http://127.0.0.1:8000")
    o.add_argument("--served-model", default=None, help="model name on the server (a --lora-modules NAME)")
    o.add_argument("--api-key", default=None, help="bearer token (default: $OPENAI_API_KEY)")
    o.add_argument("--max-concurrency", type=int, default=8, help="requests in flight")
    o.add_argument("--timeout", type=float, default=600.0, help="seconds per request")
    _add_prompt_flags(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_generate)


# ------------------------------------------------------------------------------------------------
# export
# ------------------------------------------------------------------------------------------------
def run_export(args: argparse.Namespace) -> int:
    from mllm_cxr.infer.export import export

    check_number_args(args)
    if args.merge and args.allow_vision_lora:
        raise ConfigError("--merge and --allow-vision-lora conflict: --allow-vision-lora keeps vision-tower LoRA in "
                          "an adapter export (vLLM drops it); --merge folds every LoRA weight into the checkpoint. "
                          "Drop one of them")
    s = export(args.base, args.adapter, args.out, merge=args.merge, allow_vision_lora=args.allow_vision_lora,
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


def _add_export(sub) -> None:
    p = sub.add_parser("export", help="export an adapter vLLM can load (or a merged checkpoint), with a model card",
                       description="Write a vLLM-loadable adapter (or, with --merge, a merged checkpoint), the "
                                   "processor, chat template, generation config and a model card; optionally "
                                   "verify the export against the in-memory model.")
    p.add_argument("--base", required=True, help="the base model the adapter was trained on (hub id or folder)")
    p.add_argument("--adapter", required=True, help="adapter folder (a recipe's output_dir or a checkpoint)")
    p.add_argument("--out", required=True, help="output folder (must be empty or absent)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    p.add_argument("--merge", action="store_true", help="write a merged full checkpoint instead of an adapter")
    p.add_argument("--allow-vision-lora", action="store_true",
                   help="keep LoRA on the vision tower (vLLM drops it: the served model then differs)")
    p.add_argument("--verify-studies", default=None, help="study records: compare reloaded export vs in-memory model")
    p.add_argument("--data-root", default=None, help="root of the image paths (default: the one `prepare` recorded next to the studies, else their folder)")
    p.add_argument("--split", default="test", help="split of --verify-studies: train, validate, test or all (every split)")
    p.add_argument("--verify-n", type=int, default=4, help="studies to verify on")
    p.add_argument("--verify-backend", choices=("hf", "vllm"), default="hf",
                   help="vllm: also compare vLLM's greedy reports for the export with the in-memory model's")
    p.add_argument("--verify-max-new-tokens", type=int, default=32)
    p.add_argument("--merge-atol", type=float, default=None,
                   help="merged export: largest next-token logit difference accepted (default: 1e-4 of the largest "
                        "logit in float32, 5%% in bfloat16/float16)")
    p.add_argument("--metrics", default=None, help="metrics.json (or its folder) from `mllm-cxr eval` for the card")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--max-new-tokens", type=int, default=512, help="max_new_tokens in generation_config.json")
    p.add_argument("--name", default=None, help="title of the model card (default: the --out folder name)")
    p.set_defaults(func=run_export)


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


def run_serve(args: argparse.Namespace) -> int:
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


def _add_serve(sub) -> None:
    p = sub.add_parser("serve", help="serve over an OpenAI-compatible API: `vllm serve` with the adapter, or transformers",
                       description="Start `vllm serve BASE --enable-lora --lora-modules NAME=DIR ...` with the "
                                   "adapter's rank, image limit and pixel budget (printed first), or a small "
                                   "transformers server (--backend hf).")
    p.add_argument("--model", required=True, help="base model (hub id or folder), or a merged export")
    p.add_argument("--adapter", action="append", default=None, metavar="[NAME=]DIR",
                   help="LoRA adapter to serve (repeatable); NAME defaults to the folder name")
    p.add_argument("--backend", choices=("vllm", "hf"), default="vllm")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--served-model-name", default=None, help="name of the base model (vllm) / the model (hf)")
    p.add_argument("--max-lora-rank", type=int, default=None, help="default: the adapters' rank, rounded up")
    p.add_argument("--max-images", type=int, default=None, help="images per request (default: the prompt's max_images)")
    p.add_argument("--min-pixels", type=int, default=None)
    p.add_argument("--max-pixels", type=int, default=None)
    p.add_argument("--dtype", default=None)
    p.add_argument("--max-model-len", type=int, default=None)
    p.add_argument("--gpu-memory-utilization", type=float, default=None)
    p.add_argument("--tensor-parallel-size", type=int, default=None)
    p.add_argument("--vllm-args", default=None, help="more `vllm serve` arguments, one quoted string")
    p.add_argument("--dry-run", action="store_true", help="print the command and exit")
    p.set_defaults(func=run_serve)


# ------------------------------------------------------------------------------------------------
# tiny
# ------------------------------------------------------------------------------------------------
def run_tiny(args: argparse.Namespace) -> int:
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
def run_merge_predictions(args: argparse.Namespace) -> int:
    from mllm_cxr.infer.shard import merge_predictions

    s = merge_predictions(args.shards, args.out, overwrite=args.overwrite)
    extra = f" ({s['not_in_studies']} no longer in the studies file)" if s["not_in_studies"] else ""
    print(f"merged {s['shards']} shards: {s['rows']} studies{extra} -> {s['out']}")
    return 0


def _add_merge_predictions(sub) -> None:
    p = sub.add_parser("merge-predictions", help="join `generate --shard i/n` outputs into one predictions file",
                       description="Join the predictions files of `mllm-cxr generate --shard i/n` (and their "
                                   ".meta.json side files) into the file the unsharded run would have written. "
                                   "Refuses shards of different runs, a missing shard, a study in two shards, and "
                                   "names the studies in no shard.")
    p.add_argument("shards", nargs="+", help="the shard predictions files (any order)")
    p.add_argument("--out", required=True, help="merged predictions JSONL (its .meta.json is written beside it)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.set_defaults(func=run_merge_predictions)


def register(subparsers) -> None:
    """Add ``generate``, ``merge-predictions``, ``export``, ``serve`` and ``tiny``."""
    _add_generate(subparsers)
    _add_merge_predictions(subparsers)
    _add_export(subparsers)
    _add_serve(subparsers)
    p = subparsers.add_parser("tiny", help="build the tiny random Qwen2.5-VL used by tests and the demo")
    p.add_argument("out_dir")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty OUT_DIR")
    p.set_defaults(func=run_tiny)
