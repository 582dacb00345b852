"""The one metric table (reward.metric_table.METRICS): every other metric table is derived from it."""

from __future__ import annotations

import pytest

from reward.metric_table import METRICS, MetricSpec, PerStudy, _check


def test_the_derived_tables_follow_the_rows():
    from evaluation.groups import METRIC_GROUPS, MODEL_GROUPS
    from evaluation.report.options import PER_STUDY_METRICS
    from evaluation.report.page import SHORT
    from reward.base import BUILTIN_SCORERS, METRIC_VOCABULARY, canonical_metric, eval_group

    assert METRIC_GROUPS == tuple(s.group for s in METRICS if s.group)
    assert MODEL_GROUPS == {s.group for s in METRICS if s.needs_model}
    assert set(BUILTIN_SCORERS) == {s.name for s in METRICS if s.scorer}
    assert set(METRIC_VOCABULARY) == {s.name for s in METRICS}
    cols = {c.key: c for s in METRICS for c in s.per_study}
    assert PER_STUDY_METRICS == {k: (c.label, c.higher_is_better) for k, c in cols.items()}
    assert SHORT == {k: c.short for k, c in cols.items() if c.short}
    assert next(iter(PER_STUDY_METRICS)) == "chexpert_f1"  # the report's default sort comes first
    for s in METRICS:
        for name in (s.name, *s.aliases, *([s.group] if s.group else [])):
            assert canonical_metric(name) == s.name and eval_group(name) == s.group, name


def test_a_name_meaning_two_metrics_is_refused():
    a = MetricSpec("a_f1", scorer="m:A", aliases=("a",))
    with pytest.raises(ValueError, match="'a' is used by both 'a_f1' and 'b'"):
        _check((a, MetricSpec("b", scorer="m:B", aliases=("a",))))
    with pytest.raises(ValueError, match="needs a builder"):
        MetricSpec("c", scorer="m:C", group="c")
    with pytest.raises(ValueError, match="neither"):
        MetricSpec("d")


def test_a_row_may_hold_its_builder_as_a_callable():
    spec = MetricSpec("x", group="x", build=lambda preds, kw, uncertain: (preds, kw, uncertain),
                      per_study=(PerStudy("x", "X"),))
    assert spec.builder()(1, {}, "positive") == (1, {}, "positive")


def test_unique_names_number_repeats_in_order():
    from reward.base import unique_names

    assert unique_names(["bleu", "rouge_l", "bleu", "bleu", "bleu_2"]) == ["bleu", "rouge_l", "bleu_2", "bleu_3",
                                                                           "bleu_2_2"]
