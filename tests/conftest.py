"""Fixtures of every test folder: the shared reference data, the tiny model, phantom data, the demo run.

What tests import (builders, paths, guards) lives in tests/builders."""

from __future__ import annotations

from pathlib import Path

import pytest

# the builders' asserts report like the tests' own (pytest rewrites them as it does a test module's)
pytest.register_assert_rewrite("tests.builders")

from tests.builders.repo import REPO, require_shared  # noqa: E402


@pytest.fixture
def shared_data() -> Path:
    return require_shared()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """The tiny random Qwen2.5-VL, built once per session and saved to disk."""
    from mllm_cxr.tiny import build_tiny_model

    out = tmp_path_factory.mktemp("tiny-qwen2.5-vl")
    build_tiny_model(out)
    return out


@pytest.fixture(scope="session")
def phantom_dir(tmp_path_factory) -> Path:
    """A small phantom dataset (studies.jsonl + images), deterministic."""
    from data_prep.phantom import make_phantom

    out = tmp_path_factory.mktemp("phantom")
    make_phantom(out, n=48, seed=0)
    return out


@pytest.fixture(scope="session")
def phantom_train_dir(tmp_path_factory) -> Path:
    """The learning tests' phantom dataset: the 800 studies (548 train) `make demo` builds before its extra test studies."""
    from data_prep.phantom import make_phantom

    out = tmp_path_factory.mktemp("phantom800")
    make_phantom(out, n=800, seed=1)
    return out


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory) -> dict:
    """`make demo` exactly as the README has it (no step limits), once per session, in a scratch RUNS folder:
    it builds the phantom data and the pretrained demo base (``make demo-base``), then runs every stage.
    ``MLLM_CXR_DEMO_RUNS=DIR`` reuses a finished run instead (a developer's shortcut; CI never sets it).
    Returns the RUNS folder, the results JSON and the table the demo wrote."""
    import json
    import os
    import subprocess
    import sys
    import time

    reuse = os.environ.get("MLLM_CXR_DEMO_RUNS")
    runs = Path(reuse) if reuse else tmp_path_factory.mktemp("demo-runs")
    if not reuse:
        t0 = time.perf_counter()
        proc = subprocess.run(["make", "-C", str(REPO), "demo", f"RUNS={runs}", f"BIN={Path(sys.executable).parent}"],
                              capture_output=True, text=True, timeout=3600,
                              env=dict(os.environ, TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1"))
        print(f"[make demo] {time.perf_counter() - t0:.0f} s")
        assert proc.returncode == 0, f"make demo failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-4000:]}"
        assert "Traceback (most recent call last)" not in proc.stderr, proc.stderr[-4000:]
        (runs / "make_demo.log").write_text(proc.stdout)
    return {"runs": runs, "results": json.loads((runs / "demo_results.json").read_text()),
            "table": (runs / "demo_table.md").read_text(), "stdout": (runs / "make_demo.log").read_text()
            if (runs / "make_demo.log").exists() else ""}
