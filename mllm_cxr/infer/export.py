"""Export a trained LoRA adapter so that vLLM serves it, or merge it into a full checkpoint.

    mllm-cxr export --base Qwen/Qwen2.5-VL-3B-Instruct --adapter runs/grpo --out exports/cxr \\
        [--merge] [--allow-vision-lora] [--verify-studies studies.jsonl] [--metrics eval/metrics.json]

What vLLM loads for Qwen2-VL / Qwen2.5-VL (``vllm/model_executor/models/qwen2_5_vl.py``): LoRA on the
language model's ``q_proj k_proj v_proj`` (packed into ``qkv_proj``), ``o_proj``, ``gate_proj
up_proj`` (packed into ``gate_up_proj``) and ``down_proj``; ranks up to ``--max-lora-rank``, whose
choices are 1, 8, 16, 32, 64, 128, 256, 320, 512 (``vllm/config/lora.py``); no ``modules_to_save``
and no DoRA (``vllm/lora/peft_helper.py``). LoRA on the vision tower or the projector ("merger") is
not applied by vLLM's default engine: depending on the version it is ignored with a warning or the
adapter is refused, and only recent versions apply it behind ``--enable-tower-connector-lora``.

So the adapter export

* refuses ``modules_to_save``, DoRA, trained biases, per-module rank/alpha patterns, ranks above 512
  and LoRA on modules other than the seven language-model projections (``ExportError``, naming what
  and where); with ``--merge`` all of these are fine, since a merged checkpoint has no LoRA left;
* refuses vision-tower/projector LoRA keys unless ``--allow-vision-lora`` (then it warns that vLLM
  drops them, so the served model differs from the trained one);
* writes ``adapter_config.json`` (``target_modules`` restricted to the exported language-model
  modules, ``base_model_name_or_path`` = ``--base``) and ``adapter_model.safetensors``;
* writes the processor (tokenizer, image processor with the trained pixel budget, chat template),
  ``generation_config.json``, the run config (``mllm_cxr_config.json``: prompt settings for
  ``mllm-cxr generate``) and a model card ``README.md`` with the evaluation table when ``--metrics``
  names a ``metrics.json`` from ``mllm-cxr eval``.

``--merge`` writes a merged full checkpoint (safetensors) with the same extra files instead.

Verification (``--verify-studies``): greedy reports and next-token logits of the in-memory model
(base + the source adapter) on a few studies are compared with those of the export reloaded from
disk (PEFT for an adapter, plain ``from_pretrained`` for a merged checkpoint). An adapter must give
identical reports; a merged checkpoint next-token logits within ``merge_atol`` (default: 1e-4 of the
largest logit in float32, 5% in bfloat16/float16, where merging rounds ``W + BA`` to the model dtype).
``--verify-backend vllm`` also loads the export into vLLM itself (``LLM`` + ``LoRARequest``, or the
merged checkpoint) and compares its greedy reports with the in-memory model's: all must be identical
(in bfloat16/float16, where vLLM's kernels round differently, at least 3 in 4).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cxr_io import atomic_dir, check_disjoint, check_safetensors
from data_prep.schema import resolve_data_root
from mllm_cxr.data import load_split
from mllm_cxr.errors import ExportError
from mllm_cxr.infer.generate import GenerationSettings, HFGenerator, VLLMGenerator
from mllm_cxr.infer.loader import inference_processor, load_for_inference, study_inputs
from mllm_cxr.run_config import copy_run_config, resolve_prompt
from mllm_cxr.vllm_support import (
    VLLM_LORA_MODULES,
    VLLM_MAX_LORA_RANKS,
    adapter_rank,
    build_vllm_command,
    command_line,
    import_vllm,
    read_adapter_config,
    vllm_config_problems,
    vllm_max_lora_rank,
)

log = logging.getLogger(__name__)

_LORA_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+?)\.(?P<part>lora_A|lora_B|lora_embedding_A|"
                       r"lora_embedding_B|lora_magnitude_vector)(?:\.[^.]+)*$")


def read_adapter_weights(adapter_dir: str | Path) -> dict[str, Any]:
    """The adapter's tensors (``adapter_model.safetensors``, else ``adapter_model.bin``)."""
    d = Path(adapter_dir)
    st, binf = d / "adapter_model.safetensors", d / "adapter_model.bin"
    if st.is_file():
        from safetensors.torch import load_file

        check_safetensors(st, role="adapter weights")
        return load_file(str(st))
    if binf.is_file():
        import torch

        return torch.load(str(binf), map_location="cpu", weights_only=True)
    raise FileNotFoundError(f"no adapter_model.safetensors (or .bin) in {d}")


@dataclass
class AdapterReport:
    """What an adapter holds, sorted by what vLLM does with it."""

    path: str
    rank: int
    alpha: float
    n_tensors: int
    language: list[str] = field(default_factory=list)      # LoRA modules vLLM applies
    vision: list[str] = field(default_factory=list)        # LoRA on the vision tower / projector
    other_lora: list[str] = field(default_factory=list)    # LoRA elsewhere (lm_head, embed_tokens...)
    full_weights: list[str] = field(default_factory=list)  # non-LoRA tensors (modules_to_save, biases)
    config_problems: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (f"rank {self.rank}, alpha {self.alpha:g}, {self.n_tensors} tensors: {len(self.language)} "
                f"language-model modules, {len(self.vision)} vision modules, {len(self.other_lora)} other "
                f"LoRA modules, {len(self.full_weights)} full tensors")


def _module_of(key: str) -> tuple[str | None, str]:
    m = _LORA_KEY.match(key)
    if m is None:
        return None, key[len("base_model.model."):] if key.startswith("base_model.model.") else key
    return m.group("module"), m.group("part")


def inspect_adapter(adapter_dir: str | Path, tensors: dict[str, Any] | None = None) -> AdapterReport:
    """Classify an adapter's modules (language / vision / other LoRA / full tensors) and config."""
    cfg = read_adapter_config(adapter_dir)
    tensors = read_adapter_weights(adapter_dir) if tensors is None else tensors
    rep = AdapterReport(path=str(adapter_dir), rank=adapter_rank(adapter_dir),
                        alpha=float(cfg.get("lora_alpha") or 0), n_tensors=len(tensors))
    rep.config_problems.extend(vllm_config_problems(cfg))
    seen: dict[str, set[str]] = {"language": set(), "vision": set(), "other": set(), "full": set()}
    for key in tensors:
        module, part = _module_of(key)
        if module is None:
            seen["full"].add(part)
        elif "visual" in module.split("."):
            seen["vision"].add(module)
        elif module.split(".")[-1] in VLLM_LORA_MODULES and part in ("lora_A", "lora_B"):
            seen["language"].add(module)
        else:
            seen["other"].add(module)
    rep.language, rep.vision = sorted(seen["language"]), sorted(seen["vision"])
    rep.other_lora, rep.full_weights = sorted(seen["other"]), sorted(seen["full"])
    return rep


def check_vllm_compatible(rep: AdapterReport, *, allow_vision_lora: bool = False) -> list[str]:
    """Raise :class:`ExportError` for what vLLM cannot load; return warnings for what it drops."""
    problems = list(rep.config_problems)
    if rep.full_weights:
        problems.append(f"{len(rep.full_weights)} full (non-LoRA) tensors such as {rep.full_weights[0]!r}")
    if rep.other_lora:
        problems.append(f"LoRA on modules vLLM does not adapt for Qwen2/2.5-VL, such as {rep.other_lora[0]!r} "
                        f"(supported: the language model's {', '.join(VLLM_LORA_MODULES)})")
    if rep.rank > VLLM_MAX_LORA_RANKS[-1]:
        problems.append(f"rank {rep.rank} above vLLM's largest --max-lora-rank {VLLM_MAX_LORA_RANKS[-1]}")
    if problems:
        raise ExportError(f"adapter {rep.path} cannot be served by vLLM as an adapter: " + "; ".join(problems)
                          + ". Use --merge to write a merged checkpoint instead")
    if not rep.language and not rep.vision:
        raise ExportError(f"adapter {rep.path}: no LoRA weights found ({rep.n_tensors} tensors)")
    warnings = []
    if rep.vision:
        if not allow_vision_lora:
            raise ExportError(f"adapter {rep.path} has LoRA on {len(rep.vision)} vision-tower/projector modules "
                              f"(e.g. {rep.vision[0]!r}); vLLM applies LoRA to the language model only. Retrain "
                              "with lora_on_vision false, export with --merge, or pass --allow-vision-lora to "
                              "keep them anyway")
        warnings.append(f"keeping LoRA on {len(rep.vision)} vision modules: vLLM drops them (or, in some "
                        "versions, refuses the adapter); the served model then differs from the trained one. "
                        "Recent vLLM versions apply them with --enable-tower-connector-lora")
    return warnings


def _language_target_regex(modules: Sequence[str]) -> str:
    names = sorted({m.split(".")[-1] for m in modules})
    return rf"^(?!.*visual).*\.({'|'.join(names)})$"


def write_adapter(rep: AdapterReport, tensors: dict[str, Any], out: Path, base: str, *,
                  keep_vision: bool) -> dict[str, Any]:
    """``adapter_config.json`` + ``adapter_model.safetensors`` in ``out`` (vision keys kept only if asked)."""
    from safetensors.torch import save_file

    cfg = read_adapter_config(rep.path)
    kept = {}
    for k, t in tensors.items():
        module, _ = _module_of(k)
        if module is not None and "visual" in module.split(".") and not keep_vision:
            continue
        kept[k] = t.detach().to("cpu").contiguous()
    cfg["base_model_name_or_path"] = str(base)
    cfg["inference_mode"] = True
    if not keep_vision:
        cfg["target_modules"] = _language_target_regex(rep.language)
    out.mkdir(parents=True, exist_ok=True)
    save_file(kept, str(out / "adapter_model.safetensors"), metadata={"format": "pt"})
    (out / "adapter_config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    return cfg


# ------------------------------------------------------------------------------------------------
# Loading, generating, verifying
# ------------------------------------------------------------------------------------------------
def _outputs(model, processor, prompt, studies, data_root, max_new_tokens: int) -> tuple[list[str], Any, Any]:
    """Greedy reports, next-token logits (float32, CPU) for ``studies`` and the dtype the model ran in (with
    ``dtype: auto``, the checkpoint's)."""
    import torch

    gen = HFGenerator(model, processor, prompt.prompt, data_root, GenerationSettings(max_new_tokens=max_new_tokens))
    texts = [t[0] for t in gen.generate(studies)]
    inputs = study_inputs(processor, studies, prompt.prompt, data_root, model.device)
    with torch.no_grad():
        logits = model(**inputs).logits[:, -1, :].float().cpu()
    return texts, logits, model.dtype


@dataclass
class Verification:
    """Export vs in-memory model on the same studies."""

    kind: str
    n: int
    identical: int
    max_abs_logit_diff: float
    atol: float
    ok: bool
    examples: list[dict[str, str]] = field(default_factory=list)
    logits: bool = True  # whether next-token logits were compared (not for vLLM)

    def line(self) -> str:
        logit = (f", max |logit difference| {self.max_abs_logit_diff:.2e} (tolerance {self.atol:g})"
                 if self.logits else "")
        return (f"verification ({self.kind}): {self.identical}/{self.n} greedy reports identical{logit}: "
                f"{'OK' if self.ok else 'FAILED'}")


def _compare(kind: str, before, after, atol: float, require_identical: bool) -> Verification:
    (t0, l0, _), (t1, l1, _) = before, after
    same = sum(a == b for a, b in zip(t0, t1))
    diff = float((l0 - l1).abs().max()) if l0.numel() else 0.0
    ok = diff <= atol and (same == len(t0) or not require_identical)
    ex = [{"before_len": str(len(a)), "after_len": str(len(b))} for a, b in zip(t0, t1) if a != b][:3]
    return Verification(kind, len(t0), same, diff, atol, ok, ex)


def _write_generation_config(base: str, out: Path, max_new_tokens: int) -> None:
    from transformers import GenerationConfig

    try:
        gc = GenerationConfig.from_pretrained(base)
    except OSError:
        from transformers import AutoConfig

        gc = GenerationConfig.from_model_config(AutoConfig.from_pretrained(base))
    gc.do_sample = False
    for k in ("temperature", "top_p", "top_k"):  # sampling fields would warn with do_sample False
        if hasattr(gc, k):
            setattr(gc, k, None)
    gc.max_new_tokens = max_new_tokens
    gc.save_pretrained(out)


# ------------------------------------------------------------------------------------------------
# export: check -> inspect -> load, then, in a temporary folder that becomes --out only on success,
# write -> verify (hf, then vllm) -> card
# ------------------------------------------------------------------------------------------------
@dataclass
class ExportJob:
    """What the steps of :func:`export` share: the request, then what each step finds for the next."""

    base: str
    adapter: str | Path
    out: Path
    merge: bool = False
    allow_vision_lora: bool = False
    verify_studies: str | Path | None = None
    data_root: str | Path | None = None
    split: str | None = "test"
    n_verify: int = 4
    metrics: str | Path | None = None
    dtype: str = "auto"
    max_new_tokens: int = 64
    verify_max_new_tokens: int = 32
    merge_atol: float | None = None
    name: str | None = None
    overwrite: bool = False
    verify_backend: str = "hf"
    # found by the steps
    tensors: dict[str, Any] = field(default_factory=dict)  # the adapter's, until written
    report: AdapterReport | None = None
    warnings: list[str] = field(default_factory=list)
    prompt: Any = None  # the run's ResolvedPrompt
    studies: list[Any] = field(default_factory=list)
    root: Path | None = None
    before: tuple[list[str], Any, Any] | None = None  # the in-memory model's outputs on ``studies``
    merged_model: Any = None
    adapter_cfg: dict[str, Any] | None = None
    verification: Verification | None = None
    vllm_verification: Verification | None = None

    @property
    def src(self) -> Path:
        return Path(self.adapter)

    @property
    def inputs(self) -> list[str | Path | None]:
        """Everything the export reads: --out must stay clear of all of them."""
        return [self.base, self.adapter, self.verify_studies, self.metrics, self.data_root]


def export(base: str, adapter: str | Path, out: str | Path, *, merge: bool = False,
           allow_vision_lora: bool = False, verify_studies: str | Path | None = None,
           data_root: str | Path | None = None, split: str | None = "test", n_verify: int = 4,
           metrics: str | Path | None = None, dtype: str = "auto", max_new_tokens: int = 64,
           verify_max_new_tokens: int = 32, merge_atol: float | None = None, name: str | None = None,
           overwrite: bool = False, verify_backend: str = "hf") -> dict[str, Any]:
    """Export ``adapter`` (trained on ``base``) into ``out``; see the module docstring. Returns a summary.

    Raises :class:`ExportError` for an adapter vLLM cannot load (unless ``merge``), an ``out`` that
    exists and is not empty (unless ``overwrite``), and a failed verification.
    """
    job = ExportJob(base=base, adapter=adapter, out=Path(out), merge=merge, allow_vision_lora=allow_vision_lora,
                    verify_studies=verify_studies, data_root=data_root, split=split, n_verify=n_verify,
                    metrics=metrics, dtype=dtype, max_new_tokens=max_new_tokens,
                    verify_max_new_tokens=verify_max_new_tokens, merge_atol=merge_atol, name=name,
                    overwrite=overwrite, verify_backend=verify_backend)
    _check_request(job)
    _inspect(job)
    _load(job)
    # everything checked: the files go to a temporary folder beside --out, which becomes --out only when the
    # export (and its verification) succeeded; a failure removes it, so nothing partial blocks the rerun
    with atomic_dir(job.out, overwrite=job.overwrite, inputs=job.inputs) as dst:
        _write_weights(job, dst)
        _write_companions(job, dst)
        _verify_export(job, dst)
        _write_card(job, dst)
        summary = _summary(job, dst)
        _raise_if_unverified(job)
    return summary


def _check_request(job: ExportJob) -> None:
    """Refuse a bad request before any work: the backend, --out against the adapter and the other inputs, an
    --out in the way (unless --overwrite), a folder that is not an adapter."""
    src, dst = job.src, job.out
    if job.verify_backend not in ("hf", "vllm"):
        raise ExportError(f"--verify-backend must be hf or vllm, got {job.verify_backend!r}")
    if job.verify_backend == "vllm":
        if not job.verify_studies:
            raise ExportError("--verify-backend vllm needs --verify-studies (the studies to compare on)")
        import_vllm()  # ImportError with the install hint before any work
    if dst.resolve() == src.resolve() or src.resolve().is_relative_to(dst.resolve()):
        raise ExportError(f"--out {dst} is (or contains) the adapter folder {src}")
    if dst.exists() and not dst.is_dir():
        raise ExportError(f"--out {dst} is an existing file; give a folder path")
    if dst.exists() and any(dst.iterdir()) and not job.overwrite:
        raise ExportError(f"output folder {dst} exists and is not empty (pass --overwrite to replace it)")
    read_adapter_config(src)  # first: "not an adapter folder" before "no weights"
    # the one output rule: --out is not, does not hold, and does not lie inside any input (a merged export
    # with --overwrite over --base would replace the base model it reads)
    check_disjoint(dst, job.inputs, flag="--out", folder=True)


def _inspect(job: ExportJob) -> None:
    """The adapter's tensors and report; for an adapter export, what vLLM refuses (raised) or drops (warned)."""
    job.tensors = read_adapter_weights(job.src)
    job.report = inspect_adapter(job.src, job.tensors)
    if not job.merge:
        job.warnings = check_vllm_compatible(job.report, allow_vision_lora=job.allow_vision_lora)
    for w in job.warnings:
        log.warning("%s", w)
    job.prompt = resolve_prompt(job.src, None)


def _load(job: ExportJob) -> None:
    """The verification studies; the in-memory model (base + adapter) when verifying or merging: its outputs
    on the studies (``before``) and, with --merge, the merged model (on the CPU)."""
    if job.verify_studies:
        job.studies = load_split(job.verify_studies, job.split, job.n_verify)
        job.root = resolve_data_root(job.verify_studies, job.data_root)
    if not (job.verify_studies or job.merge):
        return
    import torch

    prompt = job.prompt
    model, processor = load_for_inference(job.base, job.src, dtype=job.dtype, min_pixels=prompt.min_pixels,
                                          max_pixels=prompt.max_pixels, place=bool(job.studies))  # merging: CPU
    if job.studies:
        job.before = _outputs(model, processor, prompt, job.studies, job.root, job.verify_max_new_tokens)
    if job.merge:
        job.merged_model = model.merge_and_unload().to("cpu")
    del model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _write_weights(job: ExportJob, dst: Path) -> None:
    """The merged checkpoint, or the adapter (``adapter_config.json`` + ``adapter_model.safetensors``)."""
    if job.merge:
        job.merged_model.save_pretrained(dst, safe_serialization=True)
        job.merged_model = None
    else:
        job.adapter_cfg = write_adapter(job.report, job.tensors, dst, job.base, keep_vision=job.allow_vision_lora)
    job.tensors = {}


def _write_companions(job: ExportJob, dst: Path) -> None:
    """What serving and ``mllm-cxr generate`` need beside the weights: the processor (chat template, pixel
    budget), ``generation_config.json`` and the run config."""
    prompt = job.prompt
    processor = inference_processor(job.base, min_pixels=prompt.min_pixels, max_pixels=prompt.max_pixels)
    processor.save_pretrained(dst)
    if not getattr(processor, "chat_template", None):
        job.warnings.append("the processor has no chat template: servers will need --chat-template")
    _write_generation_config(job.base, dst, job.max_new_tokens)
    export_info = {"base": str(job.base), "adapter": str(job.src), "merged": job.merge, "rank": job.report.rank,
                   "vision_lora_kept": bool(job.allow_vision_lora and job.report.vision)}
    copy_run_config(job.src, dst, export_info)


def _verify_export(job: ExportJob, dst: Path) -> None:
    """With --verify-studies: the export reloaded (hf), then, if that passed and asked, served by vLLM."""
    if job.before is None:
        return
    job.verification = _verify_hf(job, dst)
    log.info("%s", job.verification.line())
    if job.verification.ok and job.verify_backend == "vllm":
        job.vllm_verification = _verify_vllm(job, dst)
        log.info("%s", job.vllm_verification.line())


def _verify_hf(job: ExportJob, dst: Path) -> Verification:
    """The export as users load it (a merged checkpoint alone, an adapter on the base; the exported processor)
    against the in-memory model."""
    import torch

    prompt, before = job.prompt, job.before
    model, processor = load_for_inference(dst if job.merge else job.base, None if job.merge else dst,
                                          dtype=job.dtype, min_pixels=prompt.min_pixels,
                                          max_pixels=prompt.max_pixels, processor_from=dst)
    after = _outputs(model, processor, prompt, job.studies, job.root, job.verify_max_new_tokens)
    del model
    if job.merge:
        # merging rounds W + BA to the model dtype: relative to the logit scale, 1e-4 in float32, 5% in
        # bfloat16/float16 (half precision keeps 8-11 mantissa bits)
        scale = max(1.0, float(before[1].abs().max()))
        atol = job.merge_atol if job.merge_atol is not None else \
            (1e-4 if before[2] == torch.float32 else 0.05) * scale
        return _compare("merged checkpoint", before, after, atol, require_identical=False)
    return _compare("adapter via PEFT", before, after, job.merge_atol if job.merge_atol is not None else 1e-5,
                    require_identical=True)


def _verify_vllm(job: ExportJob, dst: Path) -> Verification:
    """Greedy reports of vLLM serving the export (as ``vllm serve`` would) vs the in-memory model's."""
    import torch

    prompt, before = job.prompt, job.before
    processor = inference_processor(dst, min_pixels=prompt.min_pixels, max_pixels=prompt.max_pixels)  # exported
    gen = VLLMGenerator(str(dst) if job.merge else job.base, prompt, job.root,
                        GenerationSettings(max_new_tokens=job.verify_max_new_tokens),
                        adapter=None if job.merge else str(dst), dtype=job.dtype, processor=processor,
                        enforce_eager=True, max_model_len=4096)
    texts = [t[0] for t in gen.generate(job.studies)]
    del gen
    same = sum(a == b for a, b in zip(before[0], texts))
    half = before[2] in (torch.bfloat16, torch.float16)  # the dtype the in-memory model ran in
    ok = same == len(texts) or (half and same * 4 >= 3 * len(texts))
    ex = [{"before_len": str(len(a)), "after_len": str(len(b))} for a, b in zip(before[0], texts) if a != b][:3]
    return Verification("vLLM greedy vs in-memory model", len(texts), same, 0.0, 0.0, ok, ex, logits=False)


def _write_card(job: ExportJob, dst: Path) -> None:
    """``README.md``, showing --out's path (not the temporary folder's) and the --metrics table."""
    metrics_data = _read_metrics(job.metrics) if job.metrics else None
    write_model_card(dst, base=str(job.base), adapter=str(job.src), report=job.report, merged=job.merge,
                     prompt=job.prompt, adapter_cfg=job.adapter_cfg, metrics=metrics_data,
                     verification=job.verification, warnings=job.warnings, name=job.name or job.out.name,
                     shown=job.out, vllm_verification=job.vllm_verification)


def _summary(job: ExportJob, dst: Path) -> dict[str, Any]:
    v, vv = job.verification, job.vllm_verification
    return {"out": str(job.out), "merged": job.merge, "adapter": dataclasses.asdict(job.report),
            "warnings": job.warnings, "verification": dataclasses.asdict(v) if v else None,
            "vllm_verification": dataclasses.asdict(vv) if vv else None,
            "files": sorted(p.name for p in dst.iterdir())}


def _raise_if_unverified(job: ExportJob) -> None:
    """A failed verification fails the export (its files, card included, are then removed)."""
    for v in (job.verification, job.vllm_verification):
        if v is not None and not v.ok:
            raise ExportError(f"{job.out}: {v.line()}")


def _read_metrics(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if p.is_dir():
        p = p / "metrics.json"
    if not p.is_file():
        raise FileNotFoundError(f"metrics file not found: {p} (write one with `mllm-cxr eval`)")
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise ExportError(f"{p}: not valid JSON ({e.msg})") from None


def write_model_card(out: Path, *, base: str, adapter: str, report: AdapterReport, merged: bool, prompt,
                     adapter_cfg: dict[str, Any] | None, metrics: dict[str, Any] | None,
                     verification: Verification | None, warnings: list[str], name: str,
                     shown: Path | None = None, vllm_verification: Verification | None = None) -> Path:
    """``README.md``: what the export is, how to serve and load it, and the evaluation table."""
    from huggingface_hub import ModelCard, ModelCardData

    where = shown or out  # the path users will see (the export is written in a temporary folder first)
    data = ModelCardData(base_model=base, library_name="transformers" if merged else "peft",
                         pipeline_tag="image-text-to-text",
                         tags=["radiology", "chest-x-ray", "report-generation", "mllm-cxr"])
    lines = ["---", data.to_yaml(), "---", "", f"# {name}", ""]
    what = "a merged checkpoint" if merged else "a LoRA adapter"
    lines += [f"Chest X-ray report generation: {what} for `{base}`, exported by `mllm-cxr export` from "
              f"`{adapter}` ({report.summary()}).", "",
              "Research use only: not a medical device, not validated for clinical decisions.", ""]
    p = prompt.prompt
    lines += ["## Prompt", "",
              f"Sections written: {', '.join(s.upper() for s in p.sections)}; context given: "
              f"{', '.join(p.context) or 'none'}; prior report: {'yes' if p.include_prior_report else 'no'}; "
              f"prior images: {'yes' if p.include_prior_images else 'no'}; at most {p.max_images} image(s), "
              f"frontal first. Pixel budget: {prompt.min_pixels or 'processor default'} to "
              f"{prompt.max_pixels or 'processor default'} pixels per image.",
              "The prompt text comes from `mllm_cxr.prompts.build_messages` and is rendered by the chat template "
              "saved here; `mllm_cxr_config.json` holds these settings for `mllm-cxr generate`.", ""]
    lines += ["## Use", "", "```bash"]
    if merged:
        cmd = build_vllm_command(str(where), None, max_images=p.max_images, min_pixels=prompt.min_pixels,
                                 max_pixels=prompt.max_pixels)
        lines += [command_line(cmd),
                  f"mllm-cxr generate --backend hf --model {where} --studies studies.jsonl --out pred.jsonl"]
    else:
        cmd = build_vllm_command(base, {"cxr": str(where)}, max_images=p.max_images, min_pixels=prompt.min_pixels,
                                 max_pixels=prompt.max_pixels, max_lora_rank=vllm_max_lora_rank(report.rank))
        lines += [command_line(cmd),
                  "mllm-cxr generate --backend openai --base-url http://127.0.0.1:8000 --served-model cxr "
                  f"--adapter {where} --studies studies.jsonl --out pred.jsonl",
                  f"mllm-cxr generate --backend hf --model {base} --adapter {where} --studies studies.jsonl "
                  "--out pred.jsonl"]
    lines += ["```", ""]
    if not merged and adapter_cfg is not None:
        lines += ["## Adapter", "", f"- rank {report.rank}, alpha {report.alpha:g}, dropout "
                  f"{adapter_cfg.get('lora_dropout', 0)}, rsLoRA {bool(adapter_cfg.get('use_rslora'))}",
                  f"- {len(report.language)} language-model modules "
                  f"({', '.join(sorted({m.split('.')[-1] for m in report.language}))})",
                  f"- vision-tower LoRA: {'kept (vLLM drops it)' if report.vision else 'none'}", ""]
    if warnings:
        lines += ["## Warnings", ""] + [f"- {w}" for w in warnings] + [""]
    if verification is not None:
        lines += ["## Verification", "", verification.line(), ""]
        if vllm_verification is not None:
            lines += [vllm_verification.line(), ""]
    lines += ["## Evaluation", ""]
    if metrics:
        from evaluation.tables import metrics_table

        lines += [metrics_table(metrics), ""]
    else:
        lines += ["Not evaluated at export time (pass `--metrics DIR/metrics.json` from `mllm-cxr eval`).", ""]
    path = out / "README.md"
    ModelCard("\n".join(lines)).save(path)
    return path
