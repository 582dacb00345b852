"""Metric groups: per-study sufficient statistics and the reported numbers as functions of their sums.

A :class:`MetricGroup` holds one row of statistics per study (``S``, shape ``(n, k)``); each :class:`Stat`
maps ``S`` summed over studies to a value, so every number can be recomputed on a bootstrap resample or a
permutation from the per-study rows (:mod:`evaluation.statistics`): sums of scores for mean metrics,
n-gram counts for corpus BLEU, TP/FP/FN per observation for corpus F1. Each ``eval`` group has a builder
here (``build_<group>(preds, kw, uncertain)``), named by its row of :data:`reward.metric_table.METRICS`,
the one registry of metrics; :func:`compute_groups` runs them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from evaluation.predictions import Predictions
from reward.base import MissingBackendError, RewardError, eval_group, get_scorer
from reward.constants import CHEXPERT_5, CHEXPERT_LABELS
from reward.metric_table import BY_GROUP

#: The eval groups in the order of the table, and those whose scorer needs a model or package that may be
#: missing (any loading error skips them): both derived from :data:`reward.metric_table.METRICS`.
METRIC_GROUPS: tuple[str, ...] = tuple(BY_GROUP)
MODEL_GROUPS = frozenset(g for g, spec in BY_GROUP.items() if spec.needs_model)
_IDX5 = [CHEXPERT_LABELS.index(n) for n in CHEXPERT_5]

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


def ratio(a: int, b: int) -> Fn:
    """Column ``a`` over column ``b`` of the summed statistics (NaN where ``b`` sums to 0)."""
    return lambda t: np.where(t[..., b] > 0, t[..., a] / np.where(t[..., b] > 0, t[..., b], 1), np.nan)


def mean_group(name: str, key: str, label: str, scores: Sequence[float], info: dict | None = None,
               higher_is_better: bool = True) -> MetricGroup:
    v = np.asarray(scores, dtype=float)
    S = np.stack([v, np.ones_like(v)], axis=1)
    return MetricGroup(name, S, {key: Stat(label, ratio(0, 1), higher_is_better)}, info or {}, {key: v})


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


def count_matrix(hyp_bin: np.ndarray, ref_bin: np.ndarray) -> np.ndarray:
    """Per-study TP, FP and FN of ``m`` binary labels (``(n, m)`` each) as one ``(n, 3m)`` float matrix."""
    h, r = hyp_bin.astype(bool), ref_bin.astype(bool)
    return np.concatenate([h & r, h & ~r, ~h & r], axis=1).astype(float)


def micro_f1(cols: Sequence[int], m: int) -> Fn:
    """Micro F1 over label columns ``cols`` of summed :func:`count_matrix` statistics (``m`` labels):
    ``2TP / (2TP + FP + FN)``, 0 when that is 0/0."""
    def f(t: np.ndarray) -> np.ndarray:
        TP, FP, FN = (t[..., [c + o for c in cols]].sum(-1) for o in (0, m, 2 * m))
        den = 2 * TP + FP + FN
        return np.where(den > 0, 2 * TP / np.where(den > 0, den, 1), 0.0)
    return f


def f1_group(name: str, hyp_bin: np.ndarray, ref_bin: np.ndarray, info: dict[str, Any]) -> MetricGroup:
    """Corpus F1 (micro/macro over 14 and 5, per observation) from binary label matrices (n, 14).

    Same values as scikit-learn's ``classification_report(ref, hyp, zero_division=0)``
    (:func:`reward.f1.f1_report`): per class ``2TP / (2TP + FP + FN)``, 0 when that is 0/0.
    """
    h, r = hyp_bin.astype(bool), ref_bin.astype(bool)
    S = count_matrix(h, r)
    m = len(CHEXPERT_LABELS)

    def per_class(t: np.ndarray) -> np.ndarray:
        TP, FP, FN = t[..., :m], t[..., m:2 * m], t[..., 2 * m:]
        den = 2 * TP + FP + FN
        return np.where(den > 0, 2 * TP / np.where(den > 0, den, 1), 0.0)

    def macro(cols: list[int]) -> Fn:
        return lambda t: per_class(t)[..., cols].mean(-1)

    all14 = list(range(m))
    tag = "CheXbert" if name == "chexbert" else "CheXpert"
    stats = {
        f"{name}_micro_f1_14": Stat(f"F1-{tag} micro (14)", micro_f1(all14, m)),
        f"{name}_macro_f1_14": Stat(f"F1-{tag} macro (14)", macro(all14)),
        f"{name}_micro_f1_5": Stat(f"F1-{tag} micro (5)", micro_f1(_IDX5, m)),
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
    stats = {"prior_hallucination_rate": Stat("Prior-hallucination rate (no-prior studies)", ratio(0, 2), False),
             "reference_prior_rate": Stat("Reference prior-mention rate (no-prior studies)", ratio(1, 2), None)}
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
                                                           ratio(0, 8), False),
             "measurement_hallucination_rate": Stat("Reports with a device/measurement hallucination", ratio(1, 8),
                                                    False),
             "device_position_precision": Stat("Device+position precision", ratio(2, 3)),
             "device_position_recall": Stat("Device+position recall", ratio(4, 5)),
             "device_position_f1": Stat("Device+position F1", f1),
             "tube_carina_mae_cm": Stat("Tube-to-carina MAE (cm)", ratio(6, 7), False)}
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
    stats = {"length_pred_words": Stat("Mean length, prediction (words)", ratio(0, 2), None),
             "length_ref_words": Stat("Mean length, reference (words)", ratio(1, 2), None),
             "length_ratio": Stat("Length ratio (prediction / reference)", ratio(0, 1), None),
             "empty_prediction_rate": Stat("Empty predictions", ratio(3, 2), False)}
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
                                                              ratio(0, 1), True)},
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
    from evaluation.box_eval import box_statistics

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


