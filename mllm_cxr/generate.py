"""Generate reports for study records: HF backend (here), vLLM and OpenAI-compatible backends.

All backends take the prompt from :mod:`mllm_cxr.prompts` and the same :class:`GenerationSettings`.
Output is a predictions JSONL (``study_id, prediction, reference, context``), written as it goes and
resumable: studies already in the output file are skipped on a re-run.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from data_prep.schema import StudyRecord
from mllm_cxr.prompts import PromptConfig, build_messages, load_images, target_text

log = logging.getLogger(__name__)


@dataclass
class GenerationSettings:
    max_new_tokens: int = 256
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    num_return_sequences: int = 1
    repetition_penalty: float = 1.0
    seed: int = 0

    def hf_kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = dict(max_new_tokens=self.max_new_tokens, do_sample=self.do_sample,
                                  num_return_sequences=self.num_return_sequences,
                                  repetition_penalty=self.repetition_penalty)
        if self.do_sample:
            kw.update(temperature=self.temperature, top_p=self.top_p)
        return kw


def study_context(s: StudyRecord) -> dict[str, Any]:
    """The context columns written beside each prediction (used by eval: prior rate, CheXpert labels)."""
    return {"indication": s.indication, "comparison": s.comparison, "has_prior": s.has_prior,
            "labels": s.labels, "dataset": s.dataset, "split": s.split,
            "findings": s.findings, "impression": s.impression}


def done_ids(out_path: Path) -> set[str]:
    """Study ids already in a predictions file (a truncated last line, from a killed run, is dropped)."""
    ids: set[str] = set()
    if not out_path.exists():
        return ids
    good = []
    with open(out_path, encoding="utf-8") as fh:
        for line in fh:
            try:
                d = json.loads(line)
            except json.JSONDecodeError:
                continue  # partial line of a killed run: that study is generated again
            if isinstance(d, dict) and "study_id" in d:
                ids.add(d["study_id"])
                good.append(line if line.endswith("\n") else line + "\n")
    with open(out_path, "w", encoding="utf-8") as fh:  # rewrite without the broken tail
        fh.writelines(good)
    return ids


def batched(items: Sequence, n: int) -> Iterator[Sequence]:
    for i in range(0, len(items), n):
        yield items[i:i + n]


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

        texts, images = [], []
        for s in studies:
            messages, refs = build_messages(s, self.cfg)
            texts.append(self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False))
            images.append(load_images(refs, self.data_root))
        inputs = self.processor(text=texts, images=images, return_tensors="pt", padding=True)
        inputs = inputs.to(self.model.device)
        torch.manual_seed(self.settings.seed)
        with torch.no_grad():
            out = self.model.generate(**inputs, **self.settings.hf_kwargs())
        new = out[:, inputs["input_ids"].shape[1]:]
        decoded = self.processor.batch_decode(new, skip_special_tokens=True)
        k = self.settings.num_return_sequences
        return [[d.strip() for d in decoded[i * k:(i + 1) * k]] for i in range(len(studies))]


def generate_predictions(generator, studies: Sequence[StudyRecord], out_path: str | Path, *,
                         batch_size: int = 8, progress: bool = True) -> dict[str, Any]:
    """Generate for every study not yet in ``out_path`` and append one JSON line per study."""
    from tqdm.auto import tqdm

    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    finished = done_ids(out)
    todo = [s for s in studies if s.study_id not in finished]
    t0 = time.perf_counter()
    n_empty = 0
    with open(out, "a", encoding="utf-8") as fh, tqdm(total=len(todo), disable=not progress,
                                                     desc="generate", unit="study") as bar:
        for chunk in batched(todo, batch_size):
            for s, preds in zip(chunk, generator.generate(chunk)):
                n_empty += sum(1 for p in preds if not p)
                row = {"study_id": s.study_id, "prediction": preds[0], "reference": target_text(s, generator.cfg),
                       "context": study_context(s)}
                if len(preds) > 1:
                    row["samples"] = preds
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            fh.flush()
            bar.update(len(chunk))
    dt = time.perf_counter() - t0
    return {"generated": len(todo), "skipped_done": len(finished & {s.study_id for s in studies}),
            "empty_predictions": n_empty, "seconds": round(dt, 2),
            "studies_per_s": round(len(todo) / dt, 3) if dt > 0 and todo else None, "out": str(out)}


def read_predictions(path: str | Path) -> list[dict[str, Any]]:
    rows = []
    with open(path, encoding="utf-8") as fh:
        for i, line in enumerate(fh, start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    from data_prep.errors import DataPrepError

                    raise DataPrepError("not valid JSON", file=str(path), line=i) from None
    return rows
