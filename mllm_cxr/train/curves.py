"""Held-out learning curves during preference and RL training (DPO, GRPO, EditGRPO).

Every ``curve_every`` optimizer steps (and before the first) the policy writes a report for each study
of a fixed held-out subset (the ``curve_split``, by default ``validate``: never the test split), once
greedy and once sampled, and the curve records:

- ``chexpert_f1_greedy`` / ``chexpert_f1_sampled``: micro F1 over the 14 CheXpert observations (rule
  labeler, uncertain = positive) against the reference report's labels;
- ``prior_rate_greedy`` / ``prior_rate_sampled``: the share of reports of studies *without* a prior
  exam that still refer to one;
- ``reward_greedy``: the run's own reward (for DPO, the clinical composite) averaged over the subset;
- ``normal_share``: the share of greedy reports the labeler reads as "No Finding" (a collapse to the
  majority report shows here first).

``curves.json`` and ``curves.png`` are written into ``output_dir`` (atomically) after every point, so a
stopped run keeps its curve. The texts are never logged.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from cxr_io import write_text_atomic

log = logging.getLogger(__name__)

CURVES_JSON, CURVES_PNG = "curves.json", "curves.png"


@dataclass
class CurveArguments:
    """Held-out learning curves (YAML keys / ``--flags`` of the DPO and GRPO recipes)."""

    curve_every: int = field(default=0, metadata={"help": "evaluate the held-out subset every N optimizer steps "
                                                            "(0 = no curve)"})
    curve_studies: int = field(default=32, metadata={"help": "studies in the fixed held-out subset"})
    curve_split: str = field(default="validate", metadata={"help": "split the subset is drawn from (never "
                                                                   "the test split you report)"})
    curve_max_new_tokens: int = field(default=96, metadata={"help": "generation length for the curve"})
    curve_reward_spec: str | None = field(default=None, metadata={
        "help": "reward spec scored on the curve (default: the run's reward_spec, or the clinical composite)"})

    def __post_init__(self) -> None:
        if self.curve_every < 0:
            raise ValueError(f"curve_every must be >= 0, got {self.curve_every}")
        if self.curve_studies < 1:
            raise ValueError(f"curve_studies must be >= 1, got {self.curve_studies}")
        if self.curve_max_new_tokens < 1:
            raise ValueError(f"curve_max_new_tokens must be >= 1, got {self.curve_max_new_tokens}")


def curve_point(texts_greedy: list[str], texts_sampled: list[str], rows: list[dict[str, Any]],
                reward=None) -> dict[str, float]:
    """The curve's numbers for one evaluation (pure: texts in, numbers out)."""
    from reward.chexpert import label_reports
    from reward.f1 import f1_report
    from reward.prior import find_prior_references

    refs = [r["reference"] for r in rows]
    ref_labels = label_reports(refs)
    out: dict[str, float] = {}
    for tag, texts in (("greedy", texts_greedy), ("sampled", texts_sampled)):
        labels = label_reports(texts)
        out[f"chexpert_f1_{tag}"] = float(f1_report(labels, ref_labels)["f1_14"]["micro"])
        no_prior = [t for t, r in zip(texts, rows) if not r.get("has_prior")]
        out[f"prior_rate_{tag}"] = (sum(bool(find_prior_references(t)) for t in no_prior) / len(no_prior)
                                    if no_prior else float("nan"))
        if tag == "greedy":
            out["normal_share"] = sum(lab.get("No Finding") == 1 for lab in labels) / max(1, len(labels))
    if reward is not None:
        completions = [[{"role": "assistant", "content": t}] for t in texts_greedy]
        columns = {k: [r.get(k) for r in rows] for k in rows[0] if k not in ("prompt", "images")}
        values = [v for v in reward(prompts=[r["prompt"] for r in rows], completions=completions, **columns)
                  if v is not None]
        out["reward_greedy"] = sum(values) / len(values) if values else float("nan")
    return out


class HeldOutCurve(TrainerCallback):
    """A :class:`~transformers.TrainerCallback` that evaluates ``rows`` (GRPO-style dataset rows: prompt
    messages, image paths, reference and reward columns) every ``every`` steps."""

    def __init__(self, rows: list[dict[str, Any]], processor, *, every: int, output_dir: str | Path,
                 reward=None, max_new_tokens: int = 96, batch_size: int = 16, seed: int = 0, title: str = ""):
        self.rows, self.processor, self.every = rows, processor, every
        self.out = Path(output_dir)
        self.reward, self.max_new_tokens, self.batch_size, self.seed = reward, max_new_tokens, batch_size, seed
        self.title = title
        self.points: list[dict[str, Any]] = []
        self._images = None

    # -- generation ----------------------------------------------------------------------------------
    def _load_images(self) -> list[list]:
        if self._images is None:
            from PIL import Image

            self._images = []
            for r in self.rows:
                ims = []
                for p in r["images"]:
                    with Image.open(p) as im:
                        ims.append(im.convert("RGB"))
                self._images.append(ims)
        return self._images

    def _generate(self, model, *, sample: bool) -> list[str]:
        proc = self.processor
        images = self._load_images()
        texts: list[str] = []
        tok = proc.tokenizer
        old_side = tok.padding_side
        tok.padding_side = "left"
        try:
            for i in range(0, len(self.rows), self.batch_size):
                chunk = self.rows[i:i + self.batch_size]
                prompts = [proc.apply_chat_template(r["prompt"], add_generation_prompt=True, tokenize=False)
                           for r in chunk]
                inputs = proc(text=prompts, images=images[i:i + len(chunk)], return_tensors="pt", padding=True)
                inputs = inputs.to(next(model.parameters()).device)
                kw: dict[str, Any] = {"do_sample": sample, "max_new_tokens": self.max_new_tokens}
                if sample:
                    kw.update(temperature=1.0, top_p=1.0, top_k=0)
                else:
                    kw.update(temperature=None, top_p=None, top_k=None)
                out = model.generate(**inputs, **kw)
                texts += tok.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
        finally:
            tok.padding_side = old_side
        return [t.strip() for t in texts]

    def evaluate(self, model, step: int) -> dict[str, Any]:
        import torch

        t0 = time.perf_counter()
        was_training = model.training
        model.eval()
        state = torch.random.get_rng_state()
        try:
            with torch.no_grad():
                greedy = self._generate(model, sample=False)
                torch.manual_seed(self.seed + step)
                sampled = self._generate(model, sample=True)
        finally:
            torch.random.set_rng_state(state)  # the curve never changes the run's own randomness
            if was_training:
                model.train()
        point = {"step": step, **curve_point(greedy, sampled, self.rows, self.reward),
                 "seconds": round(time.perf_counter() - t0, 2)}
        self.points.append(point)
        self.write()
        return point

    # -- callback hooks ------------------------------------------------------------------------------
    def on_train_begin(self, args, state, control, model=None, **kw):
        if self.every and state.is_world_process_zero and model is not None:
            self.evaluate(model, state.global_step)

    def on_step_end(self, args, state, control, model=None, **kw):
        if (self.every and state.is_world_process_zero and model is not None and state.global_step % self.every == 0
                and (not self.points or self.points[-1]["step"] != state.global_step)):
            self.evaluate(model, state.global_step)

    def on_train_end(self, args, state, control, model=None, **kw):
        if (self.every and state.is_world_process_zero and model is not None
                and (not self.points or self.points[-1]["step"] != state.global_step)):
            self.evaluate(model, state.global_step)

    # -- output --------------------------------------------------------------------------------------
    def write(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        doc = {"studies": len(self.rows), "every": self.every, "study_ids": [r.get("study_id") for r in self.rows],
               "points": self.points}
        write_text_atomic(self.out / CURVES_JSON, json.dumps(doc, indent=2))
        plot_curves(self.points, self.out / CURVES_PNG, title=self.title)


def plot_curves(points: list[dict[str, Any]], path: str | Path, *, title: str = "") -> Path | None:
    """Two panels (accuracy and prior references; reward and normal share) over optimizer steps."""
    if not points:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cxr_io import atomic_write

    steps = [p["step"] for p in points]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    for key, style in (("chexpert_f1_greedy", "-o"), ("chexpert_f1_sampled", "--o"),
                       ("prior_rate_greedy", "-s"), ("prior_rate_sampled", "--s")):
        a.plot(steps, [p.get(key, float("nan")) for p in points], style, ms=3, label=key.replace("_", " "))
    a.set_xlabel("optimizer step")
    a.set_ylim(-0.02, 1.02)
    a.legend(fontsize=7)
    a.set_title("held-out CheXpert F1 and prior references", fontsize=9)
    for key, style in (("reward_greedy", "-o"), ("normal_share", "-s")):
        b.plot(steps, [p.get(key, float("nan")) for p in points], style, ms=3, label=key.replace("_", " "))
    b.set_xlabel("optimizer step")
    b.legend(fontsize=7)
    b.set_title("held-out reward and normal share", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_write(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=90)
    plt.close(fig)
    return Path(path)


#: The reward scored on a DPO curve (DPO has no reward of its own): the clinical composite.
DEFAULT_CURVE_REWARD = {"rewards": [{"name": "chexpert_f1", "weight": 1.0, "kwargs": {"subset": "14"}},
                                    {"name": "prior_penalty", "weight": 0.5}]}


def curve_callback(curve_args: CurveArguments, data_args, prompt_cfg, processor, output_dir: str | Path, *,
                   reward_spec: Any = None, title: str = "", seed: int = 0) -> HeldOutCurve | None:
    """The :class:`HeldOutCurve` a recipe adds to its trainer (None when ``curve_every`` is 0): the first
    ``curve_studies`` studies of ``curve_split``, with the prompt of ``prompt_cfg``."""
    if not curve_args.curve_every:
        return None
    from mllm_cxr.data import load_split, study_rows
    from reward.trl import make_composite_reward

    if curve_args.curve_split == data_args.train_split:
        raise ValueError(f"curve_split {curve_args.curve_split!r} is the training split; a learning curve is "
                         "measured on held-out studies (e.g. validate)")
    records = load_split(data_args.studies, curve_args.curve_split, curve_args.curve_studies)
    rows, _ = study_rows(records, data_args.root(), prompt_cfg)
    spec = curve_args.curve_reward_spec or reward_spec or DEFAULT_CURVE_REWARD
    return HeldOutCurve(rows, processor, every=curve_args.curve_every, output_dir=output_dir,
                        reward=make_composite_reward(spec, name="curve_reward"),
                        max_new_tokens=curve_args.curve_max_new_tokens, seed=seed, title=title)


def print_curve_location(output_dir: str | Path) -> None:
    """One line naming the curve files, when the run wrote them."""
    png = Path(output_dir) / CURVES_PNG
    if png.is_file():
        print(f"held-out learning curve: {png} (numbers in {Path(output_dir) / CURVES_JSON})", flush=True)
