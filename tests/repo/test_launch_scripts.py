"""The launch scripts' commands, without a cluster: ``DRY_RUN=1`` prints what would run.

``scripts/multinode_launch.sh`` itself runs for real in tests/e2e/test_multinode.py (two nodes on 127.0.0.1);
here: its flags for a GPU node and for GRPO's server mode, and ``scripts/multinode_slurm.sbatch``'s split of
a SLURM allocation into training nodes and a ``trl vllm-serve`` node (``scontrol`` faked)."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

from tests.builders.repo import REPO

CFG_7B = "recipes/configs/qwen2.5-vl-7b/grpo_server.yaml"


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    fake = tmp_path / "bin"
    fake.mkdir(exist_ok=True)
    (fake / "scontrol").write_text("#!/bin/sh\nprintf 'gpu01\\ngpu02\\ngpu03\\n'\n")
    (fake / "scontrol").chmod(0o755)
    (fake / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')  # the test's interpreter
    (fake / "python").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "VLLM_", "NNODES", "NODE_RANK"))}
    env.update(PATH=f"{fake}:{env['PATH']}", PYTHONPATH=str(REPO), DRY_RUN="1", SLURM_JOB_NODELIST="gpu[01-03]",
               SLURM_SUBMIT_DIR=str(REPO), **extra)
    return env


def test_launch_script_flags(tmp_path):
    env = _env(tmp_path, NNODES="4", NODE_RANK="3", MASTER_ADDR="gpu01", MASTER_PORT="29600", GPUS_PER_NODE="8",
               VLLM_SERVER_HOST="gpu05")
    proc = subprocess.run(["bash", "scripts/multinode_launch.sh", "recipes/grpo.py", "--config", CFG_7B], cwd=REPO,
                          env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    line = proc.stderr.strip()
    assert line.startswith("node 3/4: accelerate launch --config_file ")
    assert "multinode_zero2.yaml --num_machines 4 --num_processes 32 --machine_rank 3 --main_process_ip gpu01 " \
           "--main_process_port 29600 recipes/grpo.py --config " + CFG_7B in line
    assert line.rstrip().endswith("--use_vllm true --vllm_mode server --vllm_server_host gpu05 --vllm_server_port 8000")


def test_slurm_script_reserves_the_last_node_for_the_server(tmp_path):
    env = _env(tmp_path, VLLM_NODES="1", VLLM_TP="4", GPUS_PER_NODE="8")
    proc = subprocess.run(["bash", "scripts/multinode_slurm.sbatch", "recipes/grpo.py", "--config", CFG_7B], cwd=REPO,
                          env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    server, trainers = [" ".join(shlex.split(ln)) for ln in proc.stdout.splitlines() if ln.startswith("srun")]
    if "vllm-serve" not in server:
        server, trainers = trainers, server
    assert "--nodelist=gpu03" in server and "trl vllm-serve --model Qwen/Qwen2.5-VL-7B-Instruct" in server
    assert "--tensor_parallel_size 4" in server and "min_pixels" in server and "401408" in server
    assert "--nodes=2" in trainers and "--nodelist=gpu01,gpu02" in trainers and "--kill-on-bad-exit=1" in trainers
    assert "multinode_launch.sh" in trainers and CFG_7B in trainers


def test_slurm_script_plain_training_uses_every_node(tmp_path):
    proc = subprocess.run(["bash", "scripts/multinode_slurm.sbatch", "recipes/sft.py", "--config", "x.yaml"], cwd=REPO,
                          env=_env(tmp_path), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    (line,) = [" ".join(shlex.split(ln)) for ln in proc.stdout.splitlines() if ln.startswith("srun")]
    assert "--nodes=3" in line and "--nodelist=gpu01,gpu02,gpu03" in line and "vllm" not in line


def test_ssh_fan_out_with_a_server_host(tmp_path):
    """``HOSTS=... VLLM_HOST=...``: the server command from the config, then one launcher per host over ssh
    (``ssh`` faked: it runs the remote command here), ranks in host order, the trainers pointed at the server."""
    env = _env(tmp_path, HOSTS="gpu01 gpu02", VLLM_HOST="gpu09", VLLM_TP="2", GPUS_PER_NODE="8",
               ACCELERATE="accelerate")
    ssh = tmp_path / "bin" / "ssh"
    ssh.write_text('#!/bin/bash\nwhile [ "$1" = "-o" ]; do shift 2; done\nhost=$1; shift\n'
                   'echo "ssh $host" >&2\nexec bash -c "$*"\n')
    ssh.chmod(0o755)
    proc = subprocess.run(["bash", "scripts/multinode_launch.sh", "recipes/grpo.py", "--config", CFG_7B], cwd=REPO,
                          env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    (server,) = [ln for ln in lines if ln.startswith("server gpu09: ")]
    server = " ".join(shlex.split(server.split(": ", 1)[1]))
    assert "trl vllm-serve --model Qwen/Qwen2.5-VL-7B-Instruct --tensor_parallel_size 2" in server
    assert '--mm-processor-kwargs {"min_pixels":200704,"max_pixels":401408}' in server
    nodes = sorted(ln for ln in lines if ln.startswith("node "))
    assert [ln.split(":")[0] for ln in nodes] == ["node 0/2", "node 1/2"]
    for ln in nodes:
        assert "--num_machines 2 --num_processes 16" in ln and "--main_process_ip gpu01" in ln
        assert "--vllm_mode server --vllm_server_host gpu09 --vllm_server_port 8000" in ln
    assert {"ssh gpu01", "ssh gpu02"} <= set(lines)
