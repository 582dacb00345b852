"""Recipe configuration: YAML file + ``--flags`` -> dataclasses, with clear errors.

Every recipe parses ``(DataArguments, ModelArguments, PromptConfig, <TRL config>[, extra])`` with
:func:`parse_recipe_args`, i.e. TRL's ``TrlParser``: a YAML key that no dataclass knows is an error
(TRL's), to which we add the file name and a "did you mean" hint; the ``env:`` block of a config sets
environment variables, as TRL documents.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from cxr_io import InputError, read_yaml

log = logging.getLogger(__name__)


class ConfigError(InputError):
    """A bad recipe config: names the file, the key and the value."""


@dataclass
class DataArguments:
    """Which study records to train/evaluate on."""

    studies: str = field(default="", metadata={"help": "study records (.jsonl/.parquet) from `mllm-cxr prepare`"})
    data_root: str | None = field(default=None, metadata={"help": "root of the image paths (default: the one "
                                                              "`prepare` recorded, else the studies file's folder)"})
    train_split: str = "train"
    eval_split: str | None = field(default=None, metadata={"help": "e.g. validate; None = no evaluation"})
    max_train_studies: int | None = None
    max_eval_studies: int | None = None
    train_studies_from: str | None = field(default=None, metadata={
        "help": "train only on the train-split studies this file names, in the split's order (max_train_studies "
                "then applies): a JSONL whose lines carry a study_id (such as the pairs of `mllm-cxr pairs sample`, "
                "which names the studies whose sampled reports differ in reward) or a text file of one id per line"})
    tasks: str | None = field(default=None, metadata={
        "help": "task mixture (mllm_cxr/tasks.py): a YAML file with `tasks: [{name, weight}]`, or "
                "'report:0.6,phrase_grounding:0.3,vqa:0.1'; default: the report task only"})
    box_family: str = field(default="qwen2_5_vl", metadata={
        "help": "how task targets write boxes: qwen2_5_vl, qwen2_vl, qwen3_vl, maira2, normalized"})
    skip_bad_images: bool = field(default=False, metadata={
        "help": "a study whose image fails the header check when the dataset is built, or stops decoding during "
                "training (the next good study then takes its place in the batch), is skipped (counted, logged once "
                "and listed in output_dir/skipped_images.json) instead of stopping the run"})
    overwrite_output_dir: bool = field(default=False, metadata={
        "help": "train into an output_dir that already holds a finished adapter (replacing it); without this "
                "(or resume_from_checkpoint) such a run is refused"})

    def root(self) -> Path:
        from data_prep.schema import resolve_data_root

        return resolve_data_root(self.studies, self.data_root)


_UNKNOWN_RE = re.compile(r"'--([^']+)'")


def _with_hints(message: str, known: set[str]) -> str:
    """TRL's / HfArgumentParser's unknown-argument message plus a "did you mean" hint per unknown key."""
    import difflib

    hints = []
    for key in dict.fromkeys(_UNKNOWN_RE.findall(message)):
        match = difflib.get_close_matches(key, known, 1)
        hints.append(f"'{key}'" + (f" (did you mean '{match[0]}'?)" if match else ""))
    if not hints:
        return message
    return f"unknown config key(s) {', '.join(hints)}: fix or remove them"


def _load_yaml(path: str) -> dict:
    """The config file as a mapping, or a ConfigError naming the file (missing, not UTF-8, not YAML, not a mapping)."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"{p}: config file not found")
    data = read_yaml(p, role="recipe config", error=ConfigError) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: a recipe config must be a mapping of keys to values")
    return data


def parse_recipe_args(dataclass_types: tuple, argv: list[str] | None = None, check=None) -> tuple:
    """Parse ``--config FILE.yaml`` plus overriding ``--flags`` into the dataclasses (in order).

    ``check(configs, given, where)``, when given, runs on the parsed configs with ``given`` the keys that the
    config file and the flags set (a recipe's own rule between keys, e.g. GRPO's ``edit_*`` keys).

    TRL's :class:`~trl.TrlParser` does the work: it rejects unknown YAML keys and flags and applies the
    config's ``env:`` block (environment variables set before the run). Its errors become
    :class:`ConfigError` naming the file, with a "did you mean" hint for each unknown key.
    """
    import yaml
    from trl import TrlParser

    argv = list(sys.argv[1:] if argv is None else argv)
    cfg_path = None
    if "--config" in argv:
        i = argv.index("--config")
        if i + 1 >= len(argv):
            raise ConfigError("--config needs a file path")
        cfg_path = argv[i + 1]
        _load_yaml(cfg_path)  # readable UTF-8 YAML holding a mapping (TRL's own reader gives raw errors)
    where = cfg_path or "command line"
    known = {f.name for t in dataclass_types for f in dataclasses.fields(t)}
    parser = TrlParser(dataclass_types)
    parser.allow_abbrev = False  # --learning_rat is a typo, not learning_rate (argparse's prefix matching)
    try:
        configs = tuple(parser.parse_args_and_config(argv))
    except yaml.YAMLError as e:
        raise ConfigError(f"{where}: not valid YAML ({e})") from None
    except SystemExit as e:  # argparse already printed the offending flag/value
        raise ConfigError(f"{where}: invalid arguments (see the message above)") from e
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        # A dataclass may fail on a default (bf16 on a CPU machine) before TRL reaches the unknown keys:
        # the unknown keys are the user's mistake, so they are named first.
        unknown = [k for k in (_load_yaml(cfg_path) if cfg_path else {}) if k not in known and k != "env"]
        if unknown:
            listed = " ".join(f"'--{k}'" for k in unknown)
            raise ConfigError(f"{where}: {_with_hints(listed, known)}") from e
        if "bf16/gpu" in str(e):
            raise ConfigError(f"{where}: bf16 is on (the config's or TRL's default) but this machine has no CUDA GPU: "
                              "set bf16: false (--bf16 false) to train on CPU") from e
        raise ConfigError(f"{where}: {_with_hints(str(e), known)}") from e
    check_training_args(configs, where)
    if check is not None:
        check(configs, given_keys(argv), where)
    return configs


def given_keys(argv: list[str]) -> set[str]:
    """The config keys a run sets: those of the ``--config`` file (``env`` aside) and every ``--flag``."""
    argv = list(argv)
    keys = set()
    if "--config" in argv:
        keys |= {k for k in _load_yaml(argv[argv.index("--config") + 1]) if k != "env"}
    skip = False
    for tok in argv:
        if skip:
            skip = False
            continue
        if tok == "--config":
            skip = True
        elif tok.startswith("--"):
            keys.add(tok[2:].split("=", 1)[0])
    return keys


def check_training_args(configs: tuple, where: str = "command line") -> None:
    """Hyper-parameters checked where they are parsed (the trainers would take them silently, or fail late
    with a traceback): a learning rate that is negative or not finite, ``max_steps`` other than -1 or a
    positive count, no epochs, batch sizes and accumulation below 1."""
    import math

    def bad(key: str, value, what: str):
        raise ConfigError(f"{where}: {key} {value!r}: {what}")

    for c in configs:
        lr = getattr(c, "learning_rate", None)
        if isinstance(lr, (int, float)) and (not math.isfinite(lr) or lr < 0):
            bad("learning_rate", lr, "must be a finite number >= 0 (e.g. 1e-4)")
        steps = getattr(c, "max_steps", None)
        if isinstance(steps, int) and steps != -1 and steps < 1:
            bad("max_steps", steps, "give a positive number of optimizer steps, or -1 to train num_train_epochs")
        epochs = getattr(c, "num_train_epochs", None)
        if steps == -1 and isinstance(epochs, (int, float)) and not (math.isfinite(epochs) and epochs > 0):
            bad("num_train_epochs", epochs, "must be > 0 when max_steps is -1")
        for key in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps",
                    "num_generations"):
            v = getattr(c, key, None)
            if isinstance(v, int) and not isinstance(v, bool) and v < 1:
                bad(key, v, "must be at least 1")
        for key in ("max_train_studies", "max_eval_studies"):
            v = getattr(c, key, None)
            if isinstance(v, int) and v < 1:
                bad(key, v, "must be at least 1 (leave it out for all studies)")


def adapt_to_hardware(training_args) -> None:
    """On a machine without CUDA, turn off bf16/fp16 (and say so) so a GPU config fails clearly, not cryptically."""
    import torch

    if torch.cuda.is_available():
        return
    if getattr(training_args, "bf16", False) or getattr(training_args, "fp16", False):
        log.warning("no CUDA device: training in float32 on CPU (bf16/fp16 turned off)")
        training_args.bf16 = False
        training_args.fp16 = False
