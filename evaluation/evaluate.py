"""Evaluate predicted reports: a JSON result, a Markdown table, PNG plots, bootstrap CIs, paired permutation test.

    mllm-cxr eval --pred pred.jsonl --out eval/ [--compare baseline.jsonl] [--metrics bleu,rouge_l,chexpert]

``--pred``: the predictions JSONL of ``mllm-cxr generate`` (``study_id, prediction, reference,
context``; ``context.has_prior`` or ``context.comparison`` feed the prior-hallucination rate).

Metrics (the reward registry's scorers, :func:`reward.base.get_scorer`; the groups of
:mod:`evaluation.groups`), in the order of the table:

==============  =========================================================================================
``bleu``        corpus BLEU-4 and BLEU-1, COCO-caption formula (RadEval's ``bleu``)
``rouge_l``     ROUGE-L F, mean over studies
``radgraph``    RadGraph F1 (partial), mean; needs a local RadGraph model (``radgraph_f1`` scorer)
``green``       GREEN, mean; needs a judge model or server (``green`` scorer)
``ratescore``   RaTEScore, mean; needs the RaTEScore package and its models
``chexpert``    F1-CheXpert micro/macro over the 14 observations and over the 5 (Atelectasis,
                Cardiomegaly, Consolidation, Edema, Pleural Effusion), from the rule labeler's labels of
                prediction and reference, uncertain counted as positive by default (``--uncertain``)
``chexbert``    the same F1 table from CheXbert labels (needs ``chexbert.pth``)
``prior``       prior-hallucination rate: among studies without a prior (``context.has_prior`` false),
                the share of predictions with a sentence referring to a previous exam (``reward.prior``);
                the same share for the references is given beside it
``measurement`` device/position/measurement hallucinations (``reward.measurements``): hallucinated facts
                per report, share of reports with one, precision/recall/F1 of device + tip-position
                facts, and the MAE of the tube-to-carina distance over studies where both reports state it
``length``      report length in words (prediction and reference), their ratio, share of empty reports
``boxes``       rows of a box task (``mllm-cxr generate --task phrase_grounding|detection|grounded_report``):
                mean IoU, Acc@IoU>=0.5, box precision/recall/F1 from summed counts, mAP@0.5 (recomputed
                on each resample; no p-value), parse-failure rate, RadFact-style grounded precision/recall/F1
                (:mod:`evaluation.box_eval`); skipped when no row has a box task
``answers``     rows of a question task (``--task classification|vqa|view``): answer accuracy, the mean of
                :func:`reward.task_rewards.answer_match` (1/0 per answer; for classification the share of
                ``finding: answer`` lines right), over those rows; skipped when no row has a question task
==============  =========================================================================================

A metric whose model or package is not installed is listed under ``skipped_metrics`` with the reason
(never silently dropped).

Confidence intervals (:mod:`evaluation.statistics`): studies are resampled with replacement ``n_boot`` times (seeded) and every
metric is recomputed on each resample from per-study sufficient statistics: sums of per-study scores
for mean metrics, n-gram counts for corpus BLEU, and per-observation TP/FP/FN counts for the corpus F1
values, so micro/macro F1 are recomputed on the resampled label sets, never averaged per study. The
95% interval is the 2.5/97.5 percentile of the bootstrap values.

Paired comparison (``--compare OTHER.jsonl``): studies in both files; the same resamples are applied to
both, giving the delta (this - other) and its 95% interval. The p-value is that of a two-sided paired
permutation (randomisation) test: under the null hypothesis the two systems are exchangeable, so each
study's outputs are swapped between them at random ``n_boot`` times (exactly, over all ``2**n`` swaps,
when that is fewer) and the metric delta is recomputed from the per-study statistics, corpus metrics
included (:func:`scipy.stats.permutation_test`, ``permutation_type="samples"``).

Outputs in ``DIR``: ``metrics.json``, ``metrics.md``, ``per_finding_f1.png``, ``length_distribution.png``,
``metrics.png`` and ``per_study.jsonl`` (``per_study_compare.jsonl`` for the compared file): one line per study
with its per-study scores (ROUGE-L, per-study CheXpert F1 over the 14 and the count of label disagreements,
prior and measurement hallucinations, lengths...) and, under ``details``, what they rest on: both reports'
CheXpert labels with the spans of their mentions (one labelling pass, :meth:`reward.chexpert.
ChexpertRulesLabeler.label_with_spans`), the prior-exam sentences and whether the study had a prior, and the
flagged measurement/device facts. The HTML report (:mod:`evaluation.report`) only renders these.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cxr_io import make_parent, write_jsonl, write_text_atomic
from evaluation.groups import METRIC_GROUPS, compute_groups
from evaluation.plots import write_plots
from evaluation.predictions import predictions_to_evaluate
from evaluation.statistics import bootstrap_summary, paired_compare
from evaluation.tables import _fmt_ci, markdown_report
from reward.base import RewardError


def evaluate_predictions(pred: str | Path, *, compare: str | Path | None = None,
                         metrics: Sequence[str] = METRIC_GROUPS, n_boot: int = 1000, seed: int = 0,
                         uncertain: str = "positive", metric_kwargs: dict[str, dict[str, Any]] | None = None,
                         name: str | None = None, compare_name: str | None = None, progress: bool = True
                         ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Evaluate a predictions file (and compare it with another); returns (result dict, extras for plots)."""
    if n_boot < 0:
        raise RewardError(f"n_boot must be >= 0, got {n_boot}")
    if uncertain not in ("positive", "negative"):
        raise RewardError(f"uncertain must be positive or negative, got {uncertain!r}")
    t0 = time.perf_counter()
    p = predictions_to_evaluate(pred)
    groups, skipped = compute_groups(p, metrics, uncertain=uncertain, metric_kwargs=metric_kwargs, progress=progress)
    result: dict[str, Any] = {
        "pred": str(pred), "name": name or Path(pred).stem, "n": len(p.ids), "n_rows": p.n_rows,
        "skipped_rows": p.skipped_rows, "metrics_requested": list(metrics),
        "bootstrap": {"n_boot": n_boot, "seed": seed, "level": 0.95,
                      "method": "percentile; studies resampled with replacement; corpus metrics recomputed "
                                "on each resample from per-study counts"},
        "metrics": bootstrap_summary(groups, len(p.ids), n_boot, seed),
        "skipped_metrics": skipped,
        "details": {g.name: g.info for g in groups.values() if g.info},
    }
    extras: dict[str, Any] = {"pred": p, "groups": groups}
    if compare:
        q = predictions_to_evaluate(compare)
        qgroups, qskipped = compute_groups(q, [m for m in metrics if m in groups], uncertain=uncertain,
                                           metric_kwargs=metric_kwargs, progress=progress)
        pos_a = {s: i for i, s in enumerate(p.ids)}
        pos_b = {s: i for i, s in enumerate(q.ids)}
        common = [s for s in p.ids if s in pos_b]
        if not common:
            raise RewardError(f"{pred} and {compare} have no study in common (field study_id)")
        ia, ib = np.array([pos_a[s] for s in common]), np.array([pos_b[s] for s in common])
        ga = {k: g.subset(ia) for k, g in groups.items() if k in qgroups}
        gb = {k: g.subset(ib) for k, g in qgroups.items() if k in groups}
        result["compare"] = {
            "other": str(compare), "name": compare_name or Path(compare).stem, "n_common": len(common),
            "only_in_pred": len(p.ids) - len(common), "only_in_other": len(q.ids) - len(common),
            "reference_mismatch": int(sum(p.refs[i] != q.refs[j] for i, j in zip(ia, ib))),
            "skipped_metrics": qskipped,
            "other_metrics": bootstrap_summary(qgroups, len(q.ids), n_boot, seed),
            "p_value_test": "two-sided paired permutation (randomisation) test, scipy.stats.permutation_test "
                            "(permutation_type='samples'), corpus metrics recomputed from per-study statistics",
            "permutation_resamples": n_boot,
            "metrics": paired_compare(ga, gb, len(common), n_boot, seed),
        }
        extras.update(other=q, other_groups=qgroups)
    result["seconds"] = round(time.perf_counter() - t0, 2)
    return result, extras




def write_per_study(extras: dict[str, Any], path: Path) -> None:
    """One line per evaluated study: its per-study scores and, under ``details``, what each group's numbers
    rest on (:attr:`MetricGroup.study_details`). The HTML report renders these and recomputes nothing."""
    p = extras["pred"]
    cols = {k: v for g in extras["groups"].values() for k, v in g.per_study.items()}
    dets = {g.name: g.study_details for g in extras["groups"].values() if g.study_details is not None}
    write_jsonl(path, ({"study_id": sid, **{k: float(v[i]) for k, v in cols.items()},
                        "details": {name: d[i] for name, d in dets.items()}} for i, sid in enumerate(p.ids)))


def run_eval(pred: str | Path, out_dir: str | Path, *, plots: bool = True, strict: bool = False,
             **kw: Any) -> dict[str, Any]:
    """:func:`evaluate_predictions` + ``metrics.json``, ``metrics.md``, plots and ``per_study.jsonl`` in ``out_dir``.

    ``strict`` (metrics named by the user): a metric that cannot run is an error and nothing is written;
    otherwise (the default "all" list) it is listed under ``skipped_metrics`` with its full reason.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise RewardError("--out is an existing file; eval writes a folder (metrics.json, metrics.md, ...)",
                          file=str(out))
    make_parent(out)
    result, extras = evaluate_predictions(pred, **kw)
    if strict and result["skipped_metrics"]:
        raise RewardError("metric(s) asked for by name could not run: " + "; ".join(
            f"{k}: {' '.join(str(v).split())}" for k, v in result["skipped_metrics"].items())
            + " (install/configure them, or leave --metrics out to skip what cannot run)")
    out.mkdir(exist_ok=True)
    files = ["metrics.json", "metrics.md", "per_study.jsonl"]
    if plots:
        files += write_plots(result, extras, out)
    write_per_study(extras, out / "per_study.jsonl")
    if "other" in extras:  # the compared file's per-study scores (read by the HTML report)
        write_per_study({"pred": extras["other"], "groups": extras["other_groups"]}, out / "per_study_compare.jsonl")
        files.append("per_study_compare.jsonl")
    result["files"] = files
    write_text_atomic(out / "metrics.json", json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    write_text_atomic(out / "metrics.md", markdown_report(result))
    return result


def eval_summary_line(result: dict[str, Any], out_dir: str | Path) -> str:
    parts = []
    for m in result["metrics"].values():
        if m.get("main") and m["group"] not in ("length",) and m["value"] is not None:
            parts.append(f"{m['label']} {m['value']:.3f} {_fmt_ci(m['ci'])}")
    s = f"evaluated {result['n']} studies: " + "; ".join(parts)
    if result["skipped_metrics"]:
        s += f"; skipped {', '.join(result['skipped_metrics'])}"
    if result.get("compare"):
        c = result["compare"]
        s += f"; compared with {c['name']} on {c['n_common']} studies"
    return s + f" -> {out_dir}"
