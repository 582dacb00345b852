"""The report of an eval folder: :func:`build_report` reads ``metrics.json``, ``per_study*.jsonl`` and the
predictions files, picks and orders the studies, encodes their images and writes ``report.html``."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cxr_io import read_json, read_jsonl, write_text_atomic
from data_prep.errors import DataPrepError
from evaluation.predictions import predictions_to_evaluate
from evaluation.report.highlights import SystemView, system_view
from evaluation.report.options import (
    DEFAULT_SORT,
    PER_STUDY_METRICS,
    REPORT_NAME,
    Holds,
    ReportOptionError,
    ReportOptions,
    check_options,
)
from evaluation.report.page import StudyRow, figure_uris, page_html, row_html
from evaluation.report.thumbs import Thumbs


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


@dataclass
class EvalInputs:
    """An eval folder as the report reads it: the result, both predictions files, each system's views."""

    eval_dir: Path
    metrics_json: Path
    result: dict[str, Any]
    pa: PredFile
    pb: PredFile | None
    names: tuple[str, str | None]
    va: list[SystemView]
    vb: list[SystemView | None]


def read_eval(eval_dir: str | Path, pred: str | Path | None, compare: str | Path | None) -> EvalInputs:
    """``metrics.json``, the predictions it names (or ``pred``/``compare``) and each study's view as
    ``per_study*.jsonl`` has it: every number and highlight is what eval wrote, never recomputed."""
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
        raise ReportOptionError(f"--compare {compare}: {mj} has no paired comparison; run `mllm-cxr eval --compare` "
                                "first")
    pb = read_pred_file(_find_file(compare or c["other"], ed, "compared predictions", "--compare")) if c else None
    names = (str(result.get("name") or pa.path.stem), (str(c.get("name") or pb.path.stem) if c else None))
    uncertain = (result.get("details", {}).get("chexpert") or {}).get("uncertain", "positive")
    ids = pa.order
    per_a = read_per_study(ed, ids)
    va = [system_view(pa.rows[s]["prediction"], per_a[s], uncertain) for s in ids]
    vb: list[SystemView | None] = [None] * len(ids)
    if pb is not None:
        idx_b = [i for i, s in enumerate(ids) if s in pb.rows]
        per_b = read_per_study(ed, [ids[i] for i in idx_b], "per_study_compare.jsonl")
        for i in idx_b:
            vb[i] = system_view(pb.rows[ids[i]]["prediction"], per_b[ids[i]], uncertain)
    return EvalInputs(ed, mj, result, pa, pb, names, va, vb)


def study_order(ev: EvalInputs, sort: str) -> tuple[list[int], list[str], str, bool]:
    """The studies worst first by ``sort``: (order, the per-study metric keys, the sort key, ascending)."""
    va, vb = ev.va, ev.vb
    metric_keys = [k for k in PER_STUDY_METRICS if any(k in v.metrics for v in va)]
    sort_key = sort
    if sort_key == DEFAULT_SORT and sort_key not in metric_keys and metric_keys:  # eval ran without chexpert
        sort_key = metric_keys[0]
    base_key = sort_key.removeprefix("b_").removeprefix("delta_")
    if base_key not in metric_keys:
        raise ReportOptionError(f"--sort {sort_key!r}: not a per-study metric of this evaluation; choose from "
                                f"{', '.join(metric_keys)}"
                                + (" (prefix b_ or delta_ for the compared system)" if ev.pb else ""))
    hib = PER_STUDY_METRICS[base_key][1]
    sort_asc = hib is not False  # worst first: ascending for higher-is-better metrics

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

    order = sorted(range(len(va)), key=lambda i: (key_of(i), -va[i].metrics.get("errors", 0.0), i))
    return order, metric_keys, sort_key, sort_asc


@dataclass
class ImageCounts:
    """Studies whose prediction row names no image, and studies with a missing or unreadable image."""

    no_paths: int = 0
    missing_studies: int = 0


def _thumbs_of(thumbs: Thumbs | None, pa: PredFile, row: dict[str, Any], max_thumbs: int, seen: ImageCounts
               ) -> tuple[list[tuple[str, str | None, str | None]], str | None]:
    """A row's thumbnails ``(caption, data URI, reason if none)`` and its note, counted in ``seen``."""
    tl: list[tuple[str, str | None, str | None]] = []
    note = None
    if thumbs is not None:
        paths = row_images(pa, row)
        if not paths:
            seen.no_paths += 1
            note = "no image paths in the prediction row"
        before = thumbs.missing + thumbs.unreadable
        for k, path in enumerate(paths[:max_thumbs]):
            uri, why = thumbs.data_uri(path)
            tl.append((f"image {k + 1}", uri, why))
        if thumbs.missing + thumbs.unreadable > before:
            seen.missing_studies += 1
    return tl, note


def summary_counts(ev: EvalInputs, order: list[int], thumbs: Thumbs | None, seen: ImageCounts) -> dict[str, Any]:
    """The counts listed under the summary."""
    va, measured = ev.va, "measurement" in ev.result.get("details", {})
    counts: dict[str, Any] = {"studies in the table": f"{len(order):,} of {len(va):,}"}
    if thumbs is not None:
        counts["images from"] = "the prediction rows ('images')"
        counts["studies with a missing or unreadable image"] = seen.missing_studies
        counts["images missing / unreadable"] = f"{thumbs.missing} / {thumbs.unreadable}"
        if seen.no_paths:
            counts["studies without image paths"] = seen.no_paths
    if any("errors" in v.metrics for v in va):
        counts["studies with a label disagreement (A)"] = sum(v.metrics.get("errors", 0) > 0 for v in va)
    if any("prior_hallucination" in v.metrics for v in va):
        counts["prior references without a prior (A)"] = sum(v.metrics.get("prior_hallucination", 0) > 0 for v in va)
    if measured:
        counts["studies with a measurement/device hallucination (A)"] = sum(
            v.metrics.get("measurement_hallucinations", 0) > 0 for v in va)
    counts["measurement/device facts"] = ("flagged by eval (measurement_hallucination; tolerances in metrics.json)"
                                          if measured else "not evaluated (eval ran without the measurement metric)")
    return counts


def _output_path(ev: EvalInputs, out_path: str | Path | None) -> Path:
    out = Path(out_path) if out_path else ev.eval_dir / REPORT_NAME
    if out.suffix.lower() != ".html":
        if out.exists() and not out.is_dir():
            raise ReportOptionError(f"report output {out}: give a folder or a .html file name")
        out = out / REPORT_NAME
    inputs = {ev.pa.path.resolve(), *([ev.pb.path.resolve()] if ev.pb else []), ev.metrics_json.resolve()}
    if out.resolve() in inputs:
        raise ReportOptionError(f"report output {out} would overwrite an input")
    return out


def build_report(eval_dir: str | Path, out_path: str | Path | None = None, *, pred: str | Path | None = None,
                 compare: str | Path | None = None, options: ReportOptions | None = None,
                 progress: bool = False) -> dict[str, Any]:
    """Render ``OUT/report.html`` from an eval folder (``metrics.json``, ``per_study.jsonl``) and its predictions.

    Returns a summary: path, studies shown/total, images shown/missing/unreadable, bytes, seconds.
    """
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    opt = check_options(options or ReportOptions())
    ev = read_eval(eval_dir, pred, compare)
    order, metric_keys, sort_key, sort_asc = study_order(ev, opt.sort)
    holds = Holds.of(opt.shareable, opt.include)
    notes = []
    if len(order) > opt.max_studies:
        notes.append(f"{opt.max_studies:,} of {len(order):,} studies are shown: the worst by {sort_key} "
                     f"({'lowest' if sort_asc else 'highest'} first). The summary covers all studies; "
                     "use --max-studies to show more, or --sort for another selection.")
        order = order[:opt.max_studies]
    # images: the files each prediction row names (`generate` records the prompt's images in "images")
    thumbs = Thumbs(size=opt.thumb_size, cache_dir=Path(opt.thumb_cache) if opt.thumb_cache else None) \
        if opt.thumb_size > 0 and holds.images else None
    seen = ImageCounts()
    rows_html, splits = [], set()
    for i in tqdm(order, desc="report", unit="study", disable=not progress):
        sid, row = ev.pa.order[i], ev.pa.rows[ev.pa.order[i]]
        ctx = row.get("context") or {}
        split = str(ctx.get("split") or "")
        if split:
            splits.add(split)
        tl, note = _thumbs_of(thumbs, ev.pa, row, opt.max_thumbs, seen)
        study = StudyRow(sid, split, str(ctx.get("indication") or ""), row["reference"], ev.va[i], ev.vb[i], tl, note,
                         line=i + 1)
        rows_html.append(row_html(study, metric_keys, ev.names, holds.text, holds.ids))
    if thumbs is not None and seen.no_paths:
        notes.append(f"{seen.no_paths:,} studies have no image paths in their prediction row (the 'images' field "
                     "`mllm-cxr generate` writes), so no images are shown for them.")
    title = opt.title or (f"Evaluation: {ev.names[0]}" + (f" vs {ev.names[1]}" if ev.names[1] else ""))
    doc = page_html(title=title, result=ev.result, counts=summary_counts(ev, order, thumbs, seen),
                    rows_html=rows_html, metric_keys=metric_keys, sort_key=sort_key, sort_asc=sort_asc,
                    splits=sorted(splits), compare_names=ev.names, holds=holds, notes=notes,
                    has_boxes=any(v.boxes is not None for v in ev.va), figures=figure_uris(opt.figures, holds))
    out = _output_path(ev, out_path)
    write_text_atomic(out, doc)
    return {"path": str(out), "studies_shown": len(order), "studies": len(ev.va), "holds": holds.held(),
            "shareable": holds.shareable,
            "images": (thumbs.encoded + thumbs.disk_hits) if thumbs else 0,
            "images_from_cache": thumbs.disk_hits if thumbs else 0, "images_missing": thumbs.missing if thumbs else 0,
            "images_unreadable": thumbs.unreadable if thumbs else 0,
            "studies_with_missing_image": seen.missing_studies, "bytes": out.stat().st_size,
            "seconds": round(time.perf_counter() - t0, 2),
            "measurement_hook": "measurement_hallucination" if "measurement" in ev.result.get("details", {}) else None}


def report_summary_line(s: dict[str, Any]) -> str:
    img = (f", {s['images']} images ({s['studies_with_missing_image']} studies with a missing or unreadable image)"
           if s["images"] or s["studies_with_missing_image"] else "")
    share = ""
    if s.get("shareable"):
        share = "; shareable, holding " + (", ".join(s["holds"]) if s.get("holds") else "no texts, images, ids or paths")
    return (f"report: {s['studies_shown']} of {s['studies']} studies{img}, {s['bytes'] / 1e6:.1f} MB in "
            f"{s['seconds']:.1f} s{share} -> {s['path']}")


