"""Recipe configuration: YAML file + ``--flags`` -> dataclasses, with clear errors.

Every recipe parses ``(DataArguments, ModelArguments, PromptConfig, <TRL config>[, extra])`` with
:func:`parse_recipe_args`. A YAML key that no dataclass knows is an error that names the key and the
file (TRL's own parser would pass it on silently or fail with an argparse trace).
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cxr_io import InputError, read_yaml

log = logging.getLogger(__name__)


class ConfigError(InputError):
    """A bad recipe config: names the file, the key and the value."""


@dataclass
class DataArguments:
    """Which study records to train/evaluate on."""

    studies: str = field(default="", metadata={"help": "study records (.jsonl/.parquet) from `mllm-cxr prepare`"})
    data_root: str | None = field(default=None, metadata={"help": "root of the image paths (default: its folder)"})
    train_split: str = "train"
    eval_split: str | None = field(default=None, metadata={"help": "e.g. validate; None = no evaluation"})
    max_train_studies: int | None = None
    max_eval_studies: int | None = None
    overwrite_output_dir: bool = field(default=False, metadata={
        "help": "train into an output_dir that already holds a finished adapter (replacing it); without this "
                "(or resume_from_checkpoint) such a run is refused"})

    def root(self) -> Path:
        return Path(self.data_root) if self.data_root else Path(self.studies).resolve().parent


def _load_yaml(path: str) -> dict[str, Any]:
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"{p}: config file not found")
    data = read_yaml(p, role="recipe config", error=ConfigError) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: a recipe config must be a mapping of keys to values")
    return data


def parse_recipe_args(dataclass_types: tuple, argv: list[str] | None = None) -> tuple:
    """Parse ``--config FILE.yaml`` plus overriding ``--flags`` into the dataclasses (in order).

    Unknown YAML keys and values of the wrong type raise :class:`ConfigError` naming file and key.
    """
    from trl import TrlParser

    argv = list(sys.argv[1:] if argv is None else argv)
    known = {f.name for t in dataclass_types for f in dataclasses.fields(t)}
    cfg_path = None
    if "--config" in argv:
        i = argv.index("--config")
        if i + 1 >= len(argv):
            raise ConfigError("--config needs a file path")
        cfg_path = argv[i + 1]
        data = _load_yaml(cfg_path)
        unknown = sorted(set(data) - known)
        if unknown:
            import difflib

            hints = [f"'{k}'" + (f" (did you mean '{m[0]}'?)" if (m := difflib.get_close_matches(k, known, 1)) else "")
                     for k in unknown]
            raise ConfigError(f"{cfg_path}: unknown config key(s) {', '.join(hints)}")
    parser = TrlParser(dataclass_types)
    try:
        return tuple(parser.parse_args_and_config(argv))
    except SystemExit as e:  # argparse already printed the offending flag/value
        raise ConfigError(f"{cfg_path or 'command line'}: invalid arguments (see the message above)") from e
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{cfg_path or 'command line'}: {e}") from e


def adapt_to_hardware(training_args) -> None:
    """On a machine without CUDA, turn off bf16/fp16 (and say so) so a GPU config fails clearly, not cryptically."""
    import torch

    if torch.cuda.is_available():
        return
    if getattr(training_args, "bf16", False) or getattr(training_args, "fp16", False):
        log.warning("no CUDA device: training in float32 on CPU (bf16/fp16 turned off)")
        training_args.bf16 = False
        training_args.fp16 = False
