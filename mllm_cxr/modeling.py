"""Load Qwen2.5-VL / Qwen2-VL (any image-text-to-text model) with LoRA or QLoRA, by hub id or local path.

Defaults follow what vLLM can serve: LoRA on the language model only (vLLM ignores LoRA on the vision
tower), vision tower and projector frozen. QLoRA = 4-bit NF4 base weights (bitsandbytes) + LoRA.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path

from trl import ModelConfig

log = logging.getLogger(__name__)

#: The language-model projections LoRA targets by default (Qwen2/2.5-VL names).
DEFAULT_LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
#: Module-name fragments of the vision tower and of the vision->text projector ("merger").
VISION_PATTERNS = ("visual.",)
PROJECTOR_PATTERNS = ("visual.merger",)


@dataclass
class ModelArguments(ModelConfig):
    """How to load the model: :class:`trl.ModelConfig` (model, dtype, attention, LoRA, 4/8-bit keys) with
    defaults for a vLLM-servable LoRA, plus our keys. Every field is a YAML key and a ``--flag``.

    Our defaults: LoRA on (``use_peft``), the language-model projections as targets (never the vision
    tower unless ``lora_on_vision``), nested 4-bit quantisation, ``dtype: hardware``.
    ``trust_remote_code`` is not here: it is the trainer config's field (off by default) and is passed on.
    """

    model_name_or_path: str = field(default="Qwen/Qwen2.5-VL-3B-Instruct",
                                    metadata={"help": "hub id or local path of the base model"})
    dtype: str = field(default="hardware", metadata={
        "help": "hardware (bfloat16 on a bf16 GPU, float16 on other GPUs, float32 on CPU) | auto (the "
                "checkpoint's dtype, as transformers) | bfloat16 | float16 | float32"})
    use_peft: bool = field(default=True, metadata={"help": "LoRA (True) or full fine-tuning (False)"})
    lora_target_modules: list[str] | None = field(
        default_factory=lambda: list(DEFAULT_LORA_TARGETS),
        metadata={"help": "module names LoRA targets, in the language model only unless lora_on_vision"})
    use_bnb_nested_quant: bool = field(default=True, metadata={"help": "QLoRA: nested (double) quantisation"})
    adapter_path: str | None = field(default=None, metadata={"help": "start from this LoRA adapter (e.g. SFT)"})
    min_pixels: int | None = field(default=None, metadata={"help": "image processor pixel budget (min)"})
    max_pixels: int | None = field(default=None, metadata={"help": "image processor pixel budget (max)"})
    lora_on_vision: bool = field(default=False, metadata={"help": "also LoRA the vision tower (vLLM drops it)"})
    freeze_vision: bool = field(default=True, metadata={"help": "freeze the vision tower (full fine-tuning)"})
    freeze_projector: bool = field(default=True, metadata={"help": "freeze the vision->text projector"})

    def __post_init__(self) -> None:
        super().__post_init__()
        from data_prep.images import check_pixel_budget

        check_pixel_budget(self.min_pixels, self.max_pixels, where="model config")
        if self.load_in_4bit and not self.use_peft:
            from mllm_cxr.config import ConfigError

            raise ConfigError("load_in_4bit: true needs use_peft: true (QLoRA trains LoRA adapters on frozen 4-bit "
                              "weights; 4-bit weights cannot be fully fine-tuned): set use_peft: true or "
                              "load_in_4bit: false")
        if self.load_in_4bit and self.use_peft and not self.freeze_projector:
            from mllm_cxr.config import ConfigError

            raise ConfigError("load_in_4bit with freeze_projector: false is not supported: TRL casts the "
                              "trainable projector copy to bfloat16 under QLoRA; keep freeze_projector: true")

    def target_module_names(self) -> list[str]:
        t = self.lora_target_modules or DEFAULT_LORA_TARGETS
        return [t] if isinstance(t, str) else list(t)  # ModelConfig turns a one-item list into a string


#: Library deprecation warnings that fire on every training or generation step (TRL toggles gradient
#: checkpointing around each rollout): shown once per process. A ``once`` filter cannot do it: every
#: ``warnings.catch_warnings()`` block (the trainer has many) clears Python's once-registry.
REPEATING_WARNINGS = (
    r"`is_gradient_checkpointing` is deprecated",
    r"`gradient_checkpointing_(enable|disable)` is deprecated",
    r"`gradient_checkpointing(_kwargs)?` is deprecated",
    r"Passing `min_pixels` and `max_pixels` to a processor call is deprecated",
)
_SHOWN: set[tuple[str, type]] = set()


def show_repeating_warnings_once() -> None:
    """Wrap ``warnings.showwarning`` so that :data:`REPEATING_WARNINGS` print once per process (idempotent;
    every model entry point calls it). Other warnings are untouched."""
    import re
    import warnings

    if getattr(warnings.showwarning, "_mllm_cxr_once", False):
        return
    inner = warnings.showwarning
    patterns = [re.compile(p) for p in REPEATING_WARNINGS]

    def showwarning(message, category, filename, lineno, file=None, line=None):
        text = str(message)
        if any(p.match(text) for p in patterns):
            if (text, category) in _SHOWN:
                return
            _SHOWN.add((text, category))
        inner(message, category, filename, lineno, file, line)

    showwarning._mllm_cxr_once = True  # type: ignore[attr-defined]
    warnings.showwarning = showwarning


def resolve_dtype(name: str | None):
    """A ``dtype`` key -> what ``from_pretrained(dtype=...)`` takes.

    ``"auto"`` stays ``"auto"`` (transformers: the checkpoint's dtype); ``"hardware"`` (our default)
    is bfloat16 on a GPU that supports it, float16 on other GPUs and float32 on CPU.
    """
    import torch

    if name in (None, "hardware"):
        if torch.cuda.is_available():
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if name == "auto":
        return "auto"
    try:
        return {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16,
                "fp16": torch.float16, "float32": torch.float32, "fp32": torch.float32}[name]
    except KeyError:
        raise ValueError(f"model.dtype: unknown dtype {name!r} (hardware, auto, bfloat16, float16, float32)") from None


def check_model_ref(name: str | Path, *, field: str = "model_name_or_path", processor: bool = False) -> None:
    """A base model given as a local path must be a model folder; a missing one that looks like a path (``./x``,
    ``/x``, ``~/x``, ``a/b/c``, or ``runs/x`` where ``runs/`` exists here) is an error naming it, instead of
    being sent to the hub as a model id."""
    from mllm_cxr.config import ConfigError

    text = str(name)
    p = Path(text).expanduser()
    if p.exists():
        if not p.is_dir():
            raise ConfigError(f"{field}: {text} is a file; give the model folder (with config.json) or a hub id")
        wanted = ("config.json", "preprocessor_config.json", "processor_config.json", "tokenizer_config.json") \
            if processor else ("config.json",)  # an adapter export holds the processor but no model config
        if not any((p / f).is_file() for f in wanted):
            raise ConfigError(f"{field}: {text} has no config.json (not a model folder); give the folder that holds "
                              "the model's config.json and weights")
        return
    parts = text.replace("\\", "/").split("/")
    looks_local = (text.startswith((".", "/", "~")) or len(parts) > 2
                   or (len(parts) == 2 and Path(parts[0]).expanduser().is_dir()))
    if looks_local:
        raise ConfigError(f"{field}: model folder {text} not found (it is a path, not a hub id like "
                          "'Qwen/Qwen2.5-VL-3B-Instruct'); check the path")


def check_adapter_dir(path: str | Path, *, field: str = "adapter_path") -> Path:
    """A LoRA adapter folder: exists, has adapter_config.json and readable adapter weights."""
    from cxr_io import check_safetensors
    from mllm_cxr.config import ConfigError

    p = Path(path)
    if not p.is_dir():
        raise ConfigError(f"{field}: adapter folder {p} not found; check the path (a recipe's output_dir)")
    if not (p / "adapter_config.json").is_file():
        raise ConfigError(f"{field}: no adapter_config.json in {p} (not a LoRA adapter folder)")
    if (p / "adapter_model.safetensors").exists():
        check_safetensors(p / "adapter_model.safetensors", role="adapter weights")
    return p


def load_processor(args: ModelArguments, *, trust_remote_code: bool = False):
    """The model's processor with the configured pixel budget; right padding for training."""
    from transformers import AutoProcessor

    show_repeating_warnings_once()
    kw = {}
    if args.min_pixels is not None:
        kw["min_pixels"] = args.min_pixels
    if args.max_pixels is not None:
        kw["max_pixels"] = args.max_pixels
    check_model_ref(args.model_name_or_path, processor=True)
    processor = AutoProcessor.from_pretrained(args.model_name_or_path, trust_remote_code=trust_remote_code)
    ip = getattr(processor, "image_processor", None)
    if ip is not None:
        # a budget kept as attributes is passed to every processor call (a FutureWarning per image batch):
        # fold it into ``size`` once instead
        for k in ("min_pixels", "max_pixels"):
            if getattr(ip, k, None) is not None:
                kw.setdefault(k, getattr(ip, k))
                setattr(ip, k, None)
    if ip is not None and kw:
        ip.size = size_with_budget(ip, **kw)
    return processor


#: transformers 5 keeps a Qwen2/2.5-VL image processor's pixel budget in ``size``: budget key -> size key.
_BUDGET_IN_SIZE = {"min_pixels": "shortest_edge", "max_pixels": "longest_edge"}


def size_with_budget(image_processor, *, min_pixels: int | None = None, max_pixels: int | None = None) -> dict:
    """The image processor's ``size`` with the given pixel budget in it (a new dict; None leaves a bound)."""
    size = dict(getattr(image_processor, "size", None) or {})
    for key, value in (("min_pixels", min_pixels), ("max_pixels", max_pixels)):
        if value is not None:
            size[_BUDGET_IN_SIZE[key]] = int(value)
    return size


def pixel_budget(processor) -> dict[str, int]:
    """``{"min_pixels", "max_pixels"}`` of a processor (or image processor), from ``size`` or the older
    attributes; empty when unknown."""
    ip = getattr(processor, "image_processor", processor)
    size = dict(getattr(ip, "size", None) or {})
    out = {k: size.get(s, getattr(ip, k, None)) for k, s in _BUDGET_IN_SIZE.items()}
    return {k: int(v) for k, v in out.items() if v}


def quantization_config(args: ModelArguments):
    """TRL's :func:`~trl.get_quantization_config` (4- or 8-bit) with the vision tower, projector and
    ``lm_head`` left unquantised (``llm_int8_skip_modules``) and a concrete compute dtype."""
    if not (args.load_in_4bit or args.load_in_8bit):
        return None
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise ImportError("load_in_4bit needs bitsandbytes: pip install 'mllm-cxr[gpu]' (or bitsandbytes)") from None
    from trl import get_quantization_config

    compute = resolve_dtype(args.dtype)
    if compute == "auto":  # a compute dtype must be concrete
        compute = resolve_dtype("hardware")
    q = get_quantization_config(dataclasses.replace(args, dtype=compute))
    q.llm_int8_skip_modules = [r".*visual", "lm_head"]  # vision tower + projector stay unquantised
    return q


def load_base_model(args: ModelArguments, *, trust_remote_code: bool = False):
    """The base model (quantised when asked), with frozen vision tower / projector as configured."""
    from transformers import AutoModelForImageTextToText

    kw = dict(dtype=resolve_dtype(args.dtype), trust_remote_code=trust_remote_code)
    if args.attn_implementation:
        kw["attn_implementation"] = args.attn_implementation
    q = quantization_config(args)
    if q is not None:
        kw["quantization_config"] = q
    check_model_ref(args.model_name_or_path)
    model = AutoModelForImageTextToText.from_pretrained(args.model_name_or_path, **kw)
    if not args.use_peft:
        for name, p in model.named_parameters():
            if args.freeze_vision and _is_vision(name) and not _is_projector(name):
                p.requires_grad_(False)
            if args.freeze_projector and _is_projector(name):
                p.requires_grad_(False)
    return model


def _is_vision(name: str) -> bool:
    return any(p in name for p in VISION_PATTERNS)


def _is_projector(name: str) -> bool:
    return any(p in name for p in PROJECTOR_PATTERNS)


def lora_config(args: ModelArguments):
    """TRL's :func:`~trl.get_peft_config` with the targets restricted to the language model (a regex
    that excludes ``visual``) unless ``lora_on_vision``; a trainable projector is saved whole."""
    from trl import get_peft_config

    if not args.use_peft:
        return None
    names = "|".join(sorted(set(args.target_module_names())))
    if args.lora_on_vision:
        target = rf".*\.({names}|qkv|proj|fc1|fc2|gate_proj|up_proj|down_proj)$"
    else:
        target = rf"^(?!.*visual).*\.({names})$"
    modules_to_save = list(args.lora_modules_to_save or [])
    if not args.freeze_projector and "merger" not in modules_to_save:
        modules_to_save.append("merger")
    return get_peft_config(dataclasses.replace(args, lora_target_modules=target,
                                               lora_modules_to_save=modules_to_save or None))


def load_model(args: ModelArguments, *, is_trainable: bool = True, gradient_checkpointing: bool = False,
               trust_remote_code: bool = False):
    """Base model + (new or loaded) LoRA adapter, ready for a TRL trainer or generation.

    Returns ``(model, peft_config)``: when a new adapter should be created by the TRL trainer,
    ``peft_config`` is the LoraConfig and ``model`` the plain base model; when ``adapter_path`` is set,
    the adapter is loaded here (trainable when ``is_trainable``) and ``peft_config`` is ``None``.
    """
    show_repeating_warnings_once()
    model = load_base_model(args, trust_remote_code=trust_remote_code)
    if args.load_in_4bit and is_trainable:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
    if args.adapter_path:
        from peft import PeftModel

        path = check_adapter_dir(args.adapter_path)
        model = PeftModel.from_pretrained(model, str(path), is_trainable=is_trainable)
        return model, None
    return model, (lora_config(args) if is_trainable else None)


def trainable_summary(model) -> str:
    total = sum(p.numel() for p in model.parameters())
    train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return f"trainable {train:,} / {total:,} parameters ({100 * train / max(total, 1):.2f}%)"
