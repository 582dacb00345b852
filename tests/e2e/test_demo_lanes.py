"""The demo's stages after SFT run in two lane processes: a failed stage or Ctrl-C ends the run with one line
and leaves no process behind (the other lane's training is stopped, nothing new starts)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.builders.processes import child_env, default_sigint
from tests.builders.repo import REPO

pytestmark = pytest.mark.slow


def _quick_runs(tmp_path: Path, demo_run) -> Path:
    """A RUNS folder with the session demo's base and phantom data, for a demo with step limits."""
    runs = tmp_path / "runs"
    runs.mkdir()
    for name in ("demo-base", "phantom"):
        (runs / name).symlink_to(demo_run["runs"] / name)
    return runs


def _demo(runs: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "mllm_cxr.demo", "--runs", str(runs), "--max-steps", "40",
                             "--limit", "4", *extra], cwd=REPO, env=child_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint)


def _left_over(runs: Path, grace: float = 20.0) -> list[str]:
    """Command lines of processes still naming ``runs`` after ``grace`` seconds."""
    deadline = time.time() + grace
    while True:
        found = []
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if str(runs) in text:
                found.append(text)
        if not found or time.time() > deadline:
            return found
        time.sleep(1)


def test_a_failed_stage_stops_the_other_lane_with_one_line(tmp_path, demo_run):
    runs = _quick_runs(tmp_path, demo_run)
    (runs / "demo-control").write_text("not a folder")  # the control's output_dir: its recipe refuses it
    proc = _demo(runs, "--stages", "sft,grpo,control")
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 1, err[-2000:]
    last = err.strip().splitlines()[-1]
    log = runs / "demo" / "logs" / "control.log"
    assert last.startswith("demo: stage control failed:") and last.count(str(log)) == 1, last
    assert "is a file" in log.read_text()
    assert not (runs / "demo_table.md").exists()  # no table from a run that did not finish
    assert _left_over(runs) == []


def test_ctrl_c_during_the_lanes_stops_both_and_exits_130(tmp_path, demo_run):
    runs = _quick_runs(tmp_path, demo_run)
    proc = _demo(runs, "--stages", "sft,grpo,editgrpo,control")
    lanes = runs / "demo" / "logs" / "grpo.log"
    deadline = time.time() + 600
    while not (lanes.exists() and "it/s]" in lanes.read_text(errors="replace")):  # GRPO is training
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-2000:]
        time.sleep(1)
    proc.send_signal(signal.SIGINT)  # to the demo only: it must stop its lanes itself
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-2000:]
    assert err.strip().splitlines()[-1] == "demo: interrupted; the finished stages' adapters and reports are kept"
    assert _left_over(runs) == []
    assert "Traceback" not in err
    assert not (runs / "demo-grpo" / "adapter_model.safetensors").exists()  # stopped before it saved
