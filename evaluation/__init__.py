"""Evaluation of predicted reports, in one package: the predictions file, metric groups, statistics, tables and
plots, the HTML report, and the verbs ``score``, ``eval [--html]`` and ``report``.

==============================  ===============================================================================
:mod:`evaluation.predictions`   the predictions file: fields, side file ``<pred>.meta.json``, readers, the
                                writer parts ``generate`` and ``merge-predictions`` use
:mod:`evaluation.groups`        metric groups (per-study statistics) and one builder per ``eval`` group, named
                                by :data:`reward.metric_table.METRICS`, the one metric registry
:mod:`evaluation.statistics`    bootstrap confidence intervals, paired permutation test
:mod:`evaluation.evaluate`      the harness: :func:`~evaluation.evaluate.run_eval` (``metrics.json``,
                                ``per_study.jsonl``, Markdown, plots)
:mod:`evaluation.tables`        ``metrics.md``
:mod:`evaluation.plots`         the PNG plots
:mod:`evaluation.score`         ``score``: any registered scorers against a references file
:mod:`evaluation.report`        the self-contained HTML report (jinja2 templates in ``report/templates``)
:mod:`evaluation.cli`           the verbs, registered in :data:`mllm_cxr.cli.VERB_MODULES`
==============================  ===============================================================================

Layering: ``cxr_io <- data_prep, reward <- evaluation <- mllm_cxr``. This package uses the scorers
(``reward``), the file helpers (``cxr_io``) and, for the report's images and errors, ``data_prep``; it never
imports ``mllm_cxr``, and ``reward`` and ``data_prep`` never import it (tests/repo/test_import_graph.py).
"""
