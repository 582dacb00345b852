"""Generate reports for study records: HF, vLLM and OpenAI-compatible backends.

All backends take the prompt from :mod:`mllm_cxr.prompts` and the same :class:`GenerationSettings`:

* :class:`HFGenerator`: transformers ``generate`` on a (PEFT) model, left-padded batches;
* :class:`VLLMGenerator`: vLLM's offline ``LLM`` with a ``LoRARequest`` for the adapter (needs the
  ``gpu`` extra); the prompt text is rendered by the same processor chat template as the HF backend;
* :class:`OpenAIGenerator`: any OpenAI-compatible ``/v1/chat/completions`` server (``vllm serve``, or
  ``mllm-cxr serve --backend hf``); the conversation is :func:`mllm_cxr.prompts.to_openai_messages`
  of the same messages, images inlined as PNG data URLs, so the server's chat template renders the
  same text.

Output is a predictions JSONL (``study_id, prediction, reference, context, images``: ``images`` are
the absolute paths of the prompt's image files), written as it goes and resumable: studies already in the output file are skipped on a re-run, and a line cut short by a
killed run is dropped and generated again. A side file ``<out>.meta.json`` records the model,
adapter, prompt and generation settings, and where the inputs are (``studies``: the records file and
``data_root``: the folder their image paths start from, both absolute); resuming with different ones is refused (``overwrite=True``
starts over).

With a task (``mllm-cxr generate --task NAME --box-family F``; :mod:`mllm_cxr.tasks`) each row answers one
example of the task instead: :func:`task_items` builds them with the prompt function the recipes train on,
``study_id`` is ``<study>#<k>``, ``reference`` the task's target, and :func:`task_row_fields` adds what
``mllm-cxr eval`` scores the answer by (task, box family, pixel budget, image size, reference boxes). The
``qwen2_vl`` family's box markers are special tokens, so its answers are decoded keeping them
(:func:`decode_keeping_box_tokens`).

Prompt settings follow the adapter: :func:`resolve_prompt` reads the ``mllm_cxr_config.json`` that the
recipes write into their ``output_dir`` (keys ``PromptConfig`` and ``ModelArguments``), so generation
uses the prompt and pixel budget the adapter was trained with; explicit overrides win.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from cxr_io import make_parent
from data_prep.schema import StudyRecord
from evaluation.predictions import (
    meta_path,
    part_path,
    prediction_line,
    read_meta,
    resume_part_file,
    write_meta,
)
from mllm_cxr.config import ConfigError
from mllm_cxr.data import study_columns
from mllm_cxr.infer.loader import (
    chat_text,
    inference_processor,
    load_for_inference,
    study_conversation,
    study_inputs,
)
from mllm_cxr.prompts import PromptConfig, build_messages, target_text, to_openai_messages
from mllm_cxr.run_config import PromptSettings
from mllm_cxr.vllm_support import adapter_rank, import_vllm, vllm_max_lora_rank
from reward.http import RETRY_STATUSES, retrying_session

log = logging.getLogger(__name__)

BACKENDS = ("hf", "vllm", "openai")


class GenerationError(ConfigError):
    """A generation backend that cannot run as configured (server unreachable, unknown served model,
    predictions file written with other settings). A user error: one line, exit code 2."""


@dataclass
class GenerationSettings:
    """How reports are decoded; each field is also a ``generate`` option (its help is the field's)."""

    _argument_group_name: ClassVar[str] = "generation"

    max_new_tokens: int = field(default=256, metadata={"help": "most tokens generated per report"})
    do_sample: bool = field(default=False, metadata={"help": "sample instead of greedy decoding"})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature"})
    top_p: float = field(default=1.0, metadata={"help": "nucleus sampling: smallest token set of this probability"})
    num_return_sequences: int = field(default=1, metadata={"help": "samples per study (with --do-sample)"})
    repetition_penalty: float = field(default=1.0, metadata={"help": "1 = none; above 1 discourages repeats"})
    seed: int = field(default=0, metadata={"help": "random seed of sampling"})

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ConfigError(f"generation: max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.num_return_sequences < 1:
            raise ConfigError(f"generation: num_return_sequences must be >= 1, got {self.num_return_sequences}")
        if self.num_return_sequences > 1 and not self.do_sample:
            raise ConfigError("generation: num_return_sequences > 1 needs do_sample (greedy gives one answer)")

    def hf_kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = dict(max_new_tokens=self.max_new_tokens, do_sample=self.do_sample,
                                  num_return_sequences=self.num_return_sequences,
                                  repetition_penalty=self.repetition_penalty)
        if self.do_sample:
            kw.update(temperature=self.temperature, top_p=self.top_p)
        return kw

    def vllm_kwargs(self) -> dict[str, Any]:
        """``SamplingParams`` keyword arguments (temperature 0 = greedy, as ``do_sample=False``)."""
        return dict(n=self.num_return_sequences, max_tokens=self.max_new_tokens,
                    temperature=self.temperature if self.do_sample else 0.0,
                    top_p=self.top_p if self.do_sample else 1.0,
                    repetition_penalty=self.repetition_penalty, seed=self.seed)

    def openai_kwargs(self) -> dict[str, Any]:
        """Request-body fields of ``/v1/chat/completions`` (``repetition_penalty`` is vLLM's extra field)."""
        body: dict[str, Any] = dict(max_tokens=self.max_new_tokens, n=self.num_return_sequences,
                                    temperature=self.temperature if self.do_sample else 0.0,
                                    top_p=self.top_p if self.do_sample else 1.0, seed=self.seed)
        if self.repetition_penalty != 1.0:
            body["repetition_penalty"] = self.repetition_penalty
        return body


def batched(items: Sequence, n: int) -> Iterator[Sequence]:
    for i in range(0, len(items), n):
        yield items[i:i + n]


# ------------------------------------------------------------------------------------------------
# Backends
# ------------------------------------------------------------------------------------------------
#: Qwen2-VL's grounding markers (the ``qwen2_vl`` box family): special tokens, so a plain
#: ``skip_special_tokens=True`` decode drops them and the boxes with them.
GROUNDING_TOKENS = ("<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>", "<|box_end|>",
                    "<|quad_start|>", "<|quad_end|>")
_OTHER_SPECIAL_RE = re.compile(r"<\|(?!(?:object_ref|box|quad)_(?:start|end)\|>)[A-Za-z0-9_]+\|>")


def decode_keeping_box_tokens(tokenizer, sequences) -> list[str]:
    """Decode token ids dropping every special token except :data:`GROUNDING_TOKENS` (end-of-turn, padding,
    vision markers go; the box markers stay), so ``qwen2_vl`` box answers survive decoding."""
    keep = {tokenizer.convert_tokens_to_ids(t) for t in GROUNDING_TOKENS}
    special = set(tokenizer.all_special_ids) | {i for i, t in tokenizer.added_tokens_decoder.items() if t.special}
    drop = special - keep
    return [tokenizer.decode([int(i) for i in seq if int(i) not in drop], skip_special_tokens=False)
            for seq in sequences]


def strip_special_text(text: str) -> str:
    """Special-token strings other than :data:`GROUNDING_TOKENS` removed from a text (a server's answer
    decoded with ``skip_special_tokens: false``)."""
    return _OTHER_SPECIAL_RE.sub("", text)


class HFGenerator:
    """transformers ``generate`` on a (PEFT) model, left-padded batches."""

    def __init__(self, model, processor, prompt_cfg: PromptConfig, data_root: str | Path,
                 settings: GenerationSettings | None = None):
        self.model, self.processor, self.cfg = model, processor, prompt_cfg
        self.data_root = Path(data_root)
        self.settings = settings or GenerationSettings()
        self.processor.tokenizer.padding_side = "left"

    def generate(self, studies: Sequence[StudyRecord]) -> list[list[str]]:
        import torch

        inputs = study_inputs(self.processor, studies, self.cfg, self.data_root, self.model.device)
        torch.manual_seed(self.settings.seed)
        with torch.no_grad():
            out = self.model.generate(**inputs, **self.settings.hf_kwargs())
        new = out[:, inputs["input_ids"].shape[1]:]
        if getattr(self, "keep_box_tokens", False):  # qwen2_vl boxes are special tokens
            decoded = decode_keeping_box_tokens(self.processor.tokenizer, new.tolist())
        else:
            decoded = self.processor.batch_decode(new, skip_special_tokens=True)
        k = self.settings.num_return_sequences
        return [[d.strip() for d in decoded[i * k:(i + 1) * k]] for i in range(len(studies))]


def load_hf_generator(model: str, adapter: str | None, prompt: PromptSettings, data_root: str | Path,
                      settings: GenerationSettings | None = None, *, dtype: str = "auto",
                      attn_implementation: str | None = None, load_in_4bit: bool = False,
                      trust_remote_code: bool = False, device: str | None = None) -> HFGenerator:
    """Load base model (+ adapter) and processor with the prompt's pixel budget; an :class:`HFGenerator`.

    The model goes to ``device`` (default: CUDA when available, else CPU)."""
    net, processor = load_for_inference(model, adapter, dtype=dtype, min_pixels=prompt.min_pixels,
                                        max_pixels=prompt.max_pixels, attn_implementation=attn_implementation,
                                        load_in_4bit=load_in_4bit, trust_remote_code=trust_remote_code,
                                        device=device)
    return HFGenerator(net, processor, prompt.prompt, data_root, settings)


class VLLMGenerator:
    """vLLM offline inference (``LLM.generate``) with the adapter as a ``LoRARequest``.

    The prompt text is the processor's chat template over :func:`build_messages` (exactly what the HF
    backend tokenizes); images go in ``multi_modal_data``. The pixel budget goes to vLLM's HF processor
    through ``mm_processor_kwargs``; ``max_lora_rank`` is the adapter's rank rounded up to a value vLLM
    accepts. Extra keyword arguments are passed to ``LLM`` (``max_model_len``, ``enforce_eager``...).
    """

    def __init__(self, model: str, prompt: PromptSettings, data_root: str | Path,
                 settings: GenerationSettings | None = None, *, adapter: str | None = None,
                 lora_name: str = "adapter", max_lora_rank: int | None = None, dtype: str = "auto",
                 gpu_memory_utilization: float = 0.9, tensor_parallel_size: int = 1,
                 trust_remote_code: bool = False, processor=None, **llm_kwargs: Any):
        import_vllm()
        from vllm import LLM, SamplingParams
        from vllm.lora.request import LoRARequest

        self.cfg = prompt.prompt
        self.data_root = Path(data_root)
        self.settings = settings or GenerationSettings()
        n_images = self.cfg.max_images
        kw: dict[str, Any] = dict(model=str(model), dtype=dtype, seed=self.settings.seed,
                                  limit_mm_per_prompt={"image": n_images}, trust_remote_code=trust_remote_code,
                                  gpu_memory_utilization=gpu_memory_utilization,
                                  tensor_parallel_size=tensor_parallel_size)
        mm = {k: v for k, v in (("min_pixels", prompt.min_pixels), ("max_pixels", prompt.max_pixels)) if v}
        if mm:
            kw["mm_processor_kwargs"] = mm
        self.lora = None
        if adapter:
            rank = max_lora_rank or vllm_max_lora_rank(adapter_rank(adapter))
            kw.update(enable_lora=True, max_lora_rank=rank, max_loras=1)
            self.lora = LoRARequest(lora_name, 1, str(Path(adapter).resolve()))
        kw.update(llm_kwargs)
        self.llm = LLM(**kw)
        self.sampling = SamplingParams(**self.settings.vllm_kwargs())
        self.processor = processor or inference_processor(model, min_pixels=prompt.min_pixels,
                                                          max_pixels=prompt.max_pixels,
                                                          trust_remote_code=trust_remote_code)

    def generate(self, studies: Sequence[StudyRecord]) -> list[list[str]]:
        inputs = []
        for s in studies:
            messages, images = study_conversation(s, self.cfg, self.data_root)
            inputs.append({"prompt": chat_text(self.processor, messages), "multi_modal_data": {"image": images}})
        outs = self.llm.generate(inputs, self.sampling, lora_request=self.lora, use_tqdm=False)
        if getattr(self, "keep_box_tokens", False):  # the same decoding of the same tokens as the HF backend
            tok = self.processor.tokenizer
            return [[t.strip() for t in decode_keeping_box_tokens(tok, [c.token_ids for c in o.outputs])]
                    for o in outs]
        return [[c.text.strip() for c in o.outputs] for o in outs]


class OpenAIGenerator:
    """Reports from an OpenAI-compatible server (``/v1/chat/completions``), requests sent concurrently.

    Args:
        base_url: server root, with or without ``/v1`` (``http://127.0.0.1:8000``).
        served_model: the model name to ask for (for ``vllm serve --lora-modules NAME=DIR``: NAME);
            ``None`` takes the server's only model (an error when it lists several).
        max_concurrency: requests in flight at once (the server batches them).
        retries / backoff: extra tries after a connection error, HTTP 429 or 5xx
            (:func:`reward.http.retrying_session`: at once, then after ``2 * backoff``, ``4 * backoff``...,
            or what the server's ``Retry-After`` says).
        api_key: bearer token; default the ``OPENAI_API_KEY`` environment variable, if set.

    The pixel budget is sent as ``mm_processor_kwargs`` (vLLM's extra request field) when known.
    """

    def __init__(self, base_url: str, prompt: PromptSettings, data_root: str | Path,
                 settings: GenerationSettings | None = None, *, served_model: str | None = None,
                 api_key: str | None = None, timeout: float = 600.0, max_concurrency: int = 8,
                 retries: int = 2, backoff: float = 1.0):
        root = base_url.rstrip("/")
        self.root = root if root.endswith("/v1") else root + "/v1"
        self.cfg = prompt.prompt
        self.prompt = prompt
        self.data_root = Path(data_root)
        self.settings = settings or GenerationSettings()
        self.timeout, self.retries = timeout, max(0, retries)
        self.max_concurrency = max(1, max_concurrency)
        api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self.session = retrying_session(self.retries, backoff, pool_size=self.max_concurrency, api_key=api_key)
        self.served_model = served_model or self._only_model()

    def _request(self, method: str, path: str, body: dict | None = None) -> dict:
        """One call; connection errors, 429 and 5xx are retried by the session (honouring Retry-After)."""
        import requests

        url = self.root + path
        try:
            r = self.session.request(method, url, json=body, timeout=self.timeout)
        except requests.RequestException as e:
            raise GenerationError(f"{url}: no answer after {self.retries + 1} tries ({type(e).__name__}: "
                                  f"{str(e)[:200]})") from None
        if r.status_code != 200:
            raise GenerationError(f"{url}: HTTP {r.status_code}: {r.text[:300]}"
                                  + (f" (after {self.retries + 1} tries)" if r.status_code in RETRY_STATUSES else ""))
        try:
            return r.json()
        except ValueError:
            raise GenerationError(f"{url}: the server answered with something that is not JSON") from None

    def _only_model(self) -> str:
        names = [m.get("id") for m in self._request("GET", "/models").get("data", []) if isinstance(m, dict)]
        if len(names) != 1:
            raise GenerationError(f"{self.root}/models lists {names}: name one with --served-model")
        return str(names[0])

    def request_body(self, study: StudyRecord) -> dict[str, Any]:
        """The JSON body sent for one study (the same messages as the HF backend, images inlined)."""
        messages, images = study_conversation(study, self.cfg, self.data_root)
        body: dict[str, Any] = {"model": self.served_model, "messages": to_openai_messages(messages, images)}
        body.update(self.settings.openai_kwargs())
        mm = {k: v for k, v in (("min_pixels", self.prompt.min_pixels), ("max_pixels", self.prompt.max_pixels)) if v}
        if mm:
            body["mm_processor_kwargs"] = mm
        if getattr(self, "keep_box_tokens", False):  # vLLM's extra field: keep qwen2_vl's box markers
            body["skip_special_tokens"] = False
        return body

    def _one(self, study: StudyRecord) -> list[str]:
        answer = self._request("POST", "/chat/completions", self.request_body(study))
        choices = sorted(answer.get("choices") or [], key=lambda c: c.get("index", 0))
        if not choices:
            raise GenerationError(f"{self.root}/chat/completions: an answer without choices")
        texts = [str((c.get("message") or {}).get("content") or "") for c in choices]
        if getattr(self, "keep_box_tokens", False):
            texts = [strip_special_text(t) for t in texts]
        return [t.strip() for t in texts]

    def generate(self, studies: Sequence[StudyRecord]) -> list[list[str]]:
        from concurrent.futures import ThreadPoolExecutor

        if len(studies) <= 1 or self.max_concurrency == 1:
            return [self._one(s) for s in studies]
        with ThreadPoolExecutor(min(self.max_concurrency, len(studies))) as pool:
            return list(pool.map(self._one, studies))


# ------------------------------------------------------------------------------------------------
# The predictions file
# ------------------------------------------------------------------------------------------------
#: Fields of the side file that must agree before a predictions file is continued.
_RESUME_KEYS = ("model", "adapter", "prompt", "generation", "task")


def _diff(old: Any, new: Any, prefix: str = "") -> str:
    """The leaves that differ between two JSON values, as ``key: old -> new`` (shortened)."""
    if isinstance(old, dict) and isinstance(new, dict):
        parts = [_diff(old.get(k), new.get(k), f"{prefix}{k}.") for k in sorted(set(old) | set(new))
                 if old.get(k) != new.get(k)]
        return "; ".join(parts)
    return f"{prefix.rstrip('.') or 'value'}: {json.dumps(old)[:80]} -> {json.dumps(new)[:80]}"


def check_resume(out_path: str | Path, meta: dict[str, Any], *, overwrite: bool = False) -> None:
    """Refuse to continue a predictions file written with other settings; ``overwrite`` deletes it."""
    out, mp = Path(out_path), meta_path(out_path)
    if overwrite:
        for p in (out, mp, part_path(out)):
            if p.exists():
                p.unlink()
    elif not mp.exists() and (out.exists() or part_path(out).exists()):
        # resuming appends to --out: only to a predictions file this command wrote (its side file says so)
        found = out if out.exists() else part_path(out)
        raise GenerationError(f"{found} exists but is not a predictions file written by `mllm-cxr generate` (no side "
                              f"file {mp.name} beside it), so it is not resumed or appended to: use another --out, "
                              "or --overwrite to replace it")
    elif mp.exists() and (out.exists() or part_path(out).exists()):
        old = read_meta(out, strict=False)  # unreadable: nothing to compare with; it is rewritten below
        diffs = [_diff(old[k], meta.get(k), f"{k}.") for k in _RESUME_KEYS if k in old and old[k] != meta.get(k)]
        if old.get("shard") != meta.get("shard"):  # another shard (or unsharded) run's file
            diffs.append(_diff(old.get("shard"), meta.get("shard"), "shard."))
        if diffs:
            raise GenerationError(f"{out} was generated with other settings ({'; '.join(diffs)}): use another "
                                  "--out, or --overwrite")
    make_parent(out)
    write_meta(out, meta)


def prompt_image_paths(study: StudyRecord, generator) -> list[str]:
    """The absolute files of the images in the study's prompt (recorded in each prediction row); for a
    task example, the images of its prompt."""
    from data_prep.schema import image_path

    refs = study.images if hasattr(study, "task") else build_messages(study, generator.cfg)[1]
    return [str(image_path(generator.data_root, r.path).resolve()) for r in refs]


def task_items(studies: Sequence[StudyRecord], task: str, task_cfg) -> list[Any]:
    """The examples of ``task`` (:mod:`mllm_cxr.tasks`) in ``studies``, each with its row id in ``row_id``:
    the study id for the report task (rows as without ``--task``), else ``<study_id>#<k>`` (the k-th
    example of that study: a task may ask several questions of one study)."""
    from mllm_cxr.tasks import get_task

    t = get_task(task)
    out = []
    for s in studies:
        for k, ex in enumerate(t.examples(s, task_cfg)):
            ex.row_id = s.study_id if task == "report" else f"{s.study_id}#{k}"  # type: ignore[attr-defined]
            ex.index, ex.record = k, s  # type: ignore[attr-defined]  # which example of which study
            out.append(ex)
    return out


def task_row_fields(example, task_cfg) -> dict[str, Any]:
    """What eval needs to score a task's answer (``evaluation.box_eval``): the task, the box codec and pixel
    budget, the image size and the reference boxes / grounded report (as lists), the asked label or phrase."""
    cols = example.columns
    row: dict[str, Any] = {"task": example.task, "study": example.study_id}
    if "image_size" in cols:
        row.update(box_family=task_cfg.family, min_pixels=task_cfg.min_pixels, max_pixels=task_cfg.max_pixels,
                   image_size=list(cols["image_size"]))
    for k in ("boxes", "grounded_findings"):
        if k in cols:
            row[k] = json.loads(cols[k]) if isinstance(cols[k], str) else cols[k]
    for k in ("label", "phrase"):
        if k in cols:
            row[k] = cols[k]
    return row


def generate_predictions(generator, studies: Sequence[StudyRecord], out_path: str | Path, *,
                         batch_size: int = 8, progress: bool = True, task: str | None = None,
                         task_cfg: Any = None) -> dict[str, Any]:
    """Generate for every study not yet in ``out_path`` and append one JSON line per study.

    Each batch is flushed as soon as it is written, so a killed run loses at most the batch in flight;
    running again continues where it stopped and writes each study exactly once.

    ``task`` (a :mod:`mllm_cxr.tasks` name, with its :class:`~mllm_cxr.tasks.TaskConfig`): one row per
    example of the task instead (:func:`task_items`), its prompt the task's, its ``reference`` the task's
    target, plus :func:`task_row_fields` (what eval scores the answer with).
    """
    from tqdm.auto import tqdm

    if batch_size < 1:
        raise ConfigError(f"generation: batch_size must be >= 1, got {batch_size}")
    out = Path(out_path)
    make_parent(out)
    part = part_path(out)
    if not part.exists() and out.exists():  # continue a finished file: the old one stays until we finish
        shutil.copyfile(out, part)
    finished = resume_part_file(part)
    no_images = [s for s in studies if not s.images]  # nothing to look at: skipped and counted, never "reported"
    items = task_items([s for s in studies if s.images], task, task_cfg) if task else list(studies)
    rid = (lambda x: x.row_id) if task else (lambda x: x.study_id)
    todo = list({rid(s): s for s in items if rid(s) not in finished and s.images}.values())  # unique ids
    by_id = {s.study_id: s for s in studies}
    t0 = time.perf_counter()
    n_empty = 0
    with open(part, "a", encoding="utf-8") as fh, tqdm(total=len(todo), disable=not progress,
                                                      desc="generate", unit="study") as bar:
        for chunk in batched(todo, batch_size):
            for s, preds in zip(chunk, generator.generate(chunk), strict=True):
                n_empty += sum(1 for p in preds if not p)
                if task:
                    study = by_id[s.study_id]
                    row = {"study_id": s.row_id, "prediction": preds[0], "reference": s.target,
                           "context": study_columns(study), "images": prompt_image_paths(s, generator),
                           **task_row_fields(s, task_cfg)}
                else:
                    row = {"study_id": s.study_id, "prediction": preds[0], "reference": target_text(s, generator.cfg),
                           "context": study_columns(s), "images": prompt_image_paths(s, generator)}
                if len(preds) > 1:
                    row["samples"] = preds
                fh.write(prediction_line(row))
            fh.flush()
            bar.update(len(chunk))
    os.replace(part, out)
    dt = time.perf_counter() - t0
    return {"generated": len(todo), "skipped_done": len(finished & {rid(s) for s in items}),
            "skipped_no_images": len(no_images), "empty_predictions": n_empty, "seconds": round(dt, 2),
            "studies_per_s": round(len(todo) / dt, 3) if dt > 0 and todo else None, "out": str(out)}
