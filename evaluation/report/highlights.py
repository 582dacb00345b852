"""The marks of the report: what ``eval`` wrote per study (``details`` of ``per_study.jsonl``) turned into
highlighted spans of both reports, and one system's analysed view of a study. Nothing is labelled again."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from evaluation.report.options import _FROM_DETAILS, PER_STUDY_METRICS
from reward.constants import CHEXPERT_LABELS

KIND_LABELS = {"fp": "false positive", "fn": "false negative", "neg": "negated here, present in the other report",
               "prior": "prior exam without a prior", "meas": "measurement/device disagreement"}




@dataclass(frozen=True)
class Highlight:
    """A span of a report's original text, its kind (fp, fn, neg, prior, meas) and the label shown on hover."""

    start: int
    end: int
    kind: str
    label: str
    observation: str | None = None


@dataclass
class LabelView:
    """One report as the labeler sees it: labels, positive set under the convention, mention spans."""

    labels: dict[str, float | None]
    positive: frozenset[str]
    spans: dict[str, list[tuple[int, int, float]]]  # observation -> (start, end, label) in the original text


def label_view_from(labels: dict[str, Any], spans: Sequence[Sequence[Any]], uncertain: str = "positive") -> LabelView:
    """A report's :class:`LabelView` from what ``eval`` wrote (``details.chexpert`` of ``per_study.jsonl``):
    its 14 labels and its ``[observation, start, end, label]`` mention spans."""
    labels = {o: labels.get(o) for o in CHEXPERT_LABELS}
    pos = frozenset(o for o, v in labels.items() if v == 1.0 or (v == -1.0 and uncertain == "positive"))
    by_obs: dict[str, list[tuple[int, int, float]]] = {}
    for obs, a, b, lab in spans:
        by_obs.setdefault(obs, []).append((int(a), int(b), float(lab)))
    return LabelView(labels, pos, by_obs)


def _present(label: float, uncertain: str) -> bool:
    return label == 1.0 or (label == -1.0 and uncertain == "positive")


def _state(view: LabelView, obs: str) -> str:
    v = view.labels.get(obs)
    return "not mentioned" if v is None else {1.0: "present", 0.0: "negated", -1.0: "uncertain"}.get(v, str(v))


def label_highlights(hyp: LabelView, ref: LabelView, uncertain: str = "positive"
                     ) -> tuple[list[Highlight], list[Highlight], dict[str, str]]:
    """Highlights of the generated report and of the reference, and the per-observation outcome.

    False positive (present in ``hyp``, absent or negated in ``ref``): the present mentions in the
    generated report (kind ``fp``) and the negating mentions in the reference (``neg``). False negative:
    the present mentions in the reference (``fn``) and the negating ones in the generated report (``neg``).
    The outcome maps every observation present in either report to ``tp``, ``fp`` or ``fn``.
    """
    hh: list[Highlight] = []
    rh: list[Highlight] = []
    outcome: dict[str, str] = {}
    for obs in CHEXPERT_LABELS:
        h, r = obs in hyp.positive, obs in ref.positive
        if not (h or r):
            continue
        outcome[obs] = "tp" if h and r else ("fp" if h else "fn")
        if h and r:
            continue
        src, dst = (hyp, ref) if h else (ref, hyp)
        kind = "fp" if h else "fn"
        other = "reference" if h else "generated report"
        tip = f"{KIND_LABELS[kind]}: {obs} ({other}: {_state(dst, obs)})"
        marks = [Highlight(s, e, kind, tip, obs) for s, e, lab in src.spans.get(obs, []) if _present(lab, uncertain)]
        negs = [Highlight(s, e, "neg", f"{obs}: {_state(dst, obs)} here, {_state(src, obs)} in the "
                                       f"{'generated report' if h else 'reference'} ({KIND_LABELS[kind]})", obs)
                for s, e, lab in dst.spans.get(obs, []) if not _present(lab, uncertain)]
        (hh if h else rh).extend(marks)
        (rh if h else hh).extend(negs)
    return hh, rh, outcome


def prior_highlights(spans: Sequence[Sequence[Any]]) -> list[Highlight]:
    """Sentences referring to a prior exam in a study without one (``details.prior`` of ``per_study.jsonl``:
    ``[start, end, cues]`` as :func:`reward.prior.find_prior_spans` found them during ``eval``)."""
    return [Highlight(int(a), int(b), "prior", f"refers to a prior exam, but the study had none "
                                               f"(cues: {', '.join(cues)})") for a, b, cues in spans]


def _span_of(item: dict[str, Any]) -> tuple[int, int] | None:
    sp = item.get("span")
    if isinstance(sp, dict):
        sp = (sp.get("start"), sp.get("end"))
    if sp is None and "start" in item and "end" in item:
        sp = (item["start"], item["end"])
    if isinstance(sp, list | tuple) and len(sp) == 2 and all(isinstance(x, int) for x in sp):
        return int(sp[0]), int(sp[1])
    return None


def _fact_text(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, dict):
        return str(v.get("text") or v.get("sentence") or ", ".join(f"{k}={x}" for k, x in v.items()
                                                                   if not isinstance(x, dict | list)))
    return str(v)


def measurement_items(detail: Any) -> list[dict[str, Any]]:
    """The flagged facts of one ``measurement_hallucination`` detail: a list of dicts, or a dict holding one."""
    if isinstance(detail, list):
        return [d for d in detail if isinstance(d, dict)]
    if isinstance(detail, dict):
        for v in detail.values():
            if isinstance(v, list) and v and all(isinstance(d, dict) for d in v) and any(_span_of(d) for d in v):
                return v
    return []


def measurement_highlights(text: str, items: Sequence[dict[str, Any]]) -> list[Highlight]:
    """Highlights of the facts ``eval``'s ``measurement_hallucination`` scorer flagged in one generated report
    (``details.measurement.hallucinations`` of ``per_study.jsonl``): each with its ``kind``, ``span`` and the
    reference fact it disagrees with, if any. A span outside the text is dropped (the count stays)."""
    marks = []
    for it in measurement_items(list(items)):
        se = _span_of(it)
        if se is None or not (0 <= se[0] < se[1] <= len(text)):
            continue
        kind = str(it.get("kind") or it.get("type") or "measurement")
        ref_fact = _fact_text(it.get("reference_fact", it.get("ref_fact", it.get("reference"))))
        tip = f"{KIND_LABELS['meas']}: {kind}" + (f" (reference: {ref_fact})" if ref_fact else " (not in the reference)")
        marks.append(Highlight(se[0], se[1], "meas", tip))
    return marks


def render_marked(text: str, marks: Sequence[Highlight]) -> str:
    """``text`` HTML-escaped, with ``<mark class="hl hl-KIND" title="LABEL">`` around the highlighted parts.

    Overlapping highlights are cut at every boundary; a piece covered by several carries all their
    kinds and labels.
    """
    marks = [m for m in marks if 0 <= m.start < m.end <= len(text)]
    if not marks:
        return html.escape(text)
    bounds = sorted({0, len(text), *(m.start for m in marks), *(m.end for m in marks)})
    out, prev_key, buf = [], None, []

    def flush():
        if not buf:
            return
        seg = html.escape("".join(buf))
        if prev_key is None:
            out.append(seg)
        else:
            kinds, title = prev_key
            cls = " ".join(f"hl-{k}" for k in kinds)
            out.append(f'<mark class="hl {cls}" title="{html.escape(title)}">{seg}</mark>')
        buf.clear()

    for a, b in zip(bounds, bounds[1:]):
        cover = [m for m in marks if m.start <= a and b <= m.end]
        key = (tuple(dict.fromkeys(m.kind for m in cover)), "; ".join(dict.fromkeys(m.label for m in cover))) \
            if cover else None
        if key != prev_key:
            flush()
            prev_key = key
        buf.append(text[a:b])
    flush()
    return "".join(out)



@dataclass
class SystemView:
    """One system's output for one study, analysed."""

    text: str
    marks: list[Highlight]
    ref_marks: list[Highlight]
    outcome: dict[str, str]
    metrics: dict[str, float]
    boxes: dict[str, Any] | None = None  # eval's details.boxes: pred_boxes, ref_boxes (fractions), task...


def system_view(text: str, row: dict[str, Any], uncertain: str) -> SystemView:
    """One system's study as ``eval`` scored it (its ``per_study.jsonl`` line): the per-study numbers as
    written, and highlights from the labels, spans and flagged facts written beside them. Nothing is
    labelled or scored again, so the page shows what ``metrics.json`` counted, whatever the metric settings."""
    det = row.get("details") or {}
    hm: list[Highlight] = []
    rm: list[Highlight] = []
    outcome: dict[str, str] = {}
    ch = det.get("chexpert")
    if ch:
        hm, rm, outcome = label_highlights(label_view_from(ch["hyp_labels"], ch["hyp_spans"], uncertain),
                                           label_view_from(ch["ref_labels"], ch["ref_spans"], uncertain), uncertain)
    pr = det.get("prior")
    if pr and pr.get("no_prior") is True:
        hm += prior_highlights(pr.get("hyp_spans") or [])
        rm += prior_highlights(pr.get("ref_spans") or [])
    me = det.get("measurement")
    if me:
        hm += measurement_highlights(text, me.get("hallucinations") or [])
    met = {k: float(v) for k, v in row.items()
           if k in PER_STUDY_METRICS and isinstance(v, int | float) and math.isfinite(v)}
    for group, fields in _FROM_DETAILS.items():
        d = det.get(group)
        if isinstance(d, dict):
            for src, key in fields:
                if isinstance(d.get(src), int | float) and math.isfinite(d[src]):
                    met[key] = float(d[src])
    bx = det.get("boxes")
    return SystemView(text, hm, rm, outcome, met, bx if isinstance(bx, dict) else None)


