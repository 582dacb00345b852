"""What every recipe does around its TRL trainer: logging, config record, resume, save, summary."""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
import time
from pathlib import Path

log = logging.getLogger("mllm_cxr")


def setup_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def start_run(training_args, *configs) -> None:
    """Log the run, adapt to the hardware, write every config to ``output_dir/mllm_cxr_config.json``."""
    from mllm_cxr.config import adapt_to_hardware

    setup_logging()
    adapt_to_hardware(training_args)
    out = Path(training_args.output_dir)
    check_output_dir(out, overwrite=any(getattr(c, "overwrite_output_dir", False) for c in configs),
                     resume=training_args.resume_from_checkpoint)
    out.mkdir(parents=True, exist_ok=True)
    record = {type(c).__name__: dataclasses.asdict(c) for c in configs}
    if _is_main(training_args):
        (out / "mllm_cxr_config.json").write_text(json.dumps(record, indent=2, default=str))
    training_args._mllm_cxr_t0 = time.perf_counter()


#: Files whose presence means ``output_dir`` holds a finished run (adapter or full model).
FINISHED_MARKERS = ("adapter_model.safetensors", "adapter_model.bin", "model.safetensors",
                    "model.safetensors.index.json")


def check_output_dir(out: Path, *, overwrite: bool, resume) -> None:
    """Refuse to train over a finished adapter unless ``overwrite_output_dir`` or ``resume_from_checkpoint``."""
    from cxr_io import make_parent
    from mllm_cxr.config import ConfigError

    if out.exists() and not out.is_dir():
        raise ConfigError(f"output_dir {out} is a file; give a folder")
    make_parent(out, flag="output_dir")
    done = [m for m in FINISHED_MARKERS if (out / m).is_file()]
    if done and not overwrite and not resume:
        raise ConfigError(f"output_dir {out} already holds a finished run ({done[0]}); pass --overwrite_output_dir "
                          "true to replace it, --resume_from_checkpoint to continue it, or choose another "
                          "--output_dir")


def _is_main(training_args) -> bool:
    try:
        return training_args.process_index == 0
    except Exception:
        return True


def last_checkpoint(output_dir: str) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    p = Path(output_dir)
    return get_last_checkpoint(str(p)) if p.is_dir() else None


def finish_run(trainer, training_args, processor) -> dict:
    """Train (resuming when asked), save adapter + processor, print a one-line summary."""
    from mllm_cxr.modeling import trainable_summary

    log.info(trainable_summary(trainer.model))
    resume = training_args.resume_from_checkpoint
    if resume in ("auto", "last", "true", "True"):
        resume = last_checkpoint(training_args.output_dir)
        log.info("resuming from %s", resume or "scratch (no checkpoint found)")
    result = trainer.train(resume_from_checkpoint=resume)
    trainer.save_model(training_args.output_dir)
    if trainer.is_world_process_zero():
        processor.save_pretrained(training_args.output_dir)
    metrics = dict(result.metrics)
    t = time.perf_counter() - getattr(training_args, "_mllm_cxr_t0", time.perf_counter())
    if trainer.is_world_process_zero():
        print(f"done: {result.global_step} steps, train_loss {metrics.get('train_loss', float('nan')):.4f}, "
              f"{t:.0f} s on {training_args.world_size} process(es); adapter and processor saved to {training_args.output_dir}", flush=True)
    return metrics


def run_recipe(main, argv: list[str] | None = None) -> None:
    """Run a recipe's main through the one top-level handler (:func:`cxr_io.handle`): bad input prints one
    line and exits 2, Ctrl-C one line and 130; ``--debug`` or ``MLLM_CXR_DEBUG=1`` shows the traceback.

    Under ``accelerate launch`` the launcher adds its own ``CalledProcessError`` traceback after any
    non-zero exit of a single-process (or DeepSpeed) run; ``accelerate launch -q`` (``--quiet``) leaves
    only our line (the launcher then exits 1).
    """
    from cxr_io import debug_requested, handle

    args = list(sys.argv[1:] if argv is None else argv)
    debug = debug_requested(args)
    args = [a for a in args if a != "--debug"]
    prog = Path(sys.argv[0]).name if argv is None and sys.argv and sys.argv[0] else "recipe"
    code = handle(lambda: main(args), prog=prog, debug=debug)
    if code:
        sys.stdout.flush()
        raise SystemExit(code)
