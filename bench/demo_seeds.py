"""The demo's headline rows over several seeds: mean and range of every stage's held-out numbers.

    python bench/demo_seeds.py [--seeds 0 1 2] [--runs runs]      (make bench-demo-seeds; ~15 min a seed on 2 CPU cores)

Each seed reruns ``python -m mllm_cxr.demo --seed S --tag=-seedS`` (every training run and sampled
generation seeded with S; the phantom data, the demo base and the test split stay fixed; the seed that
``runs/demo_results.json`` already holds, from ``make demo``, is read from there), then the mean,
minimum and maximum of each headline metric and of each paired delta are written to
``docs/benchmarks.md`` between the ``bench:demo_seeds`` markers, with the share of seeds whose p < 0.05.

A second table pools the seeds: each test study's per-study counts (true/false positives and negatives,
sampled prior references) are summed over the seeds, and the summed systems are compared as the demo
compares one seed (bootstrap CI over studies, two-sided paired permutation test that swaps a study's
reports between the two systems on all seeds at once). It asks whether a stage beats SFT (or the
control) consistently over training seeds, beyond what one seed's run can show.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

KEYS = [("phantom_micro_f1", "phantom finding F1"), ("chexpert_micro_f1_14", "CheXpert F1-14"),
        ("prior_rate_sampled", "prior refs w/o prior (sampled)")]


def summarise(docs: dict[int, dict]) -> str:
    from mllm_cxr.demo import LABELS

    seeds = sorted(docs)
    stages = [s for s in docs[seeds[0]]["results"]]
    lines = [f"Seeds {', '.join(map(str, seeds))}; held-out phantom test studies: {docs[seeds[0]]['test_studies']}. "
             "Each cell: mean [min, max] over the seeds.", "",
             "| stage | " + " | ".join(h for _, h in KEYS) + " | Δ CheXpert F1-14 vs SFT (p<0.05) | "
             "Δ CheXpert F1-14 vs control (p<0.05) |", "|---|" + "---|" * (len(KEYS) + 2)]

    def cell(vals):
        vals = [v for v in vals if v is not None]
        if not vals:
            return "n/a"
        return f"{sum(vals) / len(vals):.3f} [{min(vals):.3f}, {max(vals):.3f}]"

    for st in stages:
        row = [LABELS.get(st, st)]
        for k, _ in KEYS:
            row.append(cell([docs[s]["results"][st]["metrics"][k]["value"] for s in seeds]))
        for against in ("vs_sft", "vs_control"):
            rows = [(docs[s]["results"][st].get(against) or {}).get("chexpert_micro_f1_14") for s in seeds]
            rows = [r for r in rows if r]
            row.append(f"{cell([r['delta'] for r in rows])} ({sum((r['p_value'] or 1) < 0.05 for r in rows)}/"
                       f"{len(rows)})" if rows else "")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


POOLED = [("phantom_micro_f1", "phantom F1"), ("chexpert_micro_f1_14", "CheXpert F1-14"),
          ("prior_rate_sampled", "prior refs (sampled)")]


def pooled_groups(runs: Path, seeds: list[int], stage: str) -> dict:
    """The stage's metric groups on the test split with each study's statistics summed over ``seeds``."""
    from evaluation.groups import MetricGroup
    from mllm_cxr.demo import score_stage, split_truth

    truth = split_truth(runs / "phantom" / "studies.jsonl")
    per_seed = []
    for s in seeds:
        pred = runs / f"demo-seed{s}" / "pred" / f"{stage}.jsonl"
        if not pred.exists():  # the `make demo` seed writes to runs/demo
            pred = runs / "demo" / "pred" / f"{stage}.jsonl"
        per_seed.append(score_stage(stage, pred, pred.with_name(f"{stage}_sampled.jsonl"), truth)["groups"])
    return {name: MetricGroup(name, sum(g[name].S for g in per_seed), g0.stats)
            for name, g0 in per_seed[0].items() if name in ("phantom", "chexpert", "prior_sampled")}


def pooled_table(runs: Path, seeds: list[int], stages: list[str]) -> str:
    """Each stage against SFT (and GRPO/EditGRPO against the control) on the seeds' summed counts."""
    from evaluation.statistics import paired_compare
    from mllm_cxr.demo import LABELS, N_BOOT

    groups = {st: pooled_groups(runs, seeds, st) for st in stages}
    n = len(next(iter(groups["sft"].values())).S)
    lines = [f"Pooled over seeds {', '.join(map(str, seeds))} ({n} test studies, each with {len(seeds)} reports "
             "per system): delta [95% CI] (paired permutation p).", "",
             "| stage | against | " + " | ".join(h for _, h in POOLED) + " |", "|---|---|" + "---|" * len(POOLED)]
    for st in stages:
        for against in ("sft", "control"):
            if st in ("base", "sft", against) or against not in groups or (against == "control" and
                                                                            st not in ("grpo", "editgrpo")):
                continue
            cmp = paired_compare(groups[st], groups[against], n, N_BOOT, 0)
            cells = [f"{c['delta']:+.3f} [{c['ci'][0]:+.3f}, {c['ci'][1]:+.3f}] (p={c['p_value']:.3f})"
                     for c in (cmp[k] for k, _ in POOLED)]
            lines.append(f"| {LABELS.get(st, st)} | {LABELS.get(against, against)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--runs", default=str(ROOT / "runs"))
    ap.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"))
    args = ap.parse_args(argv)
    docs = {}
    for s in args.seeds:
        tag = f"-seed{s}"
        res = Path(args.runs) / f"demo_results{tag}.json"
        default = Path(args.runs) / "demo_results.json"  # `make demo` ran this seed already: its numbers
        if not res.exists() and default.exists() and json.loads(default.read_text()).get("seed") == s:
            res = default
        if not res.exists():
            subprocess.run([sys.executable, "-m", "mllm_cxr.demo", "--runs", args.runs, "--seed", str(s), f"--tag={tag}"],
                           check=True, cwd=ROOT)
        docs[s] = json.loads(res.read_text())
    stages = [st for st in docs[args.seeds[0]]["results"] if st != "export"]  # export repeats GRPO
    body = ("## Demo over seeds (held-out phantom test split)\n\n" + summarise(docs) + "\n"
            + pooled_table(Path(args.runs), args.seeds, stages))
    from bench.run_all import _replace_section
    from cxr_io import write_text_atomic

    out = Path(args.out)
    write_text_atomic(out, _replace_section(out.read_text(), "demo_seeds", body))
    print(body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
