"""``mllm-cxr score`` and ``mllm-cxr eval``: score predicted reports against references.

``eval`` (:mod:`reward.evaluate`) is the evaluation harness: grouped metrics, bootstrap CIs, paired tests,
tables and plots. ``score`` runs any registered scorers and writes their means and per-sample values:

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

from cxr_io import check_disjoint, check_output, read_text, write_jsonl, write_text_atomic
from reward.base import (
    MissingBackendError,
    RewardError,
    canonical_metric,
    eval_group,
    get_scorer,
    unique_names,
)
from reward.evaluate import METRIC_GROUPS, PRED_FIELDS, index_by_study, read_meta, read_predictions, read_rows
from reward.metric_table import METRICS

REF_FIELDS: tuple[str, ...] = ("reference", "findings", "impression")
#: Fields of the records that are not passed to the scorers as context.
_NOT_CONTEXT = frozenset({"study_id", "prediction", "text", "reference"})


def choose_ref_field(path: str, rows: Sequence[tuple[int, dict]], ref_field: str) -> str:
    """The reference field: ``ref_field`` itself, or with "auto" the first of reference/findings/impression
    that every record has (not null)."""
    if ref_field != "auto":
        return ref_field
    for cand in REF_FIELDS:
        if rows and all(rec.get(cand) is not None for _, rec in rows):
            return cand
    no = next((no for no, rec in rows if all(rec.get(c) is None for c in REF_FIELDS)), rows[0][0] if rows else 0)
    raise RewardError(f"no reference field; expected one of {', '.join(REF_FIELDS)} in every record (or name it "
                      "with --ref-field, e.g. findings+impression)", file=path, line=no)


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


def _ref_text(rec: dict, field: str) -> str | None:
    parts = field.split("+")
    vals = [rec.get(p) for p in parts]
    if any(v is None for v in vals):
        return None
    return " ".join(str(v).strip() for v in vals if str(v).strip())


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


def score_files(pred: str, ref: str, metrics: Sequence[dict[str, Any]], *, ref_field: str = "auto",
                pred_field: str = "auto", skip_missing: bool = False, progress: bool = True
                ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Score ``pred`` against ``ref``; returns (the summary dict written to --out, per-sample rows)."""
    from tqdm.auto import tqdm

    from reward.trl import RewardFunction, select_context

    pred_rows, ref_rows = read_predictions(pred, pred_field=pred_field), read_rows(ref, "reference")
    sections = predicted_sections(pred) if ref_field == "auto" else None
    if sections and not all(rec.get("reference") is not None for _, rec in ref_rows):
        field = sections  # study records as references: score the sections the predictions were written for
    else:
        field = choose_ref_field(ref, ref_rows, ref_field)
    refs = index_by_study(ref, ref_rows)
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


def _add_score(subparsers: argparse._SubParsersAction) -> None:
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


# ------------------------------------------------------------------------------------------------
# eval
# ------------------------------------------------------------------------------------------------
def metric_kwargs_arg(value: str | None) -> dict[str, dict[str, Any]]:
    """``--metric-kwargs``: a JSON object (or ``@file``) mapping metric names to scorer keyword objects."""
    if not value:
        return {}
    text = read_text(value[1:], role="--metric-kwargs", error=RewardError) if value.startswith("@") else value
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise RewardError(f"--metric-kwargs: not valid JSON ({e.msg})") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise RewardError('--metric-kwargs must map metric names to keyword objects, e.g. '
                          '{"radgraph": {"model_dir": "/models/radgraph"}}')
    return data


def run_eval_cmd(args: argparse.Namespace) -> int:
    from reward.evaluate import eval_summary_line, run_eval

    if not Path(args.out).is_file():  # (an existing file is refused by run_eval: eval writes a folder)
        check_disjoint(args.out, [args.pred, args.compare], flag="--out", folder=True)  # --pred DIR/per_study.jsonl
    named = bool(args.metrics) and args.metrics.strip() != "all"
    metrics = ([eval_group(m.strip()) or m.strip() for m in args.metrics.split(",") if m.strip()] if named
               else list(METRIC_GROUPS))
    html = getattr(args, "html", False)
    if html:  # bad report options fail before the evaluation runs
        args.check_html(args)
    result = run_eval(args.pred, args.out, compare=args.compare, metrics=metrics, n_boot=args.n_boot, seed=args.seed,
                      strict=named, uncertain=args.uncertain, metric_kwargs=metric_kwargs_arg(args.metric_kwargs),
                      name=args.name, compare_name=args.compare_name, plots=not args.no_plots,
                      progress=not args.quiet)
    print(eval_summary_line(result, args.out))
    if html:  # the HTML report: added to this verb by mllm_cxr (mllm_cxr.report_html.add_html_to_eval)
        print(args.write_html(args))
    return 0


def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate predictions: metrics.json, metrics.md, plots, bootstrap CIs",
                       description="Evaluate a predictions JSONL (from `mllm-cxr generate`) with bootstrap 95% "
                                   "CIs; --compare adds a paired comparison with another predictions file.")
    p.add_argument("--pred", required=True, help="predictions JSONL (study_id, prediction, reference, context)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--compare", default=None, help="another predictions JSONL for a paired comparison")
    p.add_argument("--metrics", default=None, help=f"comma-separated subset of {','.join(METRIC_GROUPS)} (or their "
                                                   "score names, e.g. chexpert_f1); a named metric that cannot run is "
                                                   "an error. Default all: those whose model is missing are listed "
                                                   "as skipped with the reason")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples (0: no CIs)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--uncertain", choices=("positive", "negative"), default="positive",
                   help="CheXpert F1: count uncertain labels as positive (RRG convention) or negative")
    p.add_argument("--metric-kwargs", default=None,
                   help='JSON (or @file) of scorer arguments per metric, e.g. {"radgraph": {"model_dir": "DIR"}, '
                        '"green": {"base_url": "http://127.0.0.1:8001", "model": "green"}}')
    p.add_argument("--name", default=None, help="name of the predictions in tables (default: file stem)")
    p.add_argument("--compare-name", default=None)
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run_eval_cmd)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``score`` and ``eval``: the verbs that score predictions against references."""
    _add_score(subparsers)
    _add_eval(subparsers)
