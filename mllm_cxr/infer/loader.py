"""Inference building blocks shared by generate, serve, export, pairs and the demo.

* :func:`load_for_inference`: base model + optional LoRA adapter + processor with the pixel budget,
  in eval mode, placed on the device (one loader instead of one per command);
* :func:`chat_inputs`: conversations (messages + their images) -> chat template -> processor tensors;
  :func:`study_conversation` / :func:`study_inputs` do it for study records with the prompt of
  :mod:`mllm_cxr.prompts`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mllm_cxr.modeling import ModelArguments, load_model, load_processor
from mllm_cxr.prompts import PromptConfig, build_messages, load_images


def inference_args(model: str | Path, adapter: str | Path | None = None, *, dtype: str = "auto",
                   min_pixels: int | None = None, max_pixels: int | None = None,
                   attn_implementation: str | None = None, load_in_4bit: bool = False) -> ModelArguments:
    """The :class:`ModelArguments` of a model loaded for inference."""
    return ModelArguments(model_name_or_path=str(model), adapter_path=str(adapter) if adapter else None,
                          dtype=dtype, attn_implementation=attn_implementation, load_in_4bit=load_in_4bit,
                          min_pixels=min_pixels, max_pixels=max_pixels)


def inference_processor(model: str | Path, *, min_pixels: int | None = None, max_pixels: int | None = None,
                        trust_remote_code: bool = False):
    """The processor of ``model`` (a hub id or folder) with the pixel budget, left-padding for generation."""
    processor = load_processor(inference_args(model, min_pixels=min_pixels, max_pixels=max_pixels),
                               trust_remote_code=trust_remote_code)
    processor.tokenizer.padding_side = "left"
    return processor


def place_model(model, device: str | None = None):
    """Move a loaded model to ``device`` (default: CUDA when there is one); quantized models stay put
    (bitsandbytes places them when loading)."""
    import torch

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False) \
            or getattr(model, "hf_quantizer", None) is not None:
        return model
    return model.to(device)


def load_for_inference(model: str | Path, adapter: str | Path | None = None, *, dtype: str = "auto",
                       min_pixels: int | None = None, max_pixels: int | None = None,
                       attn_implementation: str | None = None, load_in_4bit: bool = False,
                       trust_remote_code: bool = False, device: str | None = None, place: bool = True,
                       processor_from: str | Path | None = None):
    """``(model, processor)``: the base model with the adapter (PEFT, frozen), in eval mode, on ``device``
    (default: CUDA when there is one; ``place=False`` leaves it where it was loaded, e.g. for merging),
    and the processor with the pixel budget (from ``processor_from`` when given, e.g. an export folder)."""
    margs = inference_args(model, adapter, dtype=dtype, min_pixels=min_pixels, max_pixels=max_pixels,
                           attn_implementation=attn_implementation, load_in_4bit=load_in_4bit)
    processor = inference_processor(processor_from or model, min_pixels=min_pixels, max_pixels=max_pixels,
                                    trust_remote_code=trust_remote_code)
    net, _ = load_model(margs, is_trainable=False, trust_remote_code=trust_remote_code)
    if place:
        net = place_model(net, device)
    return net.eval(), processor


def chat_text(processor, messages: list[dict[str, Any]]) -> str:
    """The prompt text of one conversation: the processor's chat template with the generation prompt."""
    return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def chat_inputs(processor, conversations: Sequence[tuple[list[dict[str, Any]], list]], device=None,
                **processor_kwargs: Any):
    """Processor tensors for a batch of ``(messages, images)`` conversations (padded; on ``device``)."""
    texts = [chat_text(processor, m) for m, _ in conversations]
    images = [list(ims) for _, ims in conversations]
    inputs = processor(text=texts, images=images if any(images) else None, return_tensors="pt", padding=True,
                       **processor_kwargs)
    return inputs.to(device) if device is not None else inputs


def study_conversation(study: Any, cfg: PromptConfig, data_root: str | Path) -> tuple[list[dict[str, Any]], list]:
    """``(messages, images)`` of one study record: the prompt of :func:`mllm_cxr.prompts.build_messages` and
    its images loaded from ``data_root`` (what every backend sends). A task example
    (:class:`mllm_cxr.tasks.Example`, whose prompt the task built with the same function) gives its own."""
    if hasattr(study, "messages") and hasattr(study, "task"):
        return study.messages, load_images(study.images, data_root)
    messages, refs = build_messages(study, cfg)
    return messages, load_images(refs, data_root)


def study_inputs(processor, studies: Sequence[Any], cfg: PromptConfig, data_root: str | Path, device=None):
    """:func:`chat_inputs` for study records (:func:`study_conversation`)."""
    return chat_inputs(processor, [study_conversation(s, cfg, data_root) for s in studies], device)
