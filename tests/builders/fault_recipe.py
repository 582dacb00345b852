"""recipes/sft.py with one fault injected during the run, for the mid-run rows of tests/e2e/test_bad_inputs.py
(the table runs it in-process like a recipe; it is no product code).

    python tests/builders/fault_recipe.py --fault KIND --config ...   (every other flag is the SFT recipe's)

KIND:
  corrupt-image=PATH     after step 1, PATH (it passed the header check when the dataset was built) is cut to half
  disk-full-checkpoint   saving checkpoint-2 fails with ENOSPC after its weights and half its optimizer are written
  disk-full-final        saving the final adapter fails with ENOSPC after half its weights are written
  sigterm-checkpoint     SIGTERM arrives while checkpoint-2 is being written (its weights already are)
"""

from __future__ import annotations

import errno
import importlib.util
import os
import signal
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]  # as tests.builders.repo.REPO: this file also runs as a script


def _sft():
    spec = importlib.util.spec_from_file_location("_fault_recipe_sft", REPO / "recipes" / "sft.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _disk_full(path: str | os.PathLike) -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


def inject(tr, fault: str) -> None:
    """Patch the built trainer ``tr`` so that ``fault`` happens."""
    from transformers import TrainerCallback

    kind, _, arg = fault.partition("=")
    if kind == "corrupt-image":
        image = Path(arg)

        class Corrupt(TrainerCallback):
            def on_step_end(self, args, state, control, **kw):
                if state.global_step == 1:
                    image.write_bytes(image.read_bytes()[: image.stat().st_size // 2])

        tr.add_callback(Corrupt())
    elif kind in ("disk-full-checkpoint", "sigterm-checkpoint"):
        original = tr._save_optimizer_and_scheduler

        def save_optimizer(output_dir):
            if tr.state.global_step != 2:
                return original(output_dir)
            if kind == "sigterm-checkpoint":
                if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):  # (code without a handler: what
                    raise SystemExit(128 + signal.SIGTERM)  # the default action does, without killing the test)
                os.kill(os.getpid(), signal.SIGTERM)
                return original(output_dir)
            part = Path(output_dir) / "optimizer.pt"
            part.write_bytes(b"\x80\x02partial")  # what the writer got out before the disk filled up
            raise _disk_full(part)

        tr._save_optimizer_and_scheduler = save_optimizer
    elif kind == "disk-full-final":
        original_save = tr.save_model

        def save_model(output_dir=None, _internal_call=False):
            original_save(output_dir, _internal_call=_internal_call)
            if "checkpoint-" in Path(str(output_dir)).name:
                return
            weights = Path(str(output_dir)) / "adapter_model.safetensors"
            weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
            raise _disk_full(weights)

        tr.save_model = save_model
    else:
        raise SystemExit(f"fault_recipe: unknown --fault {fault!r}")


def main(argv=None) -> None:
    from mllm_cxr.train.recipe import run_training

    argv = list(argv or [])
    i = argv.index("--fault")
    fault = argv[i + 1]
    del argv[i:i + 2]
    sft = _sft()

    def trainer(configs, data, model_args):
        tr, processor = sft.trainer(configs, data, model_args)
        inject(tr, fault)
        return tr, processor

    run_training(sft.CONFIG_CLASSES, argv, datasets=sft.datasets, trainer=trainer, stage="sft")


if __name__ == "__main__":
    import sys

    from mllm_cxr.train.recipe import run_recipe

    run_recipe(main, sys.argv[1:])
