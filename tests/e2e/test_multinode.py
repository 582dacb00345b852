"""Multi-node training, proved on this machine: two "nodes" on 127.0.0.1.

Each node is one ``scripts/multinode_launch.sh`` (one ``accelerate launch`` with ``--num_machines 2
--machine_rank i --main_process_ip 127.0.0.1``, DeepSpeed ZeRO-2 through torchrun's static rendezvous,
``deepspeed_multinode_launcher: standard``) running one CPU process over gloo
(``recipes/accelerate/multinode_zero2_cpu.yaml``). The reference is one node running two processes with
the same accelerate config and the same seed.

* SFT and GRPO (``model.generate`` rollouts): the logged loss curve (and GRPO's reward curve) of the
  two-node run equals the one-node run's within ``REL_TOL`` (measured: bit-identical), and the saved
  LoRA adapters agree within ``ATOL``.
* A killed node (its launcher and its worker, SIGKILL) makes the other node exit non-zero with gloo's
  "Connection reset/closed by peer" within ``PEER_LOSS_S`` seconds (measured: 4-6 s) instead of
  hanging. A node that hangs without closing its sockets is caught by ``ddp_timeout`` instead (TRL's
  default 1800 s; not tested).
* A restart of both nodes with ``resume_from_checkpoint: auto`` continues from the last checkpoint and
  ends on the uninterrupted run's adapter.

What only a GPU cluster can show: NCCL across real hosts, GRPO's weight sync to ``trl vllm-serve``
(NCCL, server mode), FSDP2, and ZeRO-3 offload at scale (the configs are marked "GPU cluster only").
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.builders.processes import free_port
from tests.builders.repo import REPO

LAUNCH = REPO / "scripts" / "multinode_launch.sh"
ACCEL_CFG = REPO / "recipes" / "accelerate" / "multinode_zero2_cpu.yaml"
REL_TOL, ATOL = 1e-5, 1e-6
PEER_LOSS_S = 60
TIMEOUT = 900

pytestmark = pytest.mark.slow


def _start(recipe: str, args: list[str], *, nnodes: int, rank: int, procs: int, port: int, log: Path):
    env = dict(os.environ, PYTHONPATH=str(REPO), TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1",
               NNODES=str(nnodes), NODE_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
               GPUS_PER_NODE=str(procs), ACCELERATE_CONFIG=str(ACCEL_CFG),
               ACCELERATE=str(Path(sys.executable).parent / "accelerate"))
    with open(log, "w") as fh:
        return subprocess.Popen(["bash", str(LAUNCH), str(REPO / "recipes" / recipe), *args], stdout=fh,
                                stderr=subprocess.STDOUT, env=env, cwd=log.parent, start_new_session=True)


def _kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL a launcher and every process under it (torchrun starts its workers in their own sessions)."""
    import psutil

    try:
        parent = psutil.Process(proc.pid)
        family = parent.children(recursive=True) + [parent]
    except psutil.NoSuchProcess:
        return
    for p in family:
        with __import__("contextlib").suppress(psutil.NoSuchProcess):
            p.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


def run_nodes(recipe: str, args: list[str], out: Path, *, nnodes: int) -> list[str]:
    """``nnodes`` launchers (one process each), or one launcher with two processes when ``nnodes`` is 1."""
    port = free_port()
    logs = [out.parent / f"{out.name}.node{r}.log" for r in range(nnodes)]
    procs = [_start(recipe, [*args, "--output_dir", str(out)], nnodes=nnodes, rank=r, procs=2 // nnodes, port=port,
                    log=logs[r]) for r in range(nnodes)]
    try:
        for p in procs:
            p.wait(timeout=TIMEOUT)
    finally:
        for p in procs:
            if p.poll() is None:
                _kill_tree(p)
    texts = [log.read_text() for log in logs]
    for p, text in zip(procs, texts):
        assert p.returncode == 0, text[-4000:]
    return texts


def history(out: Path, key: str) -> list[float]:
    return [h[key] for h in json.loads((out / "trainer_state.json").read_text())["log_history"] if key in h]


def assert_same_curve(a: list[float], b: list[float]) -> None:
    assert len(a) == len(b) and a, (a, b)
    for x, y in zip(a, b):
        assert abs(x - y) <= REL_TOL * max(1.0, abs(x)), (a, b)


def assert_same_adapter(a: Path, b: Path) -> None:
    import torch
    from safetensors.torch import load_file

    wa, wb = load_file(str(a / "adapter_model.safetensors")), load_file(str(b / "adapter_model.safetensors"))
    assert wa.keys() == wb.keys() and wa
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=ATOL)


def sft_args(phantom: Path, model: Path, *extra: str) -> list[str]:
    return ["--config", str(REPO / "recipes" / "configs" / "tiny" / "sft.yaml"), "--studies",
            str(phantom / "studies.jsonl"), "--model_name_or_path", str(model), "--ddp_backend", "gloo",
            "--per_device_train_batch_size", "2", "--logging_steps", "1", "--learning_rate", "0.001", *extra]


SFT_STEPS = ["--max_steps", "4", "--save_strategy", "steps", "--save_steps", "2", "--lr_scheduler_type", "linear",
             "--warmup_steps", "0"]


@pytest.fixture(scope="module")
def sft_runs(tmp_path_factory, phantom_dir, tiny_model_dir):
    """SFT, 4 steps with a checkpoint at step 2: one node x 2 processes, and two nodes x 1 process."""
    base = tmp_path_factory.mktemp("multinode-sft")
    t = time.perf_counter()
    run_nodes("sft.py", sft_args(phantom_dir, tiny_model_dir, *SFT_STEPS), base / "one", nnodes=1)
    t1 = time.perf_counter()
    logs = run_nodes("sft.py", sft_args(phantom_dir, tiny_model_dir, *SFT_STEPS), base / "two", nnodes=2)
    print(f"SFT 4 steps: one node x 2 processes {t1 - t:.0f} s, two nodes x 1 process {time.perf_counter() - t1:.0f} s")
    return base, logs


def test_two_node_sft_matches_one_node(sft_runs):
    base, logs = sft_runs
    assert "done: 4 steps" in logs[0] and "2 process(es)" in logs[0]
    assert "--num_machines 2" in logs[1] and "--machine_rank 1" in logs[1]
    assert_same_curve(history(base / "one", "loss"), history(base / "two", "loss"))
    assert len(history(base / "two", "loss")) == 4
    assert_same_adapter(base / "one", base / "two")


def test_two_node_resume_auto_continues_from_last_checkpoint(sft_runs, phantom_dir, tiny_model_dir):
    """Both nodes restarted after a crash past step 2: ``resume_from_checkpoint auto`` takes checkpoint-2
    and steps 3-4 end on the uninterrupted run's adapter."""
    base, _ = sft_runs
    out = base / "resumed"
    out.mkdir()
    shutil.copytree(base / "two" / "checkpoint-2", out / "checkpoint-2")  # what survived the crash
    logs = run_nodes("sft.py", sft_args(phantom_dir, tiny_model_dir, *SFT_STEPS, "--resume_from_checkpoint", "auto"),
                     out, nnodes=2)
    assert all("resuming from" in text and "checkpoint-2" in text for text in logs)
    assert logs[0].count("{'loss'") == 2  # only steps 3 and 4 ran
    # the saved history is the checkpoint's steps 1-2 followed by the new 3-4: the uninterrupted run's curve
    assert_same_curve(history(out, "loss"), history(base / "two", "loss"))
    assert_same_adapter(base / "two", out)


def test_killed_node_stops_the_other(tmp_path, phantom_dir, tiny_model_dir):
    port = free_port()
    out = tmp_path / "killed"
    args = sft_args(phantom_dir, tiny_model_dir, "--max_steps", "1000", "--output_dir", str(out))
    logs = [tmp_path / f"node{r}.log" for r in range(2)]
    procs = [_start("sft.py", args, nnodes=2, rank=r, procs=1, port=port, log=logs[r]) for r in range(2)]
    try:
        deadline = time.monotonic() + TIMEOUT
        while "'loss'" not in logs[0].read_text():  # both nodes are in the training loop
            assert procs[0].poll() is None and time.monotonic() < deadline, logs[0].read_text()[-3000:]
            time.sleep(0.5)
        _kill_tree(procs[1])
        t = time.monotonic()
        rc = procs[0].wait(timeout=PEER_LOSS_S)
        waited = time.monotonic() - t
    finally:
        for p in procs:
            if p.poll() is None:
                _kill_tree(p)
    text = logs[0].read_text()
    print(f"node 0 exited {waited:.1f} s after node 1 was killed (rc {rc})")
    assert rc != 0
    assert "Connection reset by peer" in text or "Connection closed by peer" in text, text[-3000:]
    assert "done:" not in text


def _grpo_config(tmp: Path) -> Path:
    cfg = yaml.safe_load((REPO / "recipes" / "configs" / "tiny" / "grpo.yaml").read_text())
    cfg.pop("adapter_path")  # a fresh LoRA: the test needs no SFT run first
    cfg.update(use_peft=True, lora_r=8, lora_alpha=16, max_train_studies=16, seed=0,
               reward_spec=str(REPO / cfg["reward_spec"]))
    path = tmp / "grpo.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_two_node_grpo_matches_one_node(tmp_path, phantom_dir, tiny_model_dir):
    """GRPO with ``model.generate`` rollouts: 2 prompts x 4 rollouts per step over 2 ranks, 3 steps."""
    args = ["--config", str(_grpo_config(tmp_path)), "--studies", str(phantom_dir / "studies.jsonl"),
            "--model_name_or_path", str(tiny_model_dir), "--ddp_backend", "gloo", "--max_steps", "3",
            "--per_device_train_batch_size", "4", "--num_generations", "4", "--max_completion_length", "16",
            "--learning_rate", "0.002", "--logging_steps", "1"]
    t = time.perf_counter()
    run_nodes("grpo.py", args, tmp_path / "one", nnodes=1)
    t1 = time.perf_counter()
    run_nodes("grpo.py", args, tmp_path / "two", nnodes=2)
    print(f"GRPO 3 steps: one node x 2 processes {t1 - t:.0f} s, two nodes x 1 process {time.perf_counter() - t1:.0f} s")
    for key in ("loss", "reward"):
        assert_same_curve(history(tmp_path / "one", key), history(tmp_path / "two", key))
    assert len(history(tmp_path / "two", "reward")) == 3
    assert_same_adapter(tmp_path / "one", tmp_path / "two")
