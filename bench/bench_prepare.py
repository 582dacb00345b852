"""Data preparation throughput: report conversion, image decode/window/resize/cache, cold vs cached.

Measures, in one run and on this machine:

1. the real radiographs in ``../shared/data/images`` (DICOM CR 1955x1841 MONOCHROME1 with
   windowing, 1024x1024 JPEG-compressed DICOM, 512x512 PNG): raw decode only (baseline), our full
   load (decode + modality/VOI LUT + 8-bit + inversion), load + resize, a cold cache fill and a
   cached lookup -- per file in milliseconds, with the ratios full/raw and cold/cached;
2. the phantom data set (``data_prep.phantom``, when present): generation, then ``cache_images`` on
   its records cold (1 and 2 threads) and cached, as studies/s and images/s;
3. the IU X-ray report archive (``../shared/data/iu_xray/NLMCXR_reports.tgz``): XML -> records,
   studies/s; and a generated MIMIC-CXR-JPG tree (2,000 studies): metadata + reports + section
   parsing + image existence checks + priors, studies/s.

    python bench/run_all.py --only prepare
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MLLM_CXR_SHARED", ROOT.parent / "shared")) / "data"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench._prose import speed_sentence  # noqa: E402
from data_prep.images import DEFAULT_MAX_PIXELS, DEFAULT_MIN_PIXELS, ImageCache, load_image, load_resized  # noqa: E402

IMAGES = ["RG1_UNCI.dcm", "siim_pneumothorax_cr.dcm", "siim_pneumothorax_cr_monochrome1.dcm",
          "00000001_000.png", "00027426_000.png"]


def _best(fn, reps: int) -> float:
    """Fastest of ``reps`` calls in seconds, after one warm-up call (least disturbed by other load)."""
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def _raw_decode(path: Path):
    if path.suffix == ".dcm":
        import pydicom

        return lambda: pydicom.dcmread(path).pixel_array
    from PIL import Image

    def f():
        with Image.open(path) as im:
            im.load()
    return f


def bench_real_images(tmp: Path, reps: int = 7) -> list[str]:
    rows = ["| file | size | raw decode ms (baseline) | full load ms | load+resize ms | cold cache ms "
            "| cached ms | full / raw | cold / cached | tokens |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    total_cold = total_hot = 0.0
    per_file: list[float] = []  # cold / cached, per file
    for name in IMAGES:
        p = SHARED / "images" / name
        if not p.exists():
            rows.append(f"| {name} | missing | | | | | | | | |")
            continue
        img = load_image(p)
        raw = _best(_raw_decode(p), reps)
        full = _best(lambda p=p: load_image(p), reps)
        resized = _best(lambda p=p: load_resized(p), reps)
        colds = []
        for i in range(reps):
            d = tmp / f"cold-{name}-{i}"
            c = ImageCache(d)
            t0 = time.perf_counter()
            c.get(p)
            colds.append(time.perf_counter() - t0)
            shutil.rmtree(d)
        cold = min(colds)
        cache = ImageCache(tmp / "hot")
        got = cache.get(p)
        hot = _best(lambda p=p, cache=cache: cache.get(p), reps * 10)
        total_cold += cold
        total_hot += hot
        per_file.append(cold / max(hot, 1e-12))
        rows.append(f"| {name} | {img.width}x{img.height} | {raw * 1e3:.1f} | {full * 1e3:.1f} | {resized * 1e3:.1f} "
                    f"| {cold * 1e3:.1f} | {hot * 1e3:.2f} | {full / raw:.2f} | {cold / hot:.0f} | {got.tokens} |")
    rows.append(f"\nAll {len(per_file)} files: cold {total_cold * 1e3:.0f} ms vs cached {total_hot * 1e3:.1f} ms. "
                + speed_sentence("A cached lookup", "a cold fill", per_file, over="files"))
    return rows


def bench_phantom(tmp: Path, n: int = 200) -> list[str]:
    try:
        from data_prep.phantom import make_phantom
    except ImportError:
        return ["(data_prep.phantom not available: phantom benchmark skipped)"]
    from data_prep._util import SkipLog
    from data_prep.prepare import cache_images
    from data_prep.schema import read_records

    root = tmp / "phantom"
    t0 = time.perf_counter()
    make_phantom(root, n=n, seed=0)
    gen = time.perf_counter() - t0
    recs = read_records(root / "studies.jsonl")
    n_unique = len({im.path for r in recs for im in r.images} | {im.path for r in recs if r.prior for im in r.prior.images})
    results = {}
    for label, workers, cache_dir in (("cold, 1 thread", 1, "c1"), ("cold, 2 threads", 2, "c2"),
                                      ("cached, 1 thread", 1, "c1")):
        rs = read_records(root / "studies.jsonl")
        cache = ImageCache(tmp / cache_dir)
        t0 = time.perf_counter()
        cache_images(rs, root, cache, skip_bad=False, skips=SkipLog(), workers=workers, progress=False)
        results[label] = time.perf_counter() - t0
    base = results["cold, 1 thread"]
    rows = [f"{n} phantom studies ({n_unique} distinct images, 224x224 PNG; budget "
            f"{DEFAULT_MIN_PIXELS}-{DEFAULT_MAX_PIXELS} px).", "",
            "| step | seconds | studies/s | images/s | vs cold 1 thread |", "|---|---|---|---|---|",
            f"| generate (make_phantom) | {gen:.2f} | {n / gen:.0f} | {n_unique / gen:.0f} | |"]
    for label, t in results.items():
        rows.append(f"| cache_images {label} | {t:.2f} | {n / t:.0f} | {n_unique / t:.0f} | {base / t:.2f}x |")
    return rows


def bench_iu_reports() -> list[str]:
    archive = SHARED / "iu_xray" / "NLMCXR_reports.tgz"
    if not archive.exists():
        return ["(IU X-ray archive missing: report benchmark skipped)"]
    from data_prep.iu_xray import convert_iu_xray

    t0 = time.perf_counter()
    recs, summary = convert_iu_xray(archive, progress=False)
    t = time.perf_counter() - t0
    return ["| input | studies | seconds | studies/s |", "|---|---|---|---|",
            f"| NLMCXR_reports.tgz (3,955 XML reports) | {len(recs)} | {t:.2f} | {len(recs) / t:.0f} |"]


def _fake_mimic(root: Path, n_patients: int, studies_per_patient: int) -> int:
    """A MIMIC-CXR-JPG tree with generated reports and 2 tiny JPGs per study; returns the study count."""
    import csv
    import gzip

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    jpg = root / "tiny.jpg"
    root.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (32, 40), dtype=np.uint8)).save(jpg)
    rows = []
    for p in range(n_patients):
        subject = f"1{p:07d}"
        for k in range(studies_per_patient):
            study = f"5{p:04d}{k:03d}"
            folder = root / f"files/p{subject[:2]}/p{subject}/s{study}"
            folder.mkdir(parents=True, exist_ok=True)
            for view, d in (("PA", "a"), ("LATERAL", "b")):
                os.link(jpg, folder / f"{study}{d}.jpg")
                rows.append([f"{study}{d}", subject, study, view, f"2180{1 + k % 12:02d}{1 + k:02d}", f"{100000 + p}.5"])
            (folder.parent / f"s{study}.txt").write_text(
                "                FINAL REPORT\n EXAMINATION: CHEST (PA AND LAT)\n\n INDICATION: ___ with cough\n\n"
                " COMPARISON: None.\n\n FINDINGS:\n\n The lungs are clear. There is no pleural effusion or\n"
                " pneumothorax. The cardiomediastinal silhouette is normal.\n\n IMPRESSION:\n\n"
                " No acute cardiopulmonary process.\n")
    with gzip.open(root / "mimic-cxr-2.0.0-metadata.csv.gz", "wt", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["dicom_id", "subject_id", "study_id", "ViewPosition", "StudyDate", "StudyTime"])
        w.writerows(rows)
    return n_patients * studies_per_patient


def bench_mimic_layout(tmp: Path) -> list[str]:
    from data_prep.mimic import convert_mimic

    n = _fake_mimic(tmp / "mimic", 500, 4)
    t0 = time.perf_counter()
    recs, summary = convert_mimic(tmp / "mimic", progress=False)
    t = time.perf_counter() - t0
    return [f"Generated MIMIC-CXR-JPG layout: {n} studies, {summary['images']} images (existence checked), "
            "one report file per study.", "",
            "| input | studies | seconds | studies/s | priors linked |", "|---|---|---|---|---|",
            f"| MIMIC-CXR-JPG tree | {len(recs)} | {t:.2f} | {len(recs) / t:.0f} | {summary['priors_linked']} |"]


def run() -> str:
    tmp = Path(tempfile.mkdtemp(prefix="bench-prepare-"))
    try:
        real = bench_real_images(tmp)
        phantom = bench_phantom(tmp)
        iu = bench_iu_reports()
        mimic = bench_mimic_layout(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    cpu = os.cpu_count()
    return "\n".join([
        "## Data preparation (data_prep)",
        "",
        f"CPU only ({cpu} cores), single process. Pixel budget {DEFAULT_MIN_PIXELS}-{DEFAULT_MAX_PIXELS} pixels "
        "(4-512 vision tokens), bicubic resize, PNG cache (zlib level 1). Per-file times are the fastest "
        "of 7 runs (cached lookups: 70) after a warm-up; cold cache fills start from an empty cache each run.",
        "",
        "### Real radiographs (decode + window + resize + cache)",
        "",
        "Baseline: raw decode only (`pydicom.dcmread(...).pixel_array`, or PIL `open` + `load`).",
        "",
        *real,
        "",
        "### Phantom data set",
        "",
        *phantom,
        "",
        "### Report conversion",
        "",
        *iu,
        "",
        *mimic,
    ])


if __name__ == "__main__":
    print(run())
