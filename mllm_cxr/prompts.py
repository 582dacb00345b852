"""One prompt builder for every stage.

SFT, DPO, GRPO, generation, evaluation, the exported chat template and the vLLM/OpenAI client all
call :func:`build_messages`, so the model sees identical text everywhere. A study becomes::

    [system]  You are a radiologist ...
    [user]    <image> <image> ... INDICATION: ...  COMPARISON: ...  PRIOR REPORT: ...  Write the FINDINGS ...
    [assistant] FINDINGS: ...\nIMPRESSION: ...        (training target, :func:`target_text`)
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cxr_io.cli_args import split_list
from data_prep.schema import FRONTAL_VIEWS, ImageRef, StudyRecord, comparison_is_empty

SECTIONS = ("findings", "impression")
CONTEXT_FIELDS = ("indication", "technique", "comparison")
DEFAULT_SYSTEM = "You are an expert radiologist. You write accurate, concise chest X-ray reports."


@dataclass
class PromptConfig:
    """What goes into the prompt. Every field is also a YAML key / ``--flag`` of the recipes."""

    sections: list[str] = field(default_factory=lambda: ["findings", "impression"],
                                metadata={"help": "report sections to write, e.g. findings,impression"})
    context: list[str] = field(default_factory=lambda: ["indication", "comparison"],
                               metadata={"help": "context fields in the prompt, e.g. indication,comparison ('none')"})
    include_prior_report: bool = field(default=False, metadata={"help": "put the prior study's report in the prompt"})
    include_prior_images: bool = field(default=False, metadata={"help": "put the prior study's image in the prompt"})
    max_images: int = field(default=2, metadata={"help": "images per study in the prompt"})
    frontal_first: bool = field(default=True, metadata={"help": "frontal views before lateral ones"})
    system_prompt: str = field(default=DEFAULT_SYSTEM, metadata={"help": "the system message"})

    def __post_init__(self) -> None:
        self.sections = _names(self.sections)
        self.context = _names(self.context)
        bad = [s for s in self.sections if s not in SECTIONS]
        if bad or not self.sections:
            raise ValueError(f"prompt.sections: {bad or self.sections!r} not in {SECTIONS}")
        bad = [c for c in self.context if c not in CONTEXT_FIELDS]
        if bad:
            raise ValueError(f"prompt.context: {bad!r} not in {CONTEXT_FIELDS}")
        if self.max_images < 1:
            raise ValueError(f"prompt.max_images must be >= 1, got {self.max_images}")


def _names(value) -> list[str]:
    """A YAML list or a comma-separated flag -> names; "" and "none" mean no entry."""
    return [n.lower() for n in split_list(value) if n.lower() != "none"]


def select_images(study: StudyRecord, cfg: PromptConfig) -> list[ImageRef]:
    """The current study's images in prompt order (frontal first), at most ``max_images`` in all."""
    imgs = list(study.images)
    if cfg.frontal_first:
        imgs.sort(key=lambda im: 0 if im.view in FRONTAL_VIEWS else (2 if im.view == "UNKNOWN" else 1))
    n_prior = 1 if (cfg.include_prior_images and study.prior is not None and study.prior.images) else 0
    return imgs[: max(1, cfg.max_images - n_prior)]


def select_prior_images(study: StudyRecord, cfg: PromptConfig) -> list[ImageRef]:
    if not (cfg.include_prior_images and study.prior is not None and study.prior.images):
        return []
    prior = sorted(study.prior.images, key=lambda im: 0 if im.view in FRONTAL_VIEWS else 1)
    return prior[:1]


def _instruction(cfg: PromptConfig) -> str:
    names = " and ".join(s.upper() for s in cfg.sections)
    return f"Write the {names} section{'s' if len(cfg.sections) > 1 else ''} of the report for this chest X-ray."


def prompt_text(study: StudyRecord, cfg: PromptConfig, instruction: str | None = None) -> str:
    """The user-turn text (without image placeholders). ``instruction`` replaces the report instruction
    (the other tasks of :mod:`mllm_cxr.tasks`; the context lines stay the same)."""
    parts = []
    for f in cfg.context:
        value = (getattr(study, f) or "").strip()
        if f == "comparison" and comparison_is_empty(value):
            value = "None."
        if value:
            parts.append(f"{f.upper()}: {value}")
    if cfg.include_prior_report and study.prior is not None:
        prior = target_text_from(study.prior.findings, study.prior.impression, cfg.sections)
        if prior:
            parts.append(f"PRIOR REPORT: {prior}")
    if instruction is None and select_prior_images(study, cfg):
        parts.append("The last image is from the prior study.")
    parts.append(_instruction(cfg) if instruction is None else instruction)
    return "\n".join(parts)


def target_text_from(findings: str, impression: str, sections: Sequence[str]) -> str:
    values = {"findings": (findings or "").strip(), "impression": (impression or "").strip()}
    if len(sections) == 1:
        return values[sections[0]]
    return "\n".join(f"{s.upper()}: {values[s]}" for s in sections if values[s])


def target_text(study: StudyRecord, cfg: PromptConfig) -> str:
    """The report the model should write for ``study`` (the SFT target and the evaluation reference)."""
    return target_text_from(study.findings, study.impression, cfg.sections)


def has_target(study: StudyRecord, cfg: PromptConfig) -> bool:
    return all((getattr(study, s) or "").strip() for s in cfg.sections)


def build_messages(study: StudyRecord, cfg: PromptConfig | None = None, *, instruction: str | None = None,
                   images: Sequence[ImageRef] | None = None) -> tuple[list[dict[str, Any]], list[ImageRef]]:
    """Chat messages (system + user with one ``{"type": "image"}`` per image) and the images in order.

    The report task uses the defaults; the other tasks (:mod:`mllm_cxr.tasks`) pass their ``instruction``
    and, when a question is about one image (boxes, view), that image as ``images``."""
    cfg = cfg or PromptConfig()
    if images is None:
        images = select_images(study, cfg) + select_prior_images(study, cfg)
    images = list(images)
    content: list[dict[str, Any]] = [{"type": "image"} for _ in images]
    content.append({"type": "text", "text": prompt_text(study, cfg, instruction)})
    messages = []
    if cfg.system_prompt:
        messages.append({"role": "system", "content": [{"type": "text", "text": cfg.system_prompt}]})
    messages.append({"role": "user", "content": content})
    return messages, images


def load_images(refs: Sequence[ImageRef], data_root: str | Path):
    """Open the study's images as RGB PIL images (via data_prep's loader: DICOM/PNG/JPG)."""
    from data_prep.images import load_image
    from data_prep.schema import image_path

    return [load_image(image_path(data_root, r.path)).convert("RGB") for r in refs]


def to_openai_messages(messages: list[dict[str, Any]], images) -> list[dict[str, Any]]:
    """The same conversation in the OpenAI chat format (images inlined as PNG data URLs)."""
    it = iter(images)
    out = []
    for m in messages:
        content = []
        for part in m["content"] if isinstance(m["content"], list) else [{"type": "text", "text": m["content"]}]:
            if part["type"] == "image":
                buf = io.BytesIO()
                next(it).save(buf, format="PNG")
                url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
                content.append({"type": "image_url", "image_url": {"url": url}})
            else:
                content.append({"type": "text", "text": part["text"]})
        out.append({"role": m["role"], "content": content})
    return out
