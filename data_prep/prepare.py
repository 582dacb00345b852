"""One entry point for every dataset: convert, optionally resize/cache images, link priors, write.

>>> prepare("mimic-cxr", root="/data/mimic-cxr-jpg/2.1.0", out="data/mimic.jsonl",
...         image_cache="data/img-cache", skip_bad=True)        # doctest: +SKIP

Writes ``out`` (JSONL, or Parquet for ``.parquet``), ``<out stem>.summary.json`` (the summary,
including ``data_root``: the folder the records' image paths are relative to) and, when anything
was skipped, ``<out stem>.skipped.jsonl`` (one line per skipped study or image, with the reason).

With ``image_cache`` every image is decoded once (DICOM windowing, MONOCHROME1 inversion, 8-bit),
resized to the pixel budget and stored as PNG; the records then point at the cached PNGs (relative
to ``image_cache``, which becomes ``data_root``), ``meta.source_images`` keeps the original paths and
``meta.vision_tokens`` the per-image token counts, so the training cost is known up front.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import multiprocessing
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tqdm import tqdm

from cxr_io import check_output, write_jsonl, write_text_atomic
from data_prep._util import SkipLog, build_prepare_summary
from data_prep.errors import BadImageError, DataPrepError
from data_prep.images import (
    DEFAULT_MAX_PIXELS,
    DEFAULT_MIN_PIXELS,
    CachedImage,
    ImageCache,
    check_pixel_budget,
)
from data_prep.schema import (
    ImageRef,
    StudyRecord,
    manifest_data_root,
    manifest_path,
    read_records,
    write_records,
)
from data_prep.schema import link_priors as _link_priors

#: The converter table: CLI name -> (canonical dataset name, "module:converter"). A converter's module is
#: imported when the dataset is prepared; a row naming a missing module or function is a
#: :class:`cxr_io.registry.RegistryError` naming the row (tests/repo/test_import_graph.py imports every row).
#: Adding a converter: its function, and one row here (plus any alias in ``_ALIASES``).
DATASETS: dict[str, tuple[str, str]] = {
    "iu-xray": ("iu_xray", "data_prep.iu_xray:convert_iu_xray"),
    "mimic-cxr": ("mimic_cxr", "data_prep.mimic:convert_mimic"),
    "chexpert-plus": ("chexpert_plus", "data_prep.chexpert_plus:convert_chexpert_plus"),
    "rexgradient": ("rexgradient", "data_prep.rexgradient:convert_rexgradient"),
    "phantom": ("phantom", "data_prep.prepare:convert_phantom"),
    # box annotations (data_prep/grounding.py, docs/boxes.md)
    "nih-bbox": ("nih_cxr14_bbox", "data_prep.grounding:convert_nih_bbox"),
    "chestx-det": ("chestx_det", "data_prep.grounding:convert_chestx_det"),
    "radfact": ("radfact_examples", "data_prep.grounding:convert_radfact"),
    "vindr-cxr": ("vindr_cxr", "data_prep.grounding:convert_vindr"),
    "ms-cxr": ("ms_cxr", "data_prep.grounding:convert_ms_cxr"),
}
_ALIASES = {"iu_xray": "iu-xray", "iu": "iu-xray", "openi": "iu-xray", "mimic": "mimic-cxr", "mimic_cxr": "mimic-cxr",
            "mimic-cxr-jpg": "mimic-cxr", "chexpert_plus": "chexpert-plus", "chexpertplus": "chexpert-plus",
            "rexgradient-160k": "rexgradient", "rexgradient_160k": "rexgradient",
            "nih_bbox": "nih-bbox", "nih_cxr14_bbox": "nih-bbox", "chestx_det": "chestx-det",
            "radfact_examples": "radfact", "vindr": "vindr-cxr", "vindr_cxr": "vindr-cxr", "ms_cxr": "ms-cxr",
            "mscxr": "ms-cxr"}


def dataset_name(name: str) -> str:
    """Normalise a dataset name (``"mimic_cxr"``, ``"MIMIC"`` -> ``"mimic-cxr"``)."""
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in DATASETS:
        raise DataPrepError(f"unknown dataset (expected one of {sorted(DATASETS)})", field="dataset", value=name)
    return key


def _converter(name: str) -> Callable[..., tuple[list[StudyRecord], dict[str, Any]]]:
    from cxr_io.registry import import_entry

    return import_entry("data_prep.prepare.DATASETS", name, DATASETS[name][1])


def convert_phantom(root: str | os.PathLike, *, n: int = 48, seed: int = 0, out: str | os.PathLike | None = None,
                    skip_bad: bool = False, link_priors: bool = True, progress: bool = True,
                    skip_log: SkipLog | None = None, **phantom_options: Any) -> tuple[list[StudyRecord], dict[str, Any]]:
    """Generate the synthetic phantom dataset in ``root`` (via :func:`data_prep.phantom.make_phantom`)."""
    try:
        from data_prep.phantom import make_phantom
    except ImportError as e:
        raise DataPrepError(f"the phantom generator is not available ({e})", field="dataset", value="phantom") from None
    root = Path(root)
    info = make_phantom(root, n=n, seed=seed, **phantom_options) or {}
    records = read_records(root / "studies.jsonl")
    skips = skip_log if skip_log is not None else SkipLog()
    n_priors = _link_priors(records) if link_priors else 0
    summary = build_prepare_summary("phantom", records, skips, data_root=root, priors_linked=n_priors, n=n, seed=seed,
                                    phantom=info if isinstance(info, dict) else {})
    if out is not None:
        write_records(records, out)
    return records, summary


def _call_converter(name: str, source: Any, options: dict[str, Any], **common: Any):
    fn = _converter(name)
    params = inspect.signature(fn).parameters
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    unknown = [k for k in options if k not in params and not accepts_any]
    if unknown:
        allowed = sorted(k for k, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY
                         and k not in ("out", "skip_bad", "link_priors", "progress", "skip_log"))
        raise DataPrepError(f"unknown option(s) {unknown} for dataset {name} (allowed: {allowed})",
                            field=unknown[0])
    return fn(source, **options, **common)


def _reason(err: DataPrepError) -> str:
    """The short reason of an error message (without file, field, value and the detail in brackets)."""
    return getattr(err, "reason", None) or str(err).rsplit(": ", 1)[-1]


def cache_images(records: list[StudyRecord], data_root: Path, cache: ImageCache, *, skip_bad: bool,
                 skips: SkipLog, workers: int = 1, progress: bool = True) -> dict[str, Any]:
    """Resize every image of ``records`` into ``cache`` and point the records at the cached PNGs.

    Studies that had images but lost all of them to unreadable files are removed from ``records``.
    Returns image statistics (cached, reused, failed, vision tokens).
    """
    sources = sorted({im.path for r in records for im in r.images} |
                     {im.path for r in records if r.prior for im in r.prior.images})
    done: dict[str, CachedImage] = {}
    failed: dict[str, BadImageError] = {}

    paths = [data_root / rel for rel in sources]
    bar = tqdm(total=len(sources), desc="images", unit="img", disable=not progress)
    with _cache_pool(cache, workers) as pool:
        results = pool.map(_cache_one, paths, chunksize=8) if pool else map(_cache_one_in(cache), paths)
        for rel, res in zip(sources, results):
            bar.update(1)
            if isinstance(res, BadImageError):
                if not skip_bad:
                    bar.close()
                    raise res
                failed[rel] = res
                skips.add(f"bad image: {_reason(res)}", rel, kind="image")
            else:
                done[rel] = res
    bar.close()

    def remap(refs: list[ImageRef]) -> list[ImageRef]:
        # boxes are fractions of the image, so they hold for the resized copy too
        return [ImageRef(cache.relpath(done[im.path]), im.view, im.boxes) for im in refs if im.path in done]

    kept: list[StudyRecord] = []
    for r in records:
        had = bool(r.images)
        src = [im.path for im in r.images if im.path in done]
        if r.grounded_findings and len(src) < len(r.images):  # an image dropped: renumber the findings' images
            new_index = {i: src.index(im.path) for i, im in enumerate(r.images) if im.path in done}
            r.grounded_findings = [
                {**g, "image": new_index[g["image"]]} if g["image"] in new_index else
                {**g, "boxes": None, "image": 0} for g in r.grounded_findings]
        r.images = remap(r.images)
        if had and not r.images:
            skips.add("all images unreadable", r.study_id)
            continue
        r.meta["source_images"] = src
        r.meta["vision_tokens"] = [done[p].tokens for p in src]
        if r.prior is not None:
            r.prior.images = remap(r.prior.images)
        kept.append(r)
    records[:] = kept
    tokens = [c.tokens for c in done.values()]
    per_study = [sum(r.meta["vision_tokens"]) for r in kept]
    return {
        "cache_dir": str(cache.root), "budget": {"min_pixels": cache.min_pixels, "max_pixels": cache.max_pixels},
        "images_cached": sum(1 for c in done.values() if not c.hit),
        "images_reused": sum(1 for c in done.values() if c.hit),
        "images_failed": len(failed),
        "vision_tokens_per_image": {"mean": round(sum(tokens) / len(tokens), 1) if tokens else 0,
                                    "min": min(tokens, default=0), "max": max(tokens, default=0)},
        "vision_tokens_per_study": {"mean": round(sum(per_study) / len(per_study), 1) if per_study else 0,
                                    "max": max(per_study, default=0), "total": sum(per_study)},
    }


#: The image cache of a worker process (set by :func:`_init_cache_worker`).
_WORKER_CACHE: ImageCache | None = None


def _init_cache_worker(root: str, min_pixels: int, max_pixels: int) -> None:
    global _WORKER_CACHE
    _WORKER_CACHE = ImageCache(root, min_pixels=min_pixels, max_pixels=max_pixels)


def _cache_one_in(cache: ImageCache):
    def one(path: Path) -> CachedImage | BadImageError:
        try:
            return cache.get(path)
        except BadImageError as e:
            return e
    return one


def _cache_one(path: Path) -> CachedImage | BadImageError:
    """One image into the worker's cache; a bad image comes back as its error (to be counted or raised)."""
    return _cache_one_in(_WORKER_CACHE)(path)


@contextlib.contextmanager
def _cache_pool(cache: ImageCache, workers: int):
    """``workers`` > 1: a process pool (decoding and resizing hold the GIL, so threads barely help), each
    process with its own :class:`ImageCache` on the same folder (entries are written to a temporary name and
    renamed, so processes never see half-written files). Otherwise None (this process)."""
    if workers <= 1:
        yield None
        return
    # spawned, not forked: a fork copies whatever locks this process's other threads (torch, tqdm, a thread
    # pool) hold at that moment, and a worker that needs one waits forever (a hang met in the test suite)
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_init_cache_worker,
                               initargs=(str(cache.root), cache.min_pixels, cache.max_pixels))
    try:
        yield pool
    except BaseException:  # a bad image (without skip_bad) or Ctrl-C: drop the queued work, do not wait for it
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def verify_images(records: list[StudyRecord], data_root: Path, *, skip_bad: bool, skips: SkipLog,
                  workers: int = 1, progress: bool = True) -> dict[str, Any]:
    """Decode-check every image of ``records`` (when no image cache is asked for): a zero-byte, truncated
    or garbage file stops here (or, with ``skip_bad``, is dropped and counted), never mid-training."""
    from data_prep.images import check_image

    sources = sorted({im.path for r in records for im in r.images})
    bad: dict[str, BadImageError] = {}

    def work(rel: str) -> tuple[str, BadImageError | None]:
        if not (data_root / rel).exists():  # existence is the converter's check (and its --no-check-images)
            return rel, None
        try:
            check_image(data_root / rel)
            return rel, None
        except BadImageError as e:
            return rel, e

    with tqdm(total=len(sources), desc="check images", unit="img", disable=not progress) as bar:
        for rel, err in pool_map(work, sources, workers):
            bar.update(1)
            if err is not None:
                if not skip_bad:
                    raise err
                bad[rel] = err
                skips.add(f"bad image: {_reason(err)}", rel, kind="image")
    if bad:
        for r in records:
            r.images = [im for im in r.images if im.path not in bad]
            if r.prior is not None:
                r.prior.images = [im for im in r.prior.images if im.path not in bad]
    return {"images_checked": len(sources), "images_failed": len(bad)}


def pool_map(fn, items, workers: int):
    if workers > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            yield from pool.map(fn, items)
    else:
        yield from map(fn, items)


def drop_imageless(records: list[StudyRecord], skips: SkipLog) -> int:
    """With ``--skip-bad``: remove (and count) studies left with no image at all."""
    kept = [r for r in records if r.images]
    for r in records:
        if not r.images:
            skips.add("no images", r.study_id)
    n = len(records) - len(kept)
    records[:] = kept
    return n


def prepare(dataset: str, *, out: str | os.PathLike, source: str | os.PathLike | None = None,
            image_cache: str | os.PathLike | None = None, max_pixels: int = DEFAULT_MAX_PIXELS,
            min_pixels: int = DEFAULT_MIN_PIXELS, skip_bad: bool = False, workers: int = 1,
            progress: bool = True, **dataset_options: Any) -> dict[str, Any]:
    """Convert ``dataset`` (iu-xray, mimic-cxr, chexpert-plus, rexgradient, phantom; the box annotations
    nih-bbox, chestx-det, radfact, vindr-cxr, ms-cxr) and write ``out``.

    ``source`` is the dataset's file or folder (aliases: ``root=``); for ``phantom`` it is the folder
    to generate into (default: ``out``'s folder). ``dataset_options`` go to the converter
    (e.g. ``png_dir=`` for IU X-ray, ``reports_root=`` for MIMIC, ``n=``/``seed=`` for phantom,
    ``images_dir=``/``split=`` for the box datasets, ``sizes_csv=`` for VinDr-CXR).
    Returns the summary: studies, images, patients, per-split counts, skipped (by reason, with
    examples), priors linked, empty findings/impressions, image-cache and vision-token statistics,
    ``elapsed_s``, ``studies_per_s``, ``images_per_s``, ``data_root`` and the files written.
    """
    t0 = time.perf_counter()
    name = dataset_name(dataset)
    out = Path(out)
    check_pixel_budget(min_pixels, max_pixels, where="prepare")
    source, inputs = _source_and_inputs(name, out, source, dataset_options)
    cache = None
    if image_cache is not None:
        cache = ImageCache(image_cache, min_pixels=min_pixels, max_pixels=max_pixels)  # validates the budget early
    skips = SkipLog()
    records, conv = _call_converter(name, source, dataset_options, out=None, skip_bad=skip_bad, link_priors=False,
                                    progress=progress, skip_log=skips)
    data_root, image_stats = _prepare_images(name, records, conv.get("data_root"), cache,
                                             dataset_options.get("check_images", True), skip_bad=skip_bad,
                                             skips=skips, workers=workers, progress=progress)
    if skip_bad and not conv.get("text_only"):  # a text-only dataset (radfact) never had images
        drop_imageless(records, skips)
    _link_priors(records)
    write_records(records, out, inputs=inputs)
    elapsed = time.perf_counter() - t0
    summary = build_prepare_summary(DATASETS[name][0], records, skips, data_root=data_root,
                                    priors_linked=sum(1 for r in records if r.prior is not None))
    for k, v in conv.items():  # converter-specific facts (layout, sources, label counts...)
        if k not in summary and k != "out":
            summary[k] = v
    if "boxes" in conv:  # the box datasets: recounted, as images dropped above took their boxes with them
        summary["boxes"] = sum(len(im.boxes or []) for r in records for im in r.images)
        summary["grounded_phrases"] = sum(len(r.grounded_findings or []) for r in records)
    summary.update(image_stats)
    if data_root is not None:  # where the records' image paths start (read by resolve_data_root)
        summary.update(manifest_data_root(out, data_root))
    n_images = sum(len(r.images) for r in records)
    summary.update({
        "out": str(out), "elapsed_s": round(elapsed, 3),
        "studies_per_s": round(len(records) / elapsed, 1) if elapsed > 0 else None,
        "images_per_s": round(n_images / elapsed, 1) if elapsed > 0 else None,
    })
    _write_side_files(out, skips, summary)
    return summary


def _source_and_inputs(name: str, out: Path, source: str | os.PathLike | None,
                       dataset_options: dict[str, Any]) -> tuple[str | os.PathLike, list]:
    """The dataset's location (``root=`` an alias; ``out``'s folder for phantom) and the input files among the
    options; ``out`` checked before any work (not an input, creatable, .jsonl or .parquet)."""
    if source is None:
        source = dataset_options.pop("root", None)
    if source is None:
        if name != "phantom":
            raise DataPrepError(f"prepare {name} needs the dataset location (source=...)", field="source")
        source = out.parent
    inputs = [v for v in (source, *dataset_options.values())
              if isinstance(v, str | os.PathLike) and Path(v).is_file()]
    check_output(out, inputs)  # before any work: --out is not an input and can be created
    if out.suffix.lower() not in (".jsonl", ".parquet"):
        raise DataPrepError("--out names the records file to write and must end in .jsonl or .parquet "
                            f"(e.g. {out / 'studies.jsonl'})", field="out", value=str(out))
    return source, inputs


def _prepare_images(name: str, records: list[StudyRecord], data_root: str | None, cache: ImageCache | None,
                    check_images: bool, *, skip_bad: bool, skips: SkipLog, workers: int,
                    progress: bool) -> tuple[str | None, dict[str, Any]]:
    """Cache the records' images (``cache`` given) or verify them where they are; ``(data_root, image_stats)``,
    the data root being the cache's once the images are cached."""
    image_stats: dict[str, Any] = {}
    if cache is not None:
        if data_root is None:
            raise DataPrepError(f"cannot cache the images of {name}: no image folder was given "
                                "(e.g. png_dir= for iu-xray, image_root= for chexpert-plus, images_dir= for the box "
                                "datasets; radfact has no images)", field="image_cache")
        image_stats = cache_images(records, Path(data_root), cache, skip_bad=skip_bad, skips=skips,
                                   workers=workers, progress=progress)
        image_stats["source_root"] = str(data_root)  # what meta.source_images are relative to
        data_root = str(cache.root)
    elif data_root is not None and check_images:
        image_stats = verify_images(records, Path(data_root), skip_bad=skip_bad, skips=skips, workers=workers,
                                    progress=progress)
    return data_root, image_stats


def _write_side_files(out: Path, skips: SkipLog, summary: dict[str, Any]) -> None:
    """The skipped items beside ``out`` (when any) and the summary (manifest), both named in the summary."""
    stem = out.with_suffix("")
    if len(skips):
        skipped_file = stem.with_name(stem.name + ".skipped.jsonl")
        write_jsonl(skipped_file, skips.items)
        summary["skipped_file"] = str(skipped_file)
    summary_file = manifest_path(out)
    summary["summary_file"] = str(summary_file)
    write_text_atomic(summary_file, json.dumps(summary, indent=2, ensure_ascii=False) + "\n")


def prepare_summary_line(s: dict[str, Any]) -> str:
    """One human line for the end of a run."""
    sp = s.get("splits", {})
    parts = [f"prepared {s['dataset']}: {s['studies']} studies "
             f"(train {sp.get('train', 0)} / validate {sp.get('validate', 0)} / test {sp.get('test', 0)}), "
             f"{s['images']} images, {s['priors_linked']} with a prior, {s['empty_findings']} empty findings, "
             f"{s['skipped']['total']} skipped"]
    if "boxes" in s:  # the box datasets
        parts.append(f", {s['boxes']} boxes, {s['grounded_phrases']} grounded phrases")
    if "vision_tokens_per_study" in s:
        parts.append(f", {s['vision_tokens_per_study']['mean']} vision tokens/study")
    parts.append(f" -> {s['out']} in {s['elapsed_s']:.1f} s ({s['studies_per_s']} studies/s)")
    return "".join(parts)
