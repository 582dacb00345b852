"""Image caching with processes: ``cache_images`` (``mllm-cxr prepare --image-cache --workers N``) cold, at 1
and 2 worker processes, on MIMIC-CXR-JPG-sized images, and the time projected for MIMIC-CXR's 377,110 images.

The images are generated: 2544x3056 8-bit grayscale JPEGs (quality 95), the typical MIMIC-CXR-JPG size, with
smooth anatomy-like gradients and noise so that JPEG decoding does real work. Each run fills a fresh cache
(cold); the order of the runs alternates (1, 2, 2, 1) and the best of the two runs per setting is kept.

    python bench/bench_image_cache_workers.py [--n 24]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

MIMIC_IMAGES = 377_110
SIZE = (2544, 3056)  # width, height


def make_images(folder: Path, n: int) -> list[str]:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    w, h = SIZE
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = 120 + 60 * np.sin(xx / 300.0) * np.cos(yy / 410.0) - 40 * ((xx - w / 2) ** 2 + (yy - h / 2) ** 2) / (w * h)
    names = []
    for i in range(n):
        img = np.clip(base + rng.normal(0, 12, size=base.shape), 0, 255).astype(np.uint8)
        name = f"img{i:04d}.jpg"
        Image.fromarray(img, mode="L").save(folder / name, quality=95)
        names.append(name)
    return names


def _cpu() -> float:
    """CPU seconds of this process and its reaped children (the pool's workers, after shutdown)."""
    import resource

    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def run(src: Path, names: list[str], workers: int) -> tuple[float, float]:
    from data_prep._util import SkipLog
    from data_prep.images import DEFAULT_MAX_PIXELS, DEFAULT_MIN_PIXELS, ImageCache
    from data_prep.prepare import cache_images
    from data_prep.schema import ImageRef, StudyRecord

    records = [StudyRecord(study_id=f"s{i}", patient_id=f"p{i}", dataset="bench", split="train",
                           images=[ImageRef(n, "PA")]) for i, n in enumerate(names)]
    cache_dir = Path(tempfile.mkdtemp(prefix="cache-", dir=src.parent))
    try:
        cache = ImageCache(cache_dir, min_pixels=DEFAULT_MIN_PIXELS, max_pixels=DEFAULT_MAX_PIXELS)
        t, c = time.perf_counter(), _cpu()
        stats = cache_images(records, src, cache, skip_bad=False, skips=SkipLog(), workers=workers, progress=False)
        dt, dc = time.perf_counter() - t, _cpu() - c
        assert stats["images_cached"] == len(names), stats
        return dt, dc
    finally:
        shutil.rmtree(cache_dir)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=24)
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-cache-"))
    try:
        src = tmp / "src"
        src.mkdir()
        names = make_images(src, a.n)
        mb = sum((src / n).stat().st_size for n in names) / a.n / 1e6
        times: dict[int, list[tuple[float, float]]] = {1: [], 2: []}
        load0 = os.getloadavg()[0]
        for w in (1, 2, 2, 1):
            times[w].append(run(src, names, w))
        print(f"{a.n} generated JPEGs {SIZE[0]}x{SIZE[1]} ({mb:.1f} MB each), cold cache at the default budget; "
              f"{os.cpu_count()} CPUs, load average {load0:.1f} -> {os.getloadavg()[0]:.1f}")
        print("| worker processes | wall s (best of 2) | images/s | vs 1 process | CPU ms / image | "
              "MIMIC-CXR 377,110 images at this rate |")
        print("|---|---|---|---|---|---|")
        base = min(t for t, _ in times[1])
        cpu_ms = {}
        for w in (1, 2):
            t, c = min(times[w])
            rate = a.n / t
            cpu_ms[w] = 1000 * c / a.n
            print(f"| {w} | {t:.2f} | {rate:.2f} | {base / t:.2f}x | {cpu_ms[w]:.0f} | {MIMIC_IMAGES / rate / 3600:.1f} h |")
        per = cpu_ms[1] / 1000
        print(f"CPU-bound projection for MIMIC-CXR: {MIMIC_IMAGES * per / 3600:.1f} CPU hours; "
              + ", ".join(f"{MIMIC_IMAGES * per / k / 3600:.1f} h on {k} free cores" for k in (2, 8, 16, 32)))
    finally:
        shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
