"""Tasks: a task turns a study into prompt + target and names its metrics and rewards.

================  =========================================  ==========================  ==================
task              one example per                            target                      rewards
================  =========================================  ==========================  ==================
report            study with the target sections              FINDINGS / IMPRESSION       chexpert_f1
grounded_report   study with a boxed grounded finding         sentences + boxes (codec)   grounded_report
phrase_grounding  grounded finding with boxes                 its boxes (codec)           iou, box_format
detection         finding label asked on an annotated image   its boxes or "Not found."   box_f1, box_format
classification    study with CheXpert labels                  "Finding: yes/no/..." lines answer_match
vqa               CheXpert label that is set (1/0/-1)         "Yes." / "No." / "Uncertain." answer_match
view              image with a known view                     "PA" / "AP" / ...           answer_match
================  =========================================  ==========================  ==================

Every prompt comes from :func:`mllm_cxr.prompts.build_messages` (the report task's exactly as today;
the others pass their instruction, and the one image a box or view question is about), so training and
inference share the text. Boxes are written by the model family's codec (:mod:`mllm_cxr.boxes`), which
for Qwen2.5-VL needs each image's size: :class:`TaskConfig` reads it from the image file under the data
root (or takes a function).

A recipe mixes tasks by weight (:func:`load_mixture`)::

    tasks:
      - {name: report, weight: 0.6}
      - {name: phrase_grounding, weight: 0.3}
      - {name: vqa, weight: 0.1}
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data_prep.schema import FRONTAL_VIEWS, ImageRef, StudyRecord, image_path
from mllm_cxr.boxes import FAMILIES, decode_boxes, encode_boxes, encode_grounded
from mllm_cxr.config import ConfigError
from mllm_cxr.prompts import PromptConfig, build_messages, has_target, target_text
from reward.constants import CHEXPERT_LABELS

NOT_FOUND = "Not found."
_ANSWERS = {1.0: "Yes.", 0.0: "No.", -1.0: "Uncertain."}
_VIEW_ANSWERS = {"PA": "PA", "AP": "AP", "LATERAL": "Lateral", "LL": "Lateral"}
_NEUTRAL_SIZE = (1000, 1000)


@dataclass
class TaskConfig:
    """How tasks write their targets: the prompt options, the box family and the processor's budget.

    ``image_size``: ``f(study, image) -> (width, height)`` of the original image; by default the image
    file's header under ``data_root`` (only read when the family needs it: qwen2_5_vl, maira2).
    ``detection_labels``: the findings a detection example may ask about on an annotated image
    (those absent from it become "Not found." examples); default: the labels seen on that image only.
    """

    prompt: PromptConfig = field(default_factory=PromptConfig)
    family: str = "qwen2_5_vl"
    min_pixels: int | None = None
    max_pixels: int | None = None
    data_root: str | os.PathLike | None = None
    image_size: Callable[[StudyRecord, ImageRef], tuple[int, int]] | None = None
    detection_labels: Sequence[str] = ()

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ConfigError(f"tasks: box family must be one of {', '.join(FAMILIES)}, got {self.family!r}")

    def size_of(self, study: StudyRecord, image: ImageRef) -> tuple[int, int]:
        if self.family not in ("qwen2_5_vl", "maira2"):
            return _NEUTRAL_SIZE
        if self.image_size is not None:
            return tuple(self.image_size(study, image))  # type: ignore[return-value]
        if self.data_root is None:
            raise ConfigError(f"tasks: family {self.family} writes boxes in pixels of each image: give data_root "
                              "(or an image_size function)")
        from PIL import Image

        with Image.open(image_path(self.data_root, image.path)) as im:
            return im.size


@dataclass
class Example:
    """One prompt + target of a task; ``columns`` are what its rewards and metrics read."""

    task: str
    study_id: str
    messages: list[dict[str, Any]]
    images: list[ImageRef]
    target: str
    columns: dict[str, Any] = field(default_factory=dict)


class Task:
    """Base class: ``name``, ``metrics`` (evaluation metric names), ``rewards`` (registered reward names),
    and :meth:`examples` (a study -> zero or more examples)."""

    name: str = "task"
    metrics: tuple[str, ...] = ()
    rewards: tuple[str, ...] = ()

    def examples(self, study: StudyRecord, cfg: TaskConfig) -> list[Example]:
        raise NotImplementedError

    def _example(self, study: StudyRecord, cfg: TaskConfig, target: str, *, instruction: str | None = None,
                 images: Sequence[ImageRef] | None = None, **columns: Any) -> Example:
        messages, refs = build_messages(study, cfg.prompt, instruction=instruction, images=images)
        return Example(self.name, study.study_id, messages, refs, target, {"task": self.name, **columns})


def _frontal_index(study: StudyRecord) -> int | None:
    for i, im in enumerate(study.images):
        if im.view in FRONTAL_VIEWS:
            return i
    return 0 if study.images else None


class ReportTask(Task):
    name = "report"
    metrics = ("chexpert", "bleu", "rouge_l")
    rewards = ("chexpert_f1",)

    def examples(self, study, cfg):
        if not has_target(study, cfg.prompt):
            return []
        messages, refs = build_messages(study, cfg.prompt)
        return [Example(self.name, study.study_id, messages, refs, target_text(study, cfg.prompt),
                        {"task": self.name, "reference": target_text(study, cfg.prompt)})]


class GroundedReportTask(Task):
    name = "grounded_report"
    metrics = ("grounded_report", "parse_failure_rate")
    rewards = ("grounded_report",)
    instruction = ("Write the FINDINGS section as one sentence per finding. For each finding you can see on the "
                   "image, give the bounding boxes of where it is.")

    def examples(self, study, cfg):
        g = study.grounded_findings or []
        boxed = [x for x in g if x["boxes"]]
        if not boxed or not study.images:
            return []
        idx = boxed[0]["image"]
        image = study.images[idx]
        size = cfg.size_of(study, image)
        findings = [{"text": x["text"], "boxes": x["boxes"] if x["image"] == idx else None} for x in g]
        target = encode_grounded(findings, cfg.family, size, min_pixels=cfg.min_pixels, max_pixels=cfg.max_pixels)
        return [self._example(study, cfg, target, instruction=self.instruction, images=[image],
                              grounded_findings=json.dumps([{"text": f["text"], "boxes": f["boxes"]} for f in findings]),
                              image_size=list(size))]


class PhraseGroundingTask(Task):
    name = "phrase_grounding"
    metrics = ("mean_iou", "acc_at_iou_0.5", "parse_failure_rate")
    rewards = ("iou",)

    def examples(self, study, cfg):
        out = []
        for g in study.grounded_findings or []:
            if not g["boxes"] or g["image"] >= len(study.images):
                continue
            image = study.images[g["image"]]
            size = cfg.size_of(study, image)
            boxes = [{**b, "label": g["text"]} for b in g["boxes"]]
            target = encode_boxes(boxes, cfg.family, size, min_pixels=cfg.min_pixels, max_pixels=cfg.max_pixels)
            out.append(self._example(study, cfg, target, images=[image],
                                     instruction=f"Give the bounding boxes of all the places where this finding can "
                                                 f"be seen: {g['text']}",
                                     boxes=json.dumps(g["boxes"]), image_size=list(size), phrase=g["text"]))
        return out


class DetectionTask(Task):
    name = "detection"
    metrics = ("map_0.5", "box_f1", "parse_failure_rate")
    rewards = ("box_f1", "box_format")

    def examples(self, study, cfg):
        out = []
        for image in study.images:
            if image.boxes is None:  # not annotated: nothing can be said to be absent
                continue
            by_label: dict[str, list[dict]] = {}
            for b in image.boxes:
                by_label.setdefault(b["label"], []).append({k: b[k] for k in ("x_min", "y_min", "x_max", "y_max")})
            labels = list(dict.fromkeys([*by_label, *cfg.detection_labels]))
            size = cfg.size_of(study, image)
            for label in labels:
                boxes = by_label.get(label, [])
                target = (encode_boxes([{**b, "label": label} for b in boxes], cfg.family, size,
                                       min_pixels=cfg.min_pixels, max_pixels=cfg.max_pixels) if boxes else NOT_FOUND)
                out.append(self._example(study, cfg, target, images=[image],
                                         instruction=f"Find {label} on this chest X-ray. Give its bounding boxes, or "
                                                     f"answer \"{NOT_FOUND}\" if it is not there.",
                                         boxes=json.dumps(boxes), image_size=list(size), label=label))
        return out


def _finding_name(label: str) -> str:
    return label.lower()


class ClassificationTask(Task):
    name = "classification"
    metrics = ("accuracy",)
    rewards = ("answer_match",)

    def examples(self, study, cfg):
        labels = {k: v for k, v in (study.labels or {}).items() if v is not None}
        if not labels:
            return []
        asked = [k for k in CHEXPERT_LABELS if k in labels]
        target = "\n".join(f"{k}: {_ANSWERS[labels[k]].rstrip('.').lower()}" for k in asked)
        instruction = ("For each of these findings, answer yes, no or uncertain, one per line as 'Finding: answer': "
                       + ", ".join(asked) + ".")
        return [self._example(study, cfg, target, instruction=instruction, reference=target)]


class VQATask(Task):
    name = "vqa"
    metrics = ("accuracy",)
    rewards = ("answer_match",)

    def examples(self, study, cfg):
        out = []
        for k in CHEXPERT_LABELS:
            v = (study.labels or {}).get(k)
            if v is None:
                continue
            q = ("Is this chest X-ray normal (no finding)?" if k == "No Finding" else
                 f"Is there {_finding_name(k)} on this chest X-ray?")
            answer = _ANSWERS[v]
            out.append(self._example(study, cfg, answer, instruction=q + " Answer yes, no or uncertain.",
                                     reference=answer, label=k))
        return out


class ViewTask(Task):
    name = "view"
    metrics = ("accuracy",)
    rewards = ("answer_match",)
    instruction = "Which view is this chest X-ray: PA, AP or lateral?"

    def examples(self, study, cfg):
        return [self._example(study, cfg, _VIEW_ANSWERS[im.view], instruction=self.instruction, images=[im],
                              reference=_VIEW_ANSWERS[im.view])
                for im in study.images if im.view in _VIEW_ANSWERS]


#: The task registry: one explicit table.
TASKS: dict[str, Task] = {t.name: t for t in (ReportTask(), GroundedReportTask(), PhraseGroundingTask(),
                                             DetectionTask(), ClassificationTask(), VQATask(), ViewTask())}


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise ConfigError(f"unknown task {name!r}; known: {', '.join(TASKS)}")
    return TASKS[name]


# -- mixtures --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MixtureEntry:
    name: str
    weight: float


def load_mixture(spec: str | os.PathLike | Mapping | Sequence) -> list[MixtureEntry]:
    """A weighted task mixture from YAML (a file path, or the parsed ``{tasks: [...]}`` / list).

    Each entry is ``{name, weight}`` (weight > 0, finite; default 1) or a bare task name. Unknown tasks,
    unknown keys, repeated names and an empty list are :class:`ConfigError`\\ s naming the entry. Weights
    are normalised to sum to 1.
    """
    where = "task mixture"
    if isinstance(spec, str | os.PathLike) and (not isinstance(spec, str) or "\n" not in spec):
        from cxr_io import read_yaml

        where = os.fspath(spec)
        if not Path(where).is_file():
            raise ConfigError(f"task mixture file not found: {where}")
        spec = read_yaml(where, role="task mixture", error=ConfigError)
    if isinstance(spec, Mapping):
        if set(spec) - {"tasks"}:
            raise ConfigError(f"{where}: unknown key(s) {sorted(set(spec) - {'tasks'})}; expected 'tasks'")
        spec = spec.get("tasks")
    if isinstance(spec, str) or not isinstance(spec, Sequence) or not spec:
        raise ConfigError(f"{where}: 'tasks' must be a non-empty list of {{name, weight}}")
    out: list[MixtureEntry] = []
    for i, item in enumerate(spec):
        if isinstance(item, str):
            item = {"name": item}
        if not isinstance(item, Mapping):
            raise ConfigError(f"{where}: tasks[{i}] must be {{name, weight}} or a task name, got {item!r}")
        extra = set(item) - {"name", "weight"}
        if extra:
            raise ConfigError(f"{where}: tasks[{i}] has unknown key(s) {sorted(extra)} (allowed: name, weight)")
        name = item.get("name")
        if name not in TASKS:
            raise ConfigError(f"{where}: tasks[{i}]: unknown task {name!r}; known: {', '.join(TASKS)}")
        if any(e.name == name for e in out):
            raise ConfigError(f"{where}: tasks[{i}]: task {name!r} is listed twice")
        w = item.get("weight", 1.0)
        if isinstance(w, bool) or not isinstance(w, int | float) or not math.isfinite(w) or w <= 0:
            raise ConfigError(f"{where}: tasks[{i}] ({name}): weight must be a positive number, got {w!r}")
        out.append(MixtureEntry(name, float(w)))
    total = sum(e.weight for e in out)
    return [MixtureEntry(e.name, e.weight / total) for e in out]


def parse_mixture_arg(value: str) -> list[MixtureEntry]:
    """The ``tasks`` recipe key: a mixture YAML file, or ``name:weight,name:weight`` (weight default 1)."""
    value = str(value).strip()
    if value.endswith((".yaml", ".yml")) or Path(value).is_file():
        return load_mixture(value)
    entries: list[dict[str, Any]] = []
    for part in (p.strip() for p in value.split(",")):
        if not part:
            continue
        name, _, w = part.partition(":")
        entry: dict[str, Any] = {"name": name.strip()}
        if w.strip():
            try:
                entry["weight"] = float(w)
            except ValueError:
                raise ConfigError(f"tasks: weight of {name.strip()!r} must be a number, got {w!r}") from None
        entries.append(entry)
    return load_mixture({"tasks": entries})


#: The tasks whose targets hold boxes (their text depends on the box family and the pixel budget).
BOX_TASKS = frozenset({"grounded_report", "phrase_grounding", "detection"})


def mix_examples(studies: Sequence[StudyRecord], mixture: Sequence[MixtureEntry], cfg: TaskConfig, *,
                 n: int | None = None, seed: int = 0) -> list[Example]:
    """``n`` examples (default: as many as studies) drawn by the mixture's weights, deterministically by
    ``seed``: each draw picks a task by weight, then that task's next example (its examples shuffled
    once, cycled when used up). A task with no example in ``studies`` is a :class:`ConfigError`."""
    import random

    rng = random.Random(seed)
    pools: dict[str, list[Example]] = {}
    for e in mixture:
        pool = [ex for s in studies for ex in get_task(e.name).examples(s, cfg)]
        if not pool:
            raise ConfigError(f"task {e.name!r} has no example in these {len(studies)} studies "
                              "(no boxes / labels / views for it); drop it from the mixture")
        rng.shuffle(pool)
        pools[e.name] = pool
    pos = dict.fromkeys(pools, 0)
    names, weights = [e.name for e in mixture], [e.weight for e in mixture]
    out = []
    for _ in range(len(studies) if n is None else n):
        t = rng.choices(names, weights)[0]
        out.append(pools[t][pos[t] % len(pools[t])])
        pos[t] += 1
    return out


def decode_answer(example: Example, text: str, cfg: TaskConfig):
    """A box task's answer decoded with the example's family and image size (the parse-failure count
    rides on the result); other tasks' answers come back as the text."""
    if example.task in ("phrase_grounding", "detection"):
        return decode_boxes(text, cfg.family, example.columns["image_size"], min_pixels=cfg.min_pixels,
                            max_pixels=cfg.max_pixels)
    return text


# -- rewards per task (GRPO, pairs sample) ----------------------------------------------------------
def task_reward_entries(task: str, *, family: str, min_pixels: int | None = None,
                        max_pixels: int | None = None) -> list[dict[str, Any]]:
    """The reward-spec entries of a task other than ``report``: its registered :attr:`Task.rewards`, weight 1
    each, the box rewards with the box family and pixel budget as kwargs."""
    from mllm_cxr.boxes import FAMILIES as _FAMILIES

    if family not in _FAMILIES:
        raise ConfigError(f"box family must be one of {', '.join(_FAMILIES)}, got {family!r}")
    out = []
    for name in get_task(task).rewards:
        kw: dict[str, Any] = {}
        if name in ("iou", "box_f1", "box_format", "grounded_report"):
            kw = {"family": family, "min_pixels": min_pixels, "max_pixels": max_pixels}
        out.append({"name": name, "weight": 1.0, "kwargs": kw})
    return out


def task_reward_funcs(tasks: Sequence[str], report_spec: Any, *, family: str, min_pixels: int | None = None,
                      max_pixels: int | None = None, reference_column: Any = None) -> tuple[list, list[float]]:
    """Reward functions and weights for a multi-task GRPO run, each routed to its tasks' rows by the dataset's
    ``task`` column (:class:`reward.trl.TaskRoutedReward`; other rows get None, which TRL leaves out):
    ``report`` rows get ``report_spec`` (the recipe's ``reward_spec``), every other task its
    :func:`task_reward_entries`; an entry shared by several tasks (``box_format``) is one function."""
    from reward.trl import TaskRoutedReward, reward_funcs_and_weights

    for t in tasks:
        get_task(t)
    out_f: list = []
    out_w: list[float] = []
    if "report" in tasks:
        funcs, weights = reward_funcs_and_weights(report_spec, reference_column=reference_column)
        out_f += [TaskRoutedReward(f, ["report"]) for f in funcs]
        out_w += list(weights)
    shared: dict[str, tuple[dict[str, Any], list[str]]] = {}
    for t in tasks:
        if t == "report":
            continue
        for e in task_reward_entries(t, family=family, min_pixels=min_pixels, max_pixels=max_pixels):
            key = json.dumps([e["name"], e["kwargs"]], sort_keys=True)
            shared.setdefault(key, (e, []))[1].append(t)
    for e, ts in shared.values():
        (f,), (w,) = reward_funcs_and_weights([e], reference_column="reference")
        out_f.append(TaskRoutedReward(f, ts))
        out_w.append(w)
    return out_f, out_w


def task_reward(task: str, report_spec: Any, *, family: str, min_pixels: int | None = None,
                max_pixels: int | None = None):
    """One reward function for one task's samples (``pairs sample --task``): the weighted sum of its rewards
    (the report spec for ``report``)."""
    from reward.trl import make_composite_reward

    if task == "report":
        return make_composite_reward(report_spec)
    return make_composite_reward(task_reward_entries(task, family=family, min_pixels=min_pixels,
                                                     max_pixels=max_pixels), name=task)
