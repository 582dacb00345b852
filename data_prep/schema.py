"""The canonical study record: one JSON object per imaging study.

Every converter writes it, everything else reads it::

    study_id, patient_id, dataset, split, study_time (sortable string), images[{path, view}],
    indication, technique, comparison, findings, impression,
    prior{study_id, findings, impression, images} | null,
    labels{CheXpert 14 -> 1/0/-1/null} | null, meta{}

and, where a dataset has them (optional; left out of the JSON when absent):

    grounded_findings[{text, boxes[{x_min, y_min, x_max, y_max}] | null, image}]   (RadFact's GroundedPhrase)
    images[i].boxes[{label, x_min, y_min, x_max, y_max, polygon[[x, y], ...] | null, reader}]  (detection boxes)

Box coordinates are fractions of the ORIGINAL image (0 <= min < max <= 1), so they survive any resize;
``image`` indexes ``images`` (a record without images, a text-only grounded report, uses ``image: 0``).
The model-family text forms of boxes are in :mod:`cxr_io.boxes` (``mllm_cxr.boxes``).

Image paths are relative to a data root. ``mllm-cxr prepare`` records it in the manifest next to the
records (``<stem>.summary.json``: ``data_root``, and ``data_root_relative`` to the records' folder), and
every consumer finds it with :func:`resolve_data_root` (an explicit ``--data-root`` wins; without a
manifest, the records' folder) and joins image paths with :func:`image_path`. Validation errors name
the file, the line and the field (:class:`data_prep.errors.DataPrepError`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cxr_io import atomic_write, check_output, read_jsonl, write_jsonl
from cxr_io.boxes import COORDS, box_problem
from data_prep.errors import DataPrepError
from reward.constants import CHEXPERT_LABELS

VIEWS: tuple[str, ...] = ("PA", "AP", "LATERAL", "LL", "UNKNOWN")
SPLITS: tuple[str, ...] = ("train", "validate", "test")
# every spelling of "every split" a --split (or a ``split`` argument) accepts: ``all``, the documented one, and the
# older ``*`` (pairs) and ``""`` (generate/export) kept as aliases
ALL_SPLITS: tuple[str, ...] = ("all", "*", "")


def split_filter(split: str | None) -> str | None:
    """A split as :func:`read_records` filters on it: ``None`` (every split) for ``all`` and its aliases
    (:data:`ALL_SPLITS`), else the split's name."""
    return None if split is None or split in ALL_SPLITS else split
FRONTAL_VIEWS = frozenset({"PA", "AP"})

_VIEW_ALIASES = {
    "PA": "PA", "POSTEROANTERIOR": "PA", "PA VIEW": "PA", "FRONTAL": "PA",
    "AP": "AP", "ANTEROPOSTERIOR": "AP", "AP SUPINE": "AP", "AP ERECT": "AP", "AP AXIAL": "AP",
    "AP LLD": "AP", "AP RLD": "AP", "PA LLD": "PA", "PA RLD": "PA",
    "LATERAL": "LATERAL", "LAT": "LATERAL", "L": "LATERAL", "RL": "LATERAL", "RLAT": "LATERAL",
    "LL": "LL", "LEFT LATERAL": "LL", "LLAT": "LL", "XTABLE LATERAL": "LATERAL", "SWIMMERS": "LATERAL",
}
_SPLIT_ALIASES = {"train": "train", "training": "train", "val": "validate", "valid": "validate",
                  "validate": "validate", "validation": "validate", "dev": "validate", "test": "test"}
_NONE_COMPARISONS = frozenset({"", "none", "none.", "n/a", "na", "no prior", "no priors", "none available",
                               "no comparison", "no prior studies", "no prior study"})


def normalize_view(view: object) -> str:
    """Map a dataset's view string (``"postero-anterior"``, ``"lat"``...) to PA/AP/LATERAL/LL/UNKNOWN."""
    if view is None:
        return "UNKNOWN"
    v = str(view).strip().upper().replace("-", "").replace("_", " ")
    if v in ("POSTEROANTERIOR", "POSTERO ANTERIOR"):
        return "PA"
    return _VIEW_ALIASES.get(v, _VIEW_ALIASES.get(v.replace(" ", ""), "UNKNOWN"))


def normalize_split(split: object) -> str:
    s = str(split).strip().lower()
    if s not in _SPLIT_ALIASES:
        raise DataPrepError("unknown split (expected train/validate/test)", field="split", value=split)
    return _SPLIT_ALIASES[s]


def comparison_is_empty(comparison: str | None) -> bool:
    """True when a COMPARISON section says there is nothing to compare with."""
    if comparison is None:
        return True
    c = " ".join(comparison.strip().lower().split())
    return c in _NONE_COMPARISONS or c.strip(".") in _NONE_COMPARISONS


@dataclass
class ImageRef:
    path: str
    view: str = "UNKNOWN"
    #: detection boxes on this image: ``{label, x_min, y_min, x_max, y_max}`` (fractions of the original
    #: image), optionally ``polygon`` (``[[x, y], ...]``, fractions) where the dataset outlines the finding
    boxes: list[dict[str, Any]] | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"path": self.path, "view": self.view}
        if self.boxes is not None:
            d["boxes"] = self.boxes
        return d


@dataclass
class Prior:
    study_id: str
    findings: str = ""
    impression: str = ""
    images: list[ImageRef] = field(default_factory=list)
    study_time: str = ""


@dataclass
class StudyRecord:
    study_id: str
    patient_id: str
    dataset: str
    split: str
    study_time: str = ""
    images: list[ImageRef] = field(default_factory=list)
    indication: str = ""
    technique: str = ""
    comparison: str = ""
    findings: str = ""
    impression: str = ""
    prior: Prior | None = None
    labels: dict[str, float | None] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    #: sentences with the regions they describe: ``{text, boxes: [{x_min, ...}] | None, image}``
    grounded_findings: list[dict[str, Any]] | None = None

    # -- derived -------------------------------------------------------------------------------
    @property
    def has_prior(self) -> bool:
        """Whether the radiologist had something to compare with (a linked prior or a comparison)."""
        return self.prior is not None or not comparison_is_empty(self.comparison)

    def frontal_first(self) -> list[ImageRef]:
        return sorted(self.images, key=lambda im: (im.view not in FRONTAL_VIEWS, im.view == "UNKNOWN"))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["images"] = [im.to_dict() for im in self.images]
        if self.prior is not None:
            d["prior"]["images"] = [im.to_dict() for im in self.prior.images]
        if self.grounded_findings is None:
            del d["grounded_findings"]
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False)

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, file: str | None = None, line: int | None = None) -> StudyRecord:
        return validate_record(d, file=file, line=line)


_REQUIRED = ("study_id", "patient_id", "dataset", "split")
_TEXT = ("study_time", "indication", "technique", "comparison", "findings", "impression")
_ALL_FIELDS = set(_REQUIRED) | set(_TEXT) | {"images", "prior", "labels", "meta", "grounded_findings"}
_IMAGE_FIELDS = frozenset({"path", "view", "boxes"})
_BOX_FIELDS = frozenset(COORDS) | {"label"}
_DET_FIELDS = _BOX_FIELDS | {"polygon", "reader"}
_GROUNDED_FIELDS = frozenset({"text", "boxes", "image"})


def _box(b: Any, *, file, line, fld: str, detection: bool) -> dict[str, Any]:
    """One validated box (a new dict: the coordinates as floats, in the order x_min, y_min, x_max, y_max)."""
    if not isinstance(b, dict):
        raise DataPrepError("a box must be an object {x_min, y_min, x_max, y_max}", file=file, line=line,
                            field=fld, value=b)
    allowed = _DET_FIELDS if detection else _BOX_FIELDS
    unknown = set(b) - allowed
    if unknown:
        raise DataPrepError(f"unknown box field(s) {sorted(unknown)} (allowed: {sorted(allowed)})", file=file,
                            line=line, field=f"{fld}.{sorted(unknown)[0]}")
    problem = box_problem(b)
    if problem:
        bad = problem.split()[0]  # box_problem names the coordinate first
        bad = bad if bad in COORDS else COORDS[0]
        raise DataPrepError(problem, file=file, line=line, field=f"{fld}.{bad}", value=b.get(bad))
    out: dict[str, Any] = {}
    if detection or "label" in b:
        lab = b.get("label")
        if not isinstance(lab, str) or not lab.strip():
            raise DataPrepError("a detection box needs a non-empty 'label'" if detection else
                                "label must be a non-empty string", file=file, line=line, field=f"{fld}.label",
                                value=lab)
        out["label"] = lab
    out.update({k: float(b[k]) for k in COORDS})
    if detection and b.get("polygon") is not None:
        poly = b["polygon"]
        ok = isinstance(poly, list) and all(
            isinstance(p, list | tuple) and len(p) == 2
            and all(isinstance(v, int | float) and not isinstance(v, bool) and 0.0 <= v <= 1.0 for v in p)
            for p in poly)
        if not ok:
            raise DataPrepError("polygon must be a list of [x, y] fractions in [0, 1]", file=file, line=line,
                                field=f"{fld}.polygon", value=poly)
        out["polygon"] = [[float(x), float(y)] for x, y in poly]
    elif detection and "polygon" in b:
        out["polygon"] = None
    if detection and b.get("reader") is not None:
        if not isinstance(b["reader"], str):
            raise DataPrepError("reader must be a string (the annotator's id)", file=file, line=line,
                                field=f"{fld}.reader", value=b["reader"])
        out["reader"] = b["reader"]
    return out


def _grounded(value: Any, n_images: int, *, file, line) -> list[dict[str, Any]] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise DataPrepError("must be null or a list of {text, boxes, image}", file=file, line=line,
                            field="grounded_findings", value=value)
    out = []
    for i, g in enumerate(value):
        fld = f"grounded_findings[{i}]"
        if not isinstance(g, dict):
            raise DataPrepError("must be an object {text, boxes, image}", file=file, line=line, field=fld, value=g)
        unknown = set(g) - _GROUNDED_FIELDS
        if unknown:
            raise DataPrepError(f"unknown field(s) {sorted(unknown)}", file=file, line=line,
                                field=f"{fld}.{sorted(unknown)[0]}")
        if not isinstance(g.get("text"), str):
            raise DataPrepError("must be a string", file=file, line=line, field=f"{fld}.text", value=g.get("text"))
        image = g.get("image", 0)
        if isinstance(image, bool) or not isinstance(image, int):
            raise DataPrepError("must be an integer index into images", file=file, line=line, field=f"{fld}.image",
                                value=image)
        if not (0 <= image < max(1, n_images)):
            raise DataPrepError(f"image index out of range (the record has {n_images} image(s))", file=file,
                                line=line, field=f"{fld}.image", value=image)
        boxes = g.get("boxes")
        if boxes is not None:
            if not isinstance(boxes, list):
                raise DataPrepError("must be null or a list of boxes", file=file, line=line, field=f"{fld}.boxes",
                                    value=boxes)
            boxes = [_box(b, file=file, line=line, fld=f"{fld}.boxes[{j}]", detection=False)
                     for j, b in enumerate(boxes)]
        out.append({"text": g["text"], "boxes": boxes, "image": image})
    return out


def _images(value: Any, *, file, line, fld: str) -> list[ImageRef]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise DataPrepError("must be a list of {path, view}", file=file, line=line, field=fld, value=value)
    out = []
    for i, im in enumerate(value):
        if isinstance(im, str):
            im = {"path": im}
        if not isinstance(im, dict) or not isinstance(im.get("path"), str) or not im["path"]:
            raise DataPrepError("each image needs a non-empty 'path'", file=file, line=line,
                                field=f"{fld}[{i}]", value=im)
        view = im.get("view", "UNKNOWN")
        if view not in VIEWS:
            raise DataPrepError(f"view must be one of {VIEWS}", file=file, line=line,
                                field=f"{fld}[{i}].view", value=view)
        unknown = set(im) - _IMAGE_FIELDS
        if unknown:
            raise DataPrepError(f"unknown image field(s) {sorted(unknown)}", file=file, line=line,
                                field=f"{fld}[{i}].{sorted(unknown)[0]}")
        boxes = im.get("boxes")
        if boxes is not None:
            if not isinstance(boxes, list):
                raise DataPrepError("must be null or a list of {label, x_min, y_min, x_max, y_max}", file=file,
                                    line=line, field=f"{fld}[{i}].boxes", value=boxes)
            boxes = [_box(b, file=file, line=line, fld=f"{fld}[{i}].boxes[{j}]", detection=True)
                     for j, b in enumerate(boxes)]
        out.append(ImageRef(path=im["path"], view=view, boxes=boxes))
    return out


def validate_record(d: Any, *, file: str | None = None, line: int | None = None) -> StudyRecord:
    """Check one record and build a :class:`StudyRecord`; errors name file, line and field."""
    if not isinstance(d, dict):
        raise DataPrepError("a study record must be a JSON object", file=file, line=line, value=d)
    unknown = set(d) - _ALL_FIELDS
    if unknown:
        raise DataPrepError(f"unknown field(s) {sorted(unknown)}", file=file, line=line, field=sorted(unknown)[0])
    for k in _REQUIRED:
        if not isinstance(d.get(k), str) or not d[k].strip():
            raise DataPrepError("required, must be a non-empty string", file=file, line=line, field=k, value=d.get(k))
    if d["split"] not in SPLITS:
        raise DataPrepError(f"must be one of {SPLITS}", file=file, line=line, field="split", value=d["split"])
    for k in _TEXT:
        if d.get(k) is not None and not isinstance(d[k], str):
            raise DataPrepError("must be a string", file=file, line=line, field=k, value=d[k])
    prior = None
    if d.get("prior") is not None:
        p = d["prior"]
        if not isinstance(p, dict) or not isinstance(p.get("study_id"), str):
            raise DataPrepError("must be null or an object with a 'study_id'", file=file, line=line,
                                field="prior", value=p)
        prior = Prior(study_id=p["study_id"], findings=p.get("findings") or "", impression=p.get("impression") or "",
                      images=_images(p.get("images"), file=file, line=line, fld="prior.images"),
                      study_time=p.get("study_time") or "")
    labels = d.get("labels")
    if labels is not None:
        if not isinstance(labels, dict):
            raise DataPrepError("must be null or an object", file=file, line=line, field="labels", value=labels)
        for k, v in labels.items():
            if k not in CHEXPERT_LABELS:
                raise DataPrepError("not a CheXpert observation", file=file, line=line, field=f"labels.{k}", value=k)
            if v not in (None, 1, 0, -1, 1.0, 0.0, -1.0):
                raise DataPrepError("must be 1, 0, -1 or null", file=file, line=line, field=f"labels.{k}", value=v)
        labels = {k: (None if labels.get(k) is None else float(labels[k])) for k in CHEXPERT_LABELS}
    meta = d.get("meta") or {}
    if not isinstance(meta, dict):
        raise DataPrepError("must be an object", file=file, line=line, field="meta", value=meta)
    images = _images(d.get("images"), file=file, line=line, fld="images")
    return StudyRecord(
        study_id=d["study_id"], patient_id=d["patient_id"], dataset=d["dataset"], split=d["split"],
        **{k: d.get(k) or "" for k in _TEXT},
        images=images, prior=prior, labels=labels, meta=meta,
        grounded_findings=_grounded(d.get("grounded_findings"), len(images), file=file, line=line),
    )


# -- where the images are --------------------------------------------------------------------------
def manifest_path(studies: str | os.PathLike) -> Path:
    """The manifest ``prepare`` writes next to a records file: ``data/x/studies.jsonl`` ->
    ``data/x/studies.summary.json``."""
    stem = Path(studies).with_suffix("")
    return stem.with_name(stem.name + ".summary.json")


def manifest_data_root(out: str | os.PathLike, data_root: str | os.PathLike) -> dict[str, str]:
    """The manifest keys that record where the images of the records file ``out`` are: the absolute
    folder and the same folder relative to ``out``'s folder (used first, so a moved tree still works)."""
    root = Path(data_root).resolve()
    return {"data_root": str(root), "data_root_relative": os.path.relpath(root, Path(out).resolve().parent)}


def resolve_data_root(studies: str | os.PathLike, data_root: str | os.PathLike | None = None) -> Path:
    """The folder the image paths of ``studies`` are relative to; the one rule every consumer uses.

    1. ``data_root`` when given (``--data-root`` / ``data_root:``), an override;
    2. else the manifest next to the records (:func:`manifest_path`, written by ``mllm-cxr prepare``):
       ``data_root_relative`` (to the records' folder) when that folder exists, else ``data_root``;
    3. else the records file's own folder.

    A manifest whose folder no longer exists is an error naming both (the images were moved).
    """
    if data_root:
        return Path(data_root)
    studies = Path(studies)
    m = manifest_path(studies)
    if m.is_file():
        try:
            info = json.loads(m.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise DataPrepError(f"not a readable prepare manifest ({e}); delete it or pass --data-root",
                                file=str(m)) from None
        if not isinstance(info, dict):
            raise DataPrepError("not a prepare manifest (expected a JSON object); delete it or pass --data-root",
                                file=str(m))
        rel, recorded = info.get("data_root_relative"), info.get("data_root")
        if isinstance(rel, str) and (studies.resolve().parent / rel).is_dir():
            return (studies.resolve().parent / rel).resolve()
        if isinstance(recorded, str) and recorded:
            if Path(recorded).is_dir():
                return Path(recorded).resolve()
            raise DataPrepError("the images folder recorded by `mllm-cxr prepare` does not exist (moved?); "
                                "move it back or pass --data-root (data_root: in a recipe config)",
                                file=str(m), field="data_root", value=recorded)
    return studies.resolve().parent


def image_path(data_root: str | os.PathLike, path: str) -> Path:
    """An image's file: a record's ``path`` joined to the data root (an absolute ``path`` stays as it is)."""
    return Path(data_root) / path


# -- IO --------------------------------------------------------------------------------------------
#: Parquet columns stored as JSON text.
_JSON_COLUMNS = ("meta", "labels", "grounded_findings")

def iter_records(path: str | os.PathLike) -> Iterator[StudyRecord]:
    """Yield validated records from a ``.jsonl`` (or ``.parquet``) file. A study id given twice is an error
    naming both lines (every reader of a studies file goes through here, so no verb picks one silently)."""
    path = Path(path)
    if not path.exists():
        raise DataPrepError("file not found", file=str(path))
    seen: dict[str, int] = {}

    def once(rec: StudyRecord, line: int) -> StudyRecord:
        first = seen.setdefault(rec.study_id, line)
        if first != line:
            raise DataPrepError(f"study_id repeated (first at line {first}); each study appears once in a studies "
                                "file: remove or rename the repeat", file=str(path), line=line, field="study_id",
                                value=rec.study_id)
        return rec

    if path.suffix == ".parquet":
        import pyarrow.parquet as pq  # optional, comes with datasets

        for i, row in enumerate(pq.read_table(path).to_pylist(), start=1):
            row = {k: (json.loads(v) if k in _JSON_COLUMNS and isinstance(v, str) else v) for k, v in row.items()}
            if row.get("grounded_findings", 0) is None:
                del row["grounded_findings"]
            for im in (row.get("images") or []) + ((row.get("prior") or {}).get("images") or []):
                if isinstance(im, dict) and "boxes" in im:
                    im["boxes"] = json.loads(im["boxes"]) if isinstance(im["boxes"], str) else im["boxes"]
                    if im["boxes"] is None:
                        del im["boxes"]
            yield once(validate_record(row, file=str(path), line=i), i)
        return
    for i, d in read_jsonl(path, role="study records", objects=False, error=DataPrepError):
        yield once(validate_record(d, file=str(path), line=i), i)


def read_records(path: str | os.PathLike, split: str | None = None) -> list[StudyRecord]:
    """The records of ``path`` in ``split`` (every split for ``None``, ``all`` or an alias: :func:`split_filter`)."""
    recs, split = list(iter_records(path)), split_filter(split)
    return [r for r in recs if split is None or r.split == split]


def write_records(records: Iterable[StudyRecord], path: str | os.PathLike,
                  inputs: Iterable[str | os.PathLike | None] = ()) -> int:
    """Write records as JSONL (or Parquet for a ``.parquet`` path), atomically; returns the count.
    ``path`` equal to one of ``inputs`` is refused."""
    path = check_output(path, inputs)
    records = list(records)
    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        rows = []
        for r in records:
            d = r.to_dict()
            d["meta"] = json.dumps(d["meta"], ensure_ascii=False)
            d["labels"] = None if d["labels"] is None else json.dumps(d["labels"])
            # boxes travel as JSON text (one column type whatever a record holds)
            d["grounded_findings"] = (None if r.grounded_findings is None
                                      else json.dumps(r.grounded_findings, ensure_ascii=False))
            for im in d["images"] + (d["prior"]["images"] if d["prior"] else []):
                im["boxes"] = None if im.get("boxes") is None else json.dumps(im["boxes"], ensure_ascii=False)
            rows.append(d)
        with atomic_write(path, "wb", inputs=inputs) as fh:
            pq.write_table(pa.Table.from_pylist(rows), fh)
        return len(records)
    return write_jsonl(path, (r.to_json() for r in records), inputs=inputs)


def link_priors(records: list[StudyRecord]) -> int:
    """Link each study to the patient's previous study (by ``study_time``); returns how many got a prior.

    Only studies that do not already carry a prior are linked. The prior is the latest study with a
    strictly earlier time: studies sharing a time (two studies on one day when only dates are known)
    are not linked to each other, but each gets the study before them. Among several studies at that
    earlier time the one with the largest study id is taken, so the result is deterministic. Studies
    without a time are neither linked nor used as priors.
    """
    by_patient: dict[str, list[StudyRecord]] = {}
    for r in records:
        by_patient.setdefault(r.patient_id, []).append(r)
    n = 0
    for studies in by_patient.values():
        studies = sorted((r for r in studies if r.study_time), key=lambda r: (r.study_time, r.study_id))
        prev: StudyRecord | None = None  # the last study of the previous time group
        i = 0
        while i < len(studies):
            j = i
            while j < len(studies) and studies[j].study_time == studies[i].study_time:
                j += 1
            for cur in studies[i:j]:
                if cur.prior is None and prev is not None:
                    cur.prior = Prior(study_id=prev.study_id, findings=prev.findings, impression=prev.impression,
                                      images=list(prev.images), study_time=prev.study_time)
                    n += 1
            prev = studies[j - 1]
            i = j
    return n
