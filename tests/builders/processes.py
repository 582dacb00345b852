"""Helpers of the tests that start real processes (servers, launchers, "nodes" on 127.0.0.1, CLI runs)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

#: Set by a colocated vLLM in another test module of the same session; a child must not inherit them.
DIST_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def default_sigint() -> None:
    """``preexec_fn`` of a child that a test stops with Ctrl-C: SIGINT at its default, as in a terminal. A suite
    started in the background (``make test &``) inherits SIGINT *ignored*, and Python then never turns it into
    KeyboardInterrupt, so the child would not stop at all."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env() -> dict[str, str]:
    """This environment without the distributed variables, one torch thread, this venv's bin first on PATH."""
    e = {k: v for k, v in os.environ.items() if k not in DIST_VARS}
    bin_dir = Path(sys.executable).parent
    return dict(e, TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1", PATH=f"{bin_dir}{os.pathsep}{e.get('PATH', '')}")


def run_cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """``mllm-cxr ARGS`` in a child process (:func:`child_env`); asserts it exits 0."""
    proc = subprocess.run([sys.executable, "-m", "mllm_cxr.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=child_env())
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-4000:])
    return proc
