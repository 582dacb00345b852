"""Evaluate predicted reports: a JSON result, a Markdown table, PNG plots, bootstrap CIs, paired permutation test.

    mllm-cxr eval --pred pred.jsonl --out eval/ [--compare baseline.jsonl] [--metrics bleu,rouge_l,chexpert]

``--pred``: the predictions JSONL of ``mllm-cxr generate`` (``study_id, prediction, reference,
context``; ``context.has_prior`` or ``context.comparison`` feed the prior-hallucination rate).

Metrics (the reward registry's scorers, :func:`reward.base.get_scorer`), in the order of the table:

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
                (:mod:`reward.box_eval`); skipped when no row has a box task
``answers``     rows of a question task (``--task classification|vqa|view``): answer accuracy, the mean of
                :func:`reward.task_rewards.answer_match` (1/0 per answer; for classification the share of
                ``finding: answer`` lines right), over those rows; skipped when no row has a question task
==============  =========================================================================================

A metric whose model or package is not installed is listed under ``skipped_metrics`` with the reason
(never silently dropped).

Confidence intervals: studies are resampled with replacement ``n_boot`` times (seeded) and every
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
flagged measurement/device facts. The HTML report (:mod:`mllm_cxr.report_html`) only renders these.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cxr_io import atomic_write, make_parent, read_json, read_jsonl, write_jsonl, write_text_atomic
from reward.base import MissingBackendError, RewardError, eval_group, get_scorer
from reward.constants import CHEXPERT_5, CHEXPERT_LABELS
from reward.metric_table import BY_GROUP

log = logging.getLogger(__name__)

#: The eval groups in the order of the table, and those whose scorer needs a model or package that may be
#: missing (any loading error skips them): both derived from :data:`reward.metric_table.METRICS`.
METRIC_GROUPS: tuple[str, ...] = tuple(BY_GROUP)
MODEL_GROUPS = frozenset(g for g, spec in BY_GROUP.items() if spec.needs_model)
_IDX5 = [CHEXPERT_LABELS.index(n) for n in CHEXPERT_5]


# ------------------------------------------------------------------------------------------------
# Reading predictions: one reader for `score`, `eval` and the HTML report
# ------------------------------------------------------------------------------------------------
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


# ------------------------------------------------------------------------------------------------
# Metric groups: per-study sufficient statistics + functions of their sums
# ------------------------------------------------------------------------------------------------
Fn = Callable[[np.ndarray], np.ndarray]


@dataclass
class Stat:
    """One reported number: a function of the summed per-study statistics of its group."""

    label: str
    fn: Fn
    higher_is_better: bool | None = True
    main: bool = True  # in the main table (per-class F1 values are not)


@dataclass
class MetricGroup:
    """Per-study statistics ``S`` (n, k); each :class:`Stat` maps ``S`` summed over studies to a value."""

    name: str
    S: np.ndarray
    stats: dict[str, Stat]
    info: dict[str, Any] = field(default_factory=dict)
    per_study: dict[str, np.ndarray] = field(default_factory=dict)
    #: per study, what the numbers rest on (labels and mention spans, flagged facts, prior sentences): a
    #: JSON object each, written to ``per_study.jsonl`` under ``details.<group>`` for the HTML report
    study_details: list[dict[str, Any]] | None = None
    #: stats that are no function of summed statistics (mAP): ``key -> f(items, weights)``, recomputed from
    #: the per-study ``items`` with each study counted ``weights[i]`` times (so on every bootstrap resample);
    #: their ``Stat.fn`` gives NaN, so they get no permutation p-value
    resampled: dict[str, Callable[[list, np.ndarray], float]] = field(default_factory=dict)
    items: list[Any] | None = None

    def values(self, totals: np.ndarray) -> dict[str, np.ndarray]:
        with np.errstate(invalid="ignore", divide="ignore"):
            return {k: np.asarray(s.fn(totals), dtype=float) for k, s in self.stats.items()}

    def weighted_values(self, w: np.ndarray) -> dict[str, np.ndarray]:
        """The stats on resample weights ``w`` (b, n): sums ``w @ S``, and the resampled stats per row of ``w``."""
        out = self.values(w @ self.S)
        for k, f in self.resampled.items():
            out[k] = np.array([f(self.items, row) for row in w], dtype=float)
        return out

    def point_values(self) -> dict[str, np.ndarray]:
        """The stats on all studies once each."""
        out = self.values(self.S.sum(axis=0))
        for k, f in self.resampled.items():
            out[k] = np.asarray(f(self.items, np.ones(len(self.S))), dtype=float)
        return out

    def subset(self, idx: np.ndarray) -> MetricGroup:
        return MetricGroup(self.name, self.S[idx], self.stats, self.info,
                           {k: v[idx] for k, v in self.per_study.items()},
                           None if self.study_details is None else [self.study_details[i] for i in idx],
                           self.resampled, None if self.items is None else [self.items[i] for i in idx])


def _ratio(a: int, b: int) -> Fn:
    return lambda t: np.where(t[..., b] > 0, t[..., a] / np.where(t[..., b] > 0, t[..., b], 1), np.nan)


def mean_group(name: str, key: str, label: str, scores: Sequence[float], info: dict | None = None,
               higher_is_better: bool = True) -> MetricGroup:
    v = np.asarray(scores, dtype=float)
    S = np.stack([v, np.ones_like(v)], axis=1)
    return MetricGroup(name, S, {key: Stat(label, _ratio(0, 1), higher_is_better)}, info or {}, {key: v})


def bleu_group(hyps: Sequence[str], refs: Sequence[str], n: int = 4) -> MetricGroup:
    """Corpus BLEU-1 and BLEU-n from per-study n-gram counts (the COCO formula of :mod:`reward.nlg`)."""
    from reward.nlg import _cook  # the per-sample sufficient statistics of corpus BLEU

    rows = []
    for h, r in zip(hyps, refs):
        c = _cook(h, [r], n)
        rows.append([*c.correct, *c.guess, c.testlen, c.reflen])
    S = np.asarray(rows, dtype=float).reshape(len(rows), 2 * n + 2)

    def bleu(k: int) -> Fn:
        def fn(t: np.ndarray) -> np.ndarray:
            # COCO: prod_i (correct_i + 1e-15) / (guess_i + 1e-9), k-th root, times the brevity penalty
            logp = sum(np.log((t[..., i] + 1e-15) / (t[..., n + i] + 1e-9)) for i in range(k))
            b = np.exp(logp / k)
            ratio = (t[..., 2 * n] + 1e-15) / (t[..., 2 * n + 1] + 1e-9)
            return np.where(ratio < 1, b * np.exp(1 - 1 / np.maximum(ratio, 1e-300)), b)
        return fn

    stats = {f"bleu_{n}": Stat(f"BLEU-{n}", bleu(n)), "bleu_1": Stat("BLEU-1", bleu(1))}
    return MetricGroup("bleu", S, stats, {"formula": "COCO-caption corpus BLEU (RadEval's bleu)"})


def f1_group(name: str, hyp_bin: np.ndarray, ref_bin: np.ndarray, info: dict[str, Any]) -> MetricGroup:
    """Corpus F1 (micro/macro over 14 and 5, per observation) from binary label matrices (n, 14).

    Same values as scikit-learn's ``classification_report(ref, hyp, zero_division=0)``
    (:func:`reward.f1.f1_report`): per class ``2TP / (2TP + FP + FN)``, 0 when that is 0/0.
    """
    h, r = hyp_bin.astype(bool), ref_bin.astype(bool)
    tp, fp, fn = (h & r), (h & ~r), (~h & r)
    S = np.concatenate([tp, fp, fn], axis=1).astype(float)
    m = len(CHEXPERT_LABELS)

    def per_class(t: np.ndarray) -> np.ndarray:
        TP, FP, FN = t[..., :m], t[..., m:2 * m], t[..., 2 * m:]
        den = 2 * TP + FP + FN
        return np.where(den > 0, 2 * TP / np.where(den > 0, den, 1), 0.0)

    def micro(cols: list[int]) -> Fn:
        def f(t: np.ndarray) -> np.ndarray:
            TP, FP, FN = (t[..., [c + o for c in cols]].sum(-1) for o in (0, m, 2 * m))
            den = 2 * TP + FP + FN
            return np.where(den > 0, 2 * TP / np.where(den > 0, den, 1), 0.0)
        return f

    def macro(cols: list[int]) -> Fn:
        return lambda t: per_class(t)[..., cols].mean(-1)

    all14 = list(range(m))
    tag = "CheXbert" if name == "chexbert" else "CheXpert"
    stats = {
        f"{name}_micro_f1_14": Stat(f"F1-{tag} micro (14)", micro(all14)),
        f"{name}_macro_f1_14": Stat(f"F1-{tag} macro (14)", macro(all14)),
        f"{name}_micro_f1_5": Stat(f"F1-{tag} micro (5)", micro(_IDX5)),
        f"{name}_macro_f1_5": Stat(f"F1-{tag} macro (5)", macro(_IDX5)),
    }
    for j, obs in enumerate(CHEXPERT_LABELS):
        stats[f"{name}_f1::{obs}"] = Stat(obs, (lambda t, j=j: per_class(t)[..., j]), True, main=False)
    info = dict(info, support={o: int(r[:, j].sum()) for j, o in enumerate(CHEXPERT_LABELS)},
                predicted={o: int(h[:, j].sum()) for j, o in enumerate(CHEXPERT_LABELS)})
    return MetricGroup(name, S, stats, info)


def _binary_from_details(details: Sequence[dict[str, Any]], uncertain: str) -> tuple[np.ndarray, np.ndarray]:
    from reward.f1 import to_binary

    if details and "hyp_labels" in details[0]:
        return (to_binary([d["hyp_labels"] for d in details], uncertain),
                to_binary([d["ref_labels"] for d in details], uncertain))
    idx = {o: j for j, o in enumerate(CHEXPERT_LABELS)}
    h = np.zeros((len(details), len(CHEXPERT_LABELS)), dtype=np.int64)
    r = np.zeros_like(h)
    for i, d in enumerate(details):
        for o in d.get("hyp_positive", []):
            h[i, idx[o]] = 1
        for o in d.get("ref_positive", []):
            r[i, idx[o]] = 1
    return h, r


def no_prior_flags(contexts: Sequence[dict[str, Any]]) -> list[bool | None]:
    """Per study: True (no prior), False (had one) or None (unknown) from ``has_prior`` or comparison/prior."""
    from reward.prior import has_no_prior

    out: list[bool | None] = []
    for c in contexts:
        hp = c.get("has_prior")
        if isinstance(hp, bool):
            out.append(not hp)
        elif isinstance(hp, str) and hp.strip().lower() in ("true", "false"):
            out.append(hp.strip().lower() == "false")
        elif "comparison" in c or "prior" in c:
            out.append(has_no_prior(c.get("comparison"), c.get("prior")))
        else:
            out.append(None)
    return out


def prior_group(hyps: Sequence[str], refs: Sequence[str], contexts: Sequence[dict[str, Any]]) -> MetricGroup:
    """Share of no-prior studies whose report refers to a previous exam (the sentences the ``prior_penalty``
    scorer counts, :func:`reward.prior.find_prior_spans`); the details keep those sentences' spans."""
    from reward.prior import find_prior_spans

    flags = no_prior_flags(contexts)
    known = [f is not None for f in flags]
    if not any(f is True for f in flags):
        raise RewardError("no study without a prior (context.has_prior false, or an empty/'None' comparison) "
                          "among the predictions" if any(known) else
                          "the predictions have no context.has_prior (nor comparison): write them with "
                          "`mllm-cxr generate`, which adds it")
    found_h = [find_prior_spans(h) for h in hyps]
    found_r = [find_prior_spans(r) for r in refs]
    no_prior = np.array([f is True for f in flags], dtype=float)  # unknown: not counted as no-prior
    fp = np.array([len(f) > 0 for f in found_h], dtype=float) * no_prior
    fr = np.array([len(f) > 0 for f in found_r], dtype=float) * no_prior
    S = np.stack([fp, fr, no_prior], axis=1)
    stats = {"prior_hallucination_rate": Stat("Prior-hallucination rate (no-prior studies)", _ratio(0, 2), False),
             "reference_prior_rate": Stat("Reference prior-mention rate (no-prior studies)", _ratio(1, 2), None)}
    info = {"n_no_prior": int(no_prior.sum()), "n_unknown_prior_status": int(sum(not k for k in known)),
            "detector": "reward.prior (prior_penalty scorer)"}

    def spans(found: list) -> list[list]:
        return [[p.start, p.end, list(p.cues)] for p in found]

    details = [{"no_prior": flags[i], "hyp_spans": spans(found_h[i]), "ref_spans": spans(found_r[i])}
               for i in range(len(flags))]
    return MetricGroup("prior", S, stats, info, {"prior_hallucination": fp}, details)


def measurement_group(hyps: Sequence[str], refs: Sequence[str], **kw: Any) -> MetricGroup:
    """Device/position/measurement hallucinations vs the reference (``measurement_hallucination`` scorer)."""
    res = get_scorer("measurement_hallucination", **kw)(list(hyps), list(refs))
    rows = []
    for d in res.details:
        err = d["carina_error_cm"]
        rows.append([d["n_hallucinations"], float(d["n_hallucinations"] > 0), d["tp_hyp"], d["n_hyp"], d["tp_ref"],
                     d["n_ref"], 0.0 if err is None else err, float(err is not None), 1.0])
    S = np.asarray(rows, dtype=float).reshape(len(rows), 9)

    def f1(t: np.ndarray) -> np.ndarray:
        p = np.where(t[..., 3] > 0, t[..., 2] / np.where(t[..., 3] > 0, t[..., 3], 1), 0.0)
        r = np.where(t[..., 5] > 0, t[..., 4] / np.where(t[..., 5] > 0, t[..., 5], 1), 0.0)
        return np.where(p + r > 0, 2 * p * r / np.where(p + r > 0, p + r, 1), 0.0)

    stats = {"measurement_hallucinations_per_report": Stat("Device/measurement hallucinations per report",
                                                           _ratio(0, 8), False),
             "measurement_hallucination_rate": Stat("Reports with a device/measurement hallucination", _ratio(1, 8),
                                                    False),
             "device_position_precision": Stat("Device+position precision", _ratio(2, 3)),
             "device_position_recall": Stat("Device+position recall", _ratio(4, 5)),
             "device_position_f1": Stat("Device+position F1", f1),
             "tube_carina_mae_cm": Stat("Tube-to-carina MAE (cm)", _ratio(6, 7), False)}
    info = {"n_carina_pairs": int(S[:, 7].sum()), "by_kind": res.corpus.get("hallucinations_by_kind", {}),
            "tolerances": res.corpus.get("tolerances"), "extractor": "reward.measurements (measurement_hallucination)"}
    details = [{"hallucinations": d["hallucinations"]} for d in res.details]
    return MetricGroup("measurement", S, stats, info, {"measurement_hallucinations": S[:, 0]}, details)


def _describe(x: np.ndarray) -> dict[str, float]:
    return {"mean": float(x.mean()), "std": float(x.std()), "median": float(np.median(x)),
            "p5": float(np.percentile(x, 5)), "p95": float(np.percentile(x, 95)),
            "min": float(x.min()), "max": float(x.max())}


def length_group(hyps: Sequence[str], refs: Sequence[str]) -> MetricGroup:
    lp = np.array([len(h.split()) for h in hyps], dtype=float)
    lr = np.array([len(r.split()) for r in refs], dtype=float)
    S = np.stack([lp, lr, np.ones_like(lp), (lp == 0).astype(float)], axis=1)
    stats = {"length_pred_words": Stat("Mean length, prediction (words)", _ratio(0, 2), None),
             "length_ref_words": Stat("Mean length, reference (words)", _ratio(1, 2), None),
             "length_ratio": Stat("Length ratio (prediction / reference)", _ratio(0, 1), None),
             "empty_prediction_rate": Stat("Empty predictions", _ratio(3, 2), False)}
    info = {"prediction": _describe(lp), "reference": _describe(lr)}
    return MetricGroup("length", S, stats, info, {"length_pred_words": lp, "length_ref_words": lr})


#: The tasks whose answers are scored by the ``answers`` group (mllm_cxr.tasks' question tasks).
QUESTION_TASKS = ("classification", "vqa", "view")


class NoQuestionRows(RewardError):
    """No row of a question task: the ``answers`` group has nothing to score (a skip, not an error)."""

    skippable = True


def answers_group(records: Sequence[dict], hyps: Sequence[str], refs: Sequence[str]) -> MetricGroup:
    """Answer accuracy over the rows of a question task; other rows weigh 0 (columns: score, is-question)."""
    from reward.task_rewards import answer_match

    asked = np.array([(r or {}).get("task") in QUESTION_TASKS for r in records], dtype=float)
    if not asked.any():
        raise NoQuestionRows("no row of a question task (generate --task classification|vqa|view)")
    v = np.array([answer_match(h, r) if a else 0.0 for h, r, a in zip(hyps, refs, asked)])
    S = np.stack([v, asked], axis=1)
    tasks = sorted({r.get("task") for r in records if r.get("task") in QUESTION_TASKS})
    return MetricGroup("answers", S, {"answer_accuracy": Stat("Answer accuracy (classification/VQA/view)",
                                                              _ratio(0, 1), True)},
                       {"tasks": tasks, "n_questions": int(asked.sum())}, {"answer_accuracy": v})


# ------------------------------------------------------------------------------------------------
# Group builders: one per eval group, named by its row of reward.metric_table.METRICS
# ``build(preds, kw, uncertain) -> MetricGroup``; ``kw``: the group's --metric-kwargs (a copy)
# ------------------------------------------------------------------------------------------------
def build_bleu(preds: Predictions, kw: dict[str, Any], uncertain: str) -> MetricGroup:
    return bleu_group(preds.hyps, preds.refs)


def build_rouge_l(preds: Predictions, kw: dict[str, Any], uncertain: str) -> MetricGroup:
    res = get_scorer("rouge_l")(preds.hyps, preds.refs)
    return mean_group("rouge_l", "rouge_l", "ROUGE-L", res.scores)


def build_radgraph(preds: Predictions, kw: dict[str, Any], uncertain: str) -> MetricGroup:
    kw.setdefault("level", "partial")
    res = get_scorer("radgraph_f1", **kw)(preds.hyps, preds.refs)
    return mean_group("radgraph", "radgraph_f1", f"RadGraph F1 ({kw['level']})", res.scores,
                      {"annotation_errors": res.corpus.get("annotation_errors")})


def build_green(preds: Predictions, kw: dict[str, Any], uncertain: str) -> MetricGroup:
    res = get_scorer("green", **kw)(preds.hyps, preds.refs)
    return mean_group("green", "green", "GREEN", res.scores)


def build_ratescore(preds: Predictions, kw: dict[str, Any], uncertain: str) -> MetricGroup:
    res = get_scorer("ratescore", **kw)(preds.hyps, preds.refs)
    return mean_group("ratescore", "ratescore", "RaTEScore", res.scores)


def _label_f1_group(name: str, scorer: str, labeler: str, preds: Predictions, kw: dict[str, Any],
                    uncertain: str, per_study: bool = False) -> MetricGroup:
    from reward.f1 import convention

    kw.setdefault("uncertain", uncertain)
    res = get_scorer(scorer, **kw)(preds.hyps, preds.refs)
    h, r = _binary_from_details(res.details or [], kw["uncertain"])
    g = f1_group(name, h, r, {"uncertain": kw["uncertain"], "convention": convention(kw["uncertain"]),
                              "labeler": labeler})
    if per_study and res.details and "hyp_spans" in res.details[0]:  # per-study F1 and what it rests on (the HTML report's)
        tp = (h.astype(bool) & r.astype(bool)).sum(1)
        den = h.astype(bool).sum(1) + r.astype(bool).sum(1)
        g.per_study = {"chexpert_f1": np.where(den > 0, 2 * tp / np.where(den > 0, den, 1), 1.0),
                       "errors": (h.astype(bool) != r.astype(bool)).sum(1).astype(float)}
        g.study_details = [{k: d[k] for k in ("hyp_labels", "ref_labels", "hyp_spans", "ref_spans")}
                           for d in res.details]
    return g


def build_chexpert(preds: Predictions, kw: dict[str, Any], uncertain: str) -> MetricGroup:
    kw.setdefault("spans", True)  # labels and mention spans from one labelling pass (the HTML report's)
    return _label_f1_group("chexpert", "chexpert_f1", "rules", preds, kw, uncertain, per_study=True)


def build_chexbert(preds: Predictions, kw: dict[str, Any], uncertain: str) -> MetricGroup:
    return _label_f1_group("chexbert", "chexbert_f1", "chexbert", preds, kw, uncertain)


def build_prior(preds: Predictions, kw: dict[str, Any], uncertain: str) -> MetricGroup:
    return prior_group(preds.hyps, preds.refs, preds.contexts)


def build_measurement(preds: Predictions, kw: dict[str, Any], uncertain: str) -> MetricGroup:
    return measurement_group(preds.hyps, preds.refs, **kw)


def build_length(preds: Predictions, kw: dict[str, Any], uncertain: str) -> MetricGroup:
    return length_group(preds.hyps, preds.refs)


def build_answers(preds: Predictions, kw: dict[str, Any], uncertain: str) -> MetricGroup:
    return answers_group(preds.records, preds.hyps, preds.refs)


def build_boxes(preds: Predictions, kw: dict[str, Any], uncertain: str) -> MetricGroup:
    from reward.box_eval import box_statistics

    b = box_statistics(preds.path, preds.records, preds.hyps)
    return MetricGroup("boxes", b["S"], {k: Stat(*v) for k, v in b["stats"].items()}, b["info"], {},
                       b["details"], b["resampled"], b["items"])


def compute_groups(preds: Predictions, metrics: Sequence[str] = METRIC_GROUPS, *, uncertain: str = "positive",
                   metric_kwargs: dict[str, dict[str, Any]] | None = None, progress: bool = True
                   ) -> tuple[dict[str, MetricGroup], dict[str, str]]:
    """Run the metric groups on ``preds``, each by its row's builder (:data:`reward.metric_table.METRICS`);
    returns (groups, skipped {name: reason}).

    A group is skipped, its reason kept, when its scorer's model or package is missing
    (:class:`MissingBackendError`; any loading error for a ``needs_model`` row), when the predictions lack
    what an ``optional_input`` row needs (a :class:`RewardError`), or when its builder raises an error marked
    ``skippable`` (no row of a box or question task). Any other error is raised.
    """
    from tqdm.auto import tqdm

    metrics = [eval_group(m) or m for m in metrics]  # one vocabulary: score/reward-spec names work too
    unknown = [m for m in metrics if m not in METRIC_GROUPS]
    if unknown:
        raise RewardError(f"unknown metric(s) {unknown}; known: {', '.join(METRIC_GROUPS)}")
    kw_all = {eval_group(k) or k: v for k, v in (metric_kwargs or {}).items()}
    bad = sorted(set(kw_all) - set(METRIC_GROUPS))
    if bad:
        raise RewardError(f"metric kwargs for unknown metric(s) {bad}; known: {', '.join(METRIC_GROUPS)}")
    groups: dict[str, MetricGroup] = {}
    skipped: dict[str, str] = {}
    bar = tqdm(list(metrics), desc="eval", unit="metric", disable=not progress)
    for name in bar:
        bar.set_postfix_str(name)
        spec = BY_GROUP[name]
        try:
            groups[name] = spec.builder()(preds, dict(kw_all.get(name, {})), uncertain)
        except MissingBackendError as e:
            skipped[name] = f"MissingBackendError: {e}"
        except (RewardError, OSError, ImportError) as e:
            if not (spec.needs_model or (spec.optional_input and isinstance(e, RewardError))
                    or getattr(e, "skippable", False)):
                raise
            skipped[name] = f"{type(e).__name__}: {e}"
    return groups, skipped


# ------------------------------------------------------------------------------------------------
# Bootstrap
# ------------------------------------------------------------------------------------------------
def bootstrap_weights(n: int, n_boot: int, seed: int, chunk: int | None = None):
    """Yield (chunk, n) int32 matrices: how often each study is drawn in each resample (seeded; the
    default chunk size depends on ``n`` only, so ``seed``, ``n`` and ``n_boot`` fix the resamples)."""
    rng = np.random.default_rng(seed)
    chunk = chunk or max(1, min(200, 2_000_000 // max(n, 1)))
    done = 0
    while done < n_boot:
        b = min(chunk, n_boot - done)
        idx = rng.integers(0, n, size=(b, n))
        w = np.zeros((b, n), dtype=np.int32)
        for i in range(b):
            w[i] = np.bincount(idx[i], minlength=n)
        done += b
        yield w


def _ci(samples: np.ndarray, level: float = 0.95) -> list[float] | None:
    s = samples[np.isfinite(samples)]
    if s.size == 0:
        return None
    a = (1 - level) / 2 * 100
    return [float(np.percentile(s, a)), float(np.percentile(s, 100 - a))]


def _num(x: Any) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def bootstrap_summary(groups: dict[str, MetricGroup], n: int, n_boot: int, seed: int) -> dict[str, dict[str, Any]]:
    """Point estimate and bootstrap CI of every stat: ``{key: {label, value, ci, group, ...}}``."""
    out: dict[str, dict[str, Any]] = {}
    boots: dict[str, list[np.ndarray]] = {k: [] for g in groups.values() for k in g.stats}
    if n_boot > 0:
        for w in bootstrap_weights(n, n_boot, seed):
            wf = w.astype(float)
            for g in groups.values():
                for k, v in g.weighted_values(wf).items():
                    boots[k].append(v)
    for g in groups.values():
        point = g.point_values()
        for k, s in g.stats.items():
            out[k] = {"label": s.label, "value": _num(point[k]), "group": g.name,
                      "higher_is_better": s.higher_is_better, "main": s.main,
                      "ci": _ci(np.concatenate(boots[k])) if boots[k] else None}
    return out


def permutation_p_value(S_a: np.ndarray, S_b: np.ndarray, fn: Fn, n_resamples: int, seed: int) -> float | None:
    """Two-sided paired permutation (randomisation) test of ``fn(sum S_a) - fn(sum S_b)``.

    Under the null hypothesis the two systems are exchangeable on every study, so each study's
    statistics rows are swapped between the systems with probability 1/2 and the metric is
    recomputed from the swapped sums (corpus metrics from their per-study counts).
    :func:`scipy.stats.permutation_test` (``permutation_type="samples"``) draws the swaps, runs the
    exact test when ``2**n <= n_resamples`` and adds the observed statistic to the null distribution.
    """
    from scipy.stats import permutation_test

    n = len(S_a)
    base, diff = S_a.sum(axis=0), (S_b - S_a).astype(float)
    total_b = S_b.sum(axis=0)

    def delta(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
        # x holds study positions 0..n-1 (row of system a) or n..2n-1 (swapped: row of system b)
        swapped = (x >= n).astype(float)
        ta = base + swapped @ diff
        tb = base + total_b - ta
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.asarray(fn(ta), dtype=float) - np.asarray(fn(tb), dtype=float)

    observed = float(fn(base) - fn(total_b))
    if not math.isfinite(observed) or n < 2:  # one shared study: no permutation distribution to test against
        return None
    idx = np.arange(n)
    batch = max(1, min(n_resamples, 20_000_000 // max(1, n * S_a.shape[1])))
    res = permutation_test((idx, idx + n), delta, permutation_type="samples", vectorized=True,
                           n_resamples=n_resamples, batch=batch, alternative="two-sided",
                           rng=np.random.default_rng(seed))
    return _num(min(1.0, res.pvalue))


def paired_compare(a: dict[str, MetricGroup], b: dict[str, MetricGroup], n: int, n_boot: int, seed: int
                   ) -> dict[str, dict[str, Any]]:
    """Deltas (a - b) with bootstrap CIs and paired permutation-test p-values; groups aligned by study.

    ``n_boot`` sets both the bootstrap resamples (CI of the delta) and the random swaps of the
    permutation test (:func:`permutation_p_value`).
    """
    names = [g for g in a if g in b]
    deltas: dict[str, list[np.ndarray]] = {k: [] for g in names for k in a[g].stats}
    if n_boot > 0:
        for w in bootstrap_weights(n, n_boot, seed):
            wf = w.astype(float)
            for g in names:
                va, vb = a[g].weighted_values(wf), b[g].weighted_values(wf)
                for k in a[g].stats:
                    deltas[k].append(va[k] - vb[k])
    out: dict[str, dict[str, Any]] = {}
    for g in names:
        pa, pb = a[g].point_values(), b[g].point_values()
        for k, s in a[g].stats.items():
            d = float(pa[k] - pb[k])
            row: dict[str, Any] = {"label": s.label, "group": g, "main": s.main, "value": _num(pa[k]),
                                   "other": _num(pb[k]), "delta": _num(d), "ci": None, "p_value": None,
                                   "higher_is_better": s.higher_is_better}
            if deltas[k]:
                ds = np.concatenate(deltas[k])
                ds = ds[np.isfinite(ds)]
                if ds.size:
                    row["ci"] = _ci(ds)
            if n_boot > 0 and n > 0:
                row["p_value"] = permutation_p_value(a[g].S, b[g].S, s.fn, n_boot, seed)
            out[k] = row
    return out


# ------------------------------------------------------------------------------------------------
# The whole evaluation
# ------------------------------------------------------------------------------------------------
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


# ------------------------------------------------------------------------------------------------
# Markdown and plots
# ------------------------------------------------------------------------------------------------
def _fmt(v: float | None, digits: int = 3) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def _fmt_ci(ci: list[float] | None, digits: int = 3) -> str:
    return "–" if not ci else f"[{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"


def _digits(key: str) -> int:
    return 1 if key.startswith(("length_pred", "length_ref")) else 3


#: Short reasons for the skipped-metric lines of tables (the full text is in metrics.json).
def _short(reason: str, limit: int = 160) -> str:
    r = " ".join(reason.split())
    return r if len(r) <= limit else r[:limit - 1] + "…"


def metrics_table(result: dict[str, Any]) -> str:
    """The main table (metric, value, 95% CI), skipped metrics named below it."""
    lines = [f"Predictions: `{result.get('name')}`, {result.get('n')} studies; 95% CIs from "
             f"{result.get('bootstrap', {}).get('n_boot')} bootstrap resamples of studies.", "",
             "| Metric | Value | 95% CI |", "|---|---|---|"]
    for k, m in result.get("metrics", {}).items():
        if m.get("main", True):
            lines.append(f"| {m['label']} | {_fmt(m['value'], _digits(k))} | {_fmt_ci(m['ci'], _digits(k))} |")
    det = result.get("details", {})
    for g in ("chexpert", "chexbert"):
        if g in det:
            lines.append(f"\nF1-{'CheXpert' if g == 'chexpert' else 'CheXbert'} labels from the "
                         f"{det[g].get('labeler')} labeler; {det[g].get('convention')}. Macro F1 averages all "
                         "14 (or 5) observations; one absent from both references and predictions counts as "
                         "0 (scikit-learn's zero_division=0, as F1-CheXbert).")
    skipped = result.get("skipped_metrics") or {}
    if skipped:
        lines.append("\nSkipped (not installed or not configured):")
        lines += [f"- {k}: {' '.join(str(v).split())}" for k, v in skipped.items()]  # the full reason
    return "\n".join(lines)


def markdown_report(result: dict[str, Any]) -> str:
    out = [f"# Evaluation: {result['name']}", "", metrics_table(result), ""]
    per = [(k.split("::", 1)[1], m) for k, m in result["metrics"].items() if "::" in k and k.startswith("chexpert")]
    if per:
        sup = result["details"]["chexpert"]["support"]
        prd = result["details"]["chexpert"]["predicted"]
        out += ["## F1-CheXpert per observation", "", "| Observation | F1 | 95% CI | reference positives | "
                "predicted positives |", "|---|---|---|---|---|"]
        out += [f"| {o} | {_fmt(m['value'])} | {_fmt_ci(m['ci'])} | {sup[o]} | {prd[o]} |" for o, m in per]
        out.append("")
    if "length" in result["details"]:
        d = result["details"]["length"]
        out += ["## Report length (words)", "", "| | mean | std | median | p5 | p95 | min | max |",
                "|---|---|---|---|---|---|---|---|"]
        for who in ("prediction", "reference"):
            s = d[who]
            out.append(f"| {who} | " + " | ".join(f"{s[k]:.1f}" for k in ("mean", "std", "median", "p5", "p95",
                                                                           "min", "max")) + " |")
        out.append("")
    if "prior" in result["details"]:
        d = result["details"]["prior"]
        out += [f"Prior-hallucination rate: over {d['n_no_prior']} studies without a prior "
                f"({d['n_unknown_prior_status']} with unknown prior status not counted); detector: {d['detector']}.",
                ""]
    if "measurement" in result["details"]:
        d = result["details"]["measurement"]
        out += [f"Device/measurement hallucinations (reward.measurements): by kind {d['by_kind']}; tube-to-carina "
                f"MAE over {d['n_carina_pairs']} studies where both reports state it; tolerances {d['tolerances']}.",
                ""]
    if any(result.get("skipped_rows", {}).values()):
        out += [f"Rows not evaluated: {result['skipped_rows']} (of {result['n_rows']}).", ""]
    c = result.get("compare")
    if c:
        out += [f"## Paired comparison: `{result['name']}` vs `{c['name']}`", "",
                f"{c['n_common']} studies in both files ({c['only_in_pred']} only in this one, "
                f"{c['only_in_other']} only in the other; {c['reference_mismatch']} with different reference "
                "text). Delta = this - other; 95% CI of the delta from the paired bootstrap; p from a two-sided "
                "paired permutation (randomisation) test: each study's outputs swapped between the two systems "
                f"at random ({c.get('permutation_resamples', result['bootstrap']['n_boot'])} swaps, exact when "
                "2^n is fewer), corpus metrics recomputed from per-study counts.", "",
                f"| Metric | {result['name']} | {c['name']} | Delta | 95% CI of delta | p |", "|---|---|---|---|---|---|"]
        for k, m in c["metrics"].items():
            if m.get("main", True):
                dg = _digits(k)
                p = "–" if m["p_value"] is None else f"{m['p_value']:.3f}"
                out.append(f"| {m['label']} | {_fmt(m['value'], dg)} | {_fmt(m['other'], dg)} | "
                           f"{_fmt(m['delta'], dg)} | {_fmt_ci(m['ci'], dg)} | {p} |")
        if c.get("skipped_metrics"):
            out += ["", "Skipped for the other file: " + ", ".join(c["skipped_metrics"])]
        out.append("")
    out.append(f"Bootstrap: {result['bootstrap']['n_boot']} resamples, seed {result['bootstrap']['seed']}, "
               f"{result['bootstrap']['method']}.")
    return "\n".join(out) + "\n"


def write_plots(result: dict[str, Any], extras: dict[str, Any], out_dir: Path) -> list[str]:
    """PNG plots (matplotlib, Agg): per-finding F1 bars, length distributions, main metrics with CIs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written: list[str] = []

    def save(fig: Any, fname: str) -> None:  # atomically, like every other output
        fig.tight_layout()
        with atomic_write(out_dir / fname, "wb") as fh:
            fig.savefig(fh, format="png", dpi=110)
        plt.close(fig)
        written.append(fname)

    name = result["name"]
    other = result.get("compare")
    series = [(name, result["metrics"])]
    if other:
        series.append((other["name"], other["other_metrics"]))
    for g, title in (("chexpert", "F1-CheXpert per observation"), ("chexbert", "F1-CheXbert per observation")):
        keys = [k for k in result["metrics"] if k.startswith(f"{g}_f1::")]
        if not keys:
            continue
        fig, ax = plt.subplots(figsize=(8, 6))
        y = np.arange(len(keys))
        h = 0.8 / len(series)
        for s, (label, mets) in enumerate(series):
            vals = [mets.get(k, {}).get("value") or 0.0 for k in keys]
            err = np.array([[max(0.0, v - (mets.get(k, {}).get("ci") or [v, v])[0]),
                             max(0.0, (mets.get(k, {}).get("ci") or [v, v])[1] - v)] for k, v in zip(keys, vals)]).T
            ax.barh(y + s * h, vals, height=h, xerr=err, capsize=2, label=label)
        ax.set_yticks(y + h * (len(series) - 1) / 2, [k.split("::", 1)[1] for k in keys])
        ax.invert_yaxis()
        ax.set_xlim(0, 1)
        ax.set_xlabel("F1 (95% bootstrap CI)")
        ax.set_title(f"{title}\n{result['details'][g]['convention']}", fontsize=9)
        ax.legend(loc="lower right", fontsize=8)
        save(fig, "per_finding_f1.png" if g == "chexpert" else "per_finding_f1_chexbert.png")
    p = extras["pred"]
    fig, ax = plt.subplots(figsize=(7, 4))
    data = [(f"{name} predictions", [len(h.split()) for h in p.hyps]), ("references", [len(r.split()) for r in p.refs])]
    if "other" in extras:
        data.insert(1, (f"{other['name']} predictions", [len(h.split()) for h in extras["other"].hyps]))
    top = max(max(d) for _, d in data)
    bins = np.linspace(0, max(top, 1) + 1, 30)
    for label, d in data:
        ax.hist(d, bins=bins, histtype="step", linewidth=1.8, label=label)
    ax.set_xlabel("report length (words)")
    ax.set_ylabel("studies")
    ax.legend(fontsize=8)
    save(fig, "length_distribution.png")
    keys = [k for k, m in result["metrics"].items() if m.get("main") and not k.startswith("length_pred")
            and not k.startswith("length_ref") and k != "length_ratio" and m["value"] is not None]
    if keys:
        fig, ax = plt.subplots(figsize=(7, 0.35 * len(keys) * len(series) + 1.2))
        y = np.arange(len(keys))
        h = 0.8 / len(series)
        for s, (label, mets) in enumerate(series):
            vals = [mets.get(k, {}).get("value") for k in keys]
            cis = [mets.get(k, {}).get("ci") for k in keys]
            xs = [v if v is not None else np.nan for v in vals]
            err = np.array([[v - c[0], c[1] - v] if (c and v is not None) else [0, 0] for v, c in zip(vals, cis)]).T
            ax.errorbar(xs, y + s * h, xerr=np.clip(err, 0, None), fmt="o", capsize=3, label=label)
        ax.set_yticks(y + h * (len(series) - 1) / 2, [result["metrics"][k]["label"] for k in keys], fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("value (95% bootstrap CI)")
        ax.legend(fontsize=8)
        save(fig, "metrics.png")
    return written


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
