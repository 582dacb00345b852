"""The one metric table: every metric of ``score``, ``eval``, reward specs and the HTML report, one row each.

A row (:class:`MetricSpec`) says what a metric is called (its canonical name and the other names users may
write), how to build its per-sample scorer (``"module:factory"``, imported when first built), which ``eval``
group it feeds and how that group is computed (``"module:function"``), whether it needs a model or package
that may be missing, and which per-study columns it writes to ``per_study.jsonl`` with their labels in the
HTML report. Every other table is derived from :data:`METRICS`:

==========================================  ==============================================================
:data:`reward.base.BUILTIN_SCORERS`         rows with a ``scorer``
:data:`reward.base.METRIC_VOCABULARY`       every row: canonical name -> (eval group, aliases)
:data:`evaluation.groups.METRIC_GROUPS`    rows with a ``group``, in table order (the order of the table)
:data:`evaluation.groups.MODEL_GROUPS`     groups of rows with ``needs_model``
``mllm-cxr score --metrics all``            rows with ``score_all``, in table order
:data:`evaluation.report.options.PER_STUDY_METRICS`  the rows' ``per_study`` columns (label, higher_is_better)
==========================================  ==============================================================

This module imports nothing of the project but :mod:`cxr_io.registry` (and that only when a row is
resolved), so listing metrics imports no scorer, and the HTML report can read the labels without the
evaluation code. A row naming a module or attribute that does not exist is a
:class:`cxr_io.registry.RegistryError` naming the row (tests/repo/test_import_graph.py resolves every row).

Adding a metric: its scorer class and/or its group builder (``build(preds, kw, uncertain) -> MetricGroup``,
:mod:`evaluation.groups`), and one row here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PerStudy:
    """One per-study column a metric group writes to ``per_study.jsonl`` (``key``), as the HTML report shows it.

    ``label``: the sort menu and column title; ``short``: the compact line under each study (None: the key);
    ``higher_is_better``: sorts worst first (None: a size, longest first); ``integer``: shown without decimals;
    ``detail``: the value is read from the group's per-study ``details`` entry of that name, not from a column.
    """

    key: str
    label: str
    short: str | None = None
    higher_is_better: bool | None = True
    integer: bool = False
    detail: str | None = None


@dataclass(frozen=True)
class MetricSpec:
    """One metric. ``name`` is its canonical name: the scorer's registry name, or for a metric with no
    per-sample scorer (``length``, ``boxes``) its ``eval`` group's name.

    ``scorer``: ``"module:factory"`` of the per-sample scorer (None: ``eval`` only). ``group``: the ``eval``
    group it feeds (None: ``score`` and reward specs only); ``build`` computes that group: ``"module:function"``
    or a callable ``build(preds, kw, uncertain) -> MetricGroup``. ``needs_model``: the scorer needs a model or
    optional package that may be missing, so ``eval`` skips the group on any loading error. ``optional_input``:
    the group needs something the predictions may lack (``context.has_prior``), so ``eval`` skips it on a
    :class:`reward.base.RewardError` from ``build``. ``score_all``: in ``mllm-cxr score --metrics all``.
    """

    name: str
    description: str = ""
    scorer: str | None = None
    aliases: tuple[str, ...] = ()
    group: str | None = None
    build: str | Callable[..., Any] | None = None
    needs_model: bool = False
    optional_input: bool = False
    score_all: bool = False
    per_study: tuple[PerStudy, ...] = ()

    def __post_init__(self) -> None:
        if (self.group is None) != (self.build is None):
            raise ValueError(f"metric '{self.name}': an eval group needs a builder and a builder a group")
        if self.scorer is None and self.group is None:
            raise ValueError(f"metric '{self.name}': neither a scorer nor an eval group")

    def builder(self) -> Callable[..., Any]:
        """The group builder, imported now when the row names it by ``"module:function"``."""
        if self.build is None:
            raise LookupError(f"metric '{self.name}' has no eval group")
        if callable(self.build):
            return self.build
        from cxr_io.registry import import_entry

        return import_entry("reward.metric_table.METRICS (build)", self.name, self.build)


#: The group builders live in the evaluation package, above this one: a row names its builder as text, and only
#: :func:`evaluation.groups.compute_groups` resolves it (reward never imports evaluation).
_E = "evaluation.groups:"

#: Every metric, in the order of ``eval``'s table (``METRIC_GROUPS``) and of ``score --metrics all``.
METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("bleu", "sentence BLEU-n per sample (COCO/RadEval); corpus BLEU-1..n in corpus",
               "reward.nlg:BleuScorer", ("bleu4", "bleu-4"), "bleu", _E + "build_bleu", score_all=True),
    MetricSpec("rouge_l", "ROUGE-L F per sample (rouge-score, stemmer); corpus mean in corpus",
               "reward.nlg:RougeLScorer", ("rougel", "rouge-l"), "rouge_l", _E + "build_rouge_l", score_all=True,
               per_study=(PerStudy("rouge_l", "ROUGE-L", "ROUGE-L"),)),
    MetricSpec("rouge", "ROUGE-1/2/L F (rouge-score, stemmer); per-sample key rougeL by default",
               "reward.nlg:RougeScorer"),
    MetricSpec("radgraph_f1", "RadGraph F1 (simple/partial/complete) with a local RadGraph model",
               "reward.radgraph:RadGraphF1Scorer", ("radgraph", "radgraph-f1"), "radgraph", _E + "build_radgraph",
               needs_model=True, score_all=True, per_study=(PerStudy("radgraph_f1", "RadGraph F1", "RadGraph"),)),
    MetricSpec("green", "GREEN: LLM-judged clinically significant errors vs matched findings (needs a judge)",
               "reward.green:GreenScorer", (), "green", _E + "build_green", needs_model=True, score_all=True,
               per_study=(PerStudy("green", "GREEN", "GREEN"),)),
    MetricSpec("ratescore", "RaTEScore: entity-aware similarity of two reports (optional RaTEScore package)",
               "reward.ratescore:RaTEScoreScorer", ("rate_score", "rate-score"), "ratescore", _E + "build_ratescore",
               needs_model=True, score_all=True, per_study=(PerStudy("ratescore", "RaTEScore", "RaTEScore"),)),
    MetricSpec("chexpert_f1", "Per-sample F1 of CheXpert labels (hypothesis vs reference), rule labeler",
               "reward.chexpert:ChexpertF1Scorer", ("chexpert", "f1_chexpert", "f1-chexpert", "chexpert-f1"),
               "chexpert", _E + "build_chexpert", score_all=True,
               per_study=(PerStudy("chexpert_f1", "CheXpert F1 (14, per study)", "CheXpert F1"),
                          PerStudy("errors", "label disagreements (FP + FN)", "disagreements", False, True))),
    MetricSpec("chexbert_f1", "F1 between the CheXbert labels of hypothesis and reference (needs chexbert.pth)",
               "reward.chexbert:ChexbertF1Scorer", ("chexbert", "f1_chexbert", "f1-chexbert", "chexbert-f1"),
               "chexbert", _E + "build_chexbert", needs_model=True, score_all=True),
    MetricSpec("prior_penalty", "-1 per completion (or per sentence) that refers to a prior exam the study did not "
               "have", "reward.prior:PriorPenalty", ("prior", "prior_rate", "prior-penalty"), "prior",
               _E + "build_prior", optional_input=True, score_all=True,
               per_study=(PerStudy("prior_hallucination", "prior reference without a prior", "prior ref", False,
                                   True),)),
    MetricSpec("temporal_f1", "Temporal F1 (RadEval/Libra): overlap of BioViL-T change words",
               "reward.temporal:TemporalF1Scorer", ("temporal", "temporal-f1"), score_all=True),
    MetricSpec("measurement_hallucination", "number of hallucinated device/position/measurement/size facts per "
               "report (vs the reference)", "reward.measurements:MeasurementHallucination", (), "measurement",
               _E + "build_measurement",
               per_study=(PerStudy("measurement_hallucinations", "measurement/device hallucinations", "measurement",
                                   False, True),)),
    MetricSpec("measurement_f1", "F1 of device + tip-position facts of the generation vs the reference",
               "reward.measurements:MeasurementF1"),
    MetricSpec("measurement_penalty", "-penalty per hallucinated device/position/measurement/size fact (capped at "
               "max_count)", "reward.measurements:MeasurementPenalty"),
    MetricSpec("length", "report length in words (prediction and reference), their ratio, share of empty reports",
               None, ("words",), "length", _E + "build_length",
               per_study=(PerStudy("length_pred_words", "length of the generated report (words)", "words", None, True),
                          PerStudy("length_ref_words", "length of the reference (words)", "reference words", None,
                                   True))),
    MetricSpec("boxes", "box tasks: mean IoU, Acc@0.5, box P/R/F1, mAP@0.5, parse failures, grounded P/R/F1",
               None, (), "boxes", _E + "build_boxes",
               per_study=(PerStudy("box_iou", "matched box IoU (grounding/detection)", detail="iou"),
                          PerStudy("grounded_score", "grounded-report score (RadFact-style)",
                                   detail="grounded_score"))),
    MetricSpec("iou", "Matched IoU of the completion's boxes with the reference boxes (VLM-R1 style)",
               "reward.box_rewards:IoUReward"),
    MetricSpec("box_f1", "Box F1 at IoU >= threshold with Hungarian matching", "reward.box_rewards:BoxF1Reward"),
    MetricSpec("box_format", "1 when the completion's boxes parse, lie inside the image and have ordered corners",
               "reward.box_rewards:BoxFormatReward"),
    MetricSpec("grounded_report", "RadFact-style grounded report score (rule labeler + pixel precision > 0.5)",
               "reward.box_rewards:GroundedReportReward"),
    MetricSpec("answer_match", "The completion gives the reference short answer (classification, vqa, view)",
               "reward.task_rewards:AnswerMatch", (), "answers", _E + "build_answers"),
)


def _check(specs: tuple[MetricSpec, ...]) -> None:
    """Names, aliases and groups are unique across the table (a clash would make a name mean two metrics)."""
    seen: dict[str, str] = {}
    for s in specs:
        for n in {s.name, *s.aliases, *([s.group] if s.group else [])}:
            if seen.setdefault(n, s.name) != s.name:
                raise ValueError(f"metric name '{n}' is used by both '{seen[n]}' and '{s.name}'")


_check(METRICS)

#: canonical name -> row
BY_NAME: dict[str, MetricSpec] = {s.name: s for s in METRICS}
#: eval group -> row
BY_GROUP: dict[str, MetricSpec] = {s.group: s for s in METRICS if s.group}
