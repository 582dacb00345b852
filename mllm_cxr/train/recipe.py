"""What every recipe does around its TRL trainer, as TRL's and open-r1's scripts do: one function,
:func:`run_training`, used by recipes/sft.py, dpo.py and grpo.py.

Per-rank logging at ``get_process_log_level()``; the run's configs written next to it (the resolved
YAML ``config.yaml`` that ``--config`` reproduces, and ``mllm_cxr_config.json`` that generate/export
read); ``--dry-run`` (parse the config, build the datasets, load no model); resume; train; save the
adapter and processor; ``train_results.json`` and ``trainer_state.json`` (``log_metrics`` /
``save_metrics`` / ``save_state``); a model card; ``trainer.end()``.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cxr_io import Terminated, debug_requested, handle, make_parent, sigterm_raises, write_text_atomic
from data_prep.errors import BadImageError
from mllm_cxr.config import ConfigError, adapt_to_hardware, parse_recipe_args
from mllm_cxr.data import SKIPPED_IMAGES, mid_run_skips, transforms_of
from mllm_cxr.run_config import write_run_config
from mllm_cxr.train.saving import (
    atomic_checkpoints,
    clear_staging,
    save_final,
    stopped_error,
    where_run_stands,
)

log = logging.getLogger("mllm_cxr")

#: The resolved config written next to each run (``--config output_dir/config.yaml`` reruns it).
RESOLVED_CONFIG = "config.yaml"
#: Keys never written to the resolved config (secrets).
_SECRET_KEYS = ("hub_token", "push_to_hub_token")


def setup_logging(level: int = logging.INFO) -> None:
    """Our loggers, transformers' and datasets' at ``level`` (a rank's ``get_process_log_level()``)."""
    import datasets
    import transformers

    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr, force=True)
    logging.getLogger().setLevel(level)
    log.setLevel(level)
    datasets.utils.logging.set_verbosity(level)
    transformers.utils.logging.set_verbosity(level)
    transformers.utils.logging.enable_default_handler()
    transformers.utils.logging.enable_explicit_format()


def _plain(value: Any) -> Any:
    """A config value as plain YAML data that the recipe parser reads back to the same value."""
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: _plain(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)  # torch.dtype and other objects


def resolved_config(configs: Sequence[Any], argv: Sequence[str]) -> dict[str, Any]:
    """The run's config as one YAML mapping: the ``--config`` file's keys (and its ``env:`` block) with
    every ``--flag`` of ``argv`` merged in at its parsed value. Keys left at their defaults are not
    written (derived values such as GRPO's ``steps_per_generation`` are recomputed on reading)."""
    import yaml

    argv = list(argv)
    fields = {f.name: c for c in configs for f in dataclasses.fields(c) if f.init}
    out: dict[str, Any] = {}
    if "--config" in argv:
        out.update(yaml.safe_load(Path(argv[argv.index("--config") + 1]).read_text()) or {})
    skip_next = False
    for tok in argv:
        if skip_next or not tok.startswith("--"):
            skip_next = False
            continue
        key = tok[2:].split("=", 1)[0]
        if key == "config":
            skip_next = True
            continue
        if key not in fields:  # (abbreviated flags are refused by the parser: allow_abbrev is off)
            continue
        out[key] = _plain(getattr(fields[key], key))
    return {k: v for k, v in out.items() if k not in _SECRET_KEYS}


def save_run_configs(output_dir: str | Path, configs: Sequence[Any], training_args, argv: Sequence[str]) -> None:
    """``config.yaml`` (:func:`resolved_config`, what ``--config`` reruns) and the run config
    (:func:`mllm_cxr.run_config.write_run_config`: our configs in full, by class)."""
    import yaml

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_run_config(out, [c for c in configs if c is not training_args])
    header = f"# The resolved config of this run; rerun it with --config {out / RESOLVED_CONFIG}\n"
    write_text_atomic(out / RESOLVED_CONFIG, header + yaml.safe_dump(resolved_config(configs, argv), sort_keys=False))


def last_checkpoint(output_dir: str) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    p = Path(output_dir)
    return get_last_checkpoint(str(p)) if p.is_dir() else None


def write_model_card(trainer, model_args, *, stage: str, dataset: str | None) -> Path | None:
    """TRL's model card (``README.md``), its front matter set through ``huggingface_hub.ModelCardData``:
    the base model, ``peft`` as library for an adapter, the image-text-to-text pipeline and our tags."""
    if not trainer.is_world_process_zero():
        return None
    from huggingface_hub import ModelCard

    tags = ["mllm-cxr", "radiology", "chest-x-ray", "report-generation", stage]
    trainer.create_model_card(model_name=Path(trainer.args.output_dir).name, dataset_name=dataset, tags=tags)
    path = Path(trainer.args.output_dir) / "README.md"
    card = ModelCard.load(path)
    card.data.base_model = model_args.model_name_or_path
    card.data.library_name = "peft" if model_args.use_peft or model_args.adapter_path else "transformers"
    card.data.pipeline_tag = "image-text-to-text"
    card.save(path)
    return path


#: Files whose presence means ``output_dir`` holds a finished run (adapter or full model).
FINISHED_MARKERS = ("adapter_model.safetensors", "adapter_model.bin", "model.safetensors",
                    "model.safetensors.index.json")


def check_output_dir(out: Path, *, overwrite: bool, resume) -> None:
    """Refuse to train over a finished adapter unless ``overwrite_output_dir`` or ``resume_from_checkpoint``."""

    if out.exists() and not out.is_dir():
        raise ConfigError(f"output_dir {out} is a file; give a folder")
    make_parent(out, flag="output_dir")
    done = [m for m in FINISHED_MARKERS if (out / m).is_file()]
    if done and not overwrite and not resume:
        raise ConfigError(f"output_dir {out} already holds a finished run ({done[0]}); pass --overwrite_output_dir "
                          "true to replace it, --resume_from_checkpoint to continue it, or choose another "
                          "--output_dir")


#: What a Trainer checkpoint folder (``output_dir/checkpoint-<step>``) holds: the trainer state and weights.
CHECKPOINT_STATE = "trainer_state.json"
CHECKPOINT_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin", "model.safetensors",
                      "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
_CHECKPOINT_HOLDS = (f"a checkpoint folder (output_dir/checkpoint-<step>) holds {CHECKPOINT_STATE}, the weights "
                     "(adapter_model.safetensors or model.safetensors) and optimizer.pt")


def _listing(p: Path, n: int = 6) -> str:
    try:
        names = sorted(x.name + ("/" if x.is_dir() else "") for x in p.iterdir())
    except OSError:
        return "unreadable"
    if not names:
        return "nothing (an empty folder)"
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")


def resolve_resume(resume, output_dir: str | Path) -> str | None:
    """``resume_from_checkpoint`` checked before anything loads: ``None``/false -> None; ``true``/``auto``/
    ``last`` -> the last ``checkpoint-<step>`` of ``output_dir``; a path -> that checkpoint folder. Anything
    else (no checkpoint, a missing path, a file, a folder that is not a checkpoint) is one ConfigError
    naming what was found and what a checkpoint holds."""
    if resume is None or resume is False or str(resume).strip().lower() in ("", "false", "none", "no"):
        return None
    out = Path(output_dir)
    if resume is True or str(resume).strip().lower() in ("true", "auto", "last", "yes"):
        found = last_checkpoint(str(out))
        if found is None:
            seen = _listing(out) if out.is_dir() else "no such folder"
            raise ConfigError(f"resume_from_checkpoint {resume!r}: no checkpoint-<step> folder in output_dir {out} "
                              f"(found: {seen}); {_CHECKPOINT_HOLDS}. Leave resume_from_checkpoint out to start "
                              "from scratch")
        resume = found
    p = Path(str(resume)).expanduser()
    if not p.exists():
        raise ConfigError(f"resume_from_checkpoint {str(resume)!r}: not found; give a checkpoint folder "
                          f"({_CHECKPOINT_HOLDS}) or true for the last one in output_dir")
    if not p.is_dir():
        raise ConfigError(f"resume_from_checkpoint {str(resume)!r} is a file; {_CHECKPOINT_HOLDS}")
    missing = [] if (p / CHECKPOINT_STATE).is_file() else [CHECKPOINT_STATE]
    if not any((p / w).is_file() for w in CHECKPOINT_WEIGHTS):
        missing.append("weights")
    if missing:
        raise ConfigError(f"resume_from_checkpoint {str(resume)!r} is not a checkpoint (no {' and no '.join(missing)};"
                          f" found: {_listing(p)}); {_CHECKPOINT_HOLDS}")
    return str(p)


#: Keys of the recipe configs that name an input file or folder (output_dir may not be, or lie inside, one).
INPUT_KEYS = ("studies", "pairs", "data_root", "model_name_or_path", "adapter_path", "reward_spec")


def check_run_inputs(configs: Sequence[Any]) -> None:
    """What ``--dry-run`` must catch without loading a model: the output folder apart from every input, the
    adapter folder, and vLLM importable when ``use_vllm`` asks for it. (The base model is not looked at: a dry
    run checks a config on a machine that may not hold the model.)"""
    from cxr_io import check_disjoint
    from mllm_cxr.modeling import check_adapter_dir
    from mllm_cxr.vllm_support import require_vllm_for_rollouts

    args = configs[-1]
    values = [getattr(c, k, None) for c in configs for k in INPUT_KEYS]
    inputs = [v for val in values for v in (val if isinstance(val, list) else [val]) if isinstance(v, str)]
    check_disjoint(args.output_dir, inputs, flag="output_dir")
    for c in configs:
        if getattr(c, "adapter_path", None):
            check_adapter_dir(c.adapter_path)
    if getattr(args, "use_vllm", False):
        require_vllm_for_rollouts()


def run_training(config_classes: Sequence[type], argv: list[str] | None, *,
                 datasets: Callable[..., dict[str, Any]],
                 trainer: Callable[..., Any],
                 stage: str,
                 after: Callable[[Any, tuple], None] | None = None,
                 check: Callable[[tuple, set[str], str], None] | None = None) -> dict[str, float] | None:
    """The runtime of a recipe around its TRL trainer.

    ``config_classes``: the dataclasses of the recipe's YAML keys, the TRL config last.
    ``datasets(*configs)`` -> ``{"train": ..., "eval": ... | None}`` (no model needed);
    ``trainer(configs, datasets, model_args)`` -> ``(trainer, processor)`` (loads the model);
    ``after(trainer, configs)`` runs on the finished run (e.g. GRPO's reward curve);
    ``check(configs, given_keys, where)`` runs on the parsed configs (:func:`mllm_cxr.config.parse_recipe_args`).
    ``--dry-run`` in ``argv``: parse the config and build the datasets, then stop (returns None).
    Returns the training metrics.
    """
    from mllm_cxr.modeling import trainable_summary

    argv = list(sys.argv[1:] if argv is None else argv)
    dry_run = "--dry-run" in argv
    argv = [a for a in argv if a != "--dry-run"]
    configs = parse_recipe_args(tuple(config_classes), argv, check=check)
    args = configs[-1]
    model_args = next((c for c in configs if hasattr(c, "model_name_or_path")), None)
    setup_logging(args.get_process_log_level())
    adapt_to_hardware(args)
    check_output_dir(Path(args.output_dir), overwrite=any(getattr(c, "overwrite_output_dir", False) for c in configs),
                     resume=args.resume_from_checkpoint)
    resume = resolve_resume(args.resume_from_checkpoint, args.output_dir)
    check_run_inputs(configs)
    t0 = time.perf_counter()
    data = datasets(*configs)
    skipped_images = data.pop(SKIPPED_IMAGES, None) or []
    if dry_run:
        sizes = ", ".join(f"{k} {len(v)}" for k, v in data.items() if v is not None)
        skips = f"; {len(skipped_images)} studies skipped for a bad image" if skipped_images else ""
        print(f"dry run: config parsed; datasets built ({sizes}){skips}; no model loaded, nothing written", flush=True)
        return None
    out, spool = _prepare_output_dir(args, configs, argv, data, resume, skipped_images)
    tr, processor = trainer(configs, data, model_args)
    atomic_checkpoints(tr)
    log.info(trainable_summary(tr.model))
    if resume:
        print(f"resuming from {resume}", file=sys.stderr, flush=True)
    try:
        result = _train_and_save(tr, processor, resume, args.output_dir)
    except Terminated as e:  # SIGTERM (run_recipe), wherever it landed: say where the run stands
        if str(e):
            raise
        raise Terminated(where_run_stands(tr, args.output_dir)) from None
    skipped_images = skipped_images + record_mid_run_skips(tr, out, spool, skipped_images)
    metrics = {k: v for k, v in result.metrics.items() if v is not None}  # TRL may report None (GRPO)
    metrics["train_samples"] = len(data["train"])
    if skipped_images:
        metrics["skipped_bad_images"] = len(skipped_images)
    tr.log_metrics("train", metrics)
    tr.save_metrics("train", metrics)  # train_results.json (+ all_results.json)
    tr.save_state()  # trainer_state.json
    write_model_card(tr, model_args, stage=stage, dataset=None)  # studies are local files, not hub datasets
    if after is not None:
        after(tr, configs)
    t = time.perf_counter() - t0
    if tr.is_world_process_zero():
        skips = (f"; {len(skipped_images)} studies skipped for a bad image (listed in "
                 f"{out / SKIPPED_IMAGES}.json)" if skipped_images else "")
        print(f"done: {result.global_step} steps, train_loss {metrics.get('train_loss', float('nan')):.4f}, "
              f"{t:.0f} s on {args.world_size} process(es); adapter and processor saved to {args.output_dir}{skips}",
              flush=True)
    tr.accelerator.wait_for_everyone()  # multi-node: no rank may outlive node 0's rendezvous store (docs/scaling.md)
    tr.end()  # trackers finished, process group destroyed: nothing distributed after this
    return metrics


def _prepare_output_dir(args, configs: tuple, argv: list[str], data: dict[str, Any], resume: str | None,
                        skipped_images: list) -> tuple[Path, Path]:
    """The output folder before the model loads: the datasets' transforms told where mid-run image skips go, the
    run's configs and the images skipped so far written (process 0), a stale staged save cleared; ``(out, spool)``."""
    out = Path(args.output_dir)
    spool = out / MID_RUN_SKIPS  # images skip_bad_images skips mid-run, appended by whichever process decodes
    for t in transforms_of(data):
        t.spool = str(spool)
    if args.process_index == 0:
        save_run_configs(args.output_dir, configs, args, argv)
        if not resume:
            spool.unlink(missing_ok=True)  # a stale record of an earlier run in this folder
        if skipped_images:  # the run record of what skip_bad_images left out
            write_text_atomic(out / f"{SKIPPED_IMAGES}.json",
                              json.dumps(skipped_images, indent=2, ensure_ascii=False) + "\n")
    if args.local_process_index == 0:
        clear_staging(out)
    return out, spool


def _train_and_save(tr, processor, resume: str | None, output_dir: str):
    """``tr.train()`` and the final save (:func:`mllm_cxr.train.saving.save_final`); a fault met on the way is one
    line: an image that stopped decoding, a full disk, a lost peer, SIGTERM (the staged save removed)."""
    try:
        try:
            result = tr.train(resume_from_checkpoint=resume)
            save_final(tr, processor, output_dir)
        except BaseException:
            close_progress_bars(tr)  # the line that follows starts on a line of its own, not after the bar
            raise
    except BadImageError as e:  # an image that went bad after the dataset was built: say where the run stands
        # (from a DataLoader worker it comes back with the worker's traceback as its text: unwrapped)
        raise mid_run_image_error(unwrap_worker_error(e), tr, output_dir) from None
    except Terminated:
        raise Terminated(where_run_stands(tr, output_dir)) from None
    except Exception as e:  # a full disk, a lost peer process: one line, else the traceback of a bug
        stop = stopped_error(e, tr, output_dir)
        if stop is None:
            raise
        raise stop from None
    return result


def close_progress_bars(tr) -> None:
    """Close the trainer's tqdm bars (a stopped run leaves them open mid-line on stderr)."""
    for cb in getattr(getattr(tr, "callback_handler", None), "callbacks", []):
        for name in ("training_bar", "prediction_bar"):
            bar = getattr(cb, name, None)
            if bar is not None and hasattr(bar, "close"):
                bar.close()
                setattr(cb, name, None)


#: The file in output_dir that images skipped mid-run are appended to (merged into skipped_images.json at the end).
MID_RUN_SKIPS = "skipped_images.mid-run.jsonl"


def record_mid_run_skips(tr, out: Path, spool: Path, before: list[dict[str, str]]) -> list[dict[str, str]]:
    """The images ``skip_bad_images`` skipped during training (read from the spool every process appends to),
    merged by the main process into ``skipped_images.json`` beside the ones skipped when the dataset was built."""
    tr.accelerator.wait_for_everyone()  # every rank's skips are in the spool
    found = mid_run_skips(spool)
    if found and tr.is_world_process_zero():
        path = out / f"{SKIPPED_IMAGES}.json"
        write_text_atomic(path, json.dumps(before + found, indent=2, ensure_ascii=False) + "\n")
        spool.unlink(missing_ok=True)
        log.warning("skip_bad_images: %d studies skipped mid-run (their images stopped decoding); listed in %s",
                    len(found), path)
    return found


def unwrap_worker_error(e: BaseException) -> BadImageError | None:
    """A :class:`BadImageError` raised in a DataLoader worker comes back as ``BadImageError("Caught BadImageError in
    DataLoader worker process 0. Original Traceback ...")``: the original one line, else None."""
    if not isinstance(e, BadImageError):
        return None
    text = str(e)
    if "Original Traceback" not in text:
        return e
    last = text.rstrip().splitlines()[-1]
    return BadImageError(last.split("BadImageError: ", 1)[-1])


def mid_run_image_error(e: BadImageError, tr, output_dir) -> BadImageError:
    """The one line for an image that failed to decode during training: the image, the study, the records file,
    the step, and the last checkpoint (which is usable: it was written before the failure)."""
    step = getattr(getattr(tr, "state", None), "global_step", None)
    ck = last_checkpoint(str(output_dir))
    where = f"stopped at step {step}; " if step is not None else ""
    state = f"last checkpoint: {ck}" if ck else "no checkpoint saved yet"
    return BadImageError(f"{' '.join(str(e).split())} ({where}{state})")


def run_recipe(main, argv: list[str] | None = None) -> None:
    """Run a recipe's main through the one top-level handler (:func:`cxr_io.handle`): bad input prints one
    line and exits 2, Ctrl-C one line and 130, SIGTERM one line and 143; ``--debug`` or ``MLLM_CXR_DEBUG=1`` shows the traceback.

    Under ``accelerate launch`` the launcher adds its own ``CalledProcessError`` traceback after any
    non-zero exit of a single-process (or DeepSpeed) run; ``mllm-cxr launch`` (the same arguments,
    :mod:`mllm_cxr.cli.launch`) leaves only our line and exits with our code (``accelerate launch -q``
    leaves only our line but exits 1).
    """

    args = list(sys.argv[1:] if argv is None else argv)
    debug = debug_requested(args)
    args = [a for a in args if a != "--debug"]
    prog = Path(sys.argv[0]).name if argv is None and sys.argv and sys.argv[0] else "recipe"
    with sigterm_raises():  # SIGTERM: staged saves removed, one line, exit 143 (cxr_io.handle)
        code = handle(lambda: main(args), prog=prog, debug=debug)
    if code:
        sys.stdout.flush()
        raise SystemExit(code)
