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
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def evaluate_model(model_dir: str | Path, adapter_dir: str | Path | None, phantom_dir: str | Path, *,
                   split: str = "test", limit: int | None = 48, max_new_tokens: int = 96,
                   prompt_overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Greedy reports for a phantom split, scored with the phantom finding F1 (and the CheXpert labeler)."""
    import torch

    from data_prep.phantom import finding_scores
    from mllm_cxr.data import load_split
    from mllm_cxr.generate import GenerationSettings, HFGenerator
    from mllm_cxr.modeling import ModelArguments, load_model, load_processor
    from mllm_cxr.prompts import PromptConfig

    cfg_path = None
    if adapter_dir:  # a run's output_dir holds the config; its checkpoints sit one level below
        cands = [Path(adapter_dir) / "mllm_cxr_config.json", Path(adapter_dir).parent / "mllm_cxr_config.json"]
        cfg_path = next((c for c in cands if c.exists()), None)
    margs = ModelArguments(model_name_or_path=str(model_dir), dtype="float32", adapter_path=None,
                           max_pixels=112 * 112, min_pixels=56 * 56)
    prompt = PromptConfig(max_images=1, context=[], sections=["impression"])  # the tiny SFT config's prompt
    if cfg_path is not None and cfg_path.exists():  # use the exact prompt/pixel budget the adapter was trained with
        saved = json.loads(cfg_path.read_text())
        prompt = PromptConfig(**saved.get("PromptConfig", {}))
        for k in ("max_pixels", "min_pixels"):
            setattr(margs, k, saved.get("ModelArguments", {}).get(k, getattr(margs, k)))
    for k, v in (prompt_overrides or {}).items():
        setattr(prompt, k, v)
    margs.adapter_path = str(adapter_dir) if adapter_dir else None
    processor = load_processor(margs)
    model, _ = load_model(margs, is_trainable=False)
    model.eval()
    studies = load_split(Path(phantom_dir) / "studies.jsonl", split, limit)
    gen = HFGenerator(model, processor, prompt, phantom_dir, GenerationSettings(max_new_tokens=max_new_tokens))
    torch.manual_seed(0)
    preds = []
    for i in range(0, len(studies), 8):
        preds += [p[0] for p in gen.generate(studies[i:i + 8])]
    scores = finding_scores(preds, studies)
    scores["examples"] = preds[:3]
    return scores


def _launch(recipe: str, config: str, *extra: str) -> None:
    accel = str(Path(sys.executable).parent / "accelerate")
    cmd = [accel, "launch", "--config_file", str(REPO / "recipes/accelerate/cpu.yaml"),
           str(REPO / "recipes" / recipe), "--config", config, *extra]
    print("$", " ".join(cmd), flush=True)
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false")
    subprocess.run(cmd, check=True, env=env)


def _row(name: str, s: dict[str, Any]) -> str:
    per = " | ".join(f"{s['per_finding'][f]['f1']:.2f}" for f in sorted(s["per_finding"]))
    return f"| {name} | {s['micro_f1']:.3f} | {s['macro_f1']:.3f} | {s['exact_match']:.3f} | {per} |"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", default="runs")
    ap.add_argument("--limit", type=int, default=48, help="held-out studies to score")
    args = ap.parse_args(argv)
    runs = Path(args.runs)
    model, phantom = runs / "tiny-model", runs / "phantom"
    for p in (model / "config.json", phantom / "studies.jsonl"):
        if not p.exists():
            print(f"missing {p}: run `make demo` (it builds the tiny model and the phantom data first)")
            return 2
    t0 = time.perf_counter()
    results = {"untrained": evaluate_model(model, None, phantom, limit=args.limit)}
    _launch("sft.py", str(REPO / "recipes/configs/tiny/sft.yaml"), "--studies", str(phantom / "studies.jsonl"),
            "--model_name_or_path", str(model), "--output_dir", str(runs / "tiny-sft"))
    results["SFT"] = evaluate_model(model, runs / "tiny-sft", phantom, limit=args.limit)
    findings = sorted(results["SFT"]["per_finding"])
    print("\nHeld-out phantom test split, finding-level scores (F1 over the findings drawn in the images):\n")
    print("| stage | micro-F1 | macro-F1 | exact match | " + " | ".join(findings) + " |")
    print("|---|---|---|---|" + "---|" * len(findings))
    for name, s in results.items():
        print(_row(name, s))
    print("\nexample SFT report:", results["SFT"]["examples"][0][:300])
    (runs / "demo_results.json").write_text(json.dumps(results, indent=2))
    print(f"\ndemo finished in {time.perf_counter() - t0:.0f} s; results in {runs / 'demo_results.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
