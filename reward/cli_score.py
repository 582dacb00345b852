"""``mllm-cxr score``: score predicted reports against references with registered scorers.

    mllm-cxr score --pred preds.jsonl --ref test.jsonl --metrics chexpert_f1,bleu,rouge_l,prior_penalty \\
        --out metrics.json [--ref-field findings] [--per-sample scores.jsonl]

``--pred``: JSONL (or a JSON list) with ``study_id`` and ``prediction`` (or ``text``). ``--ref``: JSONL
with ``study_id`` and the reference text (``reference``, ``findings`` or ``impression``; study records
from ``mllm-cxr prepare`` work as they are: with the default ``--ref-field auto`` the sections scored are
those the predictions were generated for, read from ``<pred>.meta.json``, e.g. IMPRESSION only). Records are joined on ``study_id``; the other fields of
the reference records (``comparison``, ``prior``, ``labels``...) and of the prediction records go to
the scorers as context columns. A missing id or field stops with an error naming the file, line and
field, unless ``--skip-missing`` (then such records are skipped and counted in the output).

The output JSON has, per metric, the mean of the per-sample scores, the scorer's corpus-level values
and the number of samples that failed. A metric named in ``--metrics``/``--spec`` that cannot run (a
model or package that is not installed: :class:`MissingBackendError`) is an error (exit 2); only
``--metrics all`` skips such metrics, listing each under ``skipped_metrics`` with its full reason.
Metric names are those of :data:`reward.base.METRIC_VOCABULARY` (aliases accepted), as in ``eval``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cxr_io import check_output, read_json, read_jsonl, write_jsonl, write_text_atomic
from reward.base import METRIC_VOCABULARY, MissingBackendError, RewardError, canonical_metric, get_scorer

PRED_FIELDS: tuple[str, ...] = ("prediction", "text")
REF_FIELDS: tuple[str, ...] = ("reference", "findings", "impression")
#: Fields of the records that are not passed to the scorers as context.
_NOT_CONTEXT = frozenset({"study_id", "prediction", "text", "reference"})


def read_records(path: str | os.PathLike, role: str) -> list[tuple[int, dict]]:
    """``(line number, record)`` pairs of a JSONL file (or of a JSON list, numbered by item); every
    problem (missing file, not UTF-8, bad JSON, not an object) is a RewardError naming ``file:line``."""
    p = Path(path)
    if not p.is_file():
        raise RewardError(f"{p}: {role} file not found; check the path")
    with p.open("rb") as fh:
        head = fh.read(4096).lstrip()
    if head.startswith(b"["):
        items = read_json(p, role=role, error=RewardError)
        rows = list(enumerate(items, start=1)) if isinstance(items, list) else [(1, items)]
        for no, rec in rows:
            if not isinstance(rec, dict):
                raise RewardError(f"{p}:{no}: expected a JSON object, got {type(rec).__name__}")
        return rows
    return list(read_jsonl(p, role=role, error=RewardError))


def _study_id(path: str, no: int, rec: dict) -> str:
    sid = rec.get("study_id")
    if sid is None or (isinstance(sid, str) and not sid.strip()):
        raise RewardError(f"{path} line {no}: field 'study_id' is missing")
    return str(sid)


def choose_ref_field(path: str, rows: Sequence[tuple[int, dict]], ref_field: str) -> str:
    """The reference field: ``ref_field`` itself, or with "auto" the first of reference/findings/impression
    that every record has (not null)."""
    if ref_field != "auto":
        return ref_field
    for cand in REF_FIELDS:
        if rows and all(rec.get(cand) is not None for _, rec in rows):
            return cand
    no = next((no for no, rec in rows if all(rec.get(c) is None for c in REF_FIELDS)), rows[0][0] if rows else 0)
    raise RewardError(f"{path} line {no}: no reference field; expected one of {', '.join(REF_FIELDS)} in every "
                      "record (or name it with --ref-field, e.g. findings+impression)")


def predicted_sections(pred: str | os.PathLike) -> str | None:
    """The report sections a predictions file was generated for, as a reference field
    (``impression``, ``findings+impression``), from the ``<pred>.meta.json`` that ``mllm-cxr generate``
    writes; None without one."""
    meta = Path(pred).with_name(Path(pred).name + ".meta.json")
    if not meta.is_file():
        return None
    try:
        sections = json.loads(meta.read_text(encoding="utf-8"))["prompt"]["prompt"]["sections"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError):
        return None
    if not isinstance(sections, list) or not sections or not all(s in ("findings", "impression") for s in sections):
        return None
    return "+".join(sections)


def _ref_text(rec: dict, field: str) -> str | None:
    parts = field.split("+")
    vals = [rec.get(p) for p in parts]
    if any(v is None for v in vals):
        return None
    return " ".join(str(v).strip() for v in vals if str(v).strip())


def _pred_text(rec: dict, field: str) -> str | None:
    if field != "auto":
        v = rec.get(field)
        return None if v is None else str(v)
    for f in PRED_FIELDS:
        if rec.get(f) is not None:
            return str(rec[f])
    return None


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
        entries += [{"name": n, "kwargs": {}, "alias": None, "optional": True} for n in METRIC_VOCABULARY
                    if n in known and n != "rouge"]
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


def score_files(pred: str, ref: str, metrics: Sequence[dict[str, Any]], *, ref_field: str = "auto",
                pred_field: str = "auto", skip_missing: bool = False, progress: bool = True
                ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Score ``pred`` against ``ref``; returns (the summary dict written to --out, per-sample rows)."""
    from tqdm.auto import tqdm

    from reward.trl import RewardFunction, select_context

    pred_rows, ref_rows = read_records(pred, "prediction"), read_records(ref, "reference")
    sections = predicted_sections(pred) if ref_field == "auto" else None
    if sections and not all(rec.get("reference") is not None for _, rec in ref_rows):
        field = sections  # study records as references: score the sections the predictions were written for
    else:
        field = choose_ref_field(ref, ref_rows, ref_field)
    refs: dict[str, tuple[int, dict]] = {}
    for no, rec in ref_rows:
        sid = _study_id(ref, no, rec)
        if sid in refs:
            raise RewardError(f"{ref} line {no}: study_id {sid!r} repeats line {refs[sid][0]}")
        refs[sid] = (no, rec)
    skipped = {"prediction_without_reference": 0, "missing_prediction_field": 0, "missing_reference_field": 0}
    ids, hyps, texts, ctx_rows, seen = [], [], [], [], {}
    for no, rec in pred_rows:
        sid = _study_id(pred, no, rec)
        if sid in seen:
            raise RewardError(f"{pred} line {no}: study_id {sid!r} repeats line {seen[sid]}")
        seen[sid] = no
        h = _pred_text(rec, pred_field)
        if h is None:
            if skip_missing:
                skipped["missing_prediction_field"] += 1
                continue
            want = pred_field if pred_field != "auto" else "' or '".join(PRED_FIELDS)
            raise RewardError(f"{pred} line {no}: field '{want}' is missing (study_id {sid})")
        if sid not in refs:
            if skip_missing:
                skipped["prediction_without_reference"] += 1
                continue
            raise RewardError(f"{pred} line {no}: study_id {sid!r} has no record in {ref} (field 'study_id')")
        rno, rrec = refs[sid]
        r = _ref_text(rrec, field)
        if r is None:
            if skip_missing:
                skipped["missing_reference_field"] += 1
                continue
            raise RewardError(f"{ref} line {rno}: field '{field}' is missing (study_id {sid})")
        ids.append(sid)
        hyps.append(h)
        texts.append(r)
        ctx = {k: v for k, v in rrec.items() if k not in _NOT_CONTEXT}
        ctx.update({k: v for k, v in rec.items() if k not in _NOT_CONTEXT and k not in ctx})
        ctx_rows.append(ctx)
    if not ids:
        raise RewardError(f"{pred}: no prediction could be joined with {ref}")
    keys = sorted({k for c in ctx_rows for k in c})
    columns = {k: [c.get(k) for c in ctx_rows] for k in keys}

    summary: dict[str, Any] = {
        "pred": str(pred), "ref": str(ref), "ref_field": field, "n": len(ids),
        "n_empty_references": sum(1 for t in texts if not t.strip()),
        "n_references_without_prediction": len(set(refs) - set(seen)),
        "metrics": {}, "skipped_metrics": {},
    }
    if skip_missing:
        summary["skipped_records"] = skipped
    per_sample = [{"study_id": s} for s in ids]
    names_used: set[str] = set()
    bar = tqdm(metrics, desc="score", unit="metric", disable=not progress)
    for entry in bar:
        name = entry.get("alias") or entry["name"]
        base, k = name, 2
        while name in names_used:
            name, k = f"{base}_{k}", k + 1
        names_used.add(name)
        bar.set_postfix_str(name)
        t0 = time.perf_counter()
        try:
            scorer = get_scorer(entry["name"], **entry.get("kwargs", {}))
            context = select_context(scorer, columns, len(ids))
            refs_in = texts if scorer.needs_reference else None
            n_err = 0
            try:
                res = scorer(hyps, refs_in, **context)
                scores, corpus = list(res.scores), dict(res.corpus)
            except RewardError:  # configuration errors and MissingBackendError are not sample failures
                raise
            except Exception:  # a scorer bug on some sample: score sample by sample, count failures
                fn = RewardFunction(scorer, name=name)
                scores, n_err = fn.score_texts(hyps, refs_in, context)
                corpus = {}
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


def run_score(args: argparse.Namespace) -> int:
    metrics = parse_metrics(args.metrics, args.spec)
    check_output(args.out, [args.pred, args.ref, args.spec], flag="--out")
    if args.per_sample:
        check_output(args.per_sample, [args.pred, args.ref, args.spec, args.out], flag="--per-sample")
    summary, per_sample = score_files(args.pred, args.ref, metrics, ref_field=args.ref_field,
                                      pred_field=args.pred_field, skip_missing=args.skip_missing,
                                      progress=not args.quiet)
    out = Path(args.out)
    write_text_atomic(out, json.dumps(summary, indent=2, ensure_ascii=False) + "\n",
                      inputs=[args.pred, args.ref, args.spec])
    if args.per_sample:
        write_jsonl(args.per_sample, per_sample, inputs=[args.pred, args.ref, args.spec], flag="--per-sample")
    means = ", ".join(f"{k}={v['mean']:.4f}" for k, v in summary["metrics"].items())
    skipped = summary["skipped_metrics"]
    print(f"scored {summary['n']} studies: {means or 'no metric ran'}"
          f"{f'; skipped {len(skipped)} metric(s): ' + ', '.join(skipped) if skipped else ''} -> {out}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``score``."""
    p = subparsers.add_parser(
        "score", help="score predicted reports against references (CheXpert F1, BLEU, ROUGE-L, ...)",
        description="Score predicted reports against references with registered scorers; joins on study_id.")
    p.add_argument("--pred", required=True, help="predictions: JSONL with study_id and prediction (or text)")
    p.add_argument("--ref", required=True,
                   help="references: JSONL with study_id and reference/findings/impression (study records work)")
    p.add_argument("--metrics", default=None,
                   help="comma-separated scorer names (or aliases, e.g. chexpert = chexpert_f1), e.g. "
                        "chexpert_f1,bleu,rouge_l,prior_penalty; a named metric that cannot run is an error. "
                        "'all': every built-in metric, those that cannot run listed as skipped")
    p.add_argument("--spec", default=None,
                   help="YAML list of metrics with kwargs ({name, kwargs, alias}), in addition to --metrics")
    p.add_argument("--out", required=True, help="metrics JSON to write")
    p.add_argument("--per-sample", default=None, metavar="JSONL", help="also write per-study scores here")
    p.add_argument("--ref-field", default="auto",
                   help="reference field: reference, findings, impression, findings+impression; default auto "
                        "(the sections `generate` wrote the predictions for, from <pred>.meta.json; else the first "
                        "of reference/findings/impression present in every record)")
    p.add_argument("--pred-field", default="auto", help="prediction field (default: prediction, else text)")
    p.add_argument("--skip-missing", action="store_true",
                   help="skip (and count) predictions without a reference or a text field instead of stopping")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_score)
