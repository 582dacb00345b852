"""The demo's stages after SFT run in two lane processes: a failed stage or Ctrl-C ends the run with one line
and leaves no process behind (the other lane's training is stopped, nothing new starts)."""

from __future__ import annotations

import json
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
    """A RUNS folder with the session demo's base, phantom data and SFT adapter (read, never written: no test
    here names ``sft`` in ``--stages``), for a demo with step limits."""
    runs = tmp_path / "runs"
    runs.mkdir()
    for name in ("demo-base", "phantom", "demo-sft"):
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
    proc = _demo(runs, "--stages", "grpo,control")
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
    proc = _demo(runs, "--stages", "grpo,editgrpo,control")
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


def test_reuse_reruns_one_stage_and_scores_the_others_from_the_earlier_reports(tmp_path, demo_run):
    """``--reuse``: the stages left out of ``--stages`` are scored from the reports an earlier run wrote, in the
    demo's order, and compared as in a full run; the stage that ran is new."""
    from mllm_cxr.demo import split_truth

    runs = _quick_runs(tmp_path, demo_run)
    ids = set(split_truth(runs / "phantom" / "studies.jsonl", 4)["ids"])
    pred, old = runs / "demo" / "pred", demo_run["runs"] / "demo" / "pred"
    pred.mkdir(parents=True)
    kept = ("sft", "control", "grpo", "editgrpo")  # no earlier dpo, chexalign or export reports: not scored
    for name in kept:
        for f in (f"{name}.jsonl", f"{name}_sampled.jsonl"):
            lines = [ln for ln in (old / f).read_text().splitlines() if json.loads(ln)["study_id"] in ids]
            (pred / f).write_text("\n".join(lines) + "\n")
    proc = _demo(runs, "--stages", "dpo", "--reuse", "--max-steps", "2")
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    assert f"scored from an earlier run's reports in {pred}: {', '.join(kept)}" in out, out[-3000:]
    doc = json.loads((runs / "demo_results.json").read_text())
    assert list(doc["results"]) == ["base", "sft", "control", "grpo", "editgrpo", "dpo"]
    assert {k for k, v in doc["seconds"].items() if "train" in v} == {"dpo"}  # the others only scored
    for name in ("control", "grpo", "editgrpo", "dpo"):
        assert doc["results"][name]["vs_sft"]["phantom_micro_f1"]["p_value"] is not None, name
    assert doc["results"]["grpo"]["vs_control"] and not doc["results"]["dpo"]["vs_control"]
    assert (runs / "demo-dpo" / "adapter_model.safetensors").is_file()
    # a reused stage scores as its reports do: SFT's example is its report of the first test study
    first = split_truth(runs / "phantom" / "studies.jsonl", 1)["ids"][0]
    sft = {json.loads(ln)["study_id"]: json.loads(ln) for ln in (pred / "sft.jsonl").read_text().splitlines()}
    assert doc["results"]["sft"]["example"] == sft[first]["prediction"]
