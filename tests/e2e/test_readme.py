"""The README as executable truth: every command in its set-up, test, real-use and benchmark sections runs.

The commands are read from README.md and must equal the table below (a README edit that changes or
adds a command fails ``test_every_readme_command_has_a_case`` until the table says how to run it).
Each case runs the README command as written, in a scratch folder laid out like the repository root
(``recipes``/``bench`` linked in), substituting only paths and model ids:

* the hub models -> the tiny random Qwen2.5-VL (``python -m mllm_cxr.tiny``);
* ``/data/...`` dataset folders -> fixture trees in the published MIMIC-CXR-JPG, CheXpert Plus and
  ReXGradient layouts (``tests/builders/datasets.py``); the IU archive -> a subset of the shared one
  (``../shared/data/iu_xray``) with generated PNGs; ``reports.csv`` -> a small CSV;
* the GPU accelerate config ``zero2.yaml`` -> its CPU twin ``zero2_cpu.yaml``;

and adding step limits (``--max_steps``, batch sizes, ``--limit``, ``--max-new-tokens``) and, without
CUDA, ``--bf16 false``. Leading ``VAR=value`` words of a command go into its environment (``env``). Recipe
configs whose rollouts use vLLM run with ``--use_vllm false`` here and as written under the ``vllm``
marker, with the commands that need a vLLM install (``pytest -m vllm`` in the vLLM environment).

Scaling out: ``make sft-2node`` runs as written (two "nodes" on 127.0.0.1, a free port); the cluster
commands run with ``DRY_RUN=1`` and stand-ins for ``ssh``/``sbatch``/``scontrol``/``srun`` that run here
what they would start on each node, and the printed ``accelerate launch`` lines are checked; the sharded
``generate`` + ``merge-predictions`` run on the tiny model.
"""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.builders.repo import REPO, SHARED, require_shared

README = REPO / "README.md"
RUN_SECTIONS = ("Set up and run the demo", "The evaluation report", "Tests", "Real use, stage by stage",
                "Scaling out", "Grounded reports and other tasks", "Hallucination metrics", "Benchmarks")
BIN = Path(sys.executable).parent


# ------------------------------------------------------------------------------------------------
# Reading the README
# ------------------------------------------------------------------------------------------------
def readme_commands(text: str | None = None) -> list[tuple[str, str]]:
    """``(section, command)`` for every command in the bash blocks of :data:`RUN_SECTIONS`, in order.

    Continuation lines are joined, comments dropped, ``a && b`` split; a command is normalised to
    ``shlex.join`` of its words."""
    text = README.read_text(encoding="utf-8") if text is None else text
    out: list[tuple[str, str]] = []
    section, block, in_block = "", [], False
    for line in text.splitlines():
        if not in_block and line.startswith("## "):
            section = line[3:].strip()
        elif line.strip().startswith("```"):
            if in_block and section in RUN_SECTIONS:
                joined = "\n".join(block).replace("\\\n", " ")
                for cmd_line in joined.splitlines():
                    words = shlex.split(cmd_line, comments=True)
                    while words:
                        cut = words.index("&&") if "&&" in words else len(words)
                        out.append((section, shlex.join(words[:cut])))
                        words = words[cut + 1:]
            in_block = not in_block and line.strip() == "```bash"
            block = []
        elif in_block:
            block.append(line)
    return out


# ------------------------------------------------------------------------------------------------
# The cases: how each README command runs here
# ------------------------------------------------------------------------------------------------
@dataclass
class Case:
    id: str
    command: str                       # exactly as in the README (normalised)
    extra: list[str] = field(default_factory=list)   # step limits / CPU switches appended
    vllm: bool = False                 # needs real vLLM: runs under the `vllm` marker only
    run: str = "command"               # command | late (after the walk-through) | makefile (checked against the
    #                                    Makefile) | make | serve | gpu | demo (the session's `demo_run`) |
    #                                    tasks (test_task_commands_run_as_written) | localhost, cluster, shard
    #                                    (the test_scaling_out_* tests)
    env: dict[str, str] = field(default_factory=dict)  # added to the command's environment (e.g. DRY_RUN=1)


#: The real-model configs train in bf16 on a GPU; on a CPU-only machine TrainingArguments refuses bf16 before
#: the recipe can adapt, so the CPU runs here switch it off (the GPU runs keep the config as written).
CPU = ["--bf16", "false"] if not torch.cuda.is_available() else []
TINY_SFT_LIMITS = [*CPU, "--max_steps", "1", "--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "1",
                   "--dataloader_num_workers", "0"]
GRPO_LIMITS = [*CPU, "--max_steps", "1", "--per_device_train_batch_size", "5", "--gradient_accumulation_steps", "1",
               "--max_completion_length", "8", "--dataloader_num_workers", "0"]
GEN_LIMITS = ["--max-new-tokens", "12"]
Q3 = "Qwen/Qwen2.5-VL-3B-Instruct"
#: The cluster launch commands print their `accelerate launch` instead of running it, as on 8-GPU nodes.
CLUSTER_ENV = {"DRY_RUN": "1", "GPUS_PER_NODE": "8"}

CASES: list[Case] = [
    # -- set up ----------------------------------------------------------------------------------
    Case("install", "make install", run="makefile"),
    Case("demo", "make demo", run="demo"),  # the whole demo, once per session: the `demo_run` fixture
    Case("demo-base", "make demo-base", run="demo"),  # built by `make demo` in `demo_run`
    Case("vllm-env", "make vllm-env", run="makefile"),  # built and used by `make test-vllm` in CI
    # -- the evaluation report (needs the walk-through's predictions: runs after it) ----------------
    Case("eval-html", "mllm-cxr eval --pred runs/pred/grpo.jsonl --out runs/eval/grpo --compare runs/pred/sft.jsonl "
                      "--html", run="late"),
    Case("report", "mllm-cxr report --eval runs/eval/grpo --sort errors --no-text --out runs/eval/grpo-shareable",
         run="late"),
    # -- tests -----------------------------------------------------------------------------------
    Case("test", "make test", run="makefile"),
    Case("test-fast", "make test-fast", run="makefile"),
    # -- 1. prepare ------------------------------------------------------------------------------
    Case("prepare-iu", "mllm-cxr prepare iu-xray NLMCXR_reports.tgz --png-dir NLMCXR_png --splits-csv "
                       "r2gen_splits.csv --out data/iu/studies.jsonl --image-cache data/iu/images"),
    Case("prepare-mimic", "mllm-cxr prepare mimic-cxr /data/mimic-cxr-jpg/2.1.0 --out data/mimic/studies.jsonl "
                          "--image-cache data/mimic/images --max-pixels 401408"),
    Case("prepare-chexpert-plus", "mllm-cxr prepare chexpert-plus /data/chexpert-plus --image-root "
                                  "/data/chexpert-plus/PNG --out data/chexpert-plus/studies.jsonl"),
    Case("prepare-rexgradient", "mllm-cxr prepare rexgradient /data/ReXGradient-160K --out "
                                "data/rexgradient/studies.jsonl"),
    Case("prepare-phantom", "mllm-cxr prepare phantom --n 240 --out data/phantom/studies.jsonl"),
    # -- 2. SFT ----------------------------------------------------------------------------------
    Case("sft-3b", "mllm-cxr launch recipes/sft.py --config recipes/configs/qwen2.5-vl-3b/sft.yaml",
         extra=TINY_SFT_LIMITS),
    Case("sft-7b-zero2", "mllm-cxr launch --config_file recipes/accelerate/zero2.yaml recipes/sft.py --config "
                         "recipes/configs/qwen2.5-vl-7b/sft.yaml", extra=[*TINY_SFT_LIMITS, "--ddp_backend", "gloo"]),
    Case("sft-7b-qlora", "mllm-cxr launch recipes/sft.py --config recipes/configs/qwen2.5-vl-7b/sft_qlora.yaml",
         extra=TINY_SFT_LIMITS),
    # -- 3. preference training ------------------------------------------------------------------
    Case("pairs-prior", "mllm-cxr pairs prior --studies data/mimic/studies.jsonl --out data/pairs/prior.jsonl"),
    Case("pairs-sample", f"mllm-cxr pairs sample --studies data/mimic/studies.jsonl --model {Q3} --adapter "
                         "runs/qwen2.5-vl-3b-sft --k 8 --reward chexpert_f1 --margin 0.2 --out "
                         "data/pairs/chexalign.jsonl", extra=["--limit", "2", "--max-new-tokens", "12"]),
    Case("dpo-3b", "mllm-cxr launch recipes/dpo.py --config recipes/configs/qwen2.5-vl-3b/dpo.yaml",
         extra=[*CPU, "--max_steps", "1", "--per_device_train_batch_size", "1", "--gradient_accumulation_steps", "1",
                "--dataloader_num_workers", "0"]),
    Case("grpo-3b", "mllm-cxr launch recipes/grpo.py --config recipes/configs/qwen2.5-vl-3b/grpo.yaml",
         extra=[*GRPO_LIMITS, "--use_vllm", "false"]),
    Case("editgrpo-3b", "mllm-cxr launch recipes/grpo.py --config recipes/configs/qwen2.5-vl-3b/editgrpo.yaml",
         extra=[*GRPO_LIMITS, "--use_vllm", "false", "--reward_spec", "recipes/rewards/clinical.yaml"]),
    Case("make-dpo", "make dpo", extra=["TRAIN_ARGS=--max_steps 2"], run="make"),
    Case("make-grpo", "make grpo", extra=["TRAIN_ARGS=--max_steps 2"], run="make"),
    Case("grpo-vllm-make", "make grpo VENV=.venv-vllm 'GRPO_ARGS=--use_vllm true --vllm_mode colocate "
                           "--vllm_max_model_length 1024'", run="makefile"),  # the trainer path of test_vllm_grpo
    # -- 4. generate and evaluate ----------------------------------------------------------------
    Case("generate-sft", f"mllm-cxr generate --studies data/mimic/studies.jsonl --split test --model {Q3} "
                         "--adapter runs/qwen2.5-vl-3b-sft --out runs/pred/sft.jsonl", extra=GEN_LIMITS),
    Case("generate-grpo", f"mllm-cxr generate --studies data/mimic/studies.jsonl --split test --model {Q3} "
                          "--adapter runs/qwen2.5-vl-3b-grpo --out runs/pred/grpo.jsonl", extra=GEN_LIMITS),
    Case("eval", "mllm-cxr eval --pred runs/pred/grpo.jsonl --out runs/eval/grpo --compare runs/pred/sft.jsonl"),
    Case("score", "mllm-cxr score --pred runs/pred/grpo.jsonl --ref data/mimic/studies.jsonl --metrics "
                  "chexpert_f1,bleu,rouge_l --out runs/eval/grpo/score.json"),
    Case("label", "mllm-cxr label --input reports.csv --text-column report --out labels.csv"),
    # -- 5. export and serve ---------------------------------------------------------------------
    Case("export", f"mllm-cxr export --base {Q3} --adapter runs/qwen2.5-vl-3b-grpo --out export/cxr "
                   "--verify-studies data/mimic/studies.jsonl --metrics runs/eval/grpo/metrics.json"),
    Case("export-verify-vllm", f"mllm-cxr export --base {Q3} --adapter runs/qwen2.5-vl-3b-grpo --out "
                               "export/cxr-checked --verify-studies data/mimic/studies.jsonl --verify-backend vllm",
         vllm=True),
    Case("generate-vllm", "mllm-cxr generate --backend vllm --studies data/mimic/studies.jsonl --split test "
                          f"--model {Q3} --adapter export/cxr --out runs/pred/vllm.jsonl", extra=GEN_LIMITS,
         vllm=True),
    Case("serve", f"mllm-cxr serve --model {Q3} --adapter cxr=export/cxr --vllm-args "
                  "'--enforce-eager --max-num-seqs 8'", vllm=True, run="serve"),
    Case("generate-openai", "mllm-cxr generate --backend openai --base-url http://localhost:8000/v1 --served-model "
                            "cxr --studies data/mimic/studies.jsonl --split test --out runs/pred/served.jsonl",
         extra=GEN_LIMITS, vllm=True, run="serve"),
    # -- scaling out -----------------------------------------------------------------------------
    Case("sft-2node", "make sft-2node 'TRAIN_ARGS=--max_steps 20'", extra=["TRAIN_ARGS=--max_steps 2"], run="localhost"),
    Case("launch-node0", "NNODES=2 NODE_RANK=0 MASTER_ADDR=gpu01 scripts/multinode_launch.sh recipes/sft.py --config "
                         "recipes/configs/qwen2.5-vl-7b/sft.yaml", env=CLUSTER_ENV, run="cluster"),
    Case("launch-node1", "NNODES=2 NODE_RANK=1 MASTER_ADDR=gpu01 scripts/multinode_launch.sh recipes/sft.py --config "
                         "recipes/configs/qwen2.5-vl-7b/sft.yaml", env=CLUSTER_ENV, run="cluster"),
    Case("launch-ssh", "'HOSTS=gpu01 gpu02' ACCELERATE_CONFIG=recipes/accelerate/multinode_zero3.yaml "
                       "scripts/multinode_launch.sh recipes/sft.py --config recipes/configs/qwen2.5-vl-7b/sft.yaml",
         env=CLUSTER_ENV, run="cluster"),
    Case("sbatch", "sbatch --nodes 4 scripts/multinode_slurm.sbatch recipes/sft.py --config "
                   "recipes/configs/qwen2.5-vl-7b/sft.yaml", run="cluster"),  # the stand-in srun sets DRY_RUN
    Case("launch-grpo-server", "'HOSTS=gpu01 gpu02' VLLM_HOST=gpu03 VLLM_TP=4 scripts/multinode_launch.sh "
                               "recipes/grpo.py --config recipes/configs/qwen2.5-vl-7b/grpo_server.yaml",
         env=CLUSTER_ENV, run="cluster"),
    # (the fixture has one MIMIC test study: the shards cut the first 4 of all splits instead)
    Case("generate-shard0", f"mllm-cxr generate --studies data/mimic/studies.jsonl --split test --model {Q3} "
                            "--adapter runs/qwen2.5-vl-3b-sft --shard 0/2 --out runs/pred/sft.0.jsonl",
         extra=[*GEN_LIMITS, "--split", "all", "--limit", "4"], run="shard"),
    Case("generate-shard1", f"mllm-cxr generate --studies data/mimic/studies.jsonl --split test --model {Q3} "
                            "--adapter runs/qwen2.5-vl-3b-sft --shard 1/2 --out runs/pred/sft.1.jsonl",
         extra=[*GEN_LIMITS, "--split", "all", "--limit", "4"], run="shard"),
    Case("merge-predictions", "mllm-cxr merge-predictions runs/pred/sft.0.jsonl runs/pred/sft.1.jsonl --out "
                              "runs/pred/sft-merged.jsonl", run="shard"),
    # -- grounded reports and other tasks ---------------------------------------------------------
    Case("generate-grounding", f"mllm-cxr generate --studies data/phantom/studies.jsonl --split test --model {Q3} "
                               "--task phrase_grounding --box-family qwen2_5_vl --min-pixels 3136 --max-pixels 401408 "
                               "--out runs/pred/grounding.jsonl", extra=[*GEN_LIMITS, "--limit", "3"], run="tasks"),
    Case("eval-grounding", "mllm-cxr eval --pred runs/pred/grounding.jsonl --out runs/eval/grounding --metrics boxes "
                           "--html", extra=["--n-boot", "100"], run="tasks"),
    *[c for task, metrics in (("grounded_report", "boxes"), ("detection", "boxes"), ("vqa", "answers"))
      for c in (Case(f"generate-{task}", f"mllm-cxr generate --studies data/phantom/studies.jsonl --split test --model "
                     f"{Q3} --task {task} " + ("--box-family qwen2_5_vl --min-pixels 3136 --max-pixels 401408 "
                                               if metrics == "boxes" else "") + f"--out runs/pred/{task}.jsonl",
                     extra=[*GEN_LIMITS, "--limit", "3"], run="tasks"),
                Case(f"eval-{task}", f"mllm-cxr eval --pred runs/pred/{task}.jsonl --out runs/eval/{task} --metrics "
                     f"{metrics}", extra=["--n-boot", "100"], run="tasks"))],
    Case("sft-tasks", "mllm-cxr launch recipes/sft.py --config recipes/configs/demo/sft_tasks.yaml --studies "
                      "data/phantom/studies.jsonl", extra=TINY_SFT_LIMITS, run="tasks"),
    Case("grpo-tasks", "mllm-cxr launch recipes/grpo.py --config recipes/configs/demo/grpo_tasks.yaml --studies "
                       "data/phantom/studies.jsonl",
         extra=[*CPU, "--max_steps", "1", "--per_device_train_batch_size", "8", "--num_generations", "4",
                "--max_completion_length", "8", "--dataloader_num_workers", "0"], run="tasks"),
    # -- hallucination metrics -------------------------------------------------------------------
    Case("eval-hallucination", "mllm-cxr eval --pred runs/pred/grpo.jsonl --out runs/eval/grpo --metrics "
                               "prior,measurement --compare runs/pred/sft.jsonl", run="late"),
    # -- benchmarks ------------------------------------------------------------------------------
    Case("bench", "make bench", run="makefile"),
    Case("bench-one", "python bench/run_all.py --only prepare --out runs/bench.md"),
    Case("bench-gpu-smoke", "make bench-gpu-smoke", run="makefile"),  # run by tests/e2e/test_gpu_bench.py
    Case("gpu-wheels", "make gpu-wheels", run="makefile"),  # downloads ~65 MB; proven by hand, see docs
    Case("bench-gpu", "bash bench/gpu_run.sh", run="gpu"),
]
BY_ID = {c.id: c for c in CASES}
#: The recipe configs name the hub model in YAML: the tiny model goes in as a flag instead.
RECIPE_MODEL_FLAG = "--model_name_or_path"
#: The vLLM-as-written variants of README commands that the CPU suite runs with ``--use_vllm false``.
VLLM_AS_WRITTEN = [Case("grpo-3b-vllm", BY_ID["grpo-3b"].command, extra=[*GRPO_LIMITS, "--overwrite_output_dir", "true",
                                                                *([] if torch.cuda.is_available() else ["--vllm_enable_sleep_mode", "false"])],
                        vllm=True)]


def test_every_readme_command_has_a_case():
    """The README's commands and the cases are the same list, in the same order."""
    commands = [c for _, c in readme_commands()]
    normalised = [shlex.join(shlex.split(c.command)) for c in CASES]
    assert commands == normalised, (
        "README commands and tests/e2e/test_readme.py CASES differ:\n"
        f"  only in README: {[c for c in commands if c not in normalised]}\n"
        f"  only in CASES:  {[c for c in normalised if c not in commands]}")


def test_readme_reader_follows_edits():
    """A changed flag is a different command; comments and continuation lines are not."""
    text = ("## Real use, stage by stage\n```bash\n# a comment\nmllm-cxr prepare phantom --n 240 \\\n"
            "    --out data/p.jsonl   # trailing\nmake dpo && make grpo\n```\n## Design\n```bash\nignored\n```\n")
    assert readme_commands(text) == [("Real use, stage by stage", "mllm-cxr prepare phantom --n 240 --out data/p.jsonl"),
                                     ("Real use, stage by stage", "make dpo"), ("Real use, stage by stage", "make grpo")]


def _make_n(target: str, **variables: str) -> list[str]:
    """The commands ``make -n TARGET VAR=value ...`` would run (printed, not run), continuation lines joined."""
    out = subprocess.run(["make", "-n", "-s", "--no-print-directory", target, *(f"{k}={v}" for k, v in variables.items())],
                         cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return [" ".join(c.split()) for c in out.stdout.replace("\\\n", " ").splitlines() if c.strip()]


def test_documented_make_targets_do_what_the_readme_says():
    """`make install/test/test-fast/bench/demo/dpo/bench-gpu-smoke/gpu-wheels` are not run here: `make -n` shows
    the commands they would run, with the venv and the pass-through variables the README names taken into account."""
    venv = "/nonexistent/venv"
    install = _make_n("install", VENV=venv)
    assert f"python3 -m venv {venv}" in install[0] and any(
        c.startswith(f"DS_BUILD_OPS=0 {venv}/bin/python -m pip install") and '-e ".[dev]"' in c for c in install)
    assert _make_n("test", VENV=venv)[-1] == f'{venv}/bin/python -m pytest -q -p no:cacheprovider -m "not vllm" tests'
    assert _make_n("test-fast", VENV=venv)[-1] == f'{venv}/bin/python -m pytest -q -m "not slow and not vllm" tests'
    assert _make_n("bench", VENV=venv)[-1] == f"{venv}/bin/python bench/run_all.py"
    demo = _make_n("demo", VENV=venv, DEMO_ARGS="--sentinel-demo")[-1]
    assert demo.startswith(f"{venv}/bin/python -m mllm_cxr.demo") and demo.endswith("--sentinel-demo"), demo
    dpo = _make_n("dpo", VENV=venv, TRAIN_ARGS="--sentinel-train")[-1]
    assert "recipes/dpo.py" in dpo and f"{venv}/bin/mllm-cxr launch" in dpo and dpo.endswith("--sentinel-train"), dpo
    # `make grpo` first builds the studies file the demo writes, with the demo's sampling options and seed
    from mllm_cxr.demo import PAIR_SAMPLING

    grpo = _make_n("grpo", VENV=venv, RUNS="/nonexistent/runs")
    sample = next(c for c in grpo if " pairs sample " in c)
    assert f" {' '.join(PAIR_SAMPLING)} --seed 0 --out /nonexistent/runs/pairs/chexalign.jsonl" in sample, sample
    assert "--train_studies_from /nonexistent/runs/pairs/chexalign.jsonl" in grpo[-1], grpo[-1]
    smoke = _make_n("bench-gpu-smoke", VENV=venv)[-1]
    assert "GPU_BENCH_SMOKE=1" in smoke and smoke.endswith("bash bench/gpu_run.sh"), smoke
    assert any("bench/gpu-wheels.txt" in c and "pip download" in c for c in _make_n("gpu-wheels"))


# ------------------------------------------------------------------------------------------------
# The scratch folder: fixtures in the published layouts
# ------------------------------------------------------------------------------------------------
PRIOR_SENTENCE = "Heart size is unchanged compared to the prior radiograph."


def _iu_subset(ws: Path, n: int = 8) -> tuple[Path, Path]:
    """A tgz with the first ``n`` shared IU reports that have two images and an R2Gen split, and their PNGs."""
    archive = require_shared("iu_xray", "NLMCXR_reports.tgz")
    listed = {line.split(",", 1)[0] for line in (SHARED / "iu_xray" / "r2gen_splits.csv").read_text().splitlines()}
    png, picked = ws / "NLMCXR_png", []
    with tarfile.open(archive) as tf:
        for m in tf:
            if not (m.isfile() and m.name.endswith(".xml")):
                continue
            data = tf.extractfile(m).read()
            ids = re.findall(rb'<parentImage id="([^"]+)"', data)
            r2 = re.sub(r"-\d+$", "", ids[0].decode()) if ids else ""
            if len(ids) == 2 and r2 in listed:
                picked.append((m, data))
                for k in range(2):
                    _png(png / r2 / f"{k}.png")
            if len(picked) == n:
                break
    out = ws / "NLMCXR_reports.tgz"
    with tarfile.open(out, "w:gz") as tf:
        for m, data in picked:
            tf.addfile(m, io.BytesIO(data))
    return out, png


def _png(path: Path, size=(48, 40)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(abs(hash(path.name)) % 2**32)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0]), dtype=np.uint8)).save(path)


@pytest.fixture(scope="module")
def tiny_model(tiny_model_dir) -> Path:
    """The tiny random Qwen2.5-VL (what `python -m mllm_cxr.tiny DIR` writes), shared with the other tests."""
    return tiny_model_dir


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, tiny_model) -> dict:
    """A folder laid out like the repository root for the README's relative paths, plus the fixtures."""
    from tests.builders.datasets import make_chexpert_plus, make_mimic, make_rexgradient

    ws = tmp_path_factory.mktemp("readme-ws")
    for name in ("recipes", "bench", "scripts"):
        (ws / name).symlink_to(REPO / name)
    data = tmp_path_factory.mktemp("readme-datasets")
    mimic = make_mimic(data / "mimic-cxr-jpg" / "2.1.0")
    for report in (mimic / "files").rglob("s*.txt"):  # prior-exam wording for `pairs prior` to remove
        report.write_text(report.read_text().replace("Lungs are clear", f"{PRIOR_SENTENCE} Lungs are clear"))
    cxp = make_chexpert_plus(data / "chexpert-plus")
    rex = make_rexgradient(data / "ReXGradient-160K")
    with open(ws / "reports.csv", "w", encoding="utf-8") as fh:
        fh.write('report\n"No acute cardiopulmonary process."\n"Moderate right pleural effusion. Mild '
                 'cardiomegaly."\n"Possible left lower lobe pneumonia."\n')
    return {"ws": ws, "tiny": tiny_model, "runs": tmp_path_factory.mktemp("readme-make-runs"),
            "paths": {"/data/mimic-cxr-jpg/2.1.0": str(mimic), "/data/chexpert-plus": str(cxp),
                      "/data/ReXGradient-160K": str(rex), "r2gen_splits.csv": str(SHARED / "iu_xray" / "r2gen_splits.csv"),
                      "recipes/accelerate/zero2.yaml": "recipes/accelerate/zero2_cpu.yaml"}}


# ------------------------------------------------------------------------------------------------
# Running a case
# ------------------------------------------------------------------------------------------------
def _env() -> dict[str, str]:
    pp = os.environ.get("PYTHONPATH")
    env = dict(os.environ, PYTHONPATH=str(REPO) + (os.pathsep + pp if pp else ""), TOKENIZERS_PARALLELISM="false",
               HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # as `make` sets it: vLLM on CPU otherwise reserves more
    return env


def argv_for(case: Case, w: dict) -> list[str]:
    """The README command with paths and model ids substituted and the case's limits added."""
    words = shlex.split(case.command)
    env = [f"{k}={v}" for k, v in case.env.items()]
    while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[0]):  # `NNODES=2 ... cmd`: the environment
        env.append(words.pop(0))
    subst = {"Qwen/Qwen2.5-VL-3B-Instruct": str(w["tiny"]), "Qwen/Qwen2.5-VL-7B-Instruct": str(w["tiny"]),
             **w["paths"]}
    if "NLMCXR_reports.tgz" in words:
        tgz, png = _iu_subset(w["ws"])
        subst.update({"NLMCXR_reports.tgz": str(tgz), "NLMCXR_png": str(png)})
    out = []
    for word in words:
        for old, new in subst.items():
            if word == old or word.startswith(old + "/"):
                word = new + word[len(old):]
                break
        out.append(word)
    exe = {"mllm-cxr": [sys.executable, "-m", "mllm_cxr.cli"], "accelerate": [str(BIN / "accelerate")],
           "python": [sys.executable], "sbatch": ["sbatch"]}.get(out[0])
    if exe is None and out[0].startswith("scripts/"):  # the repository's scripts, run as written
        exe = [out[0]]
    argv = [*exe, *out[1:], *case.extra]
    if out[:2] in (["accelerate", "launch"], ["mllm-cxr", "launch"]):  # a recipe run: on the tiny model
        argv += [RECIPE_MODEL_FLAG, str(w["tiny"])]
    return ["env", *env, *argv] if env else argv


def run_case(case: Case, w: dict, timeout: int = 900, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    if case.run in ("make", "localhost"):
        argv = ["make", "-C", str(REPO), *shlex.split(case.command)[1:], f"RUNS={w['runs']}", f"BIN={BIN}", *case.extra]
    else:
        argv = argv_for(case, w)
    t0 = time.perf_counter()
    proc = subprocess.run(argv, cwd=w["ws"], env=dict(_env(), **(env or {})), capture_output=True, text=True,
                          timeout=timeout)
    print(f"[{case.id}] {time.perf_counter() - t0:.0f} s: {shlex.join(argv)}")
    assert proc.returncode == 0, f"{case.id}: `{case.command}` failed ({proc.returncode}):\n{proc.stderr[-4000:]}"
    assert "Traceback (most recent call last)" not in proc.stderr, f"{case.id}:\n{proc.stderr[-4000:]}"
    return proc


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# ------------------------------------------------------------------------------------------------
# The walk-through
# ------------------------------------------------------------------------------------------------
REAL_USE = [c for c in CASES if c.run == "command" and not c.vllm and c.id != "bench-one"] + \
    [BY_ID["make-dpo"], BY_ID["make-grpo"]]


@pytest.mark.slow
def test_real_use_sequence_runs_as_written(workspace, demo_run):
    """prepare -> SFT -> pairs -> DPO -> GRPO -> generate -> eval -> score -> export, README order, no
    --data-root anywhere: each stage reads what the one before wrote."""
    ws = workspace["ws"]
    for name in ("demo-base", "demo-sft", "phantom", "pairs/chexalign.jsonl"):  # `make dpo && make grpo` after
        (workspace["runs"] / name).parent.mkdir(exist_ok=True)                # `make demo`, as the README has it
        (workspace["runs"] / name).symlink_to(demo_run["runs"] / name)
    order = [c.id for c in CASES]
    for case in sorted(REAL_USE, key=lambda c: order.index(c.id)):
        run_case(case, workspace)
        if case.id == "prepare-mimic":  # the cache, not the records' folder, is where the images are
            info = json.loads((ws / "data/mimic/studies.summary.json").read_text())
            assert Path(info["data_root"]) == (ws / "data/mimic/images").resolve()
        if case.id == "pairs-prior":
            pairs = _rows(ws / "data/pairs/prior.jsonl")
            assert pairs and all("unchanged compared to the prior" in p["rejected"] for p in pairs)
    for out in ("runs/qwen2.5-vl-3b-sft", "runs/qwen2.5-vl-7b-sft", "runs/qwen2.5-vl-7b-qlora-sft",
                "runs/qwen2.5-vl-3b-dpo", "runs/qwen2.5-vl-3b-grpo", "runs/qwen2.5-vl-3b-editgrpo", "export/cxr"):
        assert (ws / out / "adapter_config.json").is_file(), out
    rows = _rows(ws / "runs/pred/grpo.jsonl")
    assert rows and all(Path(p).is_relative_to((ws / "data/mimic/images").resolve()) for r in rows for p in r["images"])
    metrics = json.loads((ws / "runs/eval/grpo/metrics.json").read_text())
    assert metrics["metrics"]
    score = json.loads((ws / "runs/eval/grpo/score.json").read_text())
    sections = json.loads((ws / "runs/pred/grpo.jsonl.meta.json").read_text())["prompt"]["prompt"]["sections"]
    assert score["ref_field"] == "+".join(sections) and set(score["metrics"]) == {"chexpert_f1", "bleu", "rouge_l"}
    assert (ws / "labels.csv").read_text().count("\n") == 4
    card = (ws / "export/cxr/README.md").read_text()
    assert "Not evaluated at export time" not in card and "## Evaluation" in card  # the table from --metrics
    for name in ("demo-dpo", "demo-grpo"):
        assert (workspace["runs"] / name / "adapter_config.json").is_file(), name
        assert (workspace["runs"] / name / "curves.png").is_file(), name
    # the commands of the report and hallucination sections, on the walk-through's predictions
    for case in [c for c in CASES if c.run == "late"]:
        run_case(case, workspace)
    page = (ws / "runs/eval/grpo/report.html").read_text()
    shareable = (ws / "runs/eval/grpo-shareable/report.html").read_text()
    assert "<html" in page and all(r["study_id"] in page for r in rows)
    assert "Shareable version (--no-text)" in shareable and "Shareable version" not in page
    assert not any(r["study_id"] in shareable for r in rows) and str(ws) not in shareable
    groups = json.loads((ws / "runs/eval/grpo/metrics.json").read_text())["metrics"]
    assert any("measurement" in k for k in groups) and any("prior" in k for k in groups), list(groups)


@pytest.mark.slow
def test_demo_runs(demo_run):
    """`make demo` as written: every stage runs, the table and the curves are written and named."""
    assert list(demo_run["results"]["results"]) == ["base", "sft", "control", "grpo", "editgrpo", "dpo", "chexalign",
                                                    "export"]
    assert "demo finished in" in demo_run["stdout"] and str(demo_run["runs"] / "demo_table.md") in demo_run["stdout"]
    assert demo_run["table"].count("\n") == 2 + 8


@pytest.mark.slow
def test_benchmark_commands(workspace):
    run_case(BY_ID["bench-one"], workspace)
    text = (workspace["ws"] / "runs/bench.md").read_text()
    assert "<!-- bench:bench_prepare:start -->" in text and "## Data preparation" in text


@pytest.mark.slow
def test_gpu_benchmarks(workspace):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("`python bench/run_all.py --gpu` needs a CUDA device")
    proc = subprocess.run(["bash", str(REPO / "bench/gpu_run.sh")], cwd=REPO, timeout=3600, capture_output=True,
                          text=True, env=dict(_env(), OUT=str(workspace["ws"] / "gpu-out")))
    assert proc.returncode == 0 and (workspace["ws"] / "gpu-out/gpu_benchmarks.md").is_file(), proc.stdout


def test_task_commands_run_as_written(workspace):
    """The grounding section: `generate --task phrase_grounding` on the phantom studies of stage 1, then
    `eval --metrics boxes --html` on its rows."""
    ws = workspace["ws"]
    if not (ws / "data/phantom/studies.jsonl").is_file():  # stage 1's phantom records, unless already written
        run_case(BY_ID["prepare-phantom"], workspace)
    for case in [c for c in CASES if c.run == "tasks"]:
        run_case(case, workspace)
    rows = _rows(ws / "runs/pred/grounding.jsonl")
    assert rows and all(r["task"] == "phrase_grounding" and r["box_family"] == "qwen2_5_vl" and r["boxes"]
                        for r in rows)
    metrics = json.loads((ws / "runs/eval/grounding/metrics.json").read_text())["metrics"]
    assert metrics["box_mean_iou"]["ci"] is not None and "box_parse_failure_rate" in metrics
    page = (ws / "runs/eval/grounding/report.html").read_text()
    assert "id=bx-ref" in page and all(r["study_id"] in page for r in rows)
    for task, key in (("grounded_report", "grounded_"), ("detection", "box_map_0.5"), ("vqa", "answer_accuracy")):
        rows = _rows(ws / f"runs/pred/{task}.jsonl")
        assert rows and {r["task"] for r in rows} == {task}, task
        metrics = json.loads((ws / f"runs/eval/{task}/metrics.json").read_text())["metrics"]
        assert any(k.startswith(key) for k in metrics), (task, list(metrics))
    for run in ("runs/demo-sft-tasks", "runs/demo-grpo-tasks"):  # the mixture's SFT, then GRPO from its adapter
        assert (ws / run / "adapter_model.safetensors").is_file(), run
    assert json.loads((ws / "runs/demo-grpo-tasks/mllm_cxr_config.json").read_text())["DataArguments"]["tasks"], "no mixture"


# ------------------------------------------------------------------------------------------------
# Scaling out
# ------------------------------------------------------------------------------------------------
def _stand_ins(folder: Path) -> dict[str, str]:
    """``ssh``, ``sbatch``, ``scontrol`` and ``srun`` that run here what they would start on a cluster node
    (``srun`` with ``DRY_RUN=1``: each node's launcher prints its ``accelerate launch``), and ``python`` as
    this interpreter; the environment that puts them first and leaves out this shell's own SLURM/launch
    variables."""
    scripts = {
        "ssh": 'while [ "$1" = "-o" ]; do shift 2; done\nhost=$1; shift\necho "ssh $host" >&2\nexec bash -c "$*"',
        "sbatch": 'n=1\nwhile [[ $1 == --* ]]; do case $1 in --nodes) n=$2; shift;; --nodes=*) n=${1#*=};; esac; '
                  'shift; done\nscript=$1; shift\n'
                  'SLURM_NNODES=$n SLURM_JOB_NODELIST="node[01-$(printf %02d "$n")]" SLURM_SUBMIT_DIR=$PWD '
                  'exec bash "$script" "$@"',
        "scontrol": 'for i in $(seq "$SLURM_NNODES"); do printf "node%02d\\n" "$i"; done',
        "srun": 'n=1\nwhile [[ $1 == --* ]]; do case $1 in --ntasks=*) n=${1#*=};; esac; shift; done\n'
                'echo "srun $n task(s)" >&2\nfor ((i = 0; i < n; i++)); do SLURM_PROCID=$i DRY_RUN=1 "$@" || exit; done',
        "python": f'exec "{sys.executable}" "$@"',
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, body in scripts.items():
        (folder / name).write_text(f"#!/bin/bash\n{body}\n")
        (folder / name).chmod(0o755)
    env = {k: v for k, v in _env().items() if not k.startswith(("SLURM_", "VLLM_", "NNODES", "NODE_RANK",
                                                                   "MASTER_", "HOSTS", "DRY_RUN", "ACCELERATE"))}
    return dict(env, PATH=f"{folder}:{env['PATH']}")


def _launches(stderr: str) -> dict[int, list[str]]:
    """``{node rank: words of its accelerate launch}`` from the launchers' ``node R/N: ...`` lines."""
    out = {}
    for line in stderr.splitlines():
        m = re.match(r"node (\d+)/(\d+): (.*)", line)
        if m:
            out[int(m[1])] = shlex.split(m[3])
    return out


def _flag(words: list[str], name: str) -> str:
    return words[words.index(name) + 1]


def test_scaling_out_cluster_commands(tmp_path):
    """The cluster commands, without a cluster: ``DRY_RUN=1``, the stand-ins run the ssh and srun fan-outs
    here, and every node's ``accelerate launch`` carries its machine count, rank and the main address."""
    ws = tmp_path / "ws"
    ws.mkdir()
    for name in ("recipes", "scripts"):
        (ws / name).symlink_to(REPO / name)
    w, env = {"ws": ws, "tiny": tmp_path / "no-model", "paths": {}}, _stand_ins(tmp_path / "bin")
    expect = {  # case: (nodes, gpus per node, main address, ranks printed, accelerate config, recipe)
        "launch-node0": (2, 8, "gpu01", [0], "multinode_zero2.yaml", "recipes/sft.py"),
        "launch-node1": (2, 8, "gpu01", [1], "multinode_zero2.yaml", "recipes/sft.py"),
        "launch-ssh": (2, 8, "gpu01", [0, 1], "multinode_zero3.yaml", "recipes/sft.py"),
        "sbatch": (4, 8, "node01", [0, 1, 2, 3], "multinode_zero2.yaml", "recipes/sft.py"),
        "launch-grpo-server": (2, 8, "gpu01", [0, 1], "multinode_zero2.yaml", "recipes/grpo.py"),
    }
    cases = [c for c in CASES if c.run == "cluster"]
    assert [c.id for c in cases] == list(expect)
    for case in cases:
        nodes, gpus, main, ranks, accel_cfg, recipe = expect[case.id]
        proc = run_case(case, w, timeout=120, env=env)
        launches = _launches(proc.stderr)
        assert sorted(launches) == ranks, f"{case.id}:\n{proc.stderr[-3000:]}"
        for rank, words in launches.items():
            assert words[:2] == ["accelerate", "launch"] and _flag(words, "--config_file").endswith(accel_cfg)
            assert _flag(words, "--num_machines") == str(nodes) and _flag(words, "--machine_rank") == str(rank)
            assert _flag(words, "--main_process_ip") == main and _flag(words, "--num_processes") == str(nodes * gpus)
            assert words[words.index(recipe) + 1:words.index(recipe) + 3] == ["--config", shlex.split(case.command)[-1]]
        if case.id.startswith("launch-") and "HOSTS" in case.command:
            assert [ln for ln in proc.stderr.splitlines() if ln.startswith("ssh ")] == ["ssh gpu01", "ssh gpu02"]
        if case.id == "sbatch":  # the batch script itself parses, and starts the launch script on every node
            assert subprocess.run(["bash", "-n", str(REPO / "scripts/multinode_slurm.sbatch")]).returncode == 0
            assert "srun 4 task(s)" in proc.stderr
        if case.id == "launch-grpo-server":  # the server from the recipe config, the trainers pointed at it
            (server,) = [ln for ln in proc.stderr.splitlines() if ln.startswith("server gpu03: ")]
            assert "trl vllm-serve --model Qwen/Qwen2.5-VL-7B-Instruct" in " ".join(shlex.split(server.split(": ", 1)[1]))
            assert "--tensor_parallel_size 4" in server and "max_pixels" in server
            for words in launches.values():
                assert _flag(words, "--vllm_mode") == "server" and _flag(words, "--vllm_server_host") == "gpu03"


@pytest.mark.slow
def test_scaling_out_localhost_two_node(workspace, phantom_dir, tmp_path):
    """`make sft-2node` as written: two launchers on 127.0.0.1 (a free port), one CPU process each, ZeRO-2
    over gloo, the tiny model on phantom studies; both finish and the adapter is saved once."""
    from tests.builders.processes import free_port

    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "tiny-model").symlink_to(workspace["tiny"])  # what `make tiny phantom` would build first
    (runs / "phantom").symlink_to(phantom_dir)
    (case,) = [c for c in CASES if c.run == "localhost"]
    case = Case(case.id, case.command, extra=[*case.extra, f"MASTER_PORT={free_port()}"], run=case.run)
    proc = run_case(case, dict(workspace, runs=runs), timeout=900)
    launches = _launches(proc.stderr)
    assert sorted(launches) == [0, 1], proc.stderr[-3000:]
    for rank, words in launches.items():
        assert _flag(words, "--num_machines") == "2" and _flag(words, "--machine_rank") == str(rank)
        assert _flag(words, "--main_process_ip") == "127.0.0.1" and _flag(words, "--num_processes") == "2"
        assert _flag(words, "--config_file").endswith("multinode_zero2_cpu.yaml")
    out = runs / "tiny-sft-2node"
    assert "done: 2 steps" in proc.stdout + proc.stderr and "2 process(es)" in proc.stdout + proc.stderr
    assert "sft-2node: both nodes finished" in proc.stdout
    assert (out / "adapter_model.safetensors").is_file() and not (out / ".final.partial").exists()


@pytest.mark.slow
def test_scaling_out_sharded_generation(workspace):
    """`generate --shard 0/2`, `--shard 1/2` and `merge-predictions` on the tiny model: the merged file is the
    two shards' rows in order, with the unsharded run's side file."""
    ws = workspace["ws"]
    for cid, output in {"prepare-mimic": "data/mimic/studies.jsonl",
                        "sft-3b": "runs/qwen2.5-vl-3b-sft/adapter_config.json"}.items():
        if not (ws / output).exists():  # the stages before, unless this session already ran them
            run_case(BY_ID[cid], workspace)
    for case in [c for c in CASES if c.run == "shard"]:
        run_case(case, workspace)
    shards = [_rows(ws / f"runs/pred/sft.{i}.jsonl") for i in range(2)]
    merged = _rows(ws / "runs/pred/sft-merged.jsonl")
    assert [len(s) for s in shards] == [2, 2] and merged == shards[0] + shards[1]
    meta = json.loads((ws / "runs/pred/sft-merged.jsonl.meta.json").read_text())
    assert "shard" not in meta and len(meta["merged_from"]) == 2


def test_scaling_table_agrees_with_docs():
    """The README's topology table says what docs/scaling.md's says: engine, vLLM TP and memory per model."""
    def table(text: str, heading: str) -> list[list[str]]:
        rows = text.split(heading, 1)[1].split("\n\n| ", 1)[1].split("\n\n", 1)[0].splitlines()
        return [[c.strip() for c in ("| " + r if i == 0 else r).strip("|").split("|")] for i, r in enumerate(rows)][2:]

    readme = table(README.read_text(encoding="utf-8"), "## Scaling out")
    docs = table((REPO / "docs/scaling.md").read_text(encoding="utf-8"), "### Topology")
    assert len(readme) == len(docs) == 5
    for r, d in zip(readme, docs):
        model, nodes, zero, server, memory, server_memory = r
        assert d[0].startswith(model.split(",")[0]) and ("full" in model) == ("full" in d[0]), (r, d)
        assert nodes.split(" (")[0] in d[1] and ("offload" in nodes) == ("offload" in d[1]), (r, d)
        assert (zero == "none") == ("ZeRO" not in d[2]) and (zero == "none" or f"ZeRO-{zero[0]}" in d[2]), (r, d)
        assert server.split(", ")[-1] in d[5], (r, d)  # "TP n"
        assert memory.lstrip("~") in d[4], (r, d)  # "~22 GB" in "~22 GB (16.6 weights, ...)"
        assert server_memory == "as above" == d[6] or server_memory.split(" weights")[0] in d[6], (r, d)


# ------------------------------------------------------------------------------------------------
# The commands that need vLLM (pytest -m vllm, in the vLLM environment)
# ------------------------------------------------------------------------------------------------
def _wait_for(url: str, proc: subprocess.Popen, seconds: float) -> None:
    import urllib.request

    t_end = time.time() + seconds
    while time.time() < t_end:
        if proc.poll() is not None:
            raise AssertionError(f"`mllm-cxr serve` exited with {proc.returncode}:\n{proc.stderr.read()[-4000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(2)
    raise AssertionError(f"{url} did not answer within {seconds:.0f} s")


@pytest.mark.slow
@pytest.mark.vllm
def test_vllm_commands_run_as_written(workspace):
    """export --verify-backend vllm, generate --backend vllm, serve + generate --backend openai, GRPO with
    vLLM rollouts: on the outputs of the stages before them."""
    pytest.importorskip("vllm", reason="the vLLM commands run in the vLLM environment (pytest -m vllm)")
    ws = workspace["ws"]
    needed = {"prepare-mimic": "data/mimic/studies.jsonl", "sft-3b": "runs/qwen2.5-vl-3b-sft/adapter_config.json",
              "grpo-3b": "runs/qwen2.5-vl-3b-grpo/adapter_config.json", "generate-sft": "runs/pred/sft.jsonl",
              "generate-grpo": "runs/pred/grpo.jsonl", "eval": "runs/eval/grpo/metrics.json",
              "export": "export/cxr/adapter_config.json"}
    for cid, output in needed.items():  # the stages before, unless this session already ran them
        if not (ws / output).exists():
            run_case(BY_ID[cid], workspace)
    for case in (BY_ID["export-verify-vllm"], BY_ID["generate-vllm"], *VLLM_AS_WRITTEN):
        run_case(case, workspace, timeout=1800)
    hf = {r["study_id"]: r["prediction"] for r in _rows(ws / "runs/pred/grpo.jsonl")}
    served_by_vllm = {r["study_id"]: r["prediction"] for r in _rows(ws / "runs/pred/vllm.jsonl")}
    assert set(served_by_vllm) == set(hf)
    serve = subprocess.Popen(argv_for(BY_ID["serve"], workspace), cwd=ws, env=_env(), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _wait_for("http://localhost:8000/health", serve, 600)
        run_case(BY_ID["generate-openai"], workspace)
    finally:
        os.killpg(serve.pid, signal.SIGTERM)  # the serve process group this test started
        try:
            serve.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(serve.pid, signal.SIGKILL)
    served = {r["study_id"]: r["prediction"] for r in _rows(ws / "runs/pred/served.jsonl")}
    assert served == served_by_vllm  # greedy: the server and offline vLLM write the same reports


# ------------------------------------------------------------------------------------------------
# Fast checks of what the walk-through relies on
# ------------------------------------------------------------------------------------------------
def test_configs_chain_stage_outputs_to_inputs():
    """The 3B configs read what the README's earlier commands write."""
    import yaml

    cfg = {p.stem: yaml.safe_load(p.read_text()) for p in (REPO / "recipes/configs/qwen2.5-vl-3b").glob("*.yaml")}
    outs = [c for _, c in readme_commands()]
    assert any("--out data/pairs/prior.jsonl" in c for c in outs) and cfg["dpo"]["pairs"] == "data/pairs/prior.jsonl"
    for stage in ("dpo", "grpo", "editgrpo", "grpo_vllm_server"):
        assert cfg[stage]["adapter_path"] == cfg["sft"]["output_dir"], stage
        assert cfg[stage]["studies"] == "data/mimic/studies.jsonl", stage
    assert any(f"--adapter {cfg['grpo']['output_dir']}" in c for c in outs)
    for path in (REPO / "recipes/configs").glob("*/*.yaml"):
        assert "gradient_checkpointing" not in yaml.safe_load(path.read_text()), path  # deprecated in transformers 5


def test_score_uses_the_sections_the_predictions_were_generated_for(tmp_path):
    """IMPRESSION-only predictions scored against study records: the impression, not the findings."""
    from data_prep.schema import StudyRecord, write_records
    from evaluation.score import score_files

    recs = [StudyRecord(study_id=f"s{i}", patient_id=f"p{i}", dataset="x", split="test",
                        findings=f"The lungs are clear without focal consolidation number {i}.",
                        impression=f"Moderate right pleural effusion and cardiomegaly {i}.") for i in range(4)]
    ref = tmp_path / "studies.jsonl"
    write_records(recs, ref)
    pred = tmp_path / "pred.jsonl"
    pred.write_text("".join(json.dumps({"study_id": r.study_id, "prediction": r.impression}) + "\n" for r in recs))
    (tmp_path / "pred.jsonl.meta.json").write_text(json.dumps({"prompt": {"prompt": {"sections": ["impression"]}}}))
    s, _ = score_files(str(pred), str(ref), [{"name": "bleu"}], progress=False)
    assert s["ref_field"] == "impression" and s["metrics"]["bleu"]["mean"] > 0.9
    s, _ = score_files(str(pred), str(ref), [{"name": "bleu"}], ref_field="findings", progress=False)
    assert s["metrics"]["bleu"]["mean"] < 0.1  # what the unmatched default used to score


def test_pixel_budget_is_checked_where_it_is_parsed(tmp_path):
    from data_prep.errors import DataPrepError
    from mllm_cxr.cli import main
    from mllm_cxr.modeling import ModelArguments
    from mllm_cxr.run_config import resolve_prompt

    with pytest.raises(DataPrepError, match=r"min_pixels \(5000\) is larger than max_pixels \(4000\)"):
        ModelArguments(min_pixels=5000, max_pixels=4000)
    with pytest.raises(DataPrepError, match="max_pixels must be at least 784"):
        ModelArguments(max_pixels=100)
    with pytest.raises(DataPrepError, match="min_pixels"):
        resolve_prompt(None, None, min_pixels=5000, max_pixels=4000)
    assert main(["prepare", "phantom", "--n", "4", "--out", str(tmp_path / "p.jsonl"), "--min-pixels", "9000",
                 "--max-pixels", "4000"]) == 2
    assert not (tmp_path / "p.jsonl").exists()


def test_library_warnings_appear_once_per_process(tmp_path, tiny_model):
    """The per-step deprecation warnings (gradient checkpointing toggled around each GRPO rollout, a pixel
    budget passed to every processor call) print once per process, even after `catch_warnings` blocks."""
    script = f"""
import warnings
from PIL import Image
from mllm_cxr.modeling import ModelArguments, load_model, load_processor
args = ModelArguments(model_name_or_path={str(tiny_model)!r}, min_pixels=3136, max_pixels=12544, dtype="float32")
processor = load_processor(args)
model, _ = load_model(args, is_trainable=True, gradient_checkpointing=True)
model.gradient_checkpointing_enable()
for _ in range(3):
    with warnings.catch_warnings():  # what the trainer does around each step
        pass
    if model.is_gradient_checkpointing:
        model.gradient_checkpointing_disable()
        model.gradient_checkpointing_enable()
    processor.image_processor(images=[Image.new("RGB", (64, 48))], return_tensors="pt")
print("ok")
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=_env(), timeout=300)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-3000:]
    assert proc.stderr.count("`is_gradient_checkpointing` is deprecated") == 1, proc.stderr[-3000:]
    assert proc.stderr.count("`gradient_checkpointing_enable` is deprecated") <= 1
    assert "Passing `min_pixels` and `max_pixels`" not in proc.stderr  # the budget lives in `size` now
