"""The run config: ``mllm_cxr_config.json``, the one file that carries a run's prompt and pixel budget
from training to everything that uses the adapter afterwards.

The recipes write it into their ``output_dir`` (:func:`write_run_config`: every config dataclass of
the run, by class name); generate, serve, export, pairs and the DPO/GRPO recipes read it back
(:func:`resolve_prompt`, :func:`check_adapter_prompt`), and export copies it next to the exported
adapter (:func:`copy_run_config`) so that the export is generated from with the prompt it was
trained on. Nothing else reads or writes the file.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cxr_io import write_text_atomic
from mllm_cxr.config import ConfigError
from mllm_cxr.prompts import PromptConfig

log = logging.getLogger(__name__)

#: The file the recipes write into ``output_dir`` with every config dataclass of the run.
RUN_CONFIG_NAME = "mllm_cxr_config.json"


def write_run_config(output_dir: str | Path, configs: Sequence[Any]) -> Path:
    """``output_dir/mllm_cxr_config.json``: each config dataclass in full, keyed by its class name."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    record = {type(c).__name__: dataclasses.asdict(c) for c in configs}
    path = out / RUN_CONFIG_NAME
    write_text_atomic(path, json.dumps(record, indent=2, default=str) + "\n")
    return path


def find_run_config(*dirs: str | Path | None) -> Path | None:
    """The first ``mllm_cxr_config.json`` in each given folder or its parent (a checkpoint's run)."""
    for d in dirs:
        if not d:
            continue
        p = Path(d)
        for cand in (p / RUN_CONFIG_NAME, p.parent / RUN_CONFIG_NAME):
            if cand.is_file():
                return cand
    return None


def read_run_config(path: str | Path) -> dict[str, Any]:
    """A run config's content; :class:`ConfigError` naming the file when it is not one."""
    p = Path(path)
    try:
        saved = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{p}: not a readable run config ({e})") from None
    if not isinstance(saved, dict):
        raise ConfigError(f"{p}: not a run config (expected a JSON object)")
    for key in ("PromptConfig", "ModelArguments"):
        if not isinstance(saved.get(key) or {}, dict):
            raise ConfigError(f"{p}: {key} must be a JSON object")
    return saved


@dataclass
class PromptSettings:
    """The prompt and pixel budget a generation uses, and where they came from."""

    prompt: PromptConfig
    min_pixels: int | None = None
    max_pixels: int | None = None
    source: str = "defaults"

    def __post_init__(self) -> None:
        from data_prep.images import check_pixel_budget  # numpy + PIL: only when a prompt is resolved

        check_pixel_budget(self.min_pixels, self.max_pixels, where=f"pixel budget ({self.source})")

    def to_dict(self) -> dict[str, Any]:
        return {"prompt": dataclasses.asdict(self.prompt), "min_pixels": self.min_pixels,
                "max_pixels": self.max_pixels}


def resolve_prompt(adapter: str | Path | None = None, model: str | Path | None = None, *,
                   overrides: dict[str, Any] | None = None, min_pixels: int | None = None,
                   max_pixels: int | None = None) -> PromptSettings:
    """Prompt config and pixel budget: the run config next to the adapter (else next to the model, as in
    a merged export), then ``overrides`` (PromptConfig fields) and explicit pixel values on top."""
    path = find_run_config(adapter, model if model and Path(model).is_dir() else None)
    fields: dict[str, Any] = {}
    pix: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        saved = read_run_config(path)
        known = {f.name for f in dataclasses.fields(PromptConfig)}
        fields = {k: v for k, v in (saved.get("PromptConfig") or {}).items() if k in known}
        margs = saved.get("ModelArguments") or {}
        pix = {k: margs.get(k) for k in ("min_pixels", "max_pixels")}
        source = str(path)
    for k, v in (overrides or {}).items():
        if v is not None:
            fields[k] = v
    try:
        prompt = PromptConfig(**fields)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{source}: bad prompt settings ({e})") from None
    return PromptSettings(prompt=prompt,
                          min_pixels=min_pixels if min_pixels is not None else pix.get("min_pixels"),
                          max_pixels=max_pixels if max_pixels is not None else pix.get("max_pixels"),
                          source=source)


def check_adapter_prompt(model_args, prompt_cfg: PromptConfig) -> list[str]:
    """Warn when the prompt or pixel budget differs from the one the starting adapter was trained with.

    A DPO/GRPO run that starts from an SFT adapter should show the model the prompt it learnt on (same
    sections, context fields, number of images, pixel budget); a silent mismatch costs a lot of what SFT
    taught. Returns the differences (``key: adapter -> now``), also logged as one warning.
    """
    adapter = getattr(model_args, "adapter_path", None)
    path = find_run_config(adapter) if adapter else None
    if path is None:
        return []
    saved = read_run_config(path)
    diffs = []
    now = dataclasses.asdict(prompt_cfg)
    for k, v in (saved.get("PromptConfig") or {}).items():
        if k in now and now[k] != v:
            diffs.append(f"{k}: {v!r} -> {now[k]!r}")
    for k in ("min_pixels", "max_pixels"):
        v = (saved.get("ModelArguments") or {}).get(k)
        if v is not None and getattr(model_args, k, None) != v:
            diffs.append(f"{k}: {v!r} -> {getattr(model_args, k, None)!r}")
    if diffs:
        log.warning("the prompt differs from the one adapter %s was trained with (%s); set the same keys in this "
                    "config", adapter, "; ".join(diffs))
    return diffs


def copy_run_config(adapter_dir: str | Path, out: str | Path, extra: dict[str, Any]) -> Path:
    """The adapter's run config (if any) into ``out``, with ``extra`` under the key ``Export``."""
    src = find_run_config(adapter_dir)
    record = read_run_config(src) if src is not None else {}
    record["Export"] = extra
    path = Path(out) / RUN_CONFIG_NAME
    write_text_atomic(path, json.dumps(record, indent=2, default=str) + "\n")
    return path
