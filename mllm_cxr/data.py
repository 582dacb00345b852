"""Study records -> the datasets TRL's trainers consume (SFT, DPO, GRPO).

Images stay on disk: the ``images`` column holds file paths (the data root from
:func:`data_prep.schema.resolve_data_root` joined with each record's path) typed as ``datasets.Image``,
decoded lazily, so a 200k-study dataset does not sit in memory. DICOM must be converted once by
``mllm-cxr prepare ... --image-cache DIR`` (the converter resizes to the pixel budget and writes PNGs).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from data_prep.errors import BadImageError, DataPrepError
from data_prep.schema import StudyRecord, image_path, read_records
from mllm_cxr.prompts import PromptConfig, build_messages, has_target, target_text

log = logging.getLogger(__name__)
DECODABLE = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


def _image_paths(study: StudyRecord, refs, data_root: Path, check: bool) -> list[str]:
    paths = []
    for r in refs:
        p = image_path(data_root, r.path).resolve()
        if p.suffix.lower() not in DECODABLE:
            raise BadImageError("trainers read PNG/JPG; convert DICOM once with `mllm-cxr prepare <dataset> "
                                "--image-cache DIR`", file=str(p), field="images.path", value=r.path)
        if check and not p.exists():
            raise BadImageError(f"image of study {study.study_id} not found", file=str(p), field="images.path",
                                value=r.path)
        paths.append(str(p))
    return paths


def study_rows(records: Sequence[StudyRecord], data_root: str | Path, cfg: PromptConfig, *,
               check_images: bool = True, require_target: bool = True) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """One row per study: prompt messages, image paths, reference text and context columns.

    Studies without text in the target sections are skipped and counted (``require_target``).
    """
    root = Path(data_root)
    rows, skipped = [], {"no_target": 0, "no_image": 0}
    for s in records:
        if require_target and not has_target(s, cfg):
            skipped["no_target"] += 1
            continue
        messages, refs = build_messages(s, cfg)
        if not refs:
            skipped["no_image"] += 1
            continue
        rows.append({"prompt": messages, "images": _image_paths(s, refs, root, check_images),
                     **reward_columns(s, cfg)})
    return rows, skipped


def study_columns(study: StudyRecord, *, labels_json: bool = False) -> dict[str, Any]:
    """The study facts recorded beside a report wherever one is scored: the reward columns of the
    trainers' datasets (:func:`reward_columns`) and the ``context`` of each prediction that eval reads
    (prior rate, CheXpert labels). ``labels_json``: labels as a JSON string ("" for none), the one
    type an Arrow column can hold for every study."""
    labels: Any = study.labels
    if labels_json:
        labels = json.dumps(study.labels) if study.labels is not None else ""
    return {"indication": study.indication, "comparison": study.comparison, "has_prior": study.has_prior,
            "labels": labels, "dataset": study.dataset, "split": study.split,
            "findings": study.findings, "impression": study.impression}


def reward_columns(study: StudyRecord, cfg: PromptConfig) -> dict[str, Any]:
    """The per-study columns a reward function sees (GRPO dataset rows, ``pairs sample``): the study
    id, the reference report for the prompt's sections and :func:`study_columns`."""
    return {"study_id": study.study_id, "reference": target_text(study, cfg),
            **study_columns(study, labels_json=True)}


def _to_dataset(rows: list[dict[str, Any]]):
    from datasets import Dataset, Image
    from datasets import Sequence as HFSequence

    if not rows:
        raise DataPrepError("no usable studies (all skipped: empty target sections or no images)")
    ds = Dataset.from_list(rows)
    return ds.cast_column("images", HFSequence(Image()))


def assistant(text: str) -> list[dict[str, Any]]:
    return [{"role": "assistant", "content": [{"type": "text", "text": text}]}]


def sft_dataset(records: Sequence[StudyRecord], data_root, cfg: PromptConfig, **kw):
    """prompt/completion rows (TRL computes the loss on the completion = the report only)."""
    rows, skipped = study_rows(records, data_root, cfg, **kw)
    for r in rows:
        r["completion"] = assistant(r["reference"])
    if any(skipped.values()):
        log.warning("SFT data: skipped %s", skipped)
    return _to_dataset(rows)


def task_sft_dataset(records: Sequence[StudyRecord], data_root, cfg: PromptConfig, *, mixture: Sequence[Any],
                     family: str = "qwen2_5_vl", min_pixels: int | None = None, max_pixels: int | None = None,
                     seed: int = 0, check_images: bool = True):
    """prompt/completion rows of a task mixture (:mod:`mllm_cxr.tasks`): as many rows as studies, drawn by
    the mixture's weights; each row also names its ``task`` and ``study_id``.

    Box targets of the ``qwen2_5_vl`` family are pixels of the image as the processor resizes it, so a
    mixture with a box task needs the pixel budget (``min_pixels`` and ``max_pixels``) set explicitly.
    """
    from mllm_cxr.config import ConfigError
    from mllm_cxr.tasks import BOX_TASKS, TaskConfig, mix_examples

    if family == "qwen2_5_vl" and any(e.name in BOX_TASKS for e in mixture) and (min_pixels is None or
                                                                                  max_pixels is None):
        raise ConfigError("tasks: box targets for qwen2_5_vl are pixels of the resized image; set min_pixels and "
                          "max_pixels (the processor's budget) in the recipe config")
    root = Path(data_root)
    task_cfg = TaskConfig(prompt=cfg, family=family, min_pixels=min_pixels, max_pixels=max_pixels, data_root=root)
    by_id = {s.study_id: s for s in records}
    rows = []
    for ex in mix_examples(records, mixture, task_cfg, seed=seed):
        rows.append({"prompt": ex.messages, "images": _image_paths(by_id[ex.study_id], ex.images, root, check_images),
                     "completion": assistant(ex.target), "study_id": ex.study_id, "task": ex.task})
    return _to_dataset(rows)


def grpo_dataset(records: Sequence[StudyRecord], data_root, cfg: PromptConfig, **kw):
    """prompt rows with the columns reward functions read (reference, comparison, has_prior, labels)."""
    rows, skipped = study_rows(records, data_root, cfg, **kw)
    if any(skipped.values()):
        log.warning("GRPO data: skipped %s", skipped)
    return _to_dataset(rows)


def dpo_dataset(pairs: Sequence[dict[str, Any]], records_by_id: dict[str, StudyRecord], data_root,
                cfg: PromptConfig, **kw):
    """Preference pairs ({study_id, chosen, rejected}) -> prompt/chosen/rejected/images rows."""
    rows = []
    for i, p in enumerate(pairs):
        for k in ("study_id", "chosen", "rejected"):
            if not isinstance(p.get(k), str) or not p[k].strip():
                raise DataPrepError("preference pair needs a non-empty string", line=i + 1, field=k, value=p.get(k))
        if p["study_id"] not in records_by_id:
            raise DataPrepError("pair refers to an unknown study", line=i + 1, field="study_id", value=p["study_id"])
        s = records_by_id[p["study_id"]]
        (row,), _ = study_rows([s], data_root, cfg, require_target=False, **kw)
        row["chosen"], row["rejected"] = assistant(p["chosen"]), assistant(p["rejected"])
        rows.append(row)
    return _to_dataset(rows)


def load_split(path: str | Path, split: str | None, limit: int | None = None) -> list[StudyRecord]:
    recs = read_records(path, split=split)
    if not recs:
        raise DataPrepError(f"no studies with split={split!r}", file=str(path), field="split", value=split)
    return recs[:limit] if limit else recs


def recipe_datasets(data_args: Any, build: Any, prompt_cfg: Any) -> dict[str, Any]:
    """A recipe's ``{"train", "eval"}`` datasets: ``build(records, data_root, prompt_cfg)`` on the train split
    and, when ``eval_split`` is set, on the eval split (else ``eval`` is None); ``max_*_studies`` apply."""
    if getattr(data_args, "tasks", None) and getattr(build, "func", build) is not task_sft_dataset:
        from mllm_cxr.config import ConfigError

        raise ConfigError(f"tasks: {data_args.tasks!r}: only the SFT recipe trains on a task mixture so far; "
                          "remove the tasks key from this recipe's config")
    root = data_args.root()

    def split(name: str | None, limit: int | None) -> Any:
        return build(load_split(data_args.studies, name, limit), root, prompt_cfg)

    return {"train": split(data_args.train_split, data_args.max_train_studies),
            "eval": split(data_args.eval_split, data_args.max_eval_studies) if data_args.eval_split else None}
