"""Where things are: the repository, the tests' data files (tests/fixtures) and the shared reference data
(../shared/data, or $MLLM_CXR_SHARED/data), and the guards of the tests that need the shared data or vLLM."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"
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


def require_vllm():
    """The vLLM module; the `vllm` tests fail (never skip) where it is missing."""
    try:
        import vllm
    except ImportError as e:
        pytest.fail(f"vllm is not importable ({e}): the `vllm` tests run in ./.venv-vllm (make vllm-env; "
                    "make test-vllm)")
    return vllm
