"""The demo: does alignment with clinical rewards make reports more accurate on studies the model has not seen?

    make demo            (= python -m mllm_cxr.demo --runs runs)

From the demo base (``make demo-base``: a small Qwen2.5-VL whose vision tower and language model were
pretrained on a phantom corpus disjoint from these studies, :mod:`mllm_cxr.pretrain`), every stage runs
the command a user would (``accelerate launch recipes/...``, ``mllm-cxr pairs``, ``export``) and is scored
on every held-out *test* study of the phantom data (``generate`` greedy, plus sampled reports for the
prior-reference rate):

- ``sft``: LoRA SFT (recipes/configs/demo/sft.yaml);
- then eight SFT samples of every train study, scored by CheXpert F1 (``runs/pairs/chexalign.jsonl``): the
  studies GRPO trains on (those whose samples differ in reward), and the reward-ranked DPO's first pairs;
- ``control``: the SFT adapter trained further with the SFT loss for GRPO's number of optimizer steps on
  GRPO's studies (demo/sft_continue.yaml): the control that separates "RL helps" from "more training helps";
- ``grpo`` / ``editgrpo``: GRPO and EditGRPO with the clinical composite reward (demo/grpo.yaml, editgrpo.yaml);
- ``dpo``: prior-exam suppression DPO (demo/dpo.yaml); ``chexalign``: DPO on the reward-ranked pairs
  (demo/dpo_chexalign.yaml), those above and a second set sampled at temperature 0.7
  (``runs/pairs/chexalign_t07.jsonl``);
- ``export``: the GRPO adapter merged, saved and reloaded.

Metrics: the phantom finding F1 (micro F1 over the five findings drawn into the images, read from the
report), CheXpert F1 (rule labeler, micro over 14 and over 5) and the prior-reference rate of sampled
reports on studies without a prior. Each comes with a 95% bootstrap CI; each stage is compared with SFT
(and GRPO/EditGRPO with the control) by a two-sided paired permutation test over studies
(:func:`evaluation.statistics.paired_compare`). The table is written to ``runs/demo_table.md`` and the numbers
to ``runs/demo_results.json``; the README's table is a copy of the table of the default run.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cxr_io.cli_args import build_parser, from_namespace, opt

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "recipes" / "configs" / "demo"
#: Every stage the demo knows, in the order it runs them.
ALL_STAGES = ("sft", "control", "grpo", "editgrpo", "dpo", "chexalign", "export")
#: What each stage is called in the table.
LABELS = {"base": "base (untrained)", "sft": "SFT", "control": "SFT continued (control)",
          "grpo": "+GRPO (clinical reward)", "editgrpo": "+EditGRPO (clinical reward)",
          "dpo": "+DPO (prior suppression)", "chexalign": "+DPO (reward-ranked pairs)",
          "export": "GRPO exported (merged, reloaded)", "pairs": "SFT samples of the train studies (8 each)"}
#: How the demo samples SFT reports of the train studies (``pairs sample``, :meth:`DemoRun.sample_pairs`); the
#: Makefile's ``$(RUNS)/pairs/chexalign.jsonl`` rule (what ``make grpo`` needs) uses the same options (tested).
PAIR_SAMPLING = ["--k", "8", "--reward", "chexpert_f1", "--margin", "0.2", "--max-new-tokens", "96",
                 "--batch-size", "16"]
#: The temperature of the reward-ranked DPO's second pairs file (its first is sampled at 1.0).
PAIR_T07 = "0.7"
#: Bootstrap resamples and permutation swaps for every CI and p-value of the demo.
N_BOOT = 1000
#: The prompt of the demo's adapters (for the untrained base, which has no adapter to read it from).
BASE_PROMPT = ["--sections", "findings", "--context", "none", "--max-images", "1",
               "--min-pixels", "3136", "--max-pixels", "12544"]


#: Threads of every training and generation process. SFT runs alone on two; the stages after it run
#: ``LANES`` at a time, one thread each (on a small model a second thread speeds a process up by under 10%, a
#: second process by nearly 2x). Fixing the counts keeps the numbers the same on any machine.
SFT_THREADS, LANE_THREADS, LANES = 2, 1, 2


def _env(threads: int | None = None) -> dict[str, str]:
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false")
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return env


def _run(cmd: list[str], threads: int | None = None, log: Path | None = None) -> None:
    """Run ``cmd`` from the repository root (the configs name repository paths); with ``log`` its output is
    appended there (a stage running beside another). Interrupted here, it is sent SIGTERM (``mllm-cxr launch``
    passes that on to its recipe, which stops cleanly) before the interrupt goes on."""
    print("$", " ".join(cmd) + (f"  > {log}" if log else ""), flush=True)
    with open(log, "a") if log else contextlib.nullcontext() as out:
        proc = subprocess.Popen(cmd, env=_env(threads), cwd=REPO, stdout=out,
                                stderr=subprocess.STDOUT if log else None)
        try:
            code = proc.wait()
        except BaseException:
            proc.terminate()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
            raise
    if code:
        raise SystemExit(f"demo: `{' '.join(cmd[:4])} ...` failed with exit code {code}"
                         + (f" (its log: {log})" if log else " (its error is above)"))


def _launch(recipe: str, config: str, extra: list[str], threads: int | None = None, log: Path | None = None) -> None:
    """``mllm-cxr launch`` (= ``accelerate launch``; a failed recipe ends with its own line and exit code)."""
    launcher = str(Path(sys.executable).parent / "mllm-cxr")
    _run([launcher, "launch", "--config_file", str(REPO / "recipes/accelerate/cpu.yaml"), str(REPO / "recipes" / recipe),
          "--config", str(CONFIGS / config), *extra], threads, log)


def _lane_init() -> None:
    """A lane process (:meth:`DemoRun.run_lanes`): ``LANE_THREADS`` threads for torch here and in its children;
    SIGTERM (the demo ending the lane) becomes an exit that stops the running training first (:func:`_run`)."""
    import signal

    os.environ.update(_env(LANE_THREADS))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    import torch

    torch.set_num_threads(LANE_THREADS)


def _cli(*args: str) -> None:
    """A ``mllm-cxr`` verb, run in this process (the same code path as the console script, without a
    second interpreter start per call)."""
    from mllm_cxr.cli import main as cli_main

    print("$ mllm-cxr", " ".join(args), flush=True)
    code = cli_main(list(args))
    if code:
        raise SystemExit(f"demo: `mllm-cxr {args[0]}` failed with exit code {code}")


# ------------------------------------------------------------------------------------------------
# Scoring
# ------------------------------------------------------------------------------------------------
def phantom_group(texts: list[str], truth: list[set[str]]):
    """Per-study tp/fp/fn of the five phantom findings as an :class:`evaluation.groups.MetricGroup` (the counts
    and the micro F1 of the CheXpert group), so the phantom F1 gets the same bootstrap CIs and paired
    permutation tests as every eval metric."""
    from data_prep.phantom import PHANTOM_FINDINGS, phantom_findings
    from evaluation.groups import MetricGroup, Stat, count_matrix, micro_f1

    k = len(PHANTOM_FINDINGS)
    found = [phantom_findings(t) for t in texts]
    hyp = np.array([[f in pred for f in PHANTOM_FINDINGS] for pred in found], dtype=bool).reshape(len(texts), k)
    ref = np.array([[f in true for f in PHANTOM_FINDINGS] for true in truth], dtype=bool).reshape(len(truth), k)
    stats = {"phantom_micro_f1": Stat("phantom finding F1 (micro)", micro_f1(list(range(k)), k))}
    for j, f in enumerate(PHANTOM_FINDINGS):
        stats[f"phantom_f1::{f}"] = Stat(f, micro_f1([j], k), True, main=False)
    return MetricGroup("phantom", count_matrix(hyp, ref), stats)


def sampled_prior_group(samples: list[list[str]], has_prior: list[bool]):
    """Per study without a prior: how many of its sampled reports refer to a prior exam (a ratio metric)."""
    from evaluation.groups import MetricGroup, Stat, ratio
    from reward.prior import find_prior_references

    S = np.array([[sum(bool(find_prior_references(t)) for t in ss), len(ss)] if not hp else [0.0, 0.0]
                  for ss, hp in zip(samples, has_prior)], dtype=float)
    return MetricGroup("prior_sampled", S, {"prior_rate_sampled": Stat("prior refs w/o prior (sampled)",
                                                                        ratio(0, 1), False)})


def split_truth(phantom: Path, limit: int | None = None) -> dict[str, list]:
    """What the demo scores against, per test study of the phantom data (the first ``limit``): ids, the findings
    drawn into the image, and whether the study had a prior."""
    from data_prep.schema import read_records

    test = read_records(phantom, split="test")[:limit]
    return {"ids": [r.study_id for r in test], "findings": [set(r.meta["findings"]) for r in test],
            "has_prior": [r.has_prior for r in test]}


def score_stage(name: str, pred: Path, sampled: Path, truth: dict[str, Any]) -> dict[str, Any]:
    """All metric groups of one stage (aligned to ``truth``'s study order) and their point values + CIs."""
    from evaluation.groups import compute_groups
    from evaluation.predictions import predictions_to_evaluate, read_predictions
    from evaluation.statistics import bootstrap_summary

    p = predictions_to_evaluate(pred)
    order = list(truth["ids"])
    if sorted(p.ids) != sorted(order):
        raise SystemExit(f"demo: {pred} holds other studies than the test split")
    pos = {s: i for i, s in enumerate(p.ids)}
    idx = np.array([pos[s] for s in order])
    groups, _ = compute_groups(p, ["chexpert", "prior"], progress=False)
    groups = {k: g.subset(idx) for k, g in groups.items()}
    texts = dict(zip(p.ids, p.hyps))  # the greedy file, as eval read it
    samples = {r.study_id: list(r.record.get("samples") or [r.prediction]) for r in read_predictions(sampled)}
    groups["phantom"] = phantom_group([texts[s] for s in order], truth["findings"])
    groups["prior_sampled"] = sampled_prior_group([samples[s] for s in order], truth["has_prior"])
    summary = bootstrap_summary(groups, len(order), N_BOOT, 0)
    return {"groups": groups, "metrics": summary, "example": texts[order[0]]}


def compare(a: dict[str, Any], b: dict[str, Any], n: int) -> dict[str, Any]:
    from evaluation.statistics import paired_compare

    return paired_compare(a["groups"], b["groups"], n, N_BOOT, 0)


# ------------------------------------------------------------------------------------------------
# Table
# ------------------------------------------------------------------------------------------------
HEADLINE = [("phantom_micro_f1", "phantom finding F1"), ("chexpert_micro_f1_14", "CheXpert F1-14"),
            ("chexpert_micro_f1_5", "CheXpert F1-5"), ("prior_rate_sampled", "prior refs w/o prior (sampled)")]


def _cell(m: dict[str, Any]) -> str:
    v, ci = m.get("value"), m.get("ci")
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "n/a"
    return f"{v:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else f"{v:.3f}"


def _p(row: dict[str, Any] | None) -> str:
    if not row or row.get("p_value") is None:
        return ""
    d, p = row["delta"], row["p_value"]
    return f"{d:+.3f} (p={p:.3f})" if p >= 0.001 else f"{d:+.3f} (p<0.001)"


def results_table(results: dict[str, dict[str, Any]]) -> str:
    """The demo's Markdown table: every stage's headline metrics with 95% CIs, and the paired delta and
    p-value against SFT (for GRPO/EditGRPO also against the continued-SFT control)."""
    head = ["stage"] + [h for _, h in HEADLINE] + ["Δ phantom F1 vs SFT", "Δ CheXpert F1-14 vs SFT",
                                                    "Δ vs control (phantom / CheXpert-14)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in results.items():
        cells = [LABELS.get(name, name)] + [_cell(r["metrics"][k]) for k, _ in HEADLINE]
        vs_sft, vs_ctl = r.get("vs_sft") or {}, r.get("vs_control") or {}
        cells += [_p(vs_sft.get("phantom_micro_f1")), _p(vs_sft.get("chexpert_micro_f1_14"))]
        ctl = " / ".join(x for x in (_p(vs_ctl.get("phantom_micro_f1")), _p(vs_ctl.get("chexpert_micro_f1_14"))) if x)
        cells.append(ctl)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_stage_report(runs_out: Path, stage: str, against: str = "sft",
                       curves: dict[str, Path] | None = None) -> Path:
    """`mllm-cxr eval` of one stage against another (paired), then `mllm-cxr report`: the HTML report of the
    demo's last RL stage, with the runs' held-out learning curves (``curves``: stage -> curves.png) embedded;
    its path printed."""
    label = LABELS.get(stage, stage)
    ev = runs_out / "eval" / stage
    _cli("eval", "--pred", str(runs_out / "pred" / f"{stage}.jsonl"), "--compare", str(runs_out / "pred" / f"{against}.jsonl"),
         "--out", str(ev), "--metrics", "chexpert,prior,bleu,rouge_l,length", "--n-boot", str(N_BOOT), "--no-plots",
         "--quiet")
    figs = [a for st, png in (curves or {}).items() for a in ("--figure", f"held-out learning curve, {LABELS.get(st, st)}={png}")]
    _cli("report", "--eval", str(ev), "--title", f"mllm-cxr demo, last stage: {label}", "--quiet", *figs)
    path = ev / "report.html"
    print(f"HTML report of the last stage ({label}): {path}", flush=True)
    return path


def runtime_table(times: dict[str, dict[str, float]]) -> str:
    lines = ["| stage | train (s) | generate + score (s) |", "|---|---|---|"]
    order = ("base", "sft", "pairs", *ALL_STAGES[1:])
    for name, t in sorted(times.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order)):
        lines.append(f"| {LABELS.get(name, name)} | {t.get('train', 0):.0f} | {t.get('eval', 0):.0f} |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------
# Stages
# ------------------------------------------------------------------------------------------------
@dataclass(kw_only=True)
class DemoArgs:
    """``python -m mllm_cxr.demo`` (``make demo``)."""

    runs: str = opt("folder of the demo's inputs (demo-base, phantom) and outputs", default="runs")
    stages: str = opt(f"comma-separated, from {','.join(ALL_STAGES)}", default=",".join(ALL_STAGES))
    seed: int = opt("seed of every training run and sampled generation", default=0)
    limit: int | None = opt("score only the first N test studies (a quick check)", default=None)
    samples: int = opt("sampled reports per test study (prior-reference rate; one per study on the 1,000 test "
                       "studies measures it more closely than four did on 124)", default=1)
    max_steps: int | None = opt("stop every training stage after this many optimizer steps (a quick check, not the "
                                "demo)", default=None)
    tag: str = opt("suffix of every output folder (several seeds side by side)", default="")
    reuse: bool = opt("also score the stages left out of --stages from the test reports an earlier run with the same "
                      "--runs and --tag wrote, and keep its samples of the train studies (runs/pairs/chexalign.jsonl): "
                      "rerun one stage, keep the rest of the table", default=False)


class DemoRun:
    """One demo run: the stages it trains, what each scores on the test split, and where it writes."""

    def __init__(self, args: DemoArgs, runs: Path) -> None:

        self.args, self.runs, self.tag = args, runs, args.tag
        self.base, self.phantom = runs / "demo-base", runs / "phantom" / "studies.jsonl"
        self.out = runs / f"demo{self.tag}"
        (self.out / "pred").mkdir(parents=True, exist_ok=True)
        self.truth = split_truth(self.phantom, args.limit)
        self.common = ["--studies", str(self.phantom), "--model_name_or_path", str(self.base), "--seed", str(args.seed)]
        if args.max_steps:
            self.common += ["--max_steps", str(args.max_steps)]
        self.adapters = {"sft": runs / f"demo-sft{self.tag}"}
        self.pairs = runs / "pairs" / f"chexalign{self.tag}.jsonl"  # where dpo_chexalign.yaml and grpo.yaml look
        self.pairs_t07 = runs / "pairs" / f"chexalign_t07{self.tag}.jsonl"  # dpo_chexalign.yaml's second file
        self.results: dict[str, dict[str, Any]] = {}
        self.times: dict[str, dict[str, float]] = {}
        self.stages: list[str] = []

    def generate(self, name: str, model: Path, adapter: Path | None) -> None:
        """Greedy and sampled reports of one stage on the test split."""
        pred, sampled = self.out / "pred" / f"{name}.jsonl", self.out / "pred" / f"{name}_sampled.jsonl"
        gen = ["generate", "--studies", str(self.phantom), "--split", "test", "--model", str(model),
               "--max-new-tokens", "96", "--batch-size", "64", "--overwrite", "--quiet", "--seed", str(self.args.seed)]
        gen += ["--limit", str(self.args.limit)] if self.args.limit else []
        gen += ["--adapter", str(adapter)] if adapter is not None else BASE_PROMPT if model == self.base else []
        # the untrained base writes to the token limit: one sample per study is enough to show its rate
        k = 1 if name == "base" else self.args.samples
        _cli(*gen, "--out", str(pred))
        _cli(*gen, "--out", str(sampled), "--do-sample", "--num-return-sequences", str(k))

    def score(self, name: str) -> None:
        """A stage's reports scored; compared with SFT (and the control) when those are scored."""
        t0 = time.perf_counter()
        r = score_stage(name, self.out / "pred" / f"{name}.jsonl", self.out / "pred" / f"{name}_sampled.jsonl",
                        self.truth)
        n = len(self.truth["ids"])
        if "sft" in self.results and name not in ("base", "sft"):
            r["vs_sft"] = compare(r, self.results["sft"], n)
        if name in ("grpo", "editgrpo", "export") and "control" in self.results:
            r["vs_control"] = compare(r, self.results["control"], n)
        self.results[name] = r
        t = self.times.setdefault(name, {})
        t["eval"] = t.get("eval", 0.0) + time.perf_counter() - t0

    def evaluate(self, name: str, model: Path, adapter: Path | None) -> None:
        """Generate (in this process) and score one stage; the table so far is printed."""
        t0 = time.perf_counter()
        self.generate(name, model, adapter)
        self.times.setdefault(name, {})["eval"] = time.perf_counter() - t0
        self.score(name)
        print(results_table(self.results), flush=True)

    def train(self, name: str, recipe: str, config: str, extra: list[str], threads: int = SFT_THREADS,
              log: Path | None = None) -> Path:
        t0 = time.perf_counter()
        dest = self.runs / f"demo-{name}{self.tag}"
        _launch(recipe, config, [*self.common, *extra, "--output_dir", str(dest), "--overwrite_output_dir", "true"],
                threads, log)
        self.times.setdefault(name, {})["train"] = time.perf_counter() - t0
        return dest

    def __getstate__(self) -> dict[str, Any]:
        """What a lane process gets: everything but the scored results (their metric functions do not pickle)."""
        return {**self.__dict__, "results": {}}

    def stage(self, name: str) -> dict[str, dict[str, float]]:
        """Train one stage after SFT and write its test reports; runs in a lane process (:func:`_lane_init`),
        everything it and its training runs print going to ``<out>/logs/<name>.log``. Returns its times."""
        log = self.out / "logs" / f"{name}.log"
        log.write_text("")
        with open(log, "a", buffering=1) as f, contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
            self._stage(name, log)
        return {k: self.times[k] for k in (name, "export") if k in self.times}

    def _stage(self, name: str, log: Path) -> None:
        sft = self.adapters["sft"]
        after_sft = ["--adapter_path", str(sft)]
        t0 = time.perf_counter()
        hard = ["--train_studies_from", str(self.pairs)]  # the studies whose SFT samples differ (sample_pairs)
        if name == "control":
            adapter = self.train(name, "sft.py", "sft_continue.yaml", [*after_sft, *hard], LANE_THREADS, log)
        elif name in ("grpo", "editgrpo"):
            adapter = self.train(name, "grpo.py", f"{name}.yaml", [*after_sft, *hard], LANE_THREADS, log)
        elif name == "chexalign":  # a second pairs file first, sampled at temperature 0.7 (its time counted in training)
            self.sample_pairs(self.pairs_t07, "--temperature", PAIR_T07)
            adapter = self.train(name, "dpo.py", "dpo_chexalign.yaml",
                                 [*after_sft, "--pairs", str(self.pairs), str(self.pairs_t07)], LANE_THREADS, log)
        else:  # prior DPO: its pairs first (their time counted in training)
            pairs = self.out / "pairs_prior.jsonl"
            _cli("pairs", "prior", "--studies", str(self.phantom), "--out", str(pairs), "--sections", "findings")
            adapter = self.train(name, "dpo.py", "dpo.yaml", [*after_sft, "--pairs", str(pairs)], LANE_THREADS, log)
        self.times[name]["train"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        self.generate(name, self.base, adapter)
        self.times[name]["eval"] = time.perf_counter() - t0
        if name == "grpo" and "export" in self.stages:  # the GRPO adapter merged, saved, reloaded
            t0 = time.perf_counter()
            dest = self.runs / f"demo-export{self.tag}"
            _cli("export", "--base", str(self.base), "--adapter", str(adapter), "--out", str(dest), "--merge",
                 "--overwrite", "--verify-studies", str(self.phantom))
            self.times["export"] = {"train": time.perf_counter() - t0}
            t0 = time.perf_counter()
            self.generate("export", dest, None)
            self.times["export"]["eval"] = time.perf_counter() - t0

    def run_lanes(self, names: list[str]) -> None:
        """The stages after SFT in ``LANES`` processes (longest first; a stage is handed to a lane only when the lane
        is free, so an interrupt starts nothing new); :meth:`run_stages` scores them once all have finished."""
        import multiprocessing
        from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

        from tqdm.auto import tqdm

        (self.out / "logs").mkdir(exist_ok=True)
        print(f"stages after SFT: {', '.join(names)}, {LANES} at a time on {LANE_THREADS} thread each; their "
              f"output in {self.out / 'logs'}/<stage>.log", flush=True)
        todo, running = list(names), {}
        pool = ProcessPoolExecutor(LANES, mp_context=multiprocessing.get_context("spawn"), initializer=_lane_init)
        finished = False
        try:
            with tqdm(total=len(names), desc="demo stages", unit="stage") as bar:
                while todo or running:
                    while todo and len(running) < LANES:
                        name = todo.pop(0)
                        running[pool.submit(self.stage, name)] = name
                    done, _ = wait(running, return_when=FIRST_COMPLETED)
                    for fut in done:
                        name = running.pop(fut)
                        if fut.exception() is not None:
                            log = self.out / "logs" / f"{name}.log"
                            print("\n".join(log.read_text(errors="replace").splitlines()[-20:]), file=sys.stderr)
                            msg = str(fut.exception()).removeprefix("demo: ")
                            raise SystemExit(f"demo: stage {name} failed: {msg}"
                                             + ("" if str(log) in msg else f" (its log: {log})"))
                        self.times.update(fut.result())
                        bar.update(1)
            finished = True
        except BaseException:  # a failed stage or Ctrl-C: end the other lane too, start nothing more
            for proc in multiprocessing.active_children():
                proc.terminate()
            raise
        finally:
            pool.shutdown(wait=finished, cancel_futures=True)

    def reused(self, stages: list[str]) -> list[str]:
        """With ``--reuse``: the stages left out of ``stages`` whose greedy and sampled test reports an earlier run
        left, except the export of a GRPO trained again now (those reports came from the earlier GRPO adapter)."""
        pred = self.out / "pred"
        return [s for s in ALL_STAGES if self.args.reuse and s not in stages
                and all((pred / f"{s}{x}.jsonl").is_file() for x in ("", "_sampled"))
                and not (s == "export" and "grpo" in stages)]

    def run_stages(self, stages: list[str]) -> int:
        self.stages = stages
        reused = self.reused(stages)
        self.evaluate("base", self.base, None)
        if "sft" in stages:
            self.train("sft", "sft.py", "sft.yaml", [])
            self.evaluate("sft", self.base, self.adapters["sft"])
        elif "sft" in reused:
            self.score("sft")
        sft = self.adapters["sft"]
        if not (sft / "adapter_config.json").exists():
            print(f"missing {sft}: the stages after SFT need it (add sft to --stages)", file=sys.stderr)
            return 2
        # longest first, so the two lanes end close together (the reward-ranked DPO samples its second pairs file,
        # GRPO carries the export)
        later = [s for s in ("chexalign", "grpo", "editgrpo", "dpo", "control") if s in stages]
        if any(s in later for s in ("grpo", "editgrpo", "chexalign", "control")):
            if self.args.reuse and self.pairs.is_file():
                print(f"reusing the SFT samples of the train studies in {self.pairs}", flush=True)
            else:
                t0 = time.perf_counter()
                self.sample_pairs(self.pairs)
                self.times["pairs"] = {"train": time.perf_counter() - t0}
        if later:
            self.run_lanes(later)
        ran = [*later, *(["export"] if "grpo" in later and "export" in stages else [])]
        for name in ALL_STAGES[1:]:  # in the demo's order, so the table is the same whichever lane finished first
            if name in ran or name in reused:
                self.score(name)
        if reused:
            print(f"scored from an earlier run's reports in {self.out / 'pred'}: {', '.join(reused)}", flush=True)
        if ran or reused:
            print(results_table(self.results), flush=True)
        return 0

    def sample_pairs(self, out: Path, *extra: str) -> None:
        """Eight SFT samples of every train study, scored by CheXpert F1, best vs worst kept when 0.2 apart.
        At the default temperature (1.0, before the lanes, which all need it): the studies GRPO, EditGRPO and the
        control train on (``train_studies_from``: those whose samples differ; in a group where all score alike
        GRPO has no signal) and the reward-ranked DPO's first pairs file. At 0.7 (``extra``, in the DPO's lane):
        its second, whose rejected reports are fluent but wrong where many at 1.0 are garbled. A quick run
        (``--max-steps``) samples the first 32 train studies."""
        _cli("pairs", "sample", "--studies", str(self.phantom), "--model", str(self.base), "--adapter",
             str(self.adapters["sft"]), *PAIR_SAMPLING, *extra, "--seed", str(self.args.seed), "--out", str(out),
             *(["--limit", "32"] if self.args.max_steps else []))

    def finish(self, total: float) -> None:
        """The table, the numbers, the curves and the HTML report of the last RL stage."""
        from cxr_io import write_text_atomic

        runs, tag, results = self.runs, self.tag, self.results
        table = results_table(results)
        doc = {"seed": self.args.seed, "test_studies": len(self.truth["ids"]), "stages": list(results),
               "seconds_total": round(total, 1),
               "seconds": {k: {kk: round(vv, 1) for kk, vv in v.items()} for k, v in self.times.items()},
               "results": {k: {"metrics": v["metrics"], "vs_sft": v.get("vs_sft"), "vs_control": v.get("vs_control"),
                               "example": v["example"]} for k, v in results.items()}}
        write_text_atomic(runs / f"demo_results{tag}.json", json.dumps(doc, indent=2))
        write_text_atomic(runs / f"demo_table{tag}.md", table)
        print("\n" + table)
        print(runtime_table(self.times))
        print("example report after the last stage:", list(results.values())[-1]["example"][:300])
        curves = {name: runs / f"demo-{name}{tag}" / "curves.png" for name in ("grpo", "editgrpo", "dpo", "chexalign")}
        curves = {k: v for k, v in curves.items() if v.is_file()}
        for name, png in curves.items():
            print(f"held-out learning curve of {name}: {png}")
        last_rl = next((s for s in ("grpo", "editgrpo", "chexalign", "dpo", "control") if s in results), None)
        if last_rl and "sft" in results:
            write_stage_report(self.out, last_rl, curves=curves)
        print(f"\ndemo finished in {total:.0f} s; table in {runs / f'demo_table{tag}.md'}, numbers in "
              f"{runs / f'demo_results{tag}.json'}", flush=True)


def main(argv=None) -> int:
    ap = build_parser(DemoArgs, description=__doc__.split("\n")[0])
    args = from_namespace(DemoArgs, ap.parse_args(argv))
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    bad = [s for s in stages if s not in ALL_STAGES]
    if bad:
        ap.error(f"--stages: unknown {bad}; choose from {','.join(ALL_STAGES)}")
    if args.limit is not None and args.limit < 1:
        ap.error("--limit must be >= 1")
    if args.reuse and "sft" in stages:
        ap.error("--reuse with sft in --stages: the earlier reports of the other stages come from the earlier SFT "
                 "adapter; rerun them too (leave out --reuse), or leave sft out")
    runs = Path(args.runs).resolve()
    for p, how in ((runs / "demo-base" / "config.json", "make demo-base"),
                   (runs / "phantom" / "studies.jsonl", "make phantom")):
        if not p.exists():
            print(f"missing {p}: run `{how}` first (`make demo` builds both)", file=sys.stderr)
            return 2
    import torch

    torch.set_num_threads(SFT_THREADS)  # base and SFT generate here: the same reduction order on every machine

    t_start = time.perf_counter()
    run = DemoRun(args, runs)
    try:
        code = run.run_stages(stages)
    except KeyboardInterrupt:
        print("demo: interrupted; the finished stages' adapters and reports are kept", file=sys.stderr)
        return 130
    if code:
        return code
    run.finish(time.perf_counter() - t_start)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
