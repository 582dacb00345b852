"""One self-contained HTML evaluation report: per-study images, reference vs generated, disagreements marked.

    mllm-cxr eval --pred pred.jsonl --out eval/ --html [--compare other.jsonl] [--metric-kwargs JSON]
    mllm-cxr report --eval eval/ [--sort chexpert_f1] [--no-text]

Writes ``OUT/report.html``: one file with no network access (a Content-Security-Policy forbids any), its
images inlined as small grayscale JPEG thumbnails, working from a ``file://`` URL. It holds

* the summary of ``metrics.json``: every metric with its 95% bootstrap CI, skipped metrics with their reason,
  how many studies had a missing image; with a comparison, both systems side by side, the paired deltas
  with their CIs and p-values, and per-finding F1 of both systems as an inline SVG plot;
* one row per study, worst first by a per-study metric (``--sort``): thumbnails of the images the
  prediction row names (``images``, which ``mllm-cxr generate`` writes: the prompt's images, frontal first,
  then the prior study's when the prompt had them), the indication, the reference and the generated report
  side by side (with ``--compare`` a per-study toggle between the two systems' reports);
* highlights in both texts, drawn from what ``eval`` wrote to ``per_study.jsonl`` (``details``): CheXpert
  findings that the rule labeler (:mod:`reward.chexpert`) called present in one report and absent or
  negated in the other (false positive in the generated report, false negative in the reference, and the
  negating mention in the other text), sentences that refer to a prior exam when the study had none
  (:mod:`reward.prior`), and the measurement/device facts the ``measurement_hallucination`` scorer flagged.
  Every highlight names its label on hover;
* plain-JavaScript controls: filter by finding, error kind, split and free text, sort by any per-study
  metric, pages of rows, a click on a thumbnail enlarges it.

The page renders and recomputes nothing: every per-study number and highlight is the one ``eval``
computed with its settings (``--uncertain``, ``--metric-kwargs``), and the summary is ``metrics.json``.
An image that is missing or unreadable gets a placeholder and is counted in the summary; it never fails
the report. A row without image paths gets a note.

What the page holds (:class:`Holds`, stated at its top): by default everything, report and indication texts,
the radiographs (thumbnails), study ids and local file paths, so it stays where the data may be kept. The
shareable mode, ``--no-text`` (aliases ``--redact``, ``--shareable``), leaves every one of those out: texts
and highlights, images and box overlays, study ids (each row is numbered by its line in the predictions file)
and file paths (file names only; paths in skipped-metric reasons, absolute or relative, become ``<path>``). Metrics, CIs,
finding labels, disagreement chips and splits stay. ``--include images,ids,paths,text`` brings back any
of them, item by item; the page says which it holds.

Size: above ``--max-studies`` (default 2,000) only the worst studies by the sort metric are shown, with
a note; the summary always covers all studies. Thumbnails are ``--thumb-size`` pixels on the long side
(default 160; 0 leaves images out); ``--thumb-cache DIR`` keeps them on disk for later reports of the same
studies. See ``bench/bench_report_html.py`` for the size and speed measured.

Modules: :mod:`~evaluation.report.options` (what the page holds, the options and their checks),
:mod:`~evaluation.report.highlights` (the marks drawn from ``per_study.jsonl``),
:mod:`~evaluation.report.thumbs` (image thumbnails), :mod:`~evaluation.report.page` (the HTML, from the
jinja2 templates in ``templates/``) and :mod:`~evaluation.report.build` (:func:`build_report`).
"""
