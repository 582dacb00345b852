"""Shared fixtures: where ../shared/data is, the tiny model, phantom data."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MLLM_CXR_SHARED", REPO.parent / "shared")) / "data"


def require_shared(*parts: str) -> Path:
    """Path under ../shared/data; skip when it is absent, fail instead under MLLM_CXR_REQUIRE_SHARED=1."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        msg = f"{p} is missing (the shared reference data lives in ../shared/data)"
        if os.environ.get("MLLM_CXR_REQUIRE_SHARED") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    return p


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
    """The learning tests' phantom dataset: 800 studies (560 train), as `make demo` builds it."""
    from data_prep.phantom import make_phantom

    out = tmp_path_factory.mktemp("phantom800")
    make_phantom(out, n=800, seed=1)
    return out


@contextlib.contextmanager
def local_scorers(entries):
    """Register ``(name, description, factory)`` test scorers for a block; unregister and uncache them after."""
    from reward import base
    from reward.base import register_scorer

    names = {n for n, _, _ in entries}
    saved_reg = {n: base._REGISTRY[n] for n in names if n in base._REGISTRY}  # a built-in scorer of that name
    saved_cache = {k: v for k, v in base._CACHE.items() if k[0] in names}
    for key in saved_cache:
        del base._CACHE[key]
    for name, desc, factory in entries:
        register_scorer(name, desc)(factory)
    try:
        yield
    finally:
        for n in names:
            base._REGISTRY.pop(n, None)
        for key in [k for k in base._CACHE if k[0] in names]:
            del base._CACHE[key]
        base._REGISTRY.update(saved_reg)
        base._CACHE.update(saved_cache)


def require_vllm():
    """The vLLM module; the `vllm` tests fail (never skip) where it is missing."""
    try:
        import vllm
    except ImportError as e:
        pytest.fail(f"vllm is not importable ({e}): the `vllm` tests run in ./.venv-vllm (make vllm-env; "
                    "make test-vllm)")
    return vllm


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

    repo = Path(__file__).resolve().parents[1]
    reuse = os.environ.get("MLLM_CXR_DEMO_RUNS")
    runs = Path(reuse) if reuse else tmp_path_factory.mktemp("demo-runs")
    if not reuse:
        t0 = time.perf_counter()
        proc = subprocess.run(["make", "-C", str(repo), "demo", f"RUNS={runs}", f"BIN={Path(sys.executable).parent}"],
                              capture_output=True, text=True, timeout=3600,
                              env=dict(os.environ, TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1"))
        print(f"[make demo] {time.perf_counter() - t0:.0f} s")
        assert proc.returncode == 0, f"make demo failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-4000:]}"
        assert "Traceback (most recent call last)" not in proc.stderr, proc.stderr[-4000:]
        (runs / "make_demo.log").write_text(proc.stdout)
    return {"runs": runs, "results": json.loads((runs / "demo_results.json").read_text()),
            "table": (runs / "demo_table.md").read_text(), "stdout": (runs / "make_demo.log").read_text()
            if (runs / "make_demo.log").exists() else ""}
