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
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import math
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cxr_io import InputError, atomic_write, read_json, read_jsonl, write_text_atomic
from data_prep.errors import DataPrepError
from mllm_cxr.config import ConfigError
from reward.constants import CHEXPERT_LABELS
from reward.metric_table import METRICS, PerStudy

REPORT_NAME = "report.html"
NO_FINDING = "No Finding"
DEFAULT_SORT = "chexpert_f1"
DEFAULT_THUMB = 160
DEFAULT_MAX_STUDIES = 2000
PAGE_SIZE = 50

#: The per-study columns of the metric table (:data:`reward.metric_table.METRICS`): those of the default sort's
#: metric first (the page opens sorted by it), then in the table's order.
COLUMNS: tuple[PerStudy, ...] = tuple(c for spec in sorted(METRICS, key=lambda s: DEFAULT_SORT not in
                                                          {c.key for c in s.per_study}) for c in spec.per_study)
#: Per-study metrics: key -> (label, higher_is_better). Those of ``per_study.jsonl`` are added when present.
PER_STUDY_METRICS: dict[str, tuple[str, bool | None]] = {c.key: (c.label, c.higher_is_better) for c in COLUMNS}
#: Per-study values read from a group's ``details`` entry: group -> [(detail field, metric key)].
_FROM_DETAILS: dict[str, list[tuple[str, str]]] = {
    spec.group: [(c.detail, c.key) for c in spec.per_study if c.detail]
    for spec in METRICS if spec.group and any(c.detail for c in spec.per_study)}
#: Colours of the boxes drawn on the thumbnails (eval's ``details.boxes``): reference and predicted.
BOX_COLOURS = {"ref": "#2f9e44", "pred": "#e8590c"}
KIND_LABELS = {"fp": "false positive", "fn": "false negative", "neg": "negated here, present in the other report",
               "prior": "prior exam without a prior", "meas": "measurement/device disagreement"}


#: What identifies a patient or a site in the page; the shareable mode leaves each out unless ``--include``-d.
SHARE_ITEMS = {"text": "report and indication texts", "images": "chest X-ray images", "ids": "study ids",
               "paths": "local file paths"}
#: A file path in free text, absolute or relative (two or more parts): ``/data/x``, ``runs/pred/a.jsonl``, ``C:\\d``.
_PATH = re.compile(r"(?<![\w.:/\\<])(?:~|[A-Za-z]:)?[/\\]?(?:[\w.@+~-]+[/\\])+[\w.@+~-]*")


@dataclass(frozen=True)
class Holds:
    """Which identifying items the page holds; ``shareable`` when made with ``--no-text``."""

    text: bool = True
    images: bool = True
    ids: bool = True
    paths: bool = True
    shareable: bool = False

    @classmethod
    def of(cls, shareable: bool, include: Sequence[str] = ()) -> Holds:
        if not shareable:
            return cls()
        return cls(**{k: k in include for k in SHARE_ITEMS}, shareable=True)

    def held(self) -> list[str]:
        return [k for k in SHARE_ITEMS if getattr(self, k)]

    def statement(self) -> str:
        """The page's first note: what it holds, plainly."""
        if not self.shareable:
            return ("This file contains report text, chest X-ray images, study ids and local file paths of the "
                    "evaluated studies. Keep it where the data may be kept; do not share it outside.")
        out = [SHARE_ITEMS[k] for k in SHARE_ITEMS if not getattr(self, k)]
        inc = [SHARE_ITEMS[k] for k in self.held()]
        text = ("Shareable version (--no-text): it holds metrics with their confidence intervals, finding labels, "
                "per-study scores and splits" + (f", and {_and(inc)} (--include)" if inc else "") + ". It holds no "
                + (_and(out, "or") if out else "other identifying data") + ".")
        if not self.ids:
            text += " Rows are numbered by their line in the predictions file instead of a study id."
        if inc:
            text += f" Share it only where {_and(inc)} may be shared."
        return text

    def path(self, p: Any) -> str:
        """A file path as the page shows it: whole, or its name only."""
        return str(p) if self.paths or not p else Path(str(p)).name

    def scrub(self, text: Any) -> str:
        """Free text (a skipped metric's reason) with file paths replaced by ``<path>``, unless paths are held."""
        return str(text) if self.paths else _PATH.sub("<path>", str(text))


def _and(items: Sequence[str], conj: str = "and") -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + f" {conj} " + items[-1]


def parse_include(value: str | Sequence[str] | None) -> tuple[str, ...]:
    """``--include images,ids``: the items checked against :data:`SHARE_ITEMS`."""
    items = [x.strip() for x in (value.split(",") if isinstance(value, str) else value or []) if x.strip()]
    bad = [x for x in items if x not in SHARE_ITEMS]
    if bad:
        raise ConfigError(f"--include {bad[0]!r}: not an item of the shareable report; choose from "
                          f"{', '.join(SHARE_ITEMS)} (comma-separated)")
    return tuple(dict.fromkeys(items))


# ------------------------------------------------------------------------------------------------
# Highlights
# ------------------------------------------------------------------------------------------------
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


# ------------------------------------------------------------------------------------------------
# Images
# ------------------------------------------------------------------------------------------------
@dataclass
class Thumbs:
    """Thumbnail encoder with a per-path cache and counters of what could not be shown."""

    size: int = DEFAULT_THUMB
    quality: int = 70
    cache_dir: Path | None = None  # on-disk thumbnails, keyed by source path, size, mtime and thumbnail settings
    cache: dict[str, str | None] = field(default_factory=dict)
    missing: int = 0
    unreadable: int = 0
    encoded: int = 0
    disk_hits: int = 0
    bytes_out: int = 0

    def data_uri(self, path: Path) -> tuple[str | None, str | None]:
        """(``data:image/jpeg;base64,...``, None) or (None, reason)."""
        key = str(path)
        if key in self.cache:
            uri = self.cache[key]
            return (uri, None) if uri else (None, "unreadable")
        if not path.is_file():
            self.missing += 1
            return None, "missing"
        dest = self._cache_path(path)
        if dest is not None and dest.is_file():
            self.disk_hits += 1
            uri = self._data_uri(dest.read_bytes())
        else:
            try:
                data = self._jpeg(path)
            except Exception:  # any decoder error: a placeholder, counted (never fails the report)  # noqa: BLE001
                self.unreadable += 1
                self.cache[key] = None
                return None, "unreadable"
            if dest is not None:
                try:
                    with atomic_write(dest, "wb", flag="--thumb-cache") as fh:
                        fh.write(data)
                except (InputError, OSError) as e:
                    raise ConfigError(f"--thumb-cache {self.cache_dir}: cannot write a thumbnail ({e})") from None
            uri = self._data_uri(data)
        self.cache[key] = uri
        return uri, None

    def _cache_path(self, path: Path) -> Path | None:
        if self.cache_dir is None:
            return None
        import hashlib

        p = path.resolve()
        st = p.stat()
        key = hashlib.sha1(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\0{self.size}\0{self.quality}".encode()).hexdigest()
        return self.cache_dir / key[:2] / f"{key}.jpg"

    def _data_uri(self, data: bytes) -> str:
        self.bytes_out += len(data)
        return "data:image/jpeg;base64," + base64.b64encode(data).decode("ascii")

    def _jpeg(self, path: Path) -> bytes:
        from PIL import Image

        from data_prep.images import load_image

        if path.suffix.lower() in (".jpg", ".jpeg"):
            with Image.open(path) as im:
                im.draft("L", (self.size * 2, self.size * 2))  # JPEG: decode at a reduced scale
                img = im.convert("L")
        else:
            img = load_image(path).convert("L")  # DICOM (windowing, MONOCHROME1), 8/16-bit PNG
        img.thumbnail((self.size, self.size), Image.Resampling.BILINEAR, reducing_gap=2.0)
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=self.quality)
        self.encoded += 1
        return buf.getvalue()


# ------------------------------------------------------------------------------------------------
# Inputs: eval folder, predictions, study records
# ------------------------------------------------------------------------------------------------
@dataclass
class PredFile:
    path: Path
    rows: dict[str, dict[str, Any]]  # study_id -> row (non-empty reference only, like eval)
    order: list[str]


def _find_file(p: str | os.PathLike, eval_dir: Path | None, what: str, flag: str) -> Path:
    cand = [Path(p)]
    if eval_dir is not None and not Path(p).is_absolute():
        cand += [eval_dir / p, eval_dir / Path(p).name]
    for c in cand:
        if c.is_file():
            return c
    raise FileNotFoundError(f"{what} {p} (named in {eval_dir / 'metrics.json' if eval_dir else 'the arguments'}) "
                            f"not found: pass {flag} PATH")


def read_pred_file(path: Path) -> PredFile:
    from reward.evaluate import predictions_to_evaluate

    p = predictions_to_evaluate(path)  # validates rows: file, line, field named on error
    rows = {sid: rec for sid, rec in zip(p.ids, p.records)}
    return PredFile(Path(path), rows, list(p.ids))


def row_images(pf: PredFile, row: dict[str, Any]) -> list[Path]:
    """The image files a prediction row names (``images``, written by ``generate``: the prompt's images in
    prompt order); a relative path is taken from the predictions file's folder. [] when there is none."""
    paths = row.get("images")
    if not isinstance(paths, list):
        return []
    out = []
    for p in paths:
        if isinstance(p, str) and p.strip():
            q = Path(p)
            out.append(q if q.is_absolute() else pf.path.parent / q)
    return out


# ------------------------------------------------------------------------------------------------
# Per-study analysis
# ------------------------------------------------------------------------------------------------
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


# ------------------------------------------------------------------------------------------------
# HTML
# ------------------------------------------------------------------------------------------------
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


CSS = """
:root{--fp:#ffc9c9;--fn:#b8e0ff;--neg:#e5dbff;--prior:#ffe8a3;--meas:#c3f0c8}
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 16px 40px;color:#222}
h1{font-size:20px;margin:14px 0 4px}h2{font-size:16px;margin:22px 0 6px}
.note{background:#fff4e5;border:1px solid #f0b76b;padding:6px 10px;border-radius:4px;margin:8px 0}
.muted{color:#666;font-size:12px}code{font-size:12px}
table.sum{border-collapse:collapse;margin:6px 0}table.sum td,table.sum th{border:1px solid #ddd;padding:3px 8px}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}td.sig{font-weight:bold}
.counts{margin:6px 0;padding-left:20px}.top{display:flex;flex-wrap:wrap;gap:10px 40px;align-items:flex-start}.top>div:first-child{flex:1 1 560px;max-width:880px}
.legend mark{margin-right:8px}
mark.hl{padding:0 1px;border-radius:2px;cursor:help}
mark.hl-fp{background:var(--fp)}mark.hl-fn{background:var(--fn)}
mark.hl-neg{background:none;text-decoration:underline wavy #7048e8;text-decoration-thickness:1.5px}
mark.hl-prior{background:var(--prior)}mark.hl-meas{background:var(--meas);outline:1px dashed #2b8a3e}
mark.hl-fp.hl-prior,mark.hl-fn.hl-prior{background:linear-gradient(var(--prior),var(--prior)) bottom/100% 35% no-repeat,var(--fp)}
#controls{position:sticky;top:0;background:#fafafa;border-bottom:1px solid #ddd;padding:8px 0;z-index:5;
 display:flex;flex-wrap:wrap;gap:8px;align-items:center}
#controls label{font-size:12px;color:#444}
table#studies{border-collapse:collapse;width:100%;table-layout:fixed}
#studies th,#studies td{border-bottom:1px solid #e4e4e4;padding:6px;vertical-align:top;text-align:left}
#studies td.txt{white-space:pre-wrap;word-wrap:break-word;font-size:13px}
col.c-id{width:150px}col.c-img{width:360px}col.c-ind{width:12%}
.thumbs{display:flex;gap:4px;flex-wrap:wrap}.thumbs figure{margin:0;text-align:center;font-size:10px;color:#666}
.thumbs img{max-width:160px;max-height:160px;cursor:zoom-in;display:block;background:#000}
.ph{width:110px;height:110px;display:flex;align-items:center;justify-content:center;background:#eee;color:#999;
 font-size:11px;border:1px dashed #bbb}
.chip{display:inline-block;font-size:11px;border-radius:8px;padding:0 6px;margin:1px;background:#eee}
.chip.fp{background:var(--fp)}.chip.fn{background:var(--fn)}.chip.prior{background:var(--prior)}
.chip.meas{background:var(--meas)}
.sid{font-weight:600;word-break:break-all}.met{font-size:11px;color:#444}
button.tog{font-size:11px;margin-bottom:4px}
.sysB{display:none}tr.showB .sysA{display:none}tr.showB .sysB{display:block}
.sys-label{font-size:11px;color:#666}
#overlay{position:fixed;inset:0;background:rgba(0,0,0,.85);display:none;align-items:center;justify-content:center;
 z-index:10;cursor:zoom-out}#overlay img{height:90vh;max-width:95vw;object-fit:contain;image-rendering:auto}
#pager{margin:10px 0}
.bxwrap{position:relative;display:inline-block;line-height:0}
.bxwrap svg{position:absolute;left:0;top:0;width:100%;height:100%;pointer-events:none;overflow:visible}
.bxwrap rect{fill:none;stroke-width:2;vector-effect:non-scaling-stroke}
.bxwrap rect.bx-ref{stroke:#2f9e44}.bxwrap rect.bx-pred{stroke:#e8590c;stroke-dasharray:4 2}
body.hide-ref rect.bx-ref,body.hide-pred rect.bx-pred{display:none}
.sw{display:inline-block;width:14px;height:9px;border:2px solid;vertical-align:middle;margin:0 3px}
"""

JS = r"""
(function(){
'use strict';
var tbody=document.querySelector('#studies tbody');
var rows=Array.prototype.slice.call(tbody.querySelectorAll('tr.study'));
var q=function(id){return document.getElementById(id);};
var fFind=q('f-finding'),fKind=q('f-kind'),fSplit=q('f-split'),fText=q('f-text'),fSys=q('f-system'),
    sKey=q('s-key'),sDir=q('s-dir'),count=q('count'),pageInfo=q('page-info');
var page=0,pageSize=parseInt(q('page-size').value,10),matching=rows;
var texts=rows.map(function(r){return r.textContent.toLowerCase();});
rows.forEach(function(r,i){r._i=i;});
function sys(){return fSys?fSys.value:'a';}
function matches(r){
  var s=sys(),find=fFind.value,kind=fKind.value,split=fSplit.value,t=fText.value.trim().toLowerCase();
  if(split&&r.dataset.split!==split)return false;
  var out=(r.dataset['out'+s.toUpperCase()]||'').split(' ').filter(Boolean);
  var kinds=(r.dataset['kinds'+s.toUpperCase()]||'').split(' ').filter(Boolean);
  if(find){
    var hit=out.filter(function(x){return x.split(':')[0]===find;});
    if(!hit.length)return false;
    if(kind==='fp'||kind==='fn'){if(!hit.some(function(x){return x.split(':')[1]===kind;}))return false;}
  }
  if(kind&&!(find&&(kind==='fp'||kind==='fn'))&&kinds.indexOf(kind)<0)return false;
  if(t&&texts[r._i].indexOf(t)<0)return false;
  return true;
}
function val(r,k){var v=r.getAttribute('data-m-'+k);return v===null||v===''?NaN:parseFloat(v);}
function apply(){
  var k=sKey.value,asc=sDir.value==='asc';
  matching=rows.filter(matches);
  matching.sort(function(a,b){
    var x=val(a,k),y=val(b,k);
    if(isNaN(x)&&isNaN(y))return a._i-b._i;if(isNaN(x))return 1;if(isNaN(y))return -1;
    return x===y?a._i-b._i:(asc?x-y:y-x);});
  var frag=document.createDocumentFragment();
  matching.forEach(function(r){frag.appendChild(r);});
  var inm=new Set(matching);rows.forEach(function(r){if(!inm.has(r))frag.appendChild(r);});
  tbody.appendChild(frag);
  page=Math.min(page,Math.max(0,Math.ceil(matching.length/pageSize)-1));
  show();
}
function show(){
  var a=page*pageSize,b=a+pageSize,shown=0;
  var pos=new Map();matching.forEach(function(r,i){pos.set(r,i);});
  rows.forEach(function(r){var i=pos.has(r)?pos.get(r):-1;var vis=i>=a&&i<b;r.hidden=!vis;if(vis)shown++;});
  count.textContent=matching.length+' of '+rows.length+' studies match';
  var pages=Math.max(1,Math.ceil(matching.length/pageSize));
  pageInfo.textContent='page '+(page+1)+' / '+pages+' ('+shown+' shown)';
}
function setSystem(){
  var b=sys()==='b';rows.forEach(function(r){r.classList.toggle('showB',b);});
}
sKey.addEventListener('change',function(){var o=sKey.options[sKey.selectedIndex];
  if(o.dataset.dir)sDir.value=o.dataset.dir;});
[fFind,fKind,fSplit,sKey,sDir].forEach(function(el){el.addEventListener('change',function(){page=0;apply();});});
var timer;fText.addEventListener('input',function(){clearTimeout(timer);timer=setTimeout(function(){page=0;apply();},150);});
if(fSys)fSys.addEventListener('change',function(){setSystem();page=0;apply();});
q('page-size').addEventListener('change',function(e){pageSize=parseInt(e.target.value,10);page=0;show();});
q('prev').addEventListener('click',function(){if(page>0){page--;show();}});
q('next').addEventListener('click',function(){if((page+1)*pageSize<matching.length){page++;show();}});
tbody.addEventListener('click',function(e){
  var t=e.target;
  if(t.classList&&t.classList.contains('tog')){
    var tr=t.closest('tr');tr.classList.toggle('showB');
    t.textContent=tr.classList.contains('showB')?t.dataset.b:t.dataset.a;return;}
  if(t.tagName==='IMG'&&t.classList.contains('thumb')){
    var ov=q('overlay');ov.querySelector('img').src=t.src;ov.querySelector('img').alt=t.alt;ov.style.display='flex';}
});
q('overlay').addEventListener('click',function(){this.style.display='none';});
['pred','ref'].forEach(function(k){var c=q('bx-'+k);if(c)c.addEventListener('change',function(){
  document.body.classList.toggle('hide-'+k,!c.checked);});});
document.addEventListener('keydown',function(e){if(e.key==='Escape')q('overlay').style.display='none';});
apply();
window.__report={apply:apply,visible:function(){return rows.filter(function(r){return !r.hidden;}).length;}};
})();
"""


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


def figures_html(figures: Sequence[tuple[str, str]]) -> str:
    """Figures handed to the report (``--figure CAPTION=PNG``, e.g. a run's held-out learning curve), inlined."""
    if not figures:
        return ""
    items = "".join(f'<figure><img alt="{_e(cap)}" style="max-width:100%" src="{uri}"><figcaption>{_e(cap)}'
                    f'</figcaption></figure>' for cap, uri in figures)
    return f"<details open id=figures><summary>Figures ({len(figures)})</summary>{items}</details>"


def _figure_uris(figures: Sequence[tuple[str, str]], holds: Holds | None = None) -> list[tuple[str, str]]:
    holds = holds or Holds()
    out = []
    for cap, path in figures:
        p = Path(path)
        data = p.read_bytes() if p.is_file() else b""
        if not data.startswith(b"\x89PNG"):
            raise DataPrepError("--figure: not a PNG file", file=str(p), field="figure", value=cap)
        out.append((f"{cap} ({holds.path(p)})", "data:image/png;base64," + base64.b64encode(data).decode()))
    return out


def page_html(*, title: str, result: dict[str, Any], counts: dict[str, Any], rows_html: list[str],
              metric_keys: Sequence[str], sort_key: str, sort_asc: bool, splits: Sequence[str],
              compare_names: tuple[str, str | None], holds: Holds, notes: Sequence[str],
              has_boxes: bool = False, figures: Sequence[tuple[str, str]] = ()) -> str:
    has_b = compare_names[1] is not None
    text = holds.text
    opts = []
    for k in metric_keys:
        label, hib = PER_STUDY_METRICS.get(k, (k, None))
        d = "asc" if hib else "desc"  # worst first; lengths: longest first
        opts.append((k.replace("_", "-"), f"A: {label}" if has_b else label, d))
        if has_b:
            opts.append(("b-" + k.replace("_", "-"), f"B: {label}", d))
            opts.append(("delta-" + k.replace("_", "-"), f"A − B: {label}", d))
    sel = sort_key.replace("_", "-")
    sort_opts = "".join(f'<option value="{_e(v)}" data-dir={d}{" selected" if v == sel else ""}>{_e(lab)}</option>'
                        for v, lab, d in opts)
    kinds = [("fp", "false positive"), ("fn", "false negative"), ("prior", "prior exam without a prior"),
             ("meas", "measurement/device")]
    kind_opts = "".join(f'<option value="{k}">{_e(lab)}</option>' for k, lab in kinds)
    find_opts = "".join(f'<option value="{_e(o)}">{_e(o)}</option>' for o in CHEXPERT_LABELS)
    split_opts = "".join(f'<option value="{_e(s)}">{_e(s)}</option>' for s in splits)
    sys_sel = (f'<label>system <select id=f-system><option value=a>A: {_e(compare_names[0])}</option>'
               f'<option value=b>B: {_e(compare_names[1])}</option></select></label>' if has_b else "")
    privacy = holds.statement()
    legend = ('<p class=legend>Highlights: <mark class="hl hl-fp">false positive</mark> (present in the generated '
              'report, absent or negated in the reference) <mark class="hl hl-fn">false negative</mark> (present in '
              'the reference, absent or negated in the generated report) <mark class="hl hl-neg">negated here'
              '</mark> <mark class="hl hl-prior">prior exam without a prior</mark> <mark class="hl hl-meas">'
              'measurement/device</mark>. Hover a highlight for its label; click a thumbnail to enlarge it.</p>')
    box_ctl = ""
    if has_boxes:
        box_ctl = (f'<label><input type=checkbox id=bx-ref checked><span class=sw style="border-color:{BOX_COLOURS["ref"]}">'
                   f'</span>reference boxes</label> <label><input type=checkbox id=bx-pred checked><span class=sw '
                   f'style="border-color:{BOX_COLOURS["pred"]};border-style:dashed"></span>predicted boxes</label>')
        legend += ('<p class=legend>Boxes on the first image: <span class=sw style="border-color:'
                   f'{BOX_COLOURS["ref"]}"></span>reference, <span class=sw style="border-color:{BOX_COLOURS["pred"]};'
                   'border-style:dashed"></span>predicted (as eval decoded the answer); the checkboxes above the '
                   'table show or hide each.</p>')
    svg = per_finding_svg(result)
    svg_b = per_finding_svg(result, "chexbert")
    csp = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'")
    return f"""<!DOCTYPE html>
<html lang=en><head><meta charset=utf-8>
<meta http-equiv="Content-Security-Policy" content="{csp}">
<meta name=viewport content="width=device-width,initial-scale=1">
<link rel=icon href="data:,">
<title>{_e(title)}</title><style>{CSS}</style></head>
<body>
<h1>{_e(title)}</h1>
<div class=note id=privacy>{_e(privacy)}</div>
{"".join(f'<div class=note>{_e(n)}</div>' for n in notes)}
{figures_html(figures)}
<div class=top><div><h2>Summary</h2>
{summary_html(result, counts, holds)}</div>
<div>{f'<h2>Per-finding F1</h2>{svg}' if svg else ''}{svg_b}</div></div>
<h2>Studies</h2>
{legend}
<div id=controls>
<label>finding <select id=f-finding><option value="">any</option>{find_opts}</select></label>
<label>error <select id=f-kind><option value="">any</option>{kind_opts}</select></label>
<label>split <select id=f-split><option value="">any</option>{split_opts}</select></label>
<label>text <input id=f-text type=search placeholder="{'study id' if holds.ids else 'row'}{', report text' if text else ''}"></label>
{sys_sel}
{box_ctl}
<label>sort <select id=s-key>{sort_opts}</select></label>
<select id=s-dir><option value=asc{" selected" if sort_asc else ""}>ascending</option>
<option value=desc{"" if sort_asc else " selected"}>descending</option></select>
<span id=count class=muted></span>
</div>
<table id=studies><colgroup><col class=c-id><col class=c-img><col class=c-ind><col><col></colgroup>
<thead><tr><th>study</th><th>images</th><th>indication</th><th>reference</th><th>generated</th></tr></thead>
<tbody>
{chr(10).join(rows_html)}
</tbody></table>
<div id=pager><button id=prev>previous</button> <span id=page-info></span> <button id=next>next</button>
<label>rows per page <select id=page-size><option>25</option><option selected>{PAGE_SIZE}</option><option>100</option>
<option value=100000>all</option></select></label></div>
<div id=overlay><img alt=""></div>
<p class=muted>Written by <code>mllm-cxr report</code> ({_e(time.strftime('%Y-%m-%d %H:%M'))}). Self-contained: no
network access{'; images are inlined thumbnails' if holds.images else ''}.</p>
<script>{JS}</script>
</body></html>
"""


# ------------------------------------------------------------------------------------------------
# The report
# ------------------------------------------------------------------------------------------------
@dataclass
class ReportOptions:
    sort: str = DEFAULT_SORT
    thumb_size: int = DEFAULT_THUMB
    max_studies: int = DEFAULT_MAX_STUDIES
    max_thumbs: int = 2
    shareable: bool = False  # --no-text: leave out texts, images, study ids and paths ...
    include: tuple[str, ...] = ()  # ... except these (SHARE_ITEMS)
    title: str | None = None
    thumb_cache: str | None = None
    figures: list[tuple[str, str]] = field(default_factory=list)  # (caption, PNG path): embedded, e.g. learning curves


def read_per_study(eval_dir: Path, ids: Sequence[str], name: str = "per_study.jsonl") -> dict[str, dict[str, Any]]:
    """``study_id -> line`` of the per-study file ``eval`` wrote; every study in ``ids`` must have one, with
    the ``details`` the page is drawn from (an eval folder written before them: run eval again)."""
    p = eval_dir / name
    if not p.is_file():
        raise FileNotFoundError(f"{p} not found: run `mllm-cxr eval` again to write it")
    by_id = {str(d.get("study_id")): d for _, d in read_jsonl(p, role="per-study results", error=DataPrepError)}
    missing = [s for s in ids if s not in by_id]
    if missing:
        raise DataPrepError(f"{len(missing)} evaluated studies have no line (e.g. {missing[0]!r}); run `mllm-cxr "
                            "eval` again", file=str(p), field="study_id")
    if any(not isinstance(by_id[s].get("details"), dict) for s in ids):
        raise DataPrepError("lines without 'details' (an eval folder from an older version): run `mllm-cxr eval` "
                            "again", file=str(p), field="details")
    return by_id


def build_report(eval_dir: str | Path, out_path: str | Path | None = None, *, pred: str | Path | None = None,
                 compare: str | Path | None = None, options: ReportOptions | None = None,
                 progress: bool = False) -> dict[str, Any]:
    """Render ``OUT/report.html`` from an eval folder (``metrics.json``, ``per_study.jsonl``) and its predictions.

    Returns a summary: path, studies shown/total, images shown/missing/unreadable, bytes, seconds.
    """
    t0 = time.perf_counter()
    opt = check_options(options or ReportOptions())
    ed = Path(eval_dir)
    mj = ed / "metrics.json"
    if not mj.is_file():
        raise FileNotFoundError(f"{mj} not found: run `mllm-cxr eval --pred PRED --out {ed}` first")
    result = read_json(mj, role="eval result", error=DataPrepError)
    if not isinstance(result, dict) or "metrics" not in result:
        raise DataPrepError("not an `mllm-cxr eval` result (no 'metrics')", file=str(mj))
    pa = read_pred_file(_find_file(pred or result.get("pred", ""), ed, "predictions", "--pred"))
    c = result.get("compare")
    if compare and not c:
        raise ConfigError(f"--compare {compare}: {mj} has no paired comparison; run `mllm-cxr eval --compare` first")
    pb = read_pred_file(_find_file(compare or c["other"], ed, "compared predictions", "--compare")) if c else None
    names = (str(result.get("name") or pa.path.stem), (str(c.get("name") or pb.path.stem) if c else None))
    uncertain = (result.get("details", {}).get("chexpert") or {}).get("uncertain", "positive")

    # every number and highlight comes from what eval wrote (per_study*.jsonl), never recomputed
    ids = pa.order
    rows_a = [pa.rows[s] for s in ids]
    refs = [r["reference"] for r in rows_a]
    ctxs = [r.get("context") or {} for r in rows_a]
    per_a = read_per_study(ed, ids)
    va = [system_view(r["prediction"], per_a[s], uncertain) for s, r in zip(ids, rows_a)]
    vb: list[SystemView | None] = [None] * len(ids)
    if pb is not None:
        idx_b = [i for i, s in enumerate(ids) if s in pb.rows]
        per_b = read_per_study(ed, [ids[i] for i in idx_b], "per_study_compare.jsonl")
        for i in idx_b:
            vb[i] = system_view(pb.rows[ids[i]]["prediction"], per_b[ids[i]], uncertain)
    measured = "measurement" in result.get("details", {})

    # which studies are shown, in which order
    metric_keys = [k for k in PER_STUDY_METRICS if any(k in v.metrics for v in va)]
    sort_key = opt.sort
    if sort_key == DEFAULT_SORT and sort_key not in metric_keys and metric_keys:  # eval ran without chexpert
        sort_key = metric_keys[0]
    base_key = sort_key.removeprefix("b_").removeprefix("delta_")
    if base_key not in metric_keys:
        raise ConfigError(f"--sort {sort_key!r}: not a per-study metric of this evaluation; choose from "
                          f"{', '.join(metric_keys)}" + (" (prefix b_ or delta_ for the compared system)" if pb else ""))
    hib = PER_STUDY_METRICS[base_key][1]
    sort_asc = hib is not False  # worst first: ascending for higher-is-better metrics

    holds = Holds.of(opt.shareable, opt.include)

    def key_of(i: int) -> float:
        v = va[i] if not sort_key.startswith("b_") else vb[i]
        if v is None or base_key not in v.metrics:
            return math.inf
        if sort_key.startswith("delta_"):
            if vb[i] is None or base_key not in vb[i].metrics:
                return math.inf
            x = va[i].metrics[base_key] - vb[i].metrics[base_key]
        else:
            x = v.metrics[base_key]
        return x if sort_asc else -x

    order = sorted(range(len(ids)), key=lambda i: (key_of(i), -va[i].metrics.get("errors", 0.0), i))
    notes = []
    if len(order) > opt.max_studies:
        notes.append(f"{opt.max_studies:,} of {len(order):,} studies are shown: the worst by {sort_key} "
                     f"({'lowest' if sort_asc else 'highest'} first). The summary covers all studies; "
                     "use --max-studies to show more, or --sort for another selection.")
        order = order[:opt.max_studies]

    # images: the files each prediction row names (`generate` records the prompt's images in "images")
    thumbs = Thumbs(size=opt.thumb_size, cache_dir=Path(opt.thumb_cache) if opt.thumb_cache else None) \
        if opt.thumb_size > 0 and holds.images else None
    n_no_paths = n_missing_studies = 0
    rows_html, splits = [], set()
    from tqdm.auto import tqdm

    for i in tqdm(order, desc="report", unit="study", disable=not progress):
        sid, ctx = ids[i], ctxs[i]
        split = str(ctx.get("split") or "")
        if split:
            splits.add(split)
        tl: list[tuple[str, str | None, str | None]] = []
        note = None
        if thumbs is not None:
            paths = row_images(pa, rows_a[i])
            if not paths:
                n_no_paths += 1
                note = "no image paths in the prediction row"
            before = thumbs.missing + thumbs.unreadable
            for k, path in enumerate(paths[:opt.max_thumbs]):
                uri, why = thumbs.data_uri(path)
                tl.append((f"image {k + 1}", uri, why))
            if thumbs.missing + thumbs.unreadable > before:
                n_missing_studies += 1
        indication = str(ctx.get("indication") or "")
        rows_html.append(row_html(StudyRow(sid, split, indication, refs[i], va[i], vb[i], tl, note, line=i + 1),
                                  metric_keys, names, holds.text, holds.ids))
    if thumbs is not None and n_no_paths:
        notes.append(f"{n_no_paths:,} studies have no image paths in their prediction row (the 'images' field "
                     "`mllm-cxr generate` writes), so no images are shown for them.")
    counts: dict[str, Any] = {"studies in the table": f"{len(order):,} of {len(ids):,}"}
    if thumbs is not None:
        counts["images from"] = "the prediction rows ('images')"
        counts["studies with a missing or unreadable image"] = n_missing_studies
        counts["images missing / unreadable"] = f"{thumbs.missing} / {thumbs.unreadable}"
        if n_no_paths:
            counts["studies without image paths"] = n_no_paths
    if any("errors" in v.metrics for v in va):
        counts["studies with a label disagreement (A)"] = sum(v.metrics.get("errors", 0) > 0 for v in va)
    if any("prior_hallucination" in v.metrics for v in va):
        counts["prior references without a prior (A)"] = sum(v.metrics.get("prior_hallucination", 0) > 0 for v in va)
    if measured:
        counts["studies with a measurement/device hallucination (A)"] = sum(
            v.metrics.get("measurement_hallucinations", 0) > 0 for v in va)
    counts["measurement/device facts"] = ("flagged by eval (measurement_hallucination; tolerances in metrics.json)"
                                          if measured else "not evaluated (eval ran without the measurement metric)")
    title = opt.title or (f"Evaluation: {names[0]}" + (f" vs {names[1]}" if names[1] else ""))
    doc = page_html(title=title, result=result, counts=counts, rows_html=rows_html, metric_keys=metric_keys,
                    sort_key=sort_key, sort_asc=sort_asc, splits=sorted(splits), compare_names=names,
                    holds=holds, notes=notes, has_boxes=any(v.boxes is not None for v in va),
                    figures=_figure_uris(opt.figures, holds))
    out = Path(out_path) if out_path else ed / REPORT_NAME
    if out.suffix.lower() != ".html":
        if out.exists() and not out.is_dir():
            raise ConfigError(f"report output {out}: give a folder or a .html file name")
        out = out / REPORT_NAME
    if out.resolve() in {pa.path.resolve(), *( [pb.path.resolve()] if pb else []), mj.resolve()}:
        raise ConfigError(f"report output {out} would overwrite an input")
    write_text_atomic(out, doc)
    return {"path": str(out), "studies_shown": len(order), "studies": len(ids), "holds": holds.held(),
            "shareable": holds.shareable,
            "images": (thumbs.encoded + thumbs.disk_hits) if thumbs else 0,
            "images_from_cache": thumbs.disk_hits if thumbs else 0, "images_missing": thumbs.missing if thumbs else 0,
            "images_unreadable": thumbs.unreadable if thumbs else 0, "studies_with_missing_image": n_missing_studies,
            "bytes": out.stat().st_size, "seconds": round(time.perf_counter() - t0, 2),
            "measurement_hook": "measurement_hallucination" if measured else None}


# ------------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------------
def add_report_options(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """The options shared by ``report`` and ``eval --html``."""
    p.add_argument("--sort", default=DEFAULT_SORT, help="per-study metric for the worst-first order "
                   f"({', '.join(PER_STUDY_METRICS)}; b_/delta_ prefix for the compared system)")
    p.add_argument("--thumb-size", type=int, default=DEFAULT_THUMB, help="thumbnail long side in pixels (0: no images)")
    p.add_argument("--max-thumbs", type=int, default=2, help="images per row: the first of those the prediction row "
                                                             "names (the prompt's, frontal first)")
    p.add_argument("--max-studies", type=int, default=DEFAULT_MAX_STUDIES,
                   help="above this many studies, show the worst ones (with a note)")
    p.add_argument("--no-text", "--redact", "--shareable", dest="no_text", action="store_true",
                   help="a page to share: leave out report and indication texts, images, study ids (rows are "
                        "numbered) and local file paths; --include brings items back")
    p.add_argument("--include", default=None, metavar="ITEMS",
                   help=f"with --no-text: keep these, comma-separated ({', '.join(SHARE_ITEMS)})")
    p.add_argument("--title", default=None, help="page title")
    p.add_argument("--figure", action="append", default=[], metavar="CAPTION=PNG",
                   help="embed a PNG (e.g. a run's curves.png) with its caption; repeatable")
    p.add_argument("--thumb-cache", default=None, metavar="DIR",
                   help="keep thumbnails in DIR and reuse them in later reports (they are patient images: keep DIR "
                        "with the data)")


def check_options(opt: ReportOptions) -> ReportOptions:
    """Refuse bad option values before any work (``eval --html`` checks them before evaluating)."""
    if opt.thumb_size < 0 or opt.max_studies < 1 or opt.max_thumbs < 0:
        raise ConfigError(f"report: --thumb-size must be >= 0 (got {opt.thumb_size}), --max-studies >= 1 (got "
                          f"{opt.max_studies}), --max-thumbs >= 0 (got {opt.max_thumbs})")
    for cap, path in opt.figures:
        if not Path(path).is_file():
            raise DataPrepError("--figure: file not found", file=str(path), field="figure", value=cap)
    if opt.include and not opt.shareable:
        raise ConfigError(f"--include {','.join(opt.include)}: only with --no-text (the page without it holds "
                          "everything)")
    parse_include(opt.include)
    base = opt.sort.removeprefix("b_").removeprefix("delta_")
    if base not in PER_STUDY_METRICS:
        raise ConfigError(f"--sort {opt.sort!r}: not a per-study metric; choose from {', '.join(PER_STUDY_METRICS)} "
                          "(prefix b_ or delta_ for the compared system)")
    return opt


def options_from_args(args: argparse.Namespace) -> ReportOptions:
    return check_options(ReportOptions(sort=args.sort, thumb_size=args.thumb_size,
                         max_studies=args.max_studies, max_thumbs=args.max_thumbs, shareable=args.no_text,
                         include=parse_include(args.include),
                         title=args.title, thumb_cache=args.thumb_cache, figures=_parse_figures(args.figure)))


def _parse_figures(values: Sequence[str]) -> list[tuple[str, str]]:
    out = []
    for v in values or []:
        cap, sep, path = v.partition("=")
        if not sep or not cap.strip() or not path.strip():
            raise ConfigError(f"--figure {v!r}: give CAPTION=PATH.png")
        out.append((cap.strip(), path.strip()))
    return out


def report_summary_line(s: dict[str, Any]) -> str:
    img = (f", {s['images']} images ({s['studies_with_missing_image']} studies with a missing or unreadable image)"
           if s["images"] or s["studies_with_missing_image"] else "")
    share = ""
    if s.get("shareable"):
        share = "; shareable, holding " + (", ".join(s["holds"]) if s.get("holds") else "no texts, images, ids or paths")
    return (f"report: {s['studies_shown']} of {s['studies']} studies{img}, {s['bytes'] / 1e6:.1f} MB in "
            f"{s['seconds']:.1f} s{share} -> {s['path']}")


def run_report(args: argparse.Namespace) -> int:
    s = build_report(args.eval, args.out, pred=args.pred, compare=args.compare, options=options_from_args(args),
                     progress=not args.quiet)
    print(report_summary_line(s))
    return 0


def add_report_parser(sub) -> None:
    p = sub.add_parser("report", help="one self-contained HTML report from an eval folder",
                       description="Render OUT/report.html (default: in the eval folder) from `mllm-cxr eval` "
                                   "output: summary with CIs, per-study images, reference vs generated with "
                                   "label disagreements highlighted, filters. No network; works from file://.")
    p.add_argument("--eval", required=True, help="folder written by `mllm-cxr eval`")
    p.add_argument("--out", default=None, help="output folder or .html file (default: the eval folder)")
    p.add_argument("--pred", default=None, help="predictions JSONL (default: the one named in metrics.json)")
    p.add_argument("--compare", default=None, help="compared predictions (default: named in metrics.json)")
    add_report_options(p)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run_report)


def _html_after_eval(args: argparse.Namespace) -> str:
    s = build_report(args.out, pred=args.pred, compare=args.compare, options=options_from_args(args),
                     progress=not args.quiet)
    return report_summary_line(s)


def add_html_to_eval(sub) -> None:
    """``eval --html``: the report options on ``mllm-cxr eval`` (registered by :mod:`reward.cli_metrics`, which
    knows nothing of images and studies); the options are checked before the evaluation runs."""
    p = sub.choices["eval"]
    h = p.add_argument_group("HTML report (--html)")
    h.add_argument("--html", action="store_true", help="also write OUT/report.html (see `mllm-cxr report`)")
    add_report_options(h)
    p.set_defaults(check_html=options_from_args, write_html=_html_after_eval)
