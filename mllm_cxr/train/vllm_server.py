"""GRPO's vLLM server mode on its own node: one pixel budget for the trainer and ``trl vllm-serve``.

In server mode the trainer cuts each image with its processor's ``min_pixels``/``max_pixels`` and the
server cuts it again with its own. If the two budgets differ, the number of image tokens differs and
the rollouts are sampled for another prompt than the one trained on. Two things keep them equal:

* :func:`serve_command` builds the ``trl vllm-serve`` command line from the *same* recipe YAML the
  trainers read (model, ``--mm-processor-kwargs`` from ``min_pixels``/``max_pixels``, max model
  length, dtype), with the tensor/data parallel sizes as arguments. ``scripts/multinode_grpo.sh`` and
  ``scripts/multinode_slurm.sbatch`` start the server with it::

      python -m mllm_cxr.train.vllm_server recipes/configs/qwen2.5-vl-7b/grpo_server.yaml --tp 2 --dp 4

* :func:`check_server_pixels`, called by :class:`mllm_cxr.train.grpo.ClinicalGRPOTrainer` at start-up in
  server mode, reads the budget the server actually runs with (``GET /server_info``, the development
  endpoint TRL's weight sync already needs, ``VLLM_SERVER_DEV_MODE=1``) and stops with one line
  (:class:`ServerMismatch`, a :class:`~mllm_cxr.config.ConfigError`) when it is not the trainer's.
  The per-rollout check of image-token counts (``checked_place_features``) stays as the second guard.
"""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cxr_io.cli_args import build_parser, from_namespace, opt
from mllm_cxr.config import ConfigError
from mllm_cxr.modeling import _BUDGET_IN_SIZE as _SIZE_KEYS  # the one budget <-> ``size`` key mapping


class ServerMismatch(ConfigError):
    """The vLLM server's image budget is not the trainer's (or cannot be read)."""


def _find_key(tree: Any, key: str) -> Iterator[Any]:
    if isinstance(tree, Mapping):
        for k, v in tree.items():
            if k == key:
                yield v
            yield from _find_key(v, key)
    elif isinstance(tree, list):
        for v in tree:
            yield from _find_key(v, key)


def budget_from_kwargs(kwargs: Mapping[str, Any] | None) -> dict[str, int]:
    """``{"min_pixels", "max_pixels"}`` from processor kwargs (``min_pixels=``/``max_pixels=`` or ``size={...}``)."""
    kwargs = dict(kwargs or {})
    size = dict(kwargs.get("size") or {})
    out = {k: kwargs.get(k, size.get(s)) for k, s in _SIZE_KEYS.items()}
    return {k: int(v) for k, v in out.items() if v is not None}


def served_pixel_budget(server_info: Mapping[str, Any]) -> dict[str, int]:
    """The pixel budget in a vLLM server's resolved config (``/server_info``): its ``mm_processor_kwargs``
    wherever they sit in the tree (``model_config.multimodal_config`` in current vLLM). Empty when the
    server was started without them (it then uses the model folder's processor defaults)."""
    for found in _find_key(server_info, "mm_processor_kwargs"):
        if isinstance(found, str):
            try:
                found = json.loads(found)
            except ValueError:
                continue
        budget = budget_from_kwargs(found if isinstance(found, Mapping) else None)
        if budget:
            return budget
    return {}


def check_server_pixels(trainer_budget: Mapping[str, int], server_info: Mapping[str, Any], url: str) -> dict[str, int]:
    """Raise :class:`ServerMismatch` (one line) unless the server's min/max pixels equal the trainer's."""
    ours = {k: int(v) for k, v in trainer_budget.items() if k in _SIZE_KEYS}
    served = served_pixel_budget(server_info)
    fix = f"--mm-processor-kwargs '{json.dumps(ours, separators=(',', ':'))}'"
    if not served:
        raise ServerMismatch(f"the vLLM server at {url} runs without a pixel budget (no mm_processor_kwargs); the "
                             f"trainer cuts images to {ours}: start it with {fix} (python -m "
                             f"mllm_cxr.train.vllm_server CONFIG prints the whole command)")
    diff = {k: (served.get(k), ours.get(k)) for k in _SIZE_KEYS if served.get(k) != ours.get(k)}
    if diff:
        said = ", ".join(f"{k} server {s} != trainer {t}" for k, (s, t) in diff.items())
        raise ServerMismatch(f"the vLLM server at {url} cuts images to another pixel budget than the trainer "
                             f"({said}): restart it with {fix}, or set the trainer's min_pixels/max_pixels to the "
                             "server's")
    return served


def server_url(args) -> str:
    """The base URL the trainer uses for the server (TRL's ``vllm_server_base_url`` or host + port)."""
    base = getattr(args, "vllm_server_base_url", None)
    return base or f"http://{getattr(args, 'vllm_server_host', '0.0.0.0')}:{getattr(args, 'vllm_server_port', 8000)}"


def serve_command(config: Mapping[str, Any], *, tensor_parallel_size: int = 1, data_parallel_size: int = 1,
                  host: str = "0.0.0.0", port: int | None = None, gpu_memory_utilization: float = 0.9,
                  extra: Sequence[str] = ()) -> list[str]:
    """``trl vllm-serve`` for a GRPO recipe config (a parsed YAML mapping): the model, the pixel budget
    and the context length the trainer uses. The port defaults to the config's ``vllm_server_port``."""
    model = config.get("model_name_or_path")
    if not model:
        raise ConfigError("the GRPO config names no model_name_or_path; the server must serve the trainer's model")
    budget = budget_from_kwargs(config)
    if set(budget) != set(_SIZE_KEYS):
        raise ConfigError("the GRPO config sets no min_pixels and max_pixels; set both, so that the trainer and the "
                          "vLLM server cut images alike")
    cmd = ["trl", "vllm-serve", "--model", str(model),
           "--tensor_parallel_size", str(tensor_parallel_size), "--data_parallel_size", str(data_parallel_size),
           "--host", host, "--port", str(port or config.get("vllm_server_port", 8000)),
           "--gpu_memory_utilization", str(gpu_memory_utilization)]
    if config.get("vllm_max_model_length"):
        cmd += ["--max_model_len", str(config["vllm_max_model_length"])]
    dtype = config.get("dtype")
    if dtype in ("bfloat16", "float16", "float32"):
        cmd += ["--dtype", dtype]
    if config.get("trust_remote_code"):
        cmd += ["--trust_remote_code", "true"]
    # not a `trl vllm-serve` option: TRL forwards it to `vllm serve` unchanged
    cmd += ["--mm-processor-kwargs", json.dumps(budget, separators=(",", ":"))]
    return cmd + list(extra)


@dataclass(kw_only=True)
class VLLMServerArgs:
    """``python -m mllm_cxr.train.vllm_server CONFIG``; unknown options go on to ``trl vllm-serve``."""

    config: Path = opt("the GRPO recipe config (YAML)", positional=True)
    tp: int = opt("tensor parallel size (GPUs per model replica)", default=1)
    dp: int = opt("data parallel size (model replicas)", default=1)
    host: str = opt("address to listen on", default="0.0.0.0")
    port: int | None = opt("default: the config's vllm_server_port (8000)", default=None)
    gpu_memory_utilization: float = opt("share of the GPU memory vLLM takes", default=0.9)
    lines: bool = opt("one argument per line (for `mapfile -t` in scripts)", default=False)


def main(argv: Sequence[str] | None = None) -> int:
    import yaml

    p = build_parser(VLLMServerArgs, prog="python -m mllm_cxr.train.vllm_server",
                     description="Print the `trl vllm-serve` command for a GRPO recipe config.")
    ns, extra = p.parse_known_args(argv)
    a = from_namespace(VLLMServerArgs, ns)
    try:
        config = yaml.safe_load(a.config.read_text()) or {}
        cmd = serve_command(config, tensor_parallel_size=a.tp, data_parallel_size=a.dp, host=a.host, port=a.port,
                            gpu_memory_utilization=a.gpu_memory_utilization, extra=extra)
    except (OSError, ConfigError, yaml.YAMLError) as e:
        print(f"vllm_server: {a.config}: {e}", file=sys.stderr)
        return 2
    print("\n".join(cmd) if a.lines else shlex.join(cmd))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
