"""The demo: phantom data -> tiny model -> SFT -> generate on held-out studies -> before/after table.

    make demo            (= python -m mllm_cxr.demo --runs runs)

Every stage runs the same command a user would (``accelerate launch recipes/...``); the table uses the
phantom dataset's finding-level score (F1 over the findings drawn into the images).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _run(cmd: list[str]) -> None:
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, env=dict(os.environ, TOKENIZERS_PARALLELISM="false"))


#: Extra recipe flags for every training stage (``--max-steps N`` sets ``--max_steps N``).
_RECIPE_EXTRA: list[str] = []


def _launch(recipe: str, config: str, *extra: str) -> None:
    accel = str(Path(sys.executable).parent / "accelerate")
    _run([accel, "launch", "--config_file", str(REPO / "recipes/accelerate/cpu.yaml"),
          str(REPO / "recipes" / recipe), "--config", config, *extra, *_RECIPE_EXTRA])


def _cli(*args: str) -> None:
    _run([str(Path(sys.executable).parent / "mllm-cxr"), *args])


def stage_metrics(runs: Path, name: str, model: Path, adapter: Path | None, phantom: Path, limit: int) -> dict:
    """Generate for the held-out split with `mllm-cxr generate`, score with `mllm-cxr eval` + phantom F1."""
    from data_prep.phantom import finding_scores
    from data_prep.schema import read_records
    from reward.evaluate import read_predictions
    from reward.prior import find_prior_references

    pred, out = runs / "pred" / f"{name}.jsonl", runs / "eval" / name
    pred.unlink(missing_ok=True)
    gen = ["generate", "--studies", str(phantom / "studies.jsonl"), "--split", "test", "--limit", str(limit),
           "--model", str(model), "--out", str(pred), "--max-new-tokens", "64", "--batch-size", "16"]
    if adapter is not None:
        gen += ["--adapter", str(adapter)]
    else:  # the untrained model gets the tiny SFT prompt
        gen += ["--sections", "impression", "--context", "none", "--max-images", "1",
                "--min-pixels", "3136", "--max-pixels", "12544"]
    _cli(*gen)
    # greedy decoding hides what sampling (and GRPO's rollouts) still produce: 4 samples per study
    sampled = runs / "pred" / f"{name}_sampled.jsonl"
    sampled.unlink(missing_ok=True)
    _cli(*[str(sampled) if a == str(pred) else a for a in gen], "--do-sample", "--num-return-sequences", "4")
    _cli("eval", "--pred", str(pred), "--out", str(out), "--metrics", "chexpert,prior,bleu,rouge_l,length",
         "--n-boot", "200", "--no-plots")
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    rows = read_predictions(pred)
    truth = {r.study_id: r for r in read_records(phantom / "studies.jsonl", split="test")}
    ph = finding_scores([r.prediction for r in rows], [truth[r.study_id] for r in rows])
    samples = [t for r in read_predictions(sampled) if not truth[r.study_id].has_prior for t in r.record["samples"]]
    sampled_rate = sum(bool(find_prior_references(t)) for t in samples) / max(1, len(samples))
    pick = lambda k: metrics.get(k, {}).get("value", float("nan"))  # noqa: E731
    return {"finding_micro_f1": ph["micro_f1"], "per_finding": ph["f1"],
            "chexpert_micro_f1_5": pick("chexpert_micro_f1_5"), "chexpert_micro_f1_14": pick("chexpert_micro_f1_14"),
            "prior_hallucination_rate": pick("prior_hallucination_rate"), "prior_rate_sampled": sampled_rate,
            "bleu_4": pick("bleu_4"),
            "rouge_l": pick("rouge_l"), "example": rows[0].prediction if rows else "", "eval_dir": str(out)}


def write_stage_report(results: dict[str, dict]) -> Path:
    """`mllm-cxr report` for the last stage's eval folder (report.html); prints and returns its path."""
    label, m = list(results.items())[-1]
    _cli("report", "--eval", m["eval_dir"], "--title", f"mllm-cxr demo, last stage: {label}", "--quiet")
    path = Path(m["eval_dir"]) / "report.html"
    print(f"HTML report of the last stage ({label}): {path}", flush=True)
    return path


COLUMNS = [("finding_micro_f1", "phantom finding F1"), ("chexpert_micro_f1_5", "CheXpert F1-5 (micro)"),
           ("chexpert_micro_f1_14", "CheXpert F1-14 (micro)"), ("prior_hallucination_rate", "prior refs w/o prior (greedy)"),
           ("prior_rate_sampled", "prior refs w/o prior (sampled x4)"),
           ("bleu_4", "BLEU-4"), ("rouge_l", "ROUGE-L")]


def print_table(results: dict[str, dict]) -> None:
    print("\n| stage | " + " | ".join(c[1] for c in COLUMNS) + " |")
    print("|---|" + "---|" * len(COLUMNS))
    for name, m in results.items():
        print(f"| {name} | " + " | ".join(f"{m[k]:.3f}" for k, _ in COLUMNS) + " |", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", default="runs")
    ap.add_argument("--limit", type=int, default=64, help="held-out studies to score after each stage")
    ap.add_argument("--stages", default="sft,dpo,grpo,export",
                    help="comma-separated stages after the untrained baseline (sft,dpo,grpo,export)")
    ap.add_argument("--max-steps", type=int, default=None,
                    help="stop every training stage after this many optimizer steps (a quick check, not the demo)")
    args = ap.parse_args(argv)
    _RECIPE_EXTRA[:] = ["--max_steps", str(args.max_steps)] if args.max_steps else []
    runs = Path(args.runs).resolve()
    model, phantom = runs / "tiny-model", runs / "phantom"
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    for p in (model / "config.json", phantom / "studies.jsonl"):
        if not p.exists():
            print(f"missing {p}: run `make demo` (it builds the tiny model and the phantom data first)")
            return 2
    t0 = time.perf_counter()
    studies = str(phantom / "studies.jsonl")
    results = {"untrained": stage_metrics(runs, "untrained", model, None, phantom, args.limit)}
    print_table(results)
    adapter = None
    if "sft" in stages:
        _launch("sft.py", str(REPO / "recipes/configs/tiny/sft.yaml"), "--studies", studies,
                "--model_name_or_path", str(model), "--output_dir", str(runs / "tiny-sft"), "--overwrite_output_dir", "true")
        adapter = runs / "tiny-sft"
        results["SFT"] = stage_metrics(runs, "sft", model, adapter, phantom, args.limit)
        print_table(results)
    if "dpo" in stages and adapter is not None:
        _cli("pairs", "prior", "--studies", studies, "--out", str(runs / "pairs" / "prior.jsonl"),
             "--sections", "impression")
        _launch("dpo.py", str(REPO / "recipes/configs/tiny/dpo.yaml"), "--studies", studies,
                "--pairs", str(runs / "pairs" / "prior.jsonl"), "--model_name_or_path", str(model),
                "--adapter_path", str(adapter), "--output_dir", str(runs / "tiny-dpo"), "--overwrite_output_dir", "true")
        adapter = runs / "tiny-dpo"
        results["+DPO (prior suppression)"] = stage_metrics(runs, "dpo", model, adapter, phantom, args.limit)
        print_table(results)
    if "grpo" in stages and adapter is not None:
        _launch("grpo.py", str(REPO / "recipes/configs/tiny/grpo.yaml"), "--studies", studies,
                "--model_name_or_path", str(model), "--adapter_path", str(adapter),
                "--output_dir", str(runs / "tiny-grpo"), "--overwrite_output_dir", "true")
        adapter = runs / "tiny-grpo"
        results["+GRPO (clinical reward)"] = stage_metrics(runs, "grpo", model, adapter, phantom, args.limit)
        print_table(results)
    if "export" in stages and adapter is not None:
        # the tiny runs train the projector (modules_to_save), which vLLM cannot load as LoRA: merge
        _cli("export", "--base", str(model), "--adapter", str(adapter), "--out", str(runs / "export"),
             "--merge", "--overwrite", "--verify-studies", studies)
        results["exported (merged, reloaded)"] = stage_metrics(runs, "export", runs / "export", None, phantom,
                                                               args.limit)
        print_table(results)
    print("\nexample report after the last stage:", list(results.values())[-1]["example"][:300])
    (runs / "demo_results.json").write_text(json.dumps(results, indent=2))
    write_stage_report(results)
    print(f"\ndemo finished in {time.perf_counter() - t0:.0f} s; results in {runs / 'demo_results.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
