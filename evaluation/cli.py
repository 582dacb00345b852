"""The evaluation verbs: ``mllm-cxr score``, ``mllm-cxr eval [--html]`` and ``mllm-cxr report``.

    mllm-cxr score --pred preds.jsonl --ref test.jsonl --metrics chexpert_f1,bleu,rouge_l,prior_penalty \\
        --out metrics.json [--ref-field findings] [--per-sample scores.jsonl]
    mllm-cxr eval --pred pred.jsonl --out eval/ [--compare baseline.jsonl] [--metrics ...] [--html ...]
    mllm-cxr report --eval eval/ [--sort chexpert_f1] [--no-text]

``score`` (:mod:`evaluation.score`) runs any registered scorers and writes their means and per-sample values;
``eval`` (:mod:`evaluation.evaluate`) is the harness: grouped metrics, bootstrap CIs, paired tests, tables and
plots, and with ``--html`` the report of :mod:`evaluation.report` (its options are ``report``'s, checked before
the evaluation runs); ``report`` renders that page from an eval folder.

Each verb's options are one dataclass (:class:`ScoreArgs`, :class:`EvalArgs`, :class:`ReportArgs`) bound by
:mod:`cxr_io.cli_args`: ``--quiet`` is the shared :class:`~cxr_io.cli_args.QuietArgs`, and the report's options
are the one part :class:`~evaluation.report.options.ReportOptionArgs` of both ``report`` and ``eval``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from cxr_io import check_disjoint, check_output, read_text, write_jsonl, write_text_atomic
from cxr_io.cli_args import QuietArgs, Verb, add_verb, opt, part
from evaluation.groups import METRIC_GROUPS
from evaluation.report.options import ReportOptionArgs
from evaluation.score import parse_metrics, score_files
from reward.base import RewardError, eval_group


@dataclass(kw_only=True)
class ScoreArgs(Verb):
    """``mllm-cxr score``."""

    pred: str = opt("predictions: JSONL with study_id and prediction (or text)")
    ref: str = opt("references: JSONL with study_id and reference/findings/impression (study records work)")
    metrics: str | None = opt("comma-separated scorer names (or aliases, e.g. chexpert = chexpert_f1), e.g. "
                              "chexpert_f1,bleu,rouge_l,prior_penalty; a named metric that cannot run is an error. "
                              "'all': every built-in metric, those that cannot run listed as skipped", default=None)
    spec: str | None = opt("YAML list of metrics with kwargs ({name, kwargs, alias}), in addition to --metrics",
                           default=None)
    out: str = opt("metrics JSON to write")
    per_sample: str | None = opt("also write per-study scores here", default=None, metavar="JSONL")
    ref_field: str = opt("reference field: reference, findings, impression, findings+impression; default auto (the "
                         "sections `generate` wrote the predictions for, from <pred>.meta.json; else the first of "
                         "reference/findings/impression present in every record)", default="auto")
    pred_field: str = opt("prediction field (default: prediction, else text)", default="auto")
    skip_missing: bool = opt("skip (and count) predictions without a reference or a text field instead of stopping",
                             default=False)
    progress: QuietArgs = part(flat=True)


def run_score(args: ScoreArgs) -> int:
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


def _add_score(subparsers) -> None:
    add_verb(subparsers, "score", ScoreArgs, run_score,
             help="score predicted reports against references (CheXpert F1, BLEU, ROUGE-L, ...)",
             description="Score predicted reports against references with registered scorers; joins on study_id.")


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


#: The help group of ``eval --html`` and the report's options.
HTML_GROUP = "HTML report (--html)"


@dataclass(kw_only=True)
class EvalArgs(Verb):
    """``mllm-cxr eval [--html]``: with ``--html``, the report's options (``page``) are ``report``'s."""

    pred: str = opt("predictions JSONL (study_id, prediction, reference, context)")
    out: str = opt("output folder")
    compare: str | None = opt("another predictions JSONL for a paired comparison", default=None)
    metrics: str | None = opt(f"comma-separated subset of {','.join(METRIC_GROUPS)} (or their score names, e.g. "
                              "chexpert_f1); a named metric that cannot run is an error. Default all: those whose "
                              "model is missing are listed as skipped with the reason", default=None)
    n_boot: int = opt("bootstrap resamples (0: no CIs)", default=1000)
    seed: int = opt("bootstrap seed", default=0)
    uncertain: Literal["positive", "negative"] = opt("CheXpert F1: count uncertain labels as positive (RRG "
                                                     "convention) or negative", default="positive")
    metric_kwargs: str | None = opt('JSON (or @file) of scorer arguments per metric, e.g. {"radgraph": {"model_dir": '
                                    '"DIR"}, "green": {"base_url": "http://127.0.0.1:8001", "model": "green"}}',
                                    default=None)
    name: str | None = opt("name of the predictions in tables (default: file stem)", default=None)
    compare_name: str | None = opt("name of the compared predictions in tables (default: file stem)", default=None)
    no_plots: bool = opt("write no PNG plots (the metric files are written as always)", default=False)
    progress: QuietArgs = part(flat=True)
    html: bool = opt("also write OUT/report.html (see `mllm-cxr report`)", default=False, group=HTML_GROUP)
    page: ReportOptionArgs = part(group=HTML_GROUP)


def run_eval_cmd(args: EvalArgs) -> int:
    from evaluation.evaluate import eval_summary_line, run_eval

    if not Path(args.out).is_file():  # (an existing file is refused by run_eval: eval writes a folder)
        check_disjoint(args.out, [args.pred, args.compare], flag="--out", folder=True)  # --pred DIR/per_study.jsonl
    named = bool(args.metrics) and args.metrics.strip() != "all"
    metrics = ([eval_group(m.strip()) or m.strip() for m in args.metrics.split(",") if m.strip()] if named
               else list(METRIC_GROUPS))
    report_options = args.page.options() if args.html else None  # bad report options fail before evaluating
    result = run_eval(args.pred, args.out, compare=args.compare, metrics=metrics, n_boot=args.n_boot, seed=args.seed,
                      strict=named, uncertain=args.uncertain, metric_kwargs=metric_kwargs_arg(args.metric_kwargs),
                      name=args.name, compare_name=args.compare_name, plots=not args.no_plots,
                      progress=not args.quiet)
    print(eval_summary_line(result, args.out))
    if report_options is not None:
        from evaluation.report.build import build_report, report_summary_line

        s = build_report(args.out, pred=args.pred, compare=args.compare, options=report_options,
                         progress=not args.quiet)
        print(report_summary_line(s))
    return 0


def _add_eval(sub) -> None:
    add_verb(sub, "eval", EvalArgs, run_eval_cmd,
             help="evaluate predictions: metrics.json, metrics.md, plots, bootstrap CIs",
             description="Evaluate a predictions JSONL (from `mllm-cxr generate`) with bootstrap 95% CIs; --compare "
                         "adds a paired comparison with another predictions file.")


# ------------------------------------------------------------------------------------------------
# report
# ------------------------------------------------------------------------------------------------
@dataclass(kw_only=True)
class ReportArgs(Verb):
    """``mllm-cxr report``."""

    eval: str = opt("folder written by `mllm-cxr eval`")
    out: str | None = opt("output folder or .html file (default: the eval folder)", default=None)
    pred: str | None = opt("predictions JSONL (default: the one named in metrics.json)", default=None)
    compare: str | None = opt("compared predictions (default: named in metrics.json)", default=None)
    page: ReportOptionArgs = part(flat=True)
    progress: QuietArgs = part(flat=True)


def run_report(args: ReportArgs) -> int:
    from evaluation.report.build import build_report, report_summary_line

    s = build_report(args.eval, args.out, pred=args.pred, compare=args.compare, options=args.page.options(),
                     progress=not args.quiet)
    print(report_summary_line(s))
    return 0


def _add_report(sub) -> None:
    add_verb(sub, "report", ReportArgs, run_report, help="one self-contained HTML report from an eval folder",
             description="Render OUT/report.html (default: in the eval folder) from `mllm-cxr eval` output: summary "
                         "with CIs, per-study images, reference vs generated with label disagreements highlighted, "
                         "filters. No network; works from file://.")


def register(subparsers) -> None:
    """Add ``score``, ``eval`` and ``report``: the verbs that score predictions and show the evaluation."""
    _add_score(subparsers)
    _add_eval(subparsers)
    _add_report(subparsers)
