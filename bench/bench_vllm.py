"""vLLM on the CPU machine: GRPO rollouts, `vllm serve` first answer, `generate --backend vllm` throughput.

    .venv-vllm/bin/python bench/run_all.py --only vllm      # needs ./.venv-vllm (make vllm-env)

``run_all.py`` skips this module where vLLM is not importable (``REQUIRES``), leaving the section as it was.

1. GRPO step time with vLLM rollouts (colocate, :class:`mllm_cxr.train.grpo.ClinicalGRPOTrainer`) vs
   ``model.generate`` rollouts, same process, same data and settings: the tiny random Qwen2.5-VL, phantom
   studies with one frontal image (16 visual tokens), a new LoRA adapter, 2 prompts x 4 rollouts, 64
   completion tokens, beta 0.01, float32. Means over steps 2..n; split into generation, weight sync (merged
   LoRA pushed into vLLM, vLLM only), other scoring and optimisation.
2. ``mllm-cxr serve`` (``vllm serve --enable-lora``) vs ``mllm-cxr serve --backend hf``: seconds from launch
   to ``/health``, to the first answer, and the mean latency of the next requests (one study each).
3. ``mllm-cxr generate`` studies/s, ``--backend vllm`` vs ``--backend hf``, batch 8 (model loading excluded:
   the rate ``generate`` prints).

Each comparison runs ``ROUNDS`` interleaved rounds (``BENCH_VLLM_ROUNDS``, default 3); every sentence the
benchmark writes is computed from the per-round ratios (bench/_prose.py: faster, slower or within noise,
with the range). CPU numbers on the shared 2-core development machine: they say the paths work and how
they compare here, not what vLLM does on a GPU.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

REQUIRES = "vllm"
STEPS, MAX_TOKENS, GENERATIONS, PROMPTS = 6, 64, 4, 2
#: Interleaved rounds of every comparison (the spread the sentences report comes from them).
ROUNDS = int(os.environ.get("BENCH_VLLM_ROUNDS", "3"))
GEN_STUDIES, GEN_TOKENS = 32, 64
BIN = Path(sys.executable).parent


def _env() -> dict[str, str]:
    return dict(os.environ, TOKENIZERS_PARALLELISM="false", VLLM_CPU_KVCACHE_SPACE=os.environ.get(
        "VLLM_CPU_KVCACHE_SPACE", "1"), PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")


# ------------------------------------------------------------------------------------------------
# 1. GRPO
# ------------------------------------------------------------------------------------------------
def grpo_step_times(model_dir: Path, data, out: Path, **config_kw) -> dict[str, float]:
    from mllm_cxr.modeling import ModelArguments, load_model, load_processor
    from mllm_cxr.train.grpo import ClinicalGRPOTrainer
    from mllm_cxr.train.grpo_config import ClinicalGRPOConfig
    from reward.trl import reward_funcs_and_weights

    margs = ModelArguments(model_name_or_path=str(model_dir), dtype="float32", max_pixels=12544, min_pixels=3136)
    model, peft_config = load_model(margs)
    funcs, weights = reward_funcs_and_weights("chexpert_f1")
    args = ClinicalGRPOConfig(output_dir=str(out), num_generations=GENERATIONS,
                              per_device_train_batch_size=PROMPTS * GENERATIONS, max_completion_length=MAX_TOKENS,
                              max_steps=STEPS, logging_steps=1, learning_rate=1e-4, reward_weights=weights,
                              use_cpu=True, bf16=False, report_to="none", save_strategy="no", seed=0,
                              disable_tqdm=True, **config_kw)
    t0 = time.perf_counter()
    trainer = ClinicalGRPOTrainer(model=model, reward_funcs=funcs, args=args, train_dataset=data,
                                  processing_class=load_processor(margs), peft_config=peft_config,
                                  collapse_guard=False)
    init = time.perf_counter() - t0
    trainer.train()
    rows = [h for h in trainer.state.log_history if "step_time" in h][1:]

    def mean(key: str) -> float:
        vals = [h.get(key, 0.0) or 0.0 for h in rows]
        return statistics.mean(vals) if vals else float("nan")

    step, score, gen, sync = mean("step_time"), mean("timing/score_s"), mean("timing/generate_s"), mean("timing/sync_s")
    res = {"init": init, "step": step, "generation": gen - sync, "sync": sync, "other": score - gen,
           "optimisation": step - score, "gap": mean("sampling/sampling_logp_difference/mean"),
           "checked": float(getattr(trainer, "vllm_prompt_checks", 0))}
    llm = getattr(getattr(trainer, "vllm_generation", None), "llm", None)
    del trainer, model, llm
    return res


# ------------------------------------------------------------------------------------------------
# 2. serve, 3. generate
# ------------------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str, body: dict, timeout: float = 120) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def serve_latency(backend: str, model_dir: Path, adapter: Path, study, data_root: Path, log: Path) -> dict:
    from mllm_cxr.infer.generate import GenerationSettings, OpenAIGenerator
    from mllm_cxr.run_config import resolve_prompt

    port = _free_port()
    cmd = [sys.executable, "-m", "mllm_cxr.cli", "serve", "--backend", backend, "--model", str(model_dir),
           "--adapter", f"cxr={adapter}", "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32"]
    if backend == "vllm":
        cmd += ["--max-model-len", "1024", "--vllm-args", "--enforce-eager --max-num-seqs 8"]
    prompt = resolve_prompt(adapter, None)
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=_env())
    try:
        health = None
        while time.perf_counter() - t0 < 600 and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
                    if r.status == 200:
                        health = time.perf_counter() - t0
                        break
            except OSError:
                time.sleep(0.5)
        if health is None:
            raise RuntimeError(f"{backend} server did not come up: {log.read_text()[-2000:]}")
        gen = OpenAIGenerator(f"http://127.0.0.1:{port}", prompt, data_root,
                              GenerationSettings(max_new_tokens=GEN_TOKENS), served_model="cxr")
        body = gen.request_body(study)
        _post(f"http://127.0.0.1:{port}/v1/chat/completions", body)
        first = time.perf_counter() - t0
        lat = []
        for _ in range(5):
            t = time.perf_counter()
            _post(f"http://127.0.0.1:{port}/v1/chat/completions", body)
            lat.append(time.perf_counter() - t)
        return {"health": health, "first": first, "latency": statistics.mean(lat)}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def generate_rate(backend: str, model_dir: Path, adapter: Path, studies: Path, out: Path) -> float:
    cmd = [sys.executable, "-m", "mllm_cxr.cli", "generate", "--backend", backend, "--studies", str(studies),
           "--split", "all", "--limit", str(GEN_STUDIES), "--model", str(model_dir), "--adapter", str(adapter),
           "--dtype", "float32", "--max-new-tokens", str(GEN_TOKENS), "--batch-size", "8", "--out", str(out),
           "--quiet"]
    if backend == "vllm":
        cmd += ["--enforce-eager", "--max-model-len", "1024"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    m = re.search(r"\(([0-9.]+) studies/s\)", proc.stdout)
    return float(m.group(1))


def _lm_adapter(model_dir: Path, out: Path) -> Path:
    """A random LoRA adapter on the language model only (what vLLM loads), exported by mllm-cxr export."""
    import torch
    from peft import get_peft_model

    from mllm_cxr.infer.export import export
    from mllm_cxr.modeling import ModelArguments, load_model, lora_config
    from mllm_cxr.prompts import PromptConfig
    from mllm_cxr.run_config import write_run_config

    margs = ModelArguments(model_name_or_path=str(model_dir), dtype="float32", lora_r=8, lora_alpha=16,
                           lora_dropout=0.0, min_pixels=3136, max_pixels=12544)
    model, _ = load_model(margs, is_trainable=False)
    cfg = lora_config(margs)
    cfg.init_lora_weights = False
    torch.manual_seed(0)
    peft_model = get_peft_model(model, cfg)
    raw = out / "raw"
    peft_model.save_pretrained(str(raw))
    write_run_config(raw, [PromptConfig(sections=["impression"], context=[], max_images=1), margs])
    export(str(model_dir), raw, out / "export", dtype="float32")
    return out / "export"


def _grpo_round(backend: str, model_dir: Path, ph: Path, out: Path) -> dict[str, float]:
    """One GRPO measurement in a fresh process (a colocated vLLM engine and its process group per process)."""
    res = out.with_suffix(".json")
    cmd = [sys.executable, __file__, "--grpo-step-times", backend, str(model_dir), str(ph), str(out), str(res)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    return json.loads(res.read_text())


def _grpo_child(backend: str, model_dir: str, ph: str, out: str, res: str) -> None:
    import torch

    from mllm_cxr.data import grpo_dataset, load_split
    from mllm_cxr.prompts import PromptConfig

    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    torch.set_num_threads(1)
    data = grpo_dataset(load_split(Path(ph) / "studies.jsonl", "train"), Path(ph),
                        PromptConfig(max_images=1, context=[], sections=["impression"]))
    kw = {"use_vllm": True, "vllm_mode": "colocate", "vllm_max_model_length": 1024} if backend == "vllm" else {}
    Path(res).write_text(json.dumps(grpo_step_times(Path(model_dir), data, Path(out), **kw)))


def _median(rounds: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}


def run() -> str:
    import torch
    import trl
    import vllm

    from bench._prose import interleaved, rate_ratios, speed_ratios, speed_sentence, speed_verdict, spread
    from data_prep.phantom import make_phantom
    from data_prep.schema import read_records
    from mllm_cxr.tiny import build_tiny_model

    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model_dir = build_tiny_model(tmp / "tiny")
        make_phantom(tmp / "ph", n=48, seed=0)
        studies = tmp / "ph" / "studies.jsonl"
        grpo = interleaved(lambda b, r: _grpo_round(b, model_dir, tmp / "ph", tmp / f"g-{b}-{r}"), ["hf", "vllm"],
                           ROUNDS)
        adapter = _lm_adapter(model_dir, tmp / "ad")
        rate = interleaved(lambda b, r: generate_rate(b, model_dir, adapter, studies, tmp / f"pred-{b}-{r}.jsonl"),
                           ["hf", "vllm"], ROUNDS)
        study = read_records(studies)[0]
        srv = interleaved(lambda b, r: serve_latency(b, model_dir, adapter, study, tmp / "ph",
                                                     tmp / f"serve-{b}-{r}.log"), ["hf", "vllm"], ROUNDS)
    hf, vl = _median(grpo["hf"]), _median(grpo["vllm"])
    gen_ratios = speed_ratios([r["generation"] for r in grpo["hf"]], [r["generation"] for r in grpo["vllm"]])
    step_ratios = speed_ratios([r["step"] for r in grpo["hf"]], [r["step"] for r in grpo["vllm"]])
    rate_r = rate_ratios(rate["hf"], rate["vllm"])
    first_r = speed_ratios([r["first"] for r in srv["hf"]], [r["first"] for r in srv["vllm"]])
    lat_r = speed_ratios([r["latency"] for r in srv["hf"]], [r["latency"] for r in srv["vllm"]])
    checked = sum(int(r["checked"]) for r in grpo["vllm"])
    lines = ["## vLLM on the CPU machine: GRPO rollouts, serving, generation", "",
             f"vllm {vllm.__version__} (vllm-cpu), torch {torch.__version__}, trl {trl.__version__}, in ./.venv-vllm "
             "(`make vllm-env`). The shared 2-core development machine, other jobs running: **CPU numbers, not GPU "
             f"claims**: on a GPU vLLM's batching and kernels change the picture completely. Every comparison is "
             f"{ROUNDS} interleaved rounds (the backends take turns, the order alternating); tables show medians, "
             "the sentences the ratio per round, its range and what it supports (bench/_prose.py).", "",
             f"### GRPO step with vLLM rollouts vs `model.generate` rollouts (tiny model, {PROMPTS} prompts x "
             f"{GENERATIONS} rollouts, {MAX_TOKENS} tokens, one process per round)", "",
             "| rollouts | step s | generation | weight sync | other scoring | optimisation | step vs generate | "
             "trainer init s | vLLM-trainer logp gap |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, r in (("`model.generate` (baseline)", hf), ("vLLM colocate", vl)):
        gap = f"{r['gap']:.4f}" if name.startswith("vLLM") else "-"
        lines.append(f"| {name} | {r['step']:.2f} | {r['generation']:.2f} s | {r['sync']:.2f} s | {r['other']:.2f} s "
                     f"| {r['optimisation']:.2f} s | {r['step'] / hf['step']:.2f}x | {r['init']:.1f} | {gap} |")
    lines += ["", f"Means over steps 2-{STEPS} of each round. "
                  + speed_sentence("vLLM's rollout generation", "`model.generate`", gen_ratios) + " "
                  + speed_sentence("The whole GRPO step with vLLM", "the step with `model.generate`", step_ratios)
                  + f" Every one of the {checked} vLLM rollouts had the trainer's prompt ids (the guard checks each). "
                  "The weight sync pushes the merged LoRA weights into vLLM after each optimizer step. Trainer init "
                  "includes building the vLLM engine.", "",
              f"### `mllm-cxr generate`, batch 8, {GEN_STUDIES} phantom studies, {GEN_TOKENS} new tokens, LoRA adapter",
              "", "| backend | studies/s (median) | vs hf |", "|---|---|---|",
              f"| hf (baseline) | {statistics.median(rate['hf']):.2f} | 1.00x |",
              f"| vllm | {statistics.median(rate['vllm']):.2f} | {spread(rate_r)} |", "",
              speed_sentence("`generate --backend vllm`", "`--backend hf`", rate_r), "",
              "### `mllm-cxr serve`: launch to first answer (one study, greedy, LoRA adapter)", "",
              "| server | /health after | first answer after | next requests, mean latency |", "|---|---|---|---|"]
    for name, b in (("transformers (`--backend hf`, baseline)", "hf"), ("`vllm serve --enable-lora`", "vllm")):
        r = _median(srv[b])
        lines.append(f"| {name} | {r['health']:.1f} s | {r['first']:.1f} s | {r['latency'] * 1000:.0f} ms |")
    served, rollouts = speed_verdict(lat_r), speed_verdict(gen_ratios)
    word = {"faster": "faster than", "slower": "slower than", "within noise": "within noise of"}
    lines += ["", speed_sentence("vLLM's first answer (engine start: process spawn, imports, profiling, KV cache)",
                                 "the transformers server", first_r) + " "
                  + speed_sentence("A further request to vLLM", "one to the transformers server", lat_r) + " "
                  + f"On this CPU, LoRA requests in vLLM (its CPU LoRA kernels, eager mode) are {word[served]} "
                  f"transformers, and the GRPO rollouts above, where vLLM holds the merged weights and no LoRA, are "
                  f"{word[rollouts]} `model.generate`."]
    return "\n".join(lines)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--grpo-step-times"]:
        _grpo_child(*sys.argv[2:7])
    else:
        print(run())
