"""Prediction files and eval folders: `generate`'s rows on phantom studies for the HTML report tests
(write_predictions, make_eval) and scripted task answers for the box tests (task_file, shifted)."""

from __future__ import annotations

import json
from pathlib import Path

FAST = "chexpert,prior,rouge_l,length"
LONG = " Additional sentence about the heart and lungs, repeated for length." * 6
SCRIPT = "<script>alert('x')</script>"


def write_predictions(phantom_dir: Path, out: Path, shift: int, *, images: str = "current",
                      long_id: str | None = None) -> Path:
    """Predictions in `generate`'s format; every third study gets its own impression, the rest a neighbour's.
    ``images``: what each row's "images" field names, as `generate` writes it: "current" (the default prompt's
    images), "prior" (a prompt with the prior study's image too) or "none" (no such field)."""
    from data_prep.schema import image_path, read_records
    from mllm_cxr.data import study_columns
    from mllm_cxr.prompts import PromptConfig, build_messages

    cfg = PromptConfig(include_prior_images=True, max_images=3) if images == "prior" else PromptConfig()
    recs = read_records(phantom_dir / "studies.jsonl")
    with open(out, "w", encoding="utf-8") as fh:
        for i, r in enumerate(recs):
            p = recs[(i + shift) % len(recs)].impression if i % 3 else r.impression
            if i == 1:
                p += " " + SCRIPT
            if r.study_id == long_id:
                p += LONG
            row = {"study_id": r.study_id, "prediction": p, "reference": r.impression, "context": study_columns(r)}
            if images != "none":
                row["images"] = [str(image_path(phantom_dir, im.path).resolve()) for im in build_messages(r, cfg)[1]]
            fh.write(json.dumps(row) + "\n")
    return out


def make_eval(tmp: Path, phantom_dir: Path, *, compare: bool = True, long_id: str | None = None) -> Path:
    from evaluation.evaluate import run_eval

    a = write_predictions(phantom_dir, tmp / "sys_a.jsonl", 1, long_id=long_id)
    b = write_predictions(phantom_dir, tmp / "sys_b.jsonl", 2, images="prior") if compare else None
    run_eval(a, tmp / "eval", compare=b, metrics=FAST.split(","), n_boot=50, plots=False, progress=False)
    return tmp / "eval"


# -- task rows (generate --task) without a model --------------------------------------------------------
PIX = {"min_pixels": 56 * 56, "max_pixels": 224 * 224}


class ScriptedGenerator:
    """Answers each task example with ``answer(example)`` (no model): the oracle or a damaged answer."""

    def __init__(self, data_root: Path, answer) -> None:
        from mllm_cxr.prompts import PromptConfig

        self.cfg, self.data_root, self.answer = PromptConfig(), Path(data_root), answer

    def generate(self, items):
        return [[self.answer(x)] for x in items]


def task_file(phantom_dir: Path, tmp_path: Path, task: str, answer, name: str, n: int = 12) -> Path:
    """`generate --task TASK`'s rows for the first ``n`` phantom studies, each answered by ``answer(example)``."""
    from mllm_cxr.data import load_split
    from mllm_cxr.infer.generate import generate_predictions
    from mllm_cxr.prompts import PromptConfig
    from mllm_cxr.tasks import TaskConfig

    cfg = TaskConfig(prompt=PromptConfig(), family="qwen2_5_vl", data_root=phantom_dir, **PIX)
    studies = load_split(phantom_dir / "studies.jsonl", None, n)
    out = tmp_path / f"{name}.jsonl"
    generate_predictions(ScriptedGenerator(phantom_dir, answer), studies, out, progress=False, task=task,
                         task_cfg=cfg)
    return out


def shifted(ex) -> str:
    """The example's reference boxes moved right by a quarter of the image (IoU well under 0.5)."""
    from cxr_io.boxes import encode_boxes

    boxes = json.loads(ex.columns["boxes"])
    moved = [{"x_min": min(b["x_min"] + 0.25, 0.98), "y_min": b["y_min"], "x_max": min(b["x_max"] + 0.25, 0.999),
              "y_max": b["y_max"], "label": "x"} for b in boxes]
    return encode_boxes(moved, "qwen2_5_vl", ex.columns["image_size"], **PIX)
