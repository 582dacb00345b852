"""The report's HTML: the summary table, the per-finding F1 plot (inline SVG), one row per study, and the
page itself, rendered from the jinja2 templates of ``templates/`` (``page.html.jinja``, ``report.css``,
``report.js``) with autoescape on. Every value a template writes is escaped as :func:`html.escape` does
(quotes included); the fragments built here arrive as :class:`markupsafe.Markup`."""

from __future__ import annotations

import base64
import html
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from data_prep.errors import DataPrepError
from evaluation.report.highlights import KIND_LABELS, SystemView, render_marked
from evaluation.report.options import BOX_COLOURS, COLUMNS, PAGE_SIZE, PER_STUDY_METRICS, Holds
from reward.constants import CHEXPERT_LABELS


def _e(x: Any) -> str:
    return html.escape("" if x is None else str(x), quote=True)


def _f(v: float | None, d: int = 3) -> str:
    return "–" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.{d}f}"


def _fci(ci) -> str:
    return "–" if not ci else f"[{ci[0]:.3f}, {ci[1]:.3f}]"


def _digits(key: str) -> int:
    return 1 if key.startswith(("length_pred", "length_ref")) else 3


def summary_html(result: dict[str, Any], counts: dict[str, Any], holds: Holds | None = None) -> str:
    holds = holds or Holds()
    c = result.get("compare")
    name = result.get("name", "predictions")
    parts = [f"<p>{_e(result.get('n'))} studies evaluated from <code>{_e(holds.path(result.get('pred')))}</code>; 95% CIs "
             f"from {_e(result.get('bootstrap', {}).get('n_boot'))} bootstrap resamples of studies "
             f"(seed {_e(result.get('bootstrap', {}).get('seed'))}).</p>"]
    if not c:
        rows = "".join(f"<tr><td>{_e(m['label'])}</td><td class=num>{_f(m['value'], _digits(k))}</td>"
                       f"<td class=num>{_fci(m['ci'])}</td></tr>"
                       for k, m in result.get("metrics", {}).items() if m.get("main", True))
        parts.append(f"<table class=sum><thead><tr><th>metric</th><th>{_e(name)}</th><th>95% CI</th></tr></thead>"
                     f"<tbody>{rows}</tbody></table>")
    else:
        other = c.get("other_metrics", {})
        rows = []
        for k, m in c.get("metrics", {}).items():
            if not m.get("main", True):
                continue
            dg = _digits(k)
            a, b = result["metrics"].get(k, {}), other.get(k, {})
            p = m.get("p_value")
            sig = " sig" if p is not None and p < 0.05 else ""
            rows.append(f"<tr><td>{_e(m['label'])}</td><td class=num>{_f(a.get('value'), dg)} "
                        f"<small>{_fci(a.get('ci'))}</small></td><td class=num>{_f(b.get('value'), dg)} "
                        f"<small>{_fci(b.get('ci'))}</small></td><td class='num{sig}'>{_f(m.get('delta'), dg)}</td>"
                        f"<td class=num>{_fci(m.get('ci'))}</td><td class='num{sig}'>{_f(p)}</td></tr>")
        parts.append(f"<p>Paired comparison on {_e(c.get('n_common'))} studies in both files "
                     f"({_e(c.get('only_in_pred'))} only in <b>{_e(name)}</b>, {_e(c.get('only_in_other'))} only in "
                     f"<b>{_e(c.get('name'))}</b>; {_e(c.get('reference_mismatch'))} with a different reference). "
                     "Delta = A − B with its bootstrap 95% CI; two-sided paired-bootstrap p-value.</p>")
        parts.append(f"<table class=sum><thead><tr><th>metric</th><th>A: {_e(name)} [95% CI]</th>"
                     f"<th>B: {_e(c.get('name'))} [95% CI]</th><th>delta A−B</th><th>95% CI of delta</th>"
                     f"<th>p</th></tr></thead><tbody>{''.join(rows)}</tbody></table>")
    for who, sk in (("", result.get("skipped_metrics") or {}), (" (B)", (c or {}).get("skipped_metrics") or {})):
        if sk:
            parts.append(f"<p class=muted>Skipped metrics{who}: " + "; ".join(
                f"<b>{_e(k)}</b>: {_e(holds.scrub(v)[:200])}" for k, v in sk.items()) + "</p>")
    det = result.get("details", {})
    for g in ("chexpert", "chexbert"):
        if g in det and det[g].get("convention"):
            parts.append(f"<p class=muted>F1-{'CheXpert' if g == 'chexpert' else 'CheXbert'}: "
                         f"{_e(det[g].get('labeler'))} labeler, {_e(det[g]['convention'])}.</p>")
    bx = det.get("boxes")
    if isinstance(bx, dict):
        by_task = ", ".join(f"{_e(k)} {_e(v)}" for k, v in (bx.get("rows_by_task") or {}).items())
        fams = ", ".join(_e(f) for f in bx.get("families") or [])
        per_class = bx.get("map_per_class") or {}
        ap = ("; AP@0.5 per class: " + ", ".join(f"{_e(k)} {_f(v)}" for k, v in per_class.items())) if per_class else ""
        parts.append(f"<p class=muted>Boxes: rows by task {by_task}; box codec {fams}; IoU threshold "
                     f"{_e(bx.get('iou_threshold'))}{ap}. mAP's CI comes from recomputing it on each resample; it has "
                     "no paired p-value.</p>")
    parts.append("<ul class=counts>" + "".join(f"<li>{_e(k)}: <b>{_e(v)}</b></li>" for k, v in counts.items()) + "</ul>")
    return "\n".join(parts)


def per_finding_svg(result: dict[str, Any], group: str = "chexpert") -> str:
    """Grouped horizontal bars of per-finding F1 (with 95% CI whiskers) for one or two systems, as inline SVG."""
    keys = [k for k in result.get("metrics", {}) if k.startswith(f"{group}_f1::")]
    if not keys:
        return ""
    series = [(result.get("name", "A"), result["metrics"], "#3b6fb6")]
    if result.get("compare"):
        series.append((result["compare"].get("name", "B"), result["compare"].get("other_metrics", {}), "#d9822b"))
    bar_h, gap, left, width = 9, 8, 150, 360
    row_h = bar_h * len(series) + gap
    top = 24
    h = top + row_h * len(keys) + 38
    out = [f'<svg class=plot xmlns="http://www.w3.org/2000/svg" width="{left + width + 60}" height="{h}" '
           f'role="img" aria-label="per-finding F1"><style>text{{font:11px sans-serif}}</style>']
    for x in (0, 0.25, 0.5, 0.75, 1.0):
        px = left + x * width
        out.append(f'<line x1="{px:.1f}" y1="{top - 4}" x2="{px:.1f}" y2="{h - 30}" stroke="#ddd"/>'
                   f'<text x="{px:.1f}" y="{h - 16}" text-anchor="middle">{x:g}</text>')
    for j, k in enumerate(keys):
        y0 = top + j * row_h
        out.append(f'<text x="{left - 6}" y="{y0 + bar_h * len(series) / 2 + 4:.1f}" text-anchor="end">'
                   f'{_e(k.split("::", 1)[1])}</text>')
        for s, (nm, mets, col) in enumerate(series):
            m = mets.get(k) or {}
            v = m.get("value")
            y = y0 + s * bar_h
            if v is None:
                continue
            ci = m.get("ci") or [v, v]
            out.append(f'<rect x="{left}" y="{y}" width="{max(0.0, v) * width:.1f}" height="{bar_h - 1}" '
                       f'fill="{col}"><title>{_e(nm)}: {_e(k.split("::", 1)[1])} F1 {v:.3f} '
                       f'[{ci[0]:.3f}, {ci[1]:.3f}]</title></rect>'
                       f'<line x1="{left + ci[0] * width:.1f}" x2="{left + ci[1] * width:.1f}" '
                       f'y1="{y + bar_h / 2 - 0.5:.1f}" y2="{y + bar_h / 2 - 0.5:.1f}" stroke="#222"/>')
    for s, (nm, _, col) in enumerate(series):
        x = left + s * 170
        out.append(f'<rect x="{x}" y="4" width="10" height="10" fill="{col}"/><text x="{x + 14}" y="13">{_e(nm)}</text>')
    out.append(f'<text x="{left + width / 2}" y="{h - 1}" text-anchor="middle">F1 per finding (95% bootstrap CI)</text>')
    out.append("</svg>")
    return "".join(out)



@dataclass
class StudyRow:
    sid: str
    split: str
    indication: str
    reference: str
    a: SystemView
    b: SystemView | None
    thumbs: list[tuple[str, str | None, str | None]]  # (caption, data uri, reason if none)
    image_note: str | None
    line: int = 0  # the row's line in the predictions file (1-based): its name when study ids are left out


def _data_attrs(prefix: str, v: SystemView | None) -> str:
    if v is None:
        return ""
    out = " ".join(f"{o}:{k}" for o, k in v.outcome.items())
    kinds = sorted({k for k in v.outcome.values() if k != "tp"} | {m.kind for m in v.marks if m.kind in ("prior", "meas")})
    return f' data-out-{prefix}="{_e(out)}" data-kinds-{prefix}="{_e(" ".join(kinds))}"'


def _chips(v: SystemView) -> str:
    chips = [f'<span class="chip {k}" title="{_e(KIND_LABELS[k])}">{k.upper()} {_e(o)}</span>'
             for o, k in v.outcome.items() if k != "tp"]
    if any(m.kind == "prior" for m in v.marks):
        chips.append(f'<span class="chip prior" title="{_e(KIND_LABELS["prior"])}">prior ref</span>')
    n_meas = sum(m.kind == "meas" for m in v.marks)
    if n_meas:
        chips.append(f'<span class="chip meas" title="{_e(KIND_LABELS["meas"])}">{n_meas} measurement</span>')
    return "".join(chips)


SHORT = {c.key: c.short for c in COLUMNS if c.short}
_INT_METRICS = {c.key for c in COLUMNS if c.integer}


def _metric_text(v: SystemView, keys: Sequence[str]) -> str:
    return " · ".join(f"{_e(SHORT.get(k, k))} {_f(v.metrics[k], 0 if k in _INT_METRICS else 3)}"
                      for k in keys if k in v.metrics and k != "length_ref_words")


def _rects(boxes: Any, cls: str) -> list[str]:
    out = []
    for b in boxes or []:
        try:
            x1, y1, x2, y2 = (float(b[c]) for c in ("x_min", "y_min", "x_max", "y_max"))
        except (KeyError, TypeError, ValueError):
            continue
        if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
            continue
        x1, x2 = sorted((x1, x2))
        y1, y2 = sorted((y1, y2))
        label = b.get("label") if isinstance(b, dict) else None
        tip = f"<title>{_e(label)}</title>" if label else ""
        out.append(f'<rect class="{cls}" x="{x1:.4f}" y="{y1:.4f}" width="{x2 - x1:.4f}" height="{y2 - y1:.4f}">'
                   f"{tip}</rect>")
    return out


def box_svg(a: SystemView, b: SystemView | None) -> str:
    """The reference (solid) and predicted (dashed) boxes eval decoded for this row, as an SVG laid over the
    thumbnail (boxes are fractions of the original image, which the thumbnail keeps the shape of); the
    compared system's predicted boxes are shown with its text (the row's A/B toggle)."""
    if a.boxes is None and (b is None or b.boxes is None):
        return ""
    rects = _rects((a.boxes or (b.boxes if b else None) or {}).get("ref_boxes"), "bx-ref")
    if a.boxes is not None:
        rects += _rects(a.boxes.get("pred_boxes"), "bx-pred" + (" sysA" if b is not None else ""))
    if b is not None and b.boxes is not None:
        rects += _rects(b.boxes.get("pred_boxes"), "bx-pred sysB")
    return ('<svg viewBox="0 0 1 1" preserveAspectRatio="none" aria-hidden=true>' + "".join(rects) + "</svg>"
            if rects else "")


def row_html(r: StudyRow, metric_keys: Sequence[str], names: tuple[str, str | None], text: bool,
             ids: bool = True) -> str:
    sid = r.sid if ids else f"row {r.line}"
    attrs = [f'data-id="{_e(sid)}"', f'data-split="{_e(r.split)}"']
    for k in metric_keys:
        for tag, v in (("", r.a), ("b-", r.b)):
            if v is not None and k in v.metrics:
                attrs.append(f'data-m-{tag}{k.replace("_", "-")}="{v.metrics[k]:.6g}"')
    if r.b is not None:
        for k in metric_keys:
            if k in r.a.metrics and k in r.b.metrics:
                attrs.append(f'data-m-delta-{k.replace("_", "-")}="{r.a.metrics[k] - r.b.metrics[k]:.6g}"')
    figs = []
    for k, (cap, uri, why) in enumerate(r.thumbs):
        if uri:
            img = f'<img class=thumb src="{uri}" alt="{_e(sid)} {_e(cap)}" loading=lazy>'
            svg = box_svg(r.a, r.b) if k == 0 else ""  # a box task's prompt holds the one image asked about
            if svg:
                img = f"<div class=bxwrap>{img}{svg}</div>"
            figs.append(f'<figure>{img}<figcaption>{_e(cap)}</figcaption></figure>')
        else:
            figs.append(f'<figure><div class=ph title="{_e(why)}">image {_e(why)}</div><figcaption>{_e(cap)}'
                        "</figcaption></figure>")
    if not figs and r.image_note:
        figs.append(f'<div class=ph>{_e(r.image_note)}</div>')

    def gen_cell(v: SystemView, cls: str, label: str) -> str:
        body = render_marked(v.text, v.marks) if text else '<span class=muted>(text left out)</span>'
        return (f'<div class="{cls}"><div class=sys-label>{_e(label)}</div><div class=chips>{_chips(v)}</div>'
                f'<div class=gen>{body}</div><div class=met>{_metric_text(v, metric_keys)}</div></div>')

    gen = gen_cell(r.a, "sysA", f"A: {names[0]}")
    ref_marks = list(r.a.ref_marks)
    refB = ""
    if r.b is not None:
        gen += gen_cell(r.b, "sysB", f"B: {names[1]}")
        toggle = (f'<button class=tog data-a="show B: {_e(names[1])}" data-b="show A: {_e(names[0])}">'
                  f'show B: {_e(names[1])}</button>')
        gen = toggle + gen
        refB = (f'<div class=sysB>{render_marked(r.reference, r.b.ref_marks) if text else ""}</div>')
    ref = (f'<div class=sysA>{render_marked(r.reference, ref_marks)}</div>{refB}' if text
           else '<span class=muted>(text left out)</span>')
    ind = _e(r.indication) if text else ""
    return (f'<tr class=study {" ".join(attrs)}{_data_attrs("a", r.a)}{_data_attrs("b", r.b)}>'
            f'<td><div class=sid>{_e(sid)}</div><div class=muted>{_e(r.split)}</div></td>'
            f'<td><div class=thumbs>{"".join(figs)}</div></td><td class=txt>{ind}</td>'
            f'<td class=txt>{ref}</td><td class=txt>{gen}</td></tr>')


def figure_uris(figures: Sequence[tuple[str, str]], holds: Holds | None = None) -> list[tuple[str, str]]:
    """Figures handed to the report (``--figure CAPTION=PNG``, e.g. a run's held-out learning curve) as
    ``(caption, data URI)``; a file that is not a PNG is an error naming it."""
    holds = holds or Holds()
    out = []
    for cap, path in figures:
        p = Path(path)
        data = p.read_bytes() if p.is_file() else b""
        if not data.startswith(b"\x89PNG"):
            raise DataPrepError("--figure: not a PNG file", file=str(p), field="figure", value=cap)
        out.append((f"{cap} ({holds.path(p)})", "data:image/png;base64," + base64.b64encode(data).decode()))
    return out




# ------------------------------------------------------------------------------------------------
# The page (templates/page.html.jinja)
# ------------------------------------------------------------------------------------------------
#: The error kinds of the filter menu.
ERROR_KINDS = [("fp", "false positive"), ("fn", "false negative"), ("prior", "prior exam without a prior"),
               ("meas", "measurement/device")]
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"


def _escape_value(v: Any) -> Any:
    """What every ``{{ value }}`` of the templates writes: a fragment built here as it is, anything else
    through :func:`html.escape` (quotes included; None as nothing), as the report always escaped."""
    from markupsafe import Markup

    return v if isinstance(v, Markup) else Markup(html.escape("" if v is None else str(v), quote=True))


@cache
def _environment():
    import jinja2

    return jinja2.Environment(loader=jinja2.PackageLoader("evaluation.report", "templates"),
                              autoescape=True, keep_trailing_newline=True, finalize=_escape_value,
                              undefined=jinja2.StrictUndefined)


def sort_options(metric_keys: Sequence[str], has_b: bool) -> list[tuple[str, str, str]]:
    """The sort menu: ``(value, label, direction)`` per per-study metric (worst first; lengths longest first),
    with a comparison also the compared system's value and the delta."""
    opts = []
    for k in metric_keys:
        label, hib = PER_STUDY_METRICS.get(k, (k, None))
        d = "asc" if hib else "desc"  # worst first; lengths: longest first
        opts.append((k.replace("_", "-"), f"A: {label}" if has_b else label, d))
        if has_b:
            opts.append(("b-" + k.replace("_", "-"), f"B: {label}", d))
            opts.append(("delta-" + k.replace("_", "-"), f"A − B: {label}", d))
    return opts


def page_html(*, title: str, result: dict[str, Any], counts: dict[str, Any], rows_html: list[str],
              metric_keys: Sequence[str], sort_key: str, sort_asc: bool, splits: Sequence[str],
              compare_names: tuple[str, str | None], holds: Holds, notes: Sequence[str],
              has_boxes: bool = False, figures: Sequence[tuple[str, str]] = ()) -> str:
    """The whole page (``templates/page.html.jinja``)."""
    from markupsafe import Markup

    return _environment().get_template("page.html.jinja").render(
        csp=Markup(CSP), title=title, privacy=holds.statement(), notes=list(notes), figures=list(figures),
        summary=Markup(summary_html(result, counts, holds)), svg=Markup(per_finding_svg(result)),
        svg_b=Markup(per_finding_svg(result, "chexbert")), has_boxes=has_boxes, box_colours=BOX_COLOURS,
        findings=CHEXPERT_LABELS, kinds=ERROR_KINDS, splits=list(splits), ids=holds.ids, text=holds.text,
        names=compare_names, sort_options=sort_options(metric_keys, compare_names[1] is not None),
        sort_selected=sort_key.replace("_", "-"), sort_asc=sort_asc, rows=[Markup(r) for r in rows_html],
        page_size=PAGE_SIZE, written=time.strftime('%Y-%m-%d %H:%M'), images=holds.images)
