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


def _image_paths(study: StudyRecord, refs, data_root: Path, check: bool, source: str | None = None) -> list[str]:
    """The absolute image files of a study's prompt; ``check``: each one's header checked (cheap, no pixel
    decoding: :func:`data_prep.images.check_image_header`) so a bad image stops the run before step 1."""
    from data_prep.images import check_image_header

    paths = []
    for r in refs:
        p = image_path(data_root, r.path).resolve()
        if p.suffix.lower() not in DECODABLE:
            raise BadImageError("trainers read PNG/JPG; convert DICOM once with `mllm-cxr prepare <dataset> "
                                "--image-cache DIR`", file=str(p), field="images.path", value=r.path)
        if check:
            try:
                check_image_header(p)
            except BadImageError as e:
                raise bad_study_image(e, study.study_id, source, p) from None
        paths.append(str(p))
    return paths


def bad_study_image(e: BadImageError, study_id: str, source: str | None, path: str | Path,
                    hint: str = "") -> BadImageError:
    """One line naming the image, its study and the records file (with what to do)."""
    reason = getattr(e, "reason", None) or str(e)
    err = BadImageError(f"image of study {study_id}" + (f" (records {source})" if source else "") + f": {reason}; "
                        + (hint or "re-run `mllm-cxr prepare` for it, or set skip_bad_images: true to skip such "
                                    "studies (counted and listed in output_dir/skipped_images.json)"),
                        file=str(path))
    err.reason = reason  # type: ignore[attr-defined]
    err.study_id = study_id  # type: ignore[attr-defined]
    return err


def study_rows(records: Sequence[StudyRecord], data_root: str | Path, cfg: PromptConfig, *,
               check_images: bool = True, require_target: bool = True, skip_bad_images: bool = False,
               bad_images: list[dict[str, str]] | None = None,
               source: str | None = None) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """One row per study: prompt messages, image paths, reference text and context columns.

    Studies without text in the target sections are skipped and counted (``require_target``). An image whose
    header check fails stops with one line naming the image, the study and the records file (``source``), or
    with ``skip_bad_images`` skips the study, counted and appended to ``bad_images``.
    """
    root = Path(data_root)
    rows, skipped = [], {"no_target": 0, "no_image": 0, "bad_image": 0}
    for s in records:
        if require_target and not has_target(s, cfg):
            skipped["no_target"] += 1
            continue
        messages, refs = build_messages(s, cfg)
        if not refs:
            skipped["no_image"] += 1
            continue
        images = checked_image_paths(s, refs, root, check_images, source, skip_bad_images, bad_images)
        if images is None:
            skipped["bad_image"] += 1
            continue
        rows.append({"prompt": messages, "images": images, **reward_columns(s, cfg)})
    _warn_skipped(skipped["bad_image"])
    return rows, skipped


def checked_image_paths(study: StudyRecord, refs, root: Path, check: bool, source: str | None, skip_bad_images: bool,
                        bad_images: list[dict[str, str]] | None) -> list[str] | None:
    """The study's image paths after the header check; ``None`` when an image is bad and ``skip_bad_images``
    (the study is then appended to ``bad_images``), else the :class:`BadImageError` naming image, study, file."""
    try:
        return _image_paths(study, refs, root, check, source)
    except BadImageError as e:
        if not skip_bad_images or getattr(e, "study_id", None) is None:
            raise
        if bad_images is not None:
            bad_images.append({"study_id": study.study_id, "image": e.file, "reason": e.reason,
                               "records": str(source or "")})
        return None


def _warn_skipped(n: int) -> None:
    if n:
        log.warning("skipped %d studies with a bad image (skip_bad_images: true); listed in skipped_images.json", n)


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


class DecodeImages:
    """The ``images`` column decoded when a row is read (``Dataset.set_transform``), as ``datasets.Image`` would,
    but a file that went bad after the dataset was built (corrupted, truncated or emptied mid-run, a
    decompression bomb, a 1x30000 image) stops the run with one line naming the image, its study and the
    records file (:class:`BadImageError`), not a PIL traceback from inside the data loader.

    With ``skip`` (``skip_bad_images: true``) such a row is skipped instead: its place in the batch is taken by
    the next study of the dataset whose images decode (:meth:`replacement`), so the batch keeps its size, a GRPO
    group stays one prompt, and every rank steps with the same number of examples; dropping the row would leave
    an empty batch at ``per_device_train_batch_size: 1``. Each bad image is logged once, appended to
    ``self.skipped`` and, when the recipe set ``spool`` (a file in ``output_dir``), written there as one JSON
    line, which reaches the run record from DataLoader worker processes too (:func:`mid_run_skips`).
    """

    def __init__(self, study_of: dict[str, str], source: str | None = None, *, skip: bool = False):
        self.study_of, self.source, self.skip = study_of, source, skip
        self.rows: Any = None  # the dataset without this transform: where a replacement row is read
        self.index_of: dict[tuple[str, ...], int] = {}  # a row's image paths -> its index in ``rows``
        self.spool: str | None = None
        self.bad: dict[str, str] = {}  # image path -> why it failed (this process)
        self.skipped: list[dict[str, str]] = []

    def attach(self, rows: Any) -> None:
        """The untransformed dataset (``Dataset.with_format(None)``), for replacement rows and study ids."""
        self.rows = rows
        if self.skip:
            self.index_of = {tuple(imgs): i for i, imgs in enumerate(rows["images"])}

    def load(self, path: str):
        """The decoded image, or :class:`BadImageError` with ``reason`` set (no study named yet)."""
        from PIL import Image

        from data_prep.images import check_image_header

        if path in self.bad:
            err = BadImageError(self.bad[path], file=path)
            err.reason = self.bad[path]  # type: ignore[attr-defined]
            raise err
        try:
            check_image_header(path)
            with Image.open(path) as im:
                im.load()
                return im.copy()
        except BadImageError:
            raise
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
            reason = f"unreadable or corrupt image ({type(e).__name__}: {e})"
            err = BadImageError(reason, file=path)
            err.reason = reason  # type: ignore[attr-defined]
            raise err from None

    def open(self, path: str):
        try:
            return self.load(path)
        except BadImageError as e:
            raise bad_study_image(e, self.study_of.get(path, "?"), self.source, path,
                                  hint="it changed after the dataset was built (mid-run); the last checkpoint is "
                                       "usable: fix the image and rerun with --resume_from_checkpoint true (add "
                                       "--skip_bad_images true to leave its study out)") from None

    def _study(self, index: int | None, path: str) -> str:
        if index is not None and self.rows is not None and "study_id" in self.rows.column_names:
            return self.rows[index]["study_id"]
        return self.study_of.get(path, "?")

    def _record(self, path: str, study_id: str, reason: str) -> None:
        """Log, keep and spool a skipped image, once per image (an image met again is skipped silently)."""
        if path in self.bad:
            return
        self.bad[path] = reason
        rec = {"study_id": study_id, "image": path, "reason": reason, "records": str(self.source or ""),
               "when": "mid-run"}
        self.skipped.append(rec)
        log.warning("skip_bad_images: study %s skipped mid-run, its image %s no longer decodes (%s); the next "
                    "good study takes its place in the batch; listed in skipped_images.json", study_id, path, reason)
        if self.spool:
            try:
                with open(self.spool, "a", encoding="utf-8") as fh:  # one short line: appends do not interleave
                    fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
            except OSError as e:
                log.warning("could not record the skipped image in %s (%s)", self.spool, e)

    def _decode_row(self, paths: Sequence[Any], index: int | None) -> list[Any]:
        """Every image of a row decoded; with ``skip`` a failure is recorded before it is raised."""
        out = []
        for p in paths:
            if not isinstance(p, str):
                out.append(p)
                continue
            if not self.skip:
                out.append(self.open(p))
                continue
            try:
                out.append(self.load(p))
            except BadImageError as e:
                self._record(p, self._study(index, p), getattr(e, "reason", None) or str(e))
                raise
        return out

    def replacement(self, index: int | None, columns: Sequence[str]) -> dict[str, Any]:
        """The first row after ``index`` (wrapping round) whose images all decode, restricted to ``columns``,
        its images decoded. The same bad row always gets the same replacement (a GRPO group's copies agree)."""
        n = 0 if self.rows is None else len(self.rows)
        start = -1 if index is None else index
        for k in range(1, n + 1):
            j = (start + k) % n
            if j == index:
                continue
            paths = self.rows[j]["images"]
            if any(p in self.bad for p in paths):
                continue
            try:
                images = self._decode_row(paths, j)
            except BadImageError:
                continue
            raw = self.rows[j]
            return {c: (images if c == "images" else raw[c]) for c in columns}
        raise BadImageError(f"skip_bad_images: no study of {self.source or 'the dataset'} has images that still "
                            f"decode ({len(self.bad)} bad, listed in skipped_images.json); restore the images and "
                            "rerun with --resume_from_checkpoint true")

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        out = dict(batch)
        if "images" not in batch:
            return out
        images, fills = [], {}
        for i, imgs in enumerate(batch["images"]):
            index = self.index_of.get(tuple(imgs)) if self.skip and all(isinstance(p, str) for p in imgs) else None
            try:
                images.append(self._decode_row(imgs, index))
            except BadImageError:
                if not self.skip:
                    raise
                fills[i] = self.replacement(index, list(batch))
                images.append(fills[i]["images"])
        out["images"] = images
        for i, row in fills.items():
            for c, v in row.items():
                if c != "images":
                    out[c] = list(out[c])
                    out[c][i] = v
        return out


def transforms_of(datasets: dict[str, Any]) -> list[DecodeImages]:
    """The :class:`DecodeImages` transforms of a recipe's datasets (those built with ``checked_decode``)."""
    found = []
    for ds in datasets.values():
        t = (getattr(ds, "format", None) or {}).get("format_kwargs", {}).get("transform") if ds is not None else None
        if isinstance(t, DecodeImages):
            found.append(t)
    return found


def mid_run_skips(spool: str | Path) -> list[dict[str, str]]:
    """The images skipped mid-run, read back from the spool file (one per study and image)."""
    p = Path(spool)
    if not p.is_file():
        return []
    seen, out = set(), []
    for line in p.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by a killed process
            continue
        key = (rec.get("study_id"), rec.get("image")) if isinstance(rec, dict) else None
        if key is not None and key not in seen:
            seen.add(key)
            out.append(rec)
    return out


def _to_dataset(rows: list[dict[str, Any]], *, source: str | None = None, checked_decode: bool = True,
                skip_bad_images: bool = False):
    """Rows -> a ``datasets.Dataset``. ``checked_decode``: images stay paths, decoded per row by
    :class:`DecodeImages` (``skip_bad_images``: an image that fails mid-run is skipped); otherwise (DPO, whose
    trainer tokenizes with ``Dataset.map``) typed as ``datasets.Image``."""
    from datasets import Dataset, Image
    from datasets import Sequence as HFSequence

    if not rows:
        raise DataPrepError("no usable studies (all skipped: empty target sections, no images or bad images)")
    ds = Dataset.from_list(rows)
    if not checked_decode:
        return ds.cast_column("images", HFSequence(Image()))
    decode = DecodeImages({p: r["study_id"] for r in rows for p in r["images"]}, source, skip=skip_bad_images)
    ds.set_transform(decode)
    decode.attach(ds.with_format(None))
    return ds


def assistant(text: str) -> list[dict[str, Any]]:
    return [{"role": "assistant", "content": [{"type": "text", "text": text}]}]


def sft_dataset(records: Sequence[StudyRecord], data_root, cfg: PromptConfig, **kw):
    """prompt/completion rows (TRL computes the loss on the completion = the report only)."""
    rows, skipped = study_rows(records, data_root, cfg, **kw)
    for r in rows:
        r["completion"] = assistant(r["reference"])
    if any(skipped.values()):
        log.warning("SFT data: skipped %s", skipped)
    return _to_dataset(rows, source=kw.get("source"), skip_bad_images=kw.get("skip_bad_images", False))


def task_sft_dataset(records: Sequence[StudyRecord], data_root, cfg: PromptConfig, *, mixture: Sequence[Any],
                     family: str = "qwen2_5_vl", min_pixels: int | None = None, max_pixels: int | None = None,
                     seed: int = 0, check_images: bool = True, skip_bad_images: bool = False,
                     bad_images: list[dict[str, str]] | None = None, source: str | None = None):
    """prompt/completion rows of a task mixture (:mod:`mllm_cxr.tasks`): as many rows as studies, drawn by
    the mixture's weights; each row also names its ``task`` and ``study_id``.

    Box targets of the ``qwen2_5_vl`` family are pixels of the image as the processor resizes it, so a
    mixture with a box task needs the pixel budget (``min_pixels`` and ``max_pixels``) set explicitly.
    """
    from mllm_cxr.tasks import mix_examples

    root = Path(data_root)
    task_cfg = _task_config(cfg, [e.name for e in mixture], family, min_pixels, max_pixels, root)
    by_id = {s.study_id: s for s in records}
    rows, n_bad = [], 0
    for ex in mix_examples(records, mixture, task_cfg, seed=seed):
        images = checked_image_paths(by_id[ex.study_id], ex.images, root, check_images, source, skip_bad_images,
                                     bad_images)
        if images is None:
            n_bad += 1
            continue
        rows.append({"prompt": ex.messages, "images": images, "completion": assistant(ex.target),
                     "study_id": ex.study_id, "task": ex.task})
    _warn_skipped(n_bad)
    return _to_dataset(rows, source=source, skip_bad_images=skip_bad_images)


def _task_config(cfg: PromptConfig, mixture_names: Sequence[str], family: str, min_pixels: int | None,
                 max_pixels: int | None, root: Path):
    from mllm_cxr.config import ConfigError
    from mllm_cxr.tasks import BOX_TASKS, TaskConfig

    if family == "qwen2_5_vl" and any(n in BOX_TASKS for n in mixture_names) and (min_pixels is None or
                                                                                  max_pixels is None):
        raise ConfigError("tasks: box targets for qwen2_5_vl are pixels of the resized image; set min_pixels and "
                          "max_pixels (the processor's budget) in the recipe config")
    return TaskConfig(prompt=cfg, family=family, min_pixels=min_pixels, max_pixels=max_pixels, data_root=root)


def task_reward_row(study: StudyRecord, ex: Any, cfg: PromptConfig) -> dict[str, Any]:
    """The columns a task example's rewards read, the same keys for every task so one Arrow table holds a
    mixture: the study's :func:`reward_columns`, ``task``, ``reference`` (the report for ``report``, else the
    task's target, which ``answer_match`` compares with), ``boxes`` / ``grounded_findings`` (JSON text, ""
    when the task has none) and ``image_size`` (None when none)."""
    c = ex.columns
    row = reward_columns(study, cfg)
    row.update(task=ex.task, reference=ex.target if ex.task != "report" else row["reference"],
               boxes=c.get("boxes", ""), grounded_findings=c.get("grounded_findings", ""),
               image_size=list(c["image_size"]) if "image_size" in c else None)
    return row


def task_grpo_dataset(records: Sequence[StudyRecord], data_root, cfg: PromptConfig, *, mixture: Sequence[Any],
                      family: str = "qwen2_5_vl", min_pixels: int | None = None, max_pixels: int | None = None,
                      seed: int = 0, check_images: bool = True, skip_bad_images: bool = False,
                      bad_images: list[dict[str, str]] | None = None, source: str | None = None):
    """GRPO prompt rows of a task mixture (as :func:`task_sft_dataset` draws them), each with
    :func:`task_reward_row`: the ``task`` column routes its rewards (:func:`mllm_cxr.tasks.task_reward_funcs`)."""
    from mllm_cxr.tasks import mix_examples

    root = Path(data_root)
    task_cfg = _task_config(cfg, [e.name for e in mixture], family, min_pixels, max_pixels, root)
    by_id = {s.study_id: s for s in records}
    rows, n_bad = [], 0
    for ex in mix_examples(records, mixture, task_cfg, seed=seed):
        s = by_id[ex.study_id]
        images = checked_image_paths(s, ex.images, root, check_images, source, skip_bad_images, bad_images)
        if images is None:
            n_bad += 1
            continue
        rows.append({"prompt": ex.messages, "images": images, **task_reward_row(s, ex, cfg)})
    _warn_skipped(n_bad)
    return _to_dataset(rows, source=source, skip_bad_images=skip_bad_images)


def grpo_dataset(records: Sequence[StudyRecord], data_root, cfg: PromptConfig, **kw):
    """prompt rows with the columns reward functions read (reference, comparison, has_prior, labels)."""
    rows, skipped = study_rows(records, data_root, cfg, **kw)
    if any(skipped.values()):
        log.warning("GRPO data: skipped %s", skipped)
    return _to_dataset(rows, source=kw.get("source"), skip_bad_images=kw.get("skip_bad_images", False))


def dpo_dataset(pairs: Sequence[dict[str, Any]], records_by_id: dict[str, StudyRecord], data_root,
                cfg: PromptConfig, *, task_cfg: Any = None, **kw):
    """Preference pairs ({study_id, chosen, rejected}) -> prompt/chosen/rejected/images rows.

    A pair of a task other than ``report`` (``pairs sample --task``: ``task`` and ``example``, the index of
    the example among the task's examples of the study) gets that example's prompt and image, rebuilt with
    ``task_cfg`` (a :class:`mllm_cxr.tasks.TaskConfig`: the box family and pixel budget of the samples)."""
    rows = []
    mixed = any((p.get("task") or "report") != "report" for p in pairs)
    for i, p in enumerate(pairs):
        for k in ("study_id", "chosen", "rejected"):
            if not isinstance(p.get(k), str) or not p[k].strip():
                raise DataPrepError("preference pair needs a non-empty string", line=i + 1, field=k, value=p.get(k))
        if p["study_id"] not in records_by_id:
            raise DataPrepError("pair refers to an unknown study", line=i + 1, field="study_id", value=p["study_id"])
        s = records_by_id[p["study_id"]]
        task = p.get("task") or "report"
        if task != "report":
            from mllm_cxr.tasks import get_task

            if task_cfg is None:
                raise DataPrepError("a pair of a task needs the task settings (box_family, min/max_pixels)",
                                    line=i + 1, field="task", value=task)
            exs = get_task(task).examples(s, task_cfg)
            k = p.get("example", 0)
            if not isinstance(k, int) or not 0 <= k < len(exs):
                raise DataPrepError(f"study has {len(exs)} {task} examples", line=i + 1, field="example", value=k)
            ex = exs[k]
            row = {"prompt": ex.messages, "images": _image_paths(s, ex.images, Path(data_root),
                                                                 kw.get("check_images", True)),
                   **task_reward_row(s, ex, cfg)}
        else:
            (row,), _ = study_rows([s], data_root, cfg, require_target=False, **kw)
            if mixed:  # the same columns on every row (one Arrow table)
                row.update(task="report", boxes="", grounded_findings="", image_size=None)
        row["chosen"], row["rejected"] = assistant(p["chosen"]), assistant(p["rejected"])
        rows.append(row)
    return _to_dataset(rows, checked_decode=False)


def load_split(path: str | Path, split: str | None, limit: int | None = None) -> list[StudyRecord]:
    recs = read_records(path, split=split)
    if not recs:
        raise DataPrepError(f"no studies with split={split!r}", file=str(path), field="split", value=split)
    return recs[:limit] if limit else recs


def read_study_ids(path: str | Path) -> list[str]:
    """The study ids a file names, in file order, each once: a JSONL whose objects carry ``study_id`` (a pairs
    file, predictions, study records) or plain text with one id per line (``#`` comments and blank lines ignored)."""
    from cxr_io.readers import read_jsonl, read_text

    p = Path(path)
    text = read_text(p, role="study id list", error=DataPrepError)
    first = next((ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")), "")
    ids: list[str] = []
    if first.startswith("{"):
        for line, row in read_jsonl(p, role="study id list", error=DataPrepError):
            sid = row.get("study_id")
            if not isinstance(sid, str) or not sid.strip():
                raise DataPrepError("each line needs a non-empty study_id", file=str(p), line=line, field="study_id",
                                    value=sid)
            ids.append(sid.strip())
    else:
        ids = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if not ids:
        raise DataPrepError("names no study", file=str(p))
    return list(dict.fromkeys(ids))


def select_studies(records: list[StudyRecord], path: str | Path, split: str | None) -> list[StudyRecord]:
    """The records ``path`` names (:func:`read_study_ids`), in the records' order; an id the split does not hold
    is an error naming it (a list made for another split or dataset would otherwise train on a silent subset)."""
    ids = read_study_ids(path)
    have = {r.study_id for r in records}
    missing = [s for s in ids if s not in have]
    if missing:
        raise DataPrepError(f"{len(missing)} of its {len(ids)} study ids are not in split {split!r} of the studies "
                            f"(first: {', '.join(missing[:3])})", file=str(path), field="study_id", value=missing[0])
    keep = set(ids)
    out = [r for r in records if r.study_id in keep]
    log.info("train_studies_from %s: %d of the %d studies of split %r", path, len(out), len(records), split)
    return out


def recipe_datasets(data_args: Any, build: Any, prompt_cfg: Any) -> dict[str, Any]:
    """A recipe's ``{"train", "eval"}`` datasets: ``build(records, data_root, prompt_cfg)`` on the train split
    and, when ``eval_split`` is set, on the eval split (else ``eval`` is None); ``max_*_studies`` apply."""
    if getattr(data_args, "tasks", None) and getattr(build, "func", build) not in (task_sft_dataset,
                                                                                    task_grpo_dataset):
        from mllm_cxr.config import ConfigError

        raise ConfigError(f"tasks: {data_args.tasks!r}: this recipe's dataset is the report task's alone; build it "
                          "with task_sft_dataset / task_grpo_dataset, or remove the tasks key")
    root = data_args.root()
    bad: list[dict[str, str]] = []
    kw = {"skip_bad_images": bool(getattr(data_args, "skip_bad_images", False)), "bad_images": bad,
          "source": str(data_args.studies)}

    def split(name: str | None, limit: int | None, only: str | None = None) -> Any:
        recs = load_split(data_args.studies, name)
        if only:
            recs = select_studies(recs, only, name)
        return build(recs[:limit] if limit else recs, root, prompt_cfg, **kw)

    out = {"train": split(data_args.train_split, data_args.max_train_studies,
                          getattr(data_args, "train_studies_from", None)),
           "eval": split(data_args.eval_split, data_args.max_eval_studies) if data_args.eval_split else None}
    if bad:
        out[SKIPPED_IMAGES] = bad
    return out


#: The key of :func:`recipe_datasets`' result (and the file in output_dir) listing the studies skipped for a bad
#: image (``skip_bad_images: true``).
SKIPPED_IMAGES = "skipped_images"
