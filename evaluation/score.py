"""``mllm-cxr score``: run registered scorers on predictions joined with references; means and per-sample values.

``pred``: a predictions file (:mod:`evaluation.predictions`; ``prediction`` or ``text``). ``ref``: JSONL with
``study_id`` and the reference text; study records from ``mllm-cxr prepare`` work as they are. Which field
is the reference follows :mod:`reward.references` (one rule for score, the reward functions and EditGRPO),
after one step of its own: with ``ref_field="auto"`` and references without a ``reference`` field, the
sections scored are those the predictions were generated for (:func:`evaluation.predictions.predicted_sections`,
e.g. IMPRESSION only). Records are joined on ``study_id``; the other fields of the reference records
(``comparison``, ``prior``, ``labels``...) and of the prediction records go to the scorers as context columns.
A missing id or field stops with an error naming the file, line and field, unless ``skip_missing``.

The summary has, per metric, the mean of the per-sample scores, the scorer's corpus-level values and the
number of samples that failed. A metric named by the user that cannot run (:class:`MissingBackendError`)
is an error; only ``--metrics all`` skips such metrics, listing each under ``skipped_metrics`` with its
full reason. Metric names are those of :data:`reward.base.METRIC_VOCABULARY` (aliases accepted).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

from evaluation.predictions import (
    PRED_FIELDS,
    PredictionRow,
    index_by_study,
    predicted_sections,
    read_predictions,
    read_rows,
)
from reward.base import MissingBackendError, RewardError, canonical_metric, get_scorer, unique_names
from reward.metric_table import METRICS
from reward.references import AUTO, DEFAULT_REFERENCE_FIELDS, choose_reference_field, join_reference

#: Fields of the records that are not passed to the scorers as context.
_NOT_CONTEXT = frozenset({"study_id", "prediction", "text", "reference"})


def choose_ref_field(path: str, rows: Sequence[tuple[int, dict]], ref_field: str) -> str:
    """The reference field: ``ref_field`` itself, or with "auto" the first of
    :data:`reward.references.DEFAULT_REFERENCE_FIELDS` that every record has (not null)."""
    if ref_field != AUTO:
        return ref_field
    field = choose_reference_field(AUTO, lambda f: bool(rows) and all(rec.get(f) is not None for _, rec in rows))
    if field is not None:
        return field
    no = next((no for no, rec in rows if all(rec.get(c) is None for c in DEFAULT_REFERENCE_FIELDS)),
              rows[0][0] if rows else 0)
    raise RewardError(f"no reference field; expected one of {', '.join(DEFAULT_REFERENCE_FIELDS)} in every record "
                      "(or name it with --ref-field, e.g. findings+impression)", file=path, line=no)


def _ref_text(rec: dict, field: str) -> str | None:
    vals = [rec.get(p) for p in field.split("+")]
    if any(v is None for v in vals):
        return None
    return join_reference(str(v) for v in vals)


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, bool) or x is None or isinstance(x, str):
        return x
    if isinstance(x, int):
        return x
    try:
        f = float(x)
    except (TypeError, ValueError):
        return str(x)
    return f if math.isfinite(f) else None


def parse_metrics(metrics: str | None, spec: str | None) -> list[dict[str, Any]]:
    """Metric entries ``{"name", "kwargs", "alias"}`` from ``--metrics a,b`` and/or a ``--spec`` file."""
    entries: list[dict[str, Any]] = []
    if metrics and metrics.strip() == "all":
        from reward.base import available_scorers

        known = available_scorers()
        entries += [{"name": s.name, "kwargs": {}, "alias": None, "optional": True} for s in METRICS
                    if s.score_all and s.name in known]
    elif metrics:
        for m in metrics.split(","):
            if m.strip():
                entries.append({"name": canonical_metric(m.strip()), "kwargs": {}, "alias": None})
    if spec:
        from reward.trl import load_reward_spec

        entries += [{"name": e["name"], "kwargs": e["kwargs"], "alias": e["alias"]} for e in load_reward_spec(spec)]
    if not entries:
        raise RewardError("no metrics: give --metrics a,b,c and/or --spec metrics.yaml")
    return entries




def score_reference_field(pred: str, ref: str, ref_rows: Sequence[tuple[int, dict]], ref_field: str) -> str:
    """The reference field ``score`` uses: with "auto" and references without ``reference`` (study records),
    the sections the predictions were generated for; else :func:`choose_ref_field`."""
    sections = predicted_sections(pred) if ref_field == AUTO else None
    if sections and not all(rec.get("reference") is not None for _, rec in ref_rows):
        return sections  # study records as references: score the sections the predictions were written for
    return choose_ref_field(ref, ref_rows, ref_field)


def _join(pred: str, ref: str, pred_rows: list[PredictionRow], refs: dict[str, tuple[int, dict]], field: str,
          pred_field: str, skip_missing: bool) -> tuple[list[str], list[str], list[str], list[dict], dict[str, int]]:
    """Each prediction with its reference text and context: (ids, hyps, reference texts, contexts, skipped)."""
    skipped = {"prediction_without_reference": 0, "missing_prediction_field": 0, "missing_reference_field": 0}
    ids, hyps, texts, ctx_rows = [], [], [], []
    for row in pred_rows:
        sid, no, rec, h = row.study_id, row.line, row.record, row.prediction
        if h is None:
            if skip_missing:
                skipped["missing_prediction_field"] += 1
                continue
            want = pred_field if pred_field != "auto" else "' or '".join(PRED_FIELDS)
            raise RewardError(f"missing (study_id {sid})", file=pred, line=no, field=want)
        if sid not in refs:
            if skip_missing:
                skipped["prediction_without_reference"] += 1
                continue
            raise RewardError(f"study_id {sid!r} has no record in {ref}", file=pred, line=no, field="study_id")
        rno, rrec = refs[sid]
        r = _ref_text(rrec, field)
        if r is None:
            if skip_missing:
                skipped["missing_reference_field"] += 1
                continue
            raise RewardError(f"missing (study_id {sid})", file=ref, line=rno, field=field)
        ids.append(sid)
        hyps.append(h)
        texts.append(r)
        ctx = {k: v for k, v in rrec.items() if k not in _NOT_CONTEXT}
        ctx.update({k: v for k, v in rec.items() if k not in _NOT_CONTEXT and k not in ctx})
        ctx_rows.append(ctx)
    if not ids:
        raise RewardError(f"{pred}: no prediction could be joined with {ref}")
    return ids, hyps, texts, ctx_rows, skipped


def _score_one(entry: dict[str, Any], name: str, hyps: list[str], texts: list[str], columns: dict[str, list],
               n: int) -> tuple[list[float], dict[str, Any], int]:
    """One metric's per-sample scores, corpus values and failed-sample count; a scorer bug on some sample
    scores sample by sample and counts the failures."""
    from reward.trl import RewardFunction, select_context

    scorer = get_scorer(entry["name"], **entry.get("kwargs", {}))
    context = select_context(scorer, columns, n)
    refs_in = texts if scorer.needs_reference else None
    try:
        res = scorer(hyps, refs_in, **context)
        return list(res.scores), dict(res.corpus), 0
    except RewardError:  # configuration errors and MissingBackendError are not sample failures
        raise
    except Exception:  # a scorer bug on some sample: score sample by sample, count failures
        fn = RewardFunction(scorer, name=name)
        scores, n_err = fn.score_texts(hyps, refs_in, context)
        return scores, {}, n_err


def score_files(pred: str, ref: str, metrics: Sequence[dict[str, Any]], *, ref_field: str = AUTO,
                pred_field: str = "auto", skip_missing: bool = False, progress: bool = True
                ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Score ``pred`` against ``ref``; returns (the summary dict written to --out, per-sample rows)."""
    from tqdm.auto import tqdm

    pred_rows, ref_rows = read_predictions(pred, pred_field=pred_field), read_rows(ref, "reference")
    field = score_reference_field(pred, ref, ref_rows, ref_field)
    refs = index_by_study(ref, ref_rows)
    ids, hyps, texts, ctx_rows, skipped = _join(pred, ref, pred_rows, refs, field, pred_field, skip_missing)
    keys = sorted({k for c in ctx_rows for k in c})
    columns = {k: [c.get(k) for c in ctx_rows] for k in keys}

    summary: dict[str, Any] = {
        "pred": str(pred), "ref": str(ref), "ref_field": field, "n": len(ids),
        "n_empty_references": sum(1 for t in texts if not t.strip()),
        "n_references_without_prediction": len(set(refs) - {r.study_id for r in pred_rows}),
        "metrics": {}, "skipped_metrics": {},
    }
    if skip_missing:
        summary["skipped_records"] = skipped
    per_sample = [{"study_id": s} for s in ids]
    names = unique_names([e.get("alias") or e["name"] for e in metrics])
    bar = tqdm(list(zip(metrics, names)), desc="score", unit="metric", disable=not progress)
    for entry, name in bar:
        bar.set_postfix_str(name)
        t0 = time.perf_counter()
        try:
            scores, corpus, n_err = _score_one(entry, name, hyps, texts, columns, len(ids))
        except MissingBackendError as e:
            if not entry.get("optional"):  # asked for by name: it must run
                raise MissingBackendError(f"metric '{name}' was asked for but cannot run: {e} (install or "
                                          "configure it, or use --metrics all to skip what cannot run)") from None
            summary["skipped_metrics"][name] = f"MissingBackendError: {e}"
            continue
        except (RewardError, OSError, ImportError) as e:  # a model-backed metric of "all" that is not configured
            if not entry.get("optional"):
                raise
            summary["skipped_metrics"][name] = f"{type(e).__name__}: {e}"
            continue
        summary["metrics"][name] = {
            "scorer": entry["name"], "kwargs": _jsonable(entry.get("kwargs", {})),
            "mean": sum(scores) / len(scores), "corpus": _jsonable(corpus), "n": len(scores),
            "n_errors": n_err, "seconds": round(time.perf_counter() - t0, 3),
        }
        for row, s in zip(per_sample, scores):
            row[name] = s
    return summary, per_sample
