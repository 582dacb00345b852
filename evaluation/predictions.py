"""The predictions file: what ``mllm-cxr generate`` writes and ``score``, ``eval`` and the report read.

One JSON object per line (a JSON list is read too): ``study_id``, ``prediction`` (``text`` is accepted by
``score``), ``reference`` (the report the prompt asked for, or a task's target), ``context`` (the study's
columns: indication, comparison, ``has_prior``, labels...), ``images`` (the prompt's image files, absolute),
``samples`` when several were drawn, and for a task row what ``eval`` scores it by (``task``, box codec,
pixel budget, reference boxes...). Beside it, the side file ``<pred>.meta.json`` records the model, adapter,
prompt and generation settings and where the inputs are.

Writing (``generate``, ``merge-predictions``): :func:`prediction_line` per row, appended to the run's
:func:`part_path` (renamed to the file when the run finishes; :func:`resume_part_file` makes a killed run's
``.part`` resumable) and :func:`write_meta`. Reading: :func:`read_rows` / :func:`read_predictions` (every
problem a :class:`RewardError` naming ``file:line`` and the field), :func:`read_meta`, and
:func:`predictions_to_evaluate`, the rows ``eval`` (and the HTML report) can score.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cxr_io import read_json, read_jsonl, write_text_atomic
from reward.base import RewardError

#: Fields that hold a prediction's text, in the order ``pred_field="auto"`` tries them.
PRED_FIELDS: tuple[str, ...] = ("prediction", "text")
_CUT_LINE_HINT = "a cut last line comes from a killed `mllm-cxr generate`: run it again to finish the file"


def meta_path(pred: str | os.PathLike) -> Path:
    """The side file ``<pred>.meta.json`` that ``mllm-cxr generate`` writes beside a predictions file (model,
    adapter, prompt settings, studies file, data root)."""
    p = Path(pred)
    return p.with_name(p.name + ".meta.json")


def read_meta(pred: str | os.PathLike, *, strict: bool = True) -> dict[str, Any]:
    """The side file of a predictions file as a dict ({} when there is none). One that is not a readable
    JSON object is a :class:`RewardError` naming it, or, with ``strict=False`` (a writer about to replace
    it), treated as absent."""
    mp = meta_path(pred)
    if not mp.is_file():
        return {}
    try:
        meta = read_json(mp, role="predictions side file (written by `mllm-cxr generate`)", error=RewardError)
        if not isinstance(meta, dict):
            raise RewardError("not a JSON object (the side file `mllm-cxr generate` writes)", file=mp)
    except RewardError:
        if strict:
            raise
        return {}
    return meta


def predicted_sections(pred: str | os.PathLike) -> str | None:
    """The report sections a predictions file was generated for, as a reference field
    (``impression``, ``findings+impression``), from the ``<pred>.meta.json`` that ``mllm-cxr generate``
    writes; None without one."""
    try:
        sections = read_meta(pred)["prompt"]["prompt"]["sections"]
    except (KeyError, TypeError):  # no side file, or one without prompt settings
        return None
    if not isinstance(sections, list) or not sections or not all(s in ("findings", "impression") for s in sections):
        return None
    return "+".join(sections)


def write_meta(pred: str | os.PathLike, meta: dict[str, Any]) -> None:
    """Write the side file of a predictions file (atomically; values JSON cannot hold are written as text)."""
    write_text_atomic(meta_path(pred), json.dumps(meta, indent=2, default=str) + "\n")


def prediction_line(row: dict[str, Any]) -> str:
    """One row of a predictions file as its JSON line (UTF-8 text kept as it is)."""
    return json.dumps(row, ensure_ascii=False) + "\n"


def part_path(out_path: str | os.PathLike) -> Path:
    """Where a run writes until it finishes (then renamed to ``out_path``); a killed run resumes from it."""
    p = Path(out_path)
    return p.with_name(p.name + ".part")


def resume_part_file(out_path: Path) -> set[str]:
    """Make an unfinished run's ``.part`` file resumable: keep its complete rows, dropping a line cut
    short by a killed run (the file is rewritten), and return the study ids it already holds."""
    ids: set[str] = set()
    if not out_path.exists():
        return ids
    good = []
    with open(out_path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            try:
                d = json.loads(line)
            except json.JSONDecodeError:
                continue  # partial line of a killed run: that study is generated again
            if isinstance(d, dict) and "study_id" in d and d["study_id"] not in ids:
                ids.add(d["study_id"])
                good.append(line if line.endswith("\n") else line + "\n")
    with open(out_path, "w", encoding="utf-8") as fh:  # rewrite without the broken tail (the .part file only)
        fh.writelines(good)
    return ids


def read_rows(path: str | os.PathLike, role: str) -> list[tuple[int, dict]]:
    """``(line number, record)`` pairs of a JSONL file, or of a JSON list (numbered by item). Every problem
    (missing file, not UTF-8, bad JSON, not an object) is a :class:`RewardError` naming ``file:line``."""
    p = Path(path)
    if not p.is_file():
        raise RewardError(f"{role} file not found; check the path", file=p)
    with p.open("rb") as fh:
        head = fh.read(4096).lstrip()
    if head.startswith(b"["):
        items = read_json(p, role=role, error=RewardError)
        rows = list(enumerate(items, start=1)) if isinstance(items, list) else [(1, items)]
        for no, rec in rows:
            if not isinstance(rec, dict):
                raise RewardError("expected a JSON object", file=p, line=no, value=type(rec).__name__)
        return rows
    try:
        return list(read_jsonl(p, role=role, error=RewardError))
    except RewardError as e:
        if "not valid JSON" in str(e) and role == "predictions":
            raise RewardError(f"{e}; {_CUT_LINE_HINT}") from None
        raise


def row_study_id(path: str | os.PathLike, no: int, rec: dict) -> str:
    """A record's ``study_id`` as a string; missing or blank is an error naming ``file:line``."""
    sid = rec.get("study_id")
    if sid is None or (isinstance(sid, str) and not sid.strip()):
        raise RewardError("missing study id", file=path, line=no, field="study_id", value=sid)
    return str(sid)


def prediction_text(path: str | os.PathLike, no: int, rec: dict, pred_field: str = "auto") -> str | None:
    """The prediction of a record (``pred_field``, or with "auto" the first of :data:`PRED_FIELDS` present);
    None when absent; a value that is not a string is an error naming ``file:line`` and the field."""
    names = PRED_FIELDS if pred_field == "auto" else (pred_field,)
    name = next((f for f in names if rec.get(f) is not None), None)
    if name is None:
        return None
    if not isinstance(rec[name], str):
        raise RewardError("expected a string", file=path, line=no, field=name, value=type(rec[name]).__name__)
    return rec[name]


@dataclass
class PredictionRow:
    """One record of a predictions file: where it is, its study, its prediction (None: no prediction field)."""

    line: int
    study_id: str
    prediction: str | None
    record: dict[str, Any]


def index_by_study(path: str | os.PathLike, rows: Sequence[tuple[int, dict]]) -> dict[str, tuple[int, dict]]:
    """``study_id -> (line, record)`` in file order; a missing or repeated study id is an error naming the
    file, the line and the value."""
    out: dict[str, tuple[int, dict]] = {}
    for no, rec in rows:
        sid = row_study_id(path, no, rec)
        if sid in out:
            raise RewardError(f"study repeats line {out[sid][0]}", file=path, line=no, field="study_id", value=sid)
        out[sid] = (no, rec)
    return out


def read_predictions(path: str | os.PathLike, *, pred_field: str = "auto") -> list[PredictionRow]:
    """The records of a predictions file (JSONL, or a JSON list), checked: a study id on each, none repeated,
    predictions that are strings. Errors are :class:`RewardError` naming the file, line, field and value."""
    return [PredictionRow(no, sid, prediction_text(path, no, rec, pred_field), rec)
            for sid, (no, rec) in index_by_study(path, read_rows(path, "predictions")).items()]


@dataclass
class Predictions:
    """Rows of a predictions file that can be evaluated, and what was left out (counted)."""

    path: str
    ids: list[str]
    hyps: list[str]
    refs: list[str]
    contexts: list[dict[str, Any]]
    n_rows: int
    skipped_rows: dict[str, int] = field(default_factory=dict)
    records: list[dict[str, Any]] = field(default_factory=list)  # the rows as read, aligned with ``ids``


def predictions_to_evaluate(path: str | Path) -> Predictions:
    """:func:`read_predictions` for ``eval``: each row must also hold its ``reference`` (a string) and an
    optional ``context`` object; rows with an empty reference are skipped and counted."""
    p = Path(path)
    ids, hyps, refs, ctxs, recs = [], [], [], [], []
    skipped = {"empty_reference": 0}
    rows = read_predictions(p, pred_field="prediction")
    for r in rows:
        if r.prediction is None:
            raise RewardError("expected a string", file=p, line=r.line, field="prediction")
        ref = r.record.get("reference")
        if not isinstance(ref, str):
            raise RewardError("expected a string", file=p, line=r.line, field="reference",
                              value=None if ref is None else type(ref).__name__)
        ctx = r.record.get("context") or {}
        if not isinstance(ctx, dict):
            raise RewardError("expected a JSON object", file=p, line=r.line, field="context",
                              value=type(ctx).__name__)
        if not ref.strip():
            skipped["empty_reference"] += 1
            continue
        ids.append(r.study_id)
        hyps.append(r.prediction)
        refs.append(ref)
        ctxs.append(ctx)
        recs.append(r.record)
    if not ids:
        raise RewardError("no row with a non-empty reference to evaluate", file=p, field="reference")
    return Predictions(str(p), ids, hyps, refs, ctxs, len(rows), skipped, recs)


