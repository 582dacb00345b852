"""Box codecs and box metrics: decode throughput per model family on one core, and VOC mAP@0.5 over
10,000 boxes, each against a baseline measured in the same run.

Baselines: for decoding, the bare parse of the same text (``json.loads`` of the JSON families, one
``re.findall`` of the numbers for the tag families), i.e. what any decoder must at least do; for mAP, a
plain-Python VOC mAP (greedy matching with a Python IoU loop), which must give the same value.

Run alone with ``python bench/bench_boxes.py`` or through ``bench/run_all.py``.
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DECODE_TARGET = 50_000  # boxes per second, one core
MAP_TARGET_S = 1.0  # seconds for 10,000 boxes


def _best_of(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def _answers(family: str, n: int, k: int, seed: int = 0):
    import numpy as np

    from cxr_io.boxes import encode_boxes

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        boxes = []
        for _ in range(k):
            x, y = rng.uniform(0, 0.7, 2)
            w, h = rng.uniform(0.05, 0.3, 2)
            boxes.append({"x_min": x, "y_min": y, "x_max": x + w, "y_max": y + h, "label": "pleural effusion"})
        out.append(encode_boxes(boxes, family, (1024, 1024), min_pixels=3136, max_pixels=1_003_520))
    return out


def naive_map(preds, refs, threshold: float = 0.5) -> float:
    """Plain-Python VOC mAP (all-point interpolation), the baseline and a cross-check."""
    def iou(a, b):
        iw = min(a["x_max"], b["x_max"]) - max(a["x_min"], b["x_min"])
        ih = min(a["y_max"], b["y_max"]) - max(a["y_min"], b["y_min"])
        if iw <= 0 or ih <= 0:
            return 0.0
        inter = iw * ih
        area = lambda c: (c["x_max"] - c["x_min"]) * (c["y_max"] - c["y_min"])  # noqa: E731
        return inter / (area(a) + area(b) - inter)

    classes = sorted({b["label"] for r in refs for b in r})
    aps = []
    for c in classes:
        gts = {i: [b for b in r if b["label"] == c] for i, r in enumerate(refs)}
        n_gt = sum(len(v) for v in gts.values())
        dets = sorted(((-b.get("score", 1.0), o, i, b) for o, (i, b) in
                       enumerate((i, b) for i, p in enumerate(preds) for b in p) if b["label"] == c),
                      key=lambda d: (d[0], d[1]))
        used = {i: [False] * len(v) for i, v in gts.items()}
        tps = []
        for _, _, i, b in dets:
            ov = [iou(b, g) for g in gts[i]]
            j = max(range(len(ov)), key=ov.__getitem__) if ov else -1
            if j >= 0 and ov[j] >= threshold and not used[i][j]:
                used[i][j] = True
                tps.append(1)
            else:
                tps.append(0)
        tp = fp = 0
        rec, prec = [], []
        for t in tps:
            tp += t
            fp += 1 - t
            rec.append(tp / n_gt)
            prec.append(tp / (tp + fp))
        mrec, mpre = [0.0, *rec, 1.0], [0.0, *prec, 0.0]
        for k in range(len(mpre) - 2, -1, -1):
            mpre[k] = max(mpre[k], mpre[k + 1])
        aps.append(sum((mrec[k + 1] - mrec[k]) * mpre[k + 1] for k in range(len(mrec) - 1) if mrec[k + 1] != mrec[k]))
    return sum(aps) / len(aps)


def detection_set(n_boxes: int, seed: int = 0, per_image: int = 5, n_classes: int = 8):
    """``n_boxes`` reference boxes over ``n_boxes / per_image`` images and as many scored detections
    (jittered copies, some misplaced)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    refs, preds = [], []
    for _ in range(n_boxes // per_image):
        r, p = [], []
        for _ in range(per_image):
            x, y = rng.uniform(0, 0.7, 2)
            w, h = rng.uniform(0.05, 0.3, 2)
            lab = f"class{int(rng.integers(n_classes))}"
            r.append({"x_min": x, "y_min": y, "x_max": x + w, "y_max": y + h, "label": lab})
            j = rng.normal(0, 0.02, 4) if rng.random() < 0.8 else rng.uniform(-0.3, 0.3, 4)
            p.append({"x_min": x + j[0], "y_min": y + j[1], "x_max": x + w + j[2], "y_max": y + h + j[3],
                      "label": lab, "score": float(rng.uniform())})
        refs.append(r)
        preds.append(p)
    return preds, refs


def run(scale: float = 1.0) -> str:
    sys.path.insert(0, str(ROOT))
    from cxr_io.boxes import FAMILIES, decode_boxes
    from reward.box_metrics import average_precision, box_f1_corpus

    n, k = max(10, int(4000 * scale)), 4
    rows = []
    worst = float("inf")
    for fam in FAMILIES:
        texts = _answers(fam, n, k)

        def dec(texts=texts, fam=fam):
            for t in texts:
                decode_boxes(t, fam, (1024, 1024), min_pixels=3136, max_pixels=1_003_520)

        if fam in ("qwen2_5_vl", "qwen3_vl", "normalized"):
            def base(texts=texts):
                for t in texts:
                    json.loads(t.strip("`").removeprefix("json"))
        else:
            num = re.compile(r"\d+")

            def base(texts=texts, num=num):
                for t in texts:
                    num.findall(t)
        t_dec, t_base = _best_of(dec), _best_of(base)
        rate = n * k / t_dec
        worst = min(worst, rate)
        rows.append(f"| {fam} | {rate:,.0f} | {n * k / t_base:,.0f} | {t_dec / t_base:.1f}x |")

    n_boxes = max(500, int(10_000 * scale))
    preds, refs = detection_set(n_boxes)
    t_map = _best_of(lambda: average_precision(preds, refs))
    t_naive = _best_of(lambda: naive_map(preds, refs), repeat=1)
    ours, naive = average_precision(preds, refs)["map"], naive_map(preds, refs)
    t_f1 = _best_of(lambda: box_f1_corpus(preds, refs))
    lines = [
        "## Box codecs and box metrics (cxr_io/boxes.py, reward/box_metrics.py)",
        "",
        f"Decoding {n:,} answers of {k} boxes each (one core, best of 3); the baseline is the bare parse of the "
        "same text (`json.loads` for the JSON families, one `re.findall` of the numbers for the tag families), "
        "the least any decoder does. Target: >= 50,000 boxes/s.",
        "",
        "| family | decode boxes/s | bare parse boxes/s | decode / parse time |",
        "|---|---|---|---|",
        *rows,
        "",
        f"Slowest family: **{worst:,.0f} boxes/s** ({'meets' if worst >= DECODE_TARGET else 'MISSES'} the target).",
        "",
        f"VOC mAP@0.5 over {n_boxes:,} reference and {n_boxes:,} scored boxes ({n_boxes // 5:,} images, 8 classes):",
        "",
        "| implementation | time | mAP |",
        "|---|---|---|",
        f"| `reward.box_metrics.average_precision` | {t_map:.3f} s | {ours:.4f} |",
        f"| plain-Python VOC mAP (baseline) | {t_naive:.3f} s | {naive:.4f} |",
        "",
        f"Time ratio ours / baseline {t_map / t_naive:.2f}, same value (difference {abs(ours - naive):.1e}); "
        f"target < 1 s: {'met' if t_map < MAP_TARGET_S else 'MISSED'}. Hungarian box F1 over the same set: "
        f"{t_f1:.3f} s.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(run())
