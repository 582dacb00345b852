"""The evaluation verbs: ``mllm-cxr score``, ``mllm-cxr eval [--html]`` and ``mllm-cxr report``.

    mllm-cxr score --pred preds.jsonl --ref test.jsonl --metrics chexpert_f1,bleu,rouge_l,prior_penalty \\
        --out metrics.json [--ref-field findings] [--per-sample scores.jsonl]
    mllm-cxr eval --pred pred.jsonl --out eval/ [--compare baseline.jsonl] [--metrics ...] [--html ...]
    mllm-cxr report --eval eval/ [--sort chexpert_f1] [--no-text]

``score`` (:mod:`evaluation.score`) runs any registered scorers and writes their means and per-sample values;
``eval`` (:mod:`evaluation.evaluate`) is the harness: grouped metrics, bootstrap CIs, paired tests, tables and
plots, and with ``--html`` the report of :mod:`evaluation.report` (its options are ``report``'s, checked before
the evaluation runs); ``report`` renders that page from an eval folder.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from cxr_io import check_disjoint, check_output, read_text, write_jsonl, write_text_atomic
from evaluation.groups import METRIC_GROUPS
from evaluation.report.options import add_report_options, options_from_args
from evaluation.score import parse_metrics, score_files
from reward.base import RewardError, eval_group


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
    from evaluation.evaluate import eval_summary_line, run_eval

    if not Path(args.out).is_file():  # (an existing file is refused by run_eval: eval writes a folder)
        check_disjoint(args.out, [args.pred, args.compare], flag="--out", folder=True)  # --pred DIR/per_study.jsonl
    named = bool(args.metrics) and args.metrics.strip() != "all"
    metrics = ([eval_group(m.strip()) or m.strip() for m in args.metrics.split(",") if m.strip()] if named
               else list(METRIC_GROUPS))
    report_options = options_from_args(args) if args.html else None  # bad report options fail before evaluating
    result = run_eval(args.pred, args.out, compare=args.compare, metrics=metrics, n_boot=args.n_boot, seed=args.seed,
                      strict=named, uncertain=args.uncertain, metric_kwargs=metric_kwargs_arg(args.metric_kwargs),
                      name=args.name, compare_name=args.compare_name, plots=not args.no_plots,
                      progress=not args.quiet)
    print(eval_summary_line(result, args.out))
    if report_options is not None:
        from evaluation.report.build import build_report, report_summary_line

        s = build_report(args.out, pred=args.pred, compare=args.compare, options=options_from_args(args),
                         progress=not args.quiet)
        print(report_summary_line(s))
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
    h = p.add_argument_group("HTML report (--html)")
    h.add_argument("--html", action="store_true", help="also write OUT/report.html (see `mllm-cxr report`)")
    add_report_options(h)
    p.set_defaults(func=run_eval_cmd)


# ------------------------------------------------------------------------------------------------
# report
# ------------------------------------------------------------------------------------------------
def run_report(args: argparse.Namespace) -> int:
    from evaluation.report.build import build_report, report_summary_line

    s = build_report(args.eval, args.out, pred=args.pred, compare=args.compare, options=options_from_args(args),
                     progress=not args.quiet)
    print(report_summary_line(s))
    return 0


def _add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="one self-contained HTML report from an eval folder",
                       description="Render OUT/report.html (default: in the eval folder) from `mllm-cxr eval` "
                                   "output: summary with CIs, per-study images, reference vs generated with "
                                   "label disagreements highlighted, filters. No network; works from file://.")
    p.add_argument("--eval", required=True, help="folder written by `mllm-cxr eval`")
    p.add_argument("--out", default=None, help="output folder or .html file (default: the eval folder)")
    p.add_argument("--pred", default=None, help="predictions JSONL (default: the one named in metrics.json)")
    p.add_argument("--compare", default=None, help="compared predictions (default: named in metrics.json)")
    add_report_options(p)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run_report)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``score``, ``eval`` and ``report``: the verbs that score predictions and show the evaluation."""
    _add_score(subparsers)
    _add_eval(subparsers)
    _add_report(subparsers)
