"""Measurement/device extraction (reward/measurements.py): speed vs the CheXpert rule labeler, the scorer's
share of a tiny GRPO step, and how often the statements occur in the datasets.

    python bench/run_all.py --only measurements        # or: python bench/bench_measurements.py

Speed: every non-empty IU X-ray report (FINDINGS + IMPRESSION, ``../shared/data``), the process pinned to
one CPU core, best of 3. Baseline in the same run: the CheXpert rule labeler (``reward.chexpert``) on the
same reports. The scorer is timed on report pairs (each report against the next one as its reference).
GRPO share: 7 steps of the tiny GRPO of ``bench/bench_grpo.py`` (2 prompts x 4 rollouts, 64 tokens, one
thread) with the reward CheXpert-F1 + ``measurement_penalty``; the seconds spent inside the measurement
scorer divided by the step time (steps 2-7). Coverage: IU X-ray, the MIMIC-CXR-layout reports of the
converter tests (``tests/builders/datasets.py``) and a 240-study phantom set.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for p in (str(ROOT), str(HERE)):
    if p not in sys.path:
        sys.path.insert(0, p)


def _best_of(fn, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def coverage(texts: list[str]) -> dict[str, object]:
    """How many reports state a device, a tip landmark, a tip distance, a tube-to-carina distance, a size."""
    from reward.measurements import CARINA_TUBES, extract

    c: Counter[str] = Counter()
    by_device: Counter[str] = Counter()
    for t in texts:
        ex = extract(t)
        present = [d for d in ex.devices if d.status == "present"]
        c["reports"] += 1
        c["any device mention"] += bool(ex.devices)
        c["device present"] += bool(present)
        c["device negated or removed"] += any(d.status in ("absent", "removed") for d in ex.devices)
        c["tip landmark"] += any(d.landmark and not d.landmark_uncertain for d in present)
        c["tip distance"] += any(d.distance is not None for d in present)
        c["tube-to-carina distance"] += any(d.distance is not None and d.landmark == "carina"
                                            and d.device in CARINA_TUBES for d in present)
        c["compared with a prior"] += any(d.comparison for d in present)
        c["lesion size"] += any(s.asserted for s in ex.sizes)
        for dev in {d.device for d in present}:
            by_device[dev] += 1
    return {"counts": c, "by_device": by_device}


def _mimic_fixture_reports(tmp: Path) -> list[str]:
    from data_prep.mimic import convert_mimic
    from tests.builders.datasets import make_mimic

    recs, _ = convert_mimic(make_mimic(tmp / "mimic"), progress=False)
    return [" ".join(x for x in (r.findings, r.impression) if x) for r in recs]


def _phantom_reports(tmp: Path) -> list[str]:
    from data_prep.phantom import make_phantom
    from data_prep.schema import read_records

    make_phantom(tmp / "ph", n=240, seed=0)
    return [" ".join(x for x in (r.findings, r.impression) if x) for r in read_records(tmp / "ph" / "studies.jsonl")]


def _grpo_share(tmp: Path) -> dict[str, float]:
    import torch
    from bench_grpo import run_grpo

    from data_prep.phantom import make_phantom
    from mllm_cxr.data import grpo_dataset, load_split
    from mllm_cxr.prompts import PromptConfig
    from mllm_cxr.tiny import build_tiny_model
    from reward import measurements

    spent = {"s": 0.0, "calls": 0}
    original = measurements.MeasurementPenalty.score

    def timed(self, *a, **k):
        t = time.perf_counter()
        try:
            return original(self, *a, **k)
        finally:
            spent["s"] += time.perf_counter() - t
            spent["calls"] += 1

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    measurements.MeasurementPenalty.score = timed
    try:
        model_dir = build_tiny_model(tmp / "tiny")
        make_phantom(tmp / "gph", n=48, seed=0)
        data = grpo_dataset(load_split(tmp / "gph" / "studies.jsonl", "train"), tmp / "gph",
                            PromptConfig(max_images=2, context=["indication"]))
        spec = [{"name": "chexpert_f1", "weight": 1.0}, {"name": "measurement_penalty", "weight": 1.0}]
        r = run_grpo("grpo", spec, model_dir, data, tmp / "g")
    finally:
        measurements.MeasurementPenalty.score = original
        torch.set_num_threads(threads)
    per_step = spent["s"] / max(1, spent["calls"])  # one call per step
    return {"step": r["step"], "reward": r["reward"], "measurement": per_step, "share": per_step / r["step"],
            "completions": r["completions"]}


def run() -> str:
    from _iu import iu_report_texts

    from reward.base import get_scorer
    from reward.chexpert import ChexpertRulesLabeler
    from reward.measurements import extract

    texts = iu_report_texts(10_000)
    if not texts:
        raise FileNotFoundError("../shared/data/iu_xray/NLMCXR_reports.tgz is missing")
    affinity = None
    if hasattr(os, "sched_getaffinity"):
        affinity = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {min(affinity)})
    try:
        labeler = ChexpertRulesLabeler()
        labeler.label_many(texts[:5])
        t_ext = _best_of(lambda: [extract(t) for t in texts])
        t_lab = _best_of(lambda: labeler.label_many(texts))
        refs = texts[1:] + texts[:1]
        scorer = get_scorer("measurement_hallucination")
        t_pair = _best_of(lambda: scorer(texts, refs))
        scorer._ref_cache.clear()
    finally:
        if affinity is not None:
            os.sched_setaffinity(0, affinity)
    n = len(texts)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cov = {"IU X-ray (FINDINGS + IMPRESSION)": coverage(texts),
               "MIMIC-CXR layout, converter-test fixture reports": coverage(_mimic_fixture_reports(tmp)),
               "phantom (240 studies, seed 0)": coverage(_phantom_reports(tmp))}
        g = _grpo_share(tmp)
    lines = ["## Measurement and device hallucinations (reward/measurements.py)", "",
             f"Setup: {n:,} non-empty IU X-ray reports (FINDINGS + IMPRESSION, mean "
             f"{statistics.mean(len(t) for t in texts):.0f} characters); process pinned to one CPU core; best of 3. "
             "Baseline: the CheXpert rule labeler (`reward.chexpert`) on the same reports, same run.", "",
             "| what | time | throughput | vs CheXpert rule labeler |", "|---|---:|---:|---:|",
             f"| CheXpert rule labeler (baseline) | {t_lab:.2f} s | {n / t_lab:,.0f} reports/s | 1.00x |",
             f"| `extract` (devices, landmarks, distances, sizes) | {t_ext:.2f} s | {n / t_ext:,.0f} reports/s | "
             f"{t_lab / t_ext:.2f}x |",
             f"| `measurement_hallucination` scorer (pairs; both sides extracted) | {t_pair:.2f} s | "
             f"{n / t_pair:,.0f} pairs/s | {t_lab / t_pair:.2f}x |", "",
             f"Tiny GRPO step (2 prompts x 4 rollouts, 64 tokens, CheXpert-F1 + `measurement_penalty`, one thread): "
             f"step {g['step']:.2f} s, all rewards {g['reward']:.3f} s, the measurement scorer "
             f"{1000 * g['measurement']:.2f} ms = **{100 * g['share']:.3f}%** of the step (goal < 2%).", "",
             "### How often the statements occur (reports)", ""]
    keys = ["reports", "any device mention", "device present", "device negated or removed", "tip landmark",
            "tip distance", "tube-to-carina distance", "compared with a prior", "lesion size"]
    lines += ["| data set | " + " | ".join(keys) + " |", "|---|" + "---:|" * len(keys)]
    for name, cv in cov.items():
        c = cv["counts"]
        lines.append(f"| {name} | " + " | ".join(f"{c[k]:,}" for k in keys) + " |")
    lines += ["", "Reports with each device stated as present:", "",
              "| data set | " + " | ".join(sorted({d for cv in cov.values() for d in cv["by_device"]})) + " |"]
    devs = sorted({d for cv in cov.values() for d in cv["by_device"]})
    lines.append("|---|" + "---:|" * len(devs))
    for name, cv in cov.items():
        lines.append(f"| {name} | " + " | ".join(str(cv["by_device"][d]) for d in devs) + " |")
    lines += ["", "IU X-ray is an outpatient set: devices are rare (mostly pacemakers and central lines) and a "
              "tube-to-carina distance is stated in only a handful of reports; the MIMIC-CXR-layout fixture reports "
              "of the converter tests state none (they are layout fixtures, not clinical text). MIMIC-CXR itself "
              "(ICU-heavy) is not available here, so its counts are not measured."]
    return "\n".join(lines)


if __name__ == "__main__":
    print(run())
