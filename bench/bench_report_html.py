"""HTML evaluation report (evaluation/report/): time and size for 2,000 studies on one core.

Setup: a 2,000-study phantom set (frontal + lateral 224x224 PNG per study), predictions in the format of
`mllm-cxr generate` (a third of the studies get their own impression, the rest a neighbour's; a second
system for --compare), evaluated once with `mllm-cxr eval` (not timed). Timed: `build_report` from the
eval folder, the process pinned to one CPU core. Baseline: the same report without images
(--thumb-size 0), measured in the same run. Below it, the cost of one thumbnail by source image kind, to
extrapolate to real data.

    python bench/run_all.py --only report_html
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "images"
N_STUDIES = 2000


def _predictions(phantom: Path, out: Path, shift: int) -> Path:
    from data_prep.schema import image_path, read_records
    from mllm_cxr.data import study_columns
    from mllm_cxr.prompts import build_messages

    recs = read_records(phantom / "studies.jsonl")
    with open(out, "w", encoding="utf-8") as fh:
        for i, r in enumerate(recs):
            pred = r.impression if i % 3 == 0 else recs[(i + shift) % len(recs)].impression
            images = [str(image_path(phantom, im.path).resolve()) for im in build_messages(r)[1]]  # as generate
            fh.write(json.dumps({"study_id": r.study_id, "prediction": pred, "reference": r.impression,
                                 "context": study_columns(r), "images": images}) + "\n")
    return out


def _per_image(paths: list[tuple[str, Path]], size: int = 160, n: int = 10) -> list[tuple[str, float, int]]:
    from evaluation.report.thumbs import Thumbs

    out = []
    for label, p in paths:
        best = float("inf")
        nbytes = 0
        for _ in range(3):
            c0 = time.process_time()
            for _ in range(n):
                t = Thumbs(size=size)
                uri, why = t.data_uri(p)
                assert uri, (p, why)
            best = min(best, (time.process_time() - c0) / n)
            nbytes = len(uri)
        out.append((label, best, nbytes))
    return out


def run() -> str:
    import numpy as np
    from PIL import Image

    from data_prep.phantom import make_phantom
    from evaluation.evaluate import run_eval
    from evaluation.report.build import build_report
    from evaluation.report.options import ReportOptions

    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        make_phantom(t / "ph", n=N_STUDIES, seed=0)
        a = _predictions(t / "ph", t / "a.jsonl", 1)
        b = _predictions(t / "ph", t / "b.jsonl", 2)
        run_eval(a, t / "ev1", metrics=["chexpert", "prior", "rouge_l", "length"], n_boot=200, plots=False,
                 progress=False)
        run_eval(a, t / "ev2", compare=b, metrics=["chexpert", "prior", "rouge_l", "length"], n_boot=200,
                 plots=False, progress=False)
        configs = [("no images (--thumb-size 0), one system: baseline", "ev1", ReportOptions(thumb_size=0)),
                   ("default: 160 px thumbnails, frontal + lateral, one system", "ev1", ReportOptions()),
                   ("default thumbnails, --compare (two systems)", "ev2", ReportOptions()),
                   ("256 px thumbnails, --compare", "ev2", ReportOptions(thumb_size=256)),
                   ("default thumbnails, --compare, --no-text --include images", "ev2",
                    ReportOptions(shareable=True, include=("images",))),
                   ("default thumbnails, --compare, --thumb-cache (first render: fills the cache)", "ev2",
                    ReportOptions(thumb_cache=str(t / "tc"))),
                   ("default thumbnails, --compare, --thumb-cache (next render: thumbnails from the cache)", "ev2",
                    ReportOptions(thumb_cache=str(t / "tc")))]
        rows = []
        for label, ev, opt in configs:
            t0, c0 = time.perf_counter(), time.process_time()
            s = build_report(t / ev, t / f"out{len(rows)}", options=opt)
            rows.append((label, time.process_time() - c0, s["bytes"], s["images"], time.perf_counter() - t0))
        # per-image thumbnail cost by source kind
        src = next((t / "ph" / "images").glob("*_PA.png"), None) or next((t / "ph" / "images").glob("*.png"))
        im = Image.open(src).convert("L")
        rng = np.random.default_rng(0)

        def noisy(size: tuple[int, int]) -> Image.Image:  # detector-like noise, so the file compresses as real ones
            arr = np.asarray(im.resize(size, Image.Resampling.BICUBIC)).astype(np.int16)
            return Image.fromarray(np.clip(arr + rng.normal(0, 6, arr.shape), 0, 255).astype(np.uint8))

        noisy((634, 634)).save(t / "cache634.png")
        noisy((2544, 3056)).save(t / "mimic_like.jpg", quality=90)
        kinds = [("phantom PNG 224x224 (the demo's images)", src),
                 ("PNG 634x634 (an `--image-cache` file at the 401,408-pixel budget)", t / "cache634.png"),
                 ("JPEG 2544x3056, quality 90 (MIMIC-CXR-JPG size; decoded at 1/4 scale)", t / "mimic_like.jpg")]
        for name, label in (("00000001_000.png", "NIH ChestX-ray14 PNG 512x512 (shared data)"),
                            ("RG1_UNCI.dcm", "DICOM CR 1955x1841, MONOCHROME1 (shared data)")):
            if (SHARED / name).is_file():
                kinds.append((label, SHARED / name))
        per_image = _per_image(kinds)

    base_s, base_b = rows[0][1], rows[0][2]
    lines = ["## HTML evaluation report (evaluation/report/)", "",
             f"{N_STUDIES:,} phantom studies (frontal + lateral 224x224 PNG each), predictions in `generate`'s format, "
             "report rendered from an eval folder (`mllm-cxr report --eval DIR`): highlights from the labels, "
             "mention spans and prior sentences `eval` wrote to `per_study.jsonl` (nothing is labelled again), "
             "thumbnails of the images the prediction rows name (grayscale JPEG, quality 70), HTML. "
             f"Process pinned to one CPU core. Times are the process's CPU seconds (what one dedicated core "
             f"spends); the wall-clock seconds beside them include waiting for the core, which other jobs shared "
             f"(load average {load:.1f} on this 2-core machine at the start). One run per row. Goal (issue 11): "
             f"< 30 s on one core and < 60 MB for {N_STUDIES:,} studies with the default thumbnails.", "",
             "| report | CPU seconds | studies/s | wall seconds | size (MB) | images | time vs baseline | "
             "size vs baseline |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for label, sec, nbytes, nimg, wall in rows:
        lines.append(f"| {label} | {sec:.1f} | {N_STUDIES / sec:.0f} | {wall:.1f} | {nbytes / 1e6:.1f} | {nimg:,} | "
                     f"{sec / base_s:.2f}x | {nbytes / base_b:.1f}x |")
    lines += ["", "One 160 px thumbnail by source image (decode + resize + JPEG + base64; CPU time, best of 3 x 10), and what "
              f"{N_STUDIES:,} studies x 2 images of that kind would add to the render time:", "",
              "| source image | ms / image | bytes in the page | + seconds for 4,000 images |", "|---|---:|---:|---:|"]
    for label, sec, nbytes in per_image:
        lines.append(f"| {label} | {sec * 1000:.1f} | {nbytes:,} | {sec * 2 * N_STUDIES:.0f} |")
    default = rows[2]
    verdict = "met" if default[1] < 30 and default[2] < 60e6 else "NOT met"
    thumbs = per_image[1][1] * 2 * N_STUDIES
    cache = thumbs + rows[0][1]
    full = per_image[2][1] * 2 * N_STUDIES  # thumbnails from MIMIC-size JPEGs
    share = ("take most of it" if thumbs > rows[0][1] else "take less of it than the text-only report")
    originals = (f"from full-size originals (JPEG 2544x3056) the thumbnails alone take {full:.0f} s, "
                 + ("above the 30 s goal" if full >= 30 else "within the 30 s goal"))
    lines += ["", f"**Default report with --compare: {default[1]:.1f} CPU s, {default[2] / 1e6:.1f} MB for {N_STUDIES:,} "
              f"studies: goal {verdict} on phantom images.** With `--image-cache` files at the 401,408-pixel budget "
              f"the estimate is {cache:.0f} s (text-only time + {2 * N_STUDIES:,} thumbnails of that kind; the "
              f"thumbnails {share}); {originals}. Render from "
              "`--image-cache` files, keep thumbnails with `--thumb-cache DIR` (later reports of the same studies "
              f"then take {rows[6][1]:.1f} s here), or lower `--max-studies`/`--max-thumbs`. Above `--max-studies` "
              "(default 2,000) only the worst studies are shown, with a note; the browser shows 50 rows per page."]
    if rows[3][1] < rows[2][1]:
        lines.append(f"Machine load still moved these times: the 256 px row ({rows[3][1]:.1f} s) took less than the "
                     f"160 px one ({rows[2][1]:.1f} s) although it does more work.")
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(ROOT))
    print(run())
