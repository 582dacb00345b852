"""The cost of the image check a training dataset makes when it is built (issue 19), on 10,000 cached images.

Measures, in one run on this machine, per image and for the whole set:

1. ``stat`` only (what the dataset build did before: the file exists) -- the baseline;
2. :func:`data_prep.images.check_image_header` (file not empty, header opens, decode size limits, PNG/JPEG end
   marker) -- what the build does now, so that a bad image stops the run before step 1;
3. a full decode (``PIL.Image.open(...).load()``) -- what the data loader does for every image at every epoch,
   for scale.

The images are PNGs at the 401,408-pixel cache budget (634x634, what ``prepare --image-cache`` writes for the
real recipes), 20 distinct phantom-like images copied to 10,000 files; the page cache is warm (a second pass
over the files, as in training). ``python bench/bench_image_check.py [--n 10000] [--out DIR]``
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

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from data_prep.images import check_image_header  # noqa: E402


def make_images(folder: Path, n: int, side: int = 634, distinct: int = 20) -> list[Path]:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    seeds = []
    yy, xx = np.mgrid[0:side, 0:side] / side
    for i in range(distinct):
        body = 120 + 80 * np.exp(-((xx - 0.5) ** 2 / 0.08 + (yy - 0.55) ** 2 / 0.12))
        noise = rng.normal(0, 6 + i, (side, side))
        img = Image.fromarray(np.clip(body + noise, 0, 255).astype(np.uint8), "L")
        p = folder / f"seed{i:02d}.png"
        img.save(p)
        seeds.append(p)
    paths = []
    for k in range(n):
        dst = folder / f"img{k:05d}.png"
        shutil.copyfile(seeds[k % distinct], dst)
        paths.append(dst)
    return paths


def timed(fn, paths: list[Path]) -> float:
    t = time.perf_counter()
    for p in paths:
        fn(p)
    return time.perf_counter() - t


def decode(p: Path) -> None:
    with Image.open(p) as im:
        im.load()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--out", default=None, help="folder for the images (default: a temporary one, removed)")
    args = ap.parse_args()
    work = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="bench-image-check-"))
    try:
        t = time.perf_counter()
        paths = make_images(work, args.n)
        made = time.perf_counter() - t
        size = sum(p.stat().st_size for p in paths)
        for p in paths:  # warm the page cache once
            p.read_bytes()
        rows = []
        for name, fn in (("stat only (before: the file exists)", os.stat),
                         ("check_image_header (now)", check_image_header),
                         ("full decode (the data loader, every epoch)", decode)):
            best = min(timed(fn, paths) for _ in range(2))
            rows.append((name, best))
        base = rows[0][1]
        check = rows[1][1]
        print(f"{args.n} PNG images 634x634 ({size / args.n / 1024:.0f} KiB each, {size / 2**30:.2f} GiB; made in "
              f"{made:.0f} s), warm page cache, best of 2 passes\n")
        print("| check per image | seconds for all | ms / image | vs stat only | vs header check |")
        print("|---|---|---|---|---|")
        for name, sec in rows:
            print(f"| {name} | {sec:.2f} | {sec / args.n * 1000:.3f} | {sec / base:.1f}x | {sec / check:.2f}x |")
    finally:
        if not args.out:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
