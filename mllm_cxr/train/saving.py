"""Saves a training run never leaves half-written, and the faults met while saving or training as one line.

* Checkpoints (:func:`atomic_checkpoints`): transformers writes ``checkpoint-<step>`` straight into
  ``output_dir``, so a full disk, a SIGTERM or a killed process part-way leaves a folder that
  ``resume_from_checkpoint: true`` picks as the last checkpoint. Here every rank writes its part of the
  checkpoint into ``output_dir/.checkpoint-staging/checkpoint-<step>``; after all ranks are done, one rename
  puts it in place (then the old checkpoints are rotated as ``save_total_limit`` says). A failed save removes
  the staged folder; the last complete checkpoint is untouched.
* The adapter/model and processor at the end (:func:`save_final`): written into ``output_dir/.final.partial``,
  then each file renamed into ``output_dir``, the weights last (their presence marks a finished run), so
  ``output_dir`` never holds a half-written ``adapter_model.safetensors``.
* Both get the umask's modes before they are renamed into place (safetensors writes 0600 whatever the umask).
* :func:`stopped_error`: a full disk (``ENOSPC``/``EDQUOT``, also inside safetensors' writer) and a lost peer
  process (gloo/NCCL "connection closed/reset by peer") become one line naming the step and the last
  complete checkpoint, to resume from.

Staging folders are hidden (a leading dot) and never match ``checkpoint-<step>``, so nothing reads a partial
one; a stale one from a killed process is removed when the next run starts (:func:`clear_staging`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
from pathlib import Path
from typing import Any

from cxr_io import InputError, commit_dir, honour_umask

#: Where checkpoints are written before they are renamed into ``output_dir``.
CHECKPOINT_STAGING = ".checkpoint-staging"
#: Where the final adapter/model and processor are written before their files are renamed into ``output_dir``.
FINAL_STAGING = ".final.partial"
#: Written last when the final files are moved into ``output_dir`` (their presence marks a finished run).
_WEIGHTS_LAST = ("adapter_model.safetensors", "adapter_model.bin", "model.safetensors", "model.safetensors.index.json",
                 "pytorch_model.bin", "pytorch_model.bin.index.json")


class RunStopped(InputError):
    """A run stopped by its environment (full disk, lost peer): one line, exit code 2, like bad input."""


def _barrier(tr) -> None:
    acc = getattr(tr, "accelerator", None)
    if acc is not None and getattr(acc, "num_processes", 1) > 1:
        acc.wait_for_everyone()


def _is_main(tr) -> bool:
    return bool(getattr(getattr(tr, "accelerator", None), "is_main_process", True))


def _is_local_main(tr) -> bool:
    return bool(getattr(getattr(tr, "accelerator", None), "is_local_main_process", True))


def clear_staging(output_dir: str | Path) -> None:
    """Remove staging folders left by a killed run (call on the local main process before training)."""
    out = Path(output_dir)
    for name in (CHECKPOINT_STAGING, FINAL_STAGING):
        shutil.rmtree(out / name, ignore_errors=True)


def atomic_checkpoints(tr) -> None:
    """Make ``tr``'s ``_save_checkpoint`` stage the checkpoint and rename it into place when complete."""
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints

    original = getattr(tr, "_save_checkpoint", None)
    if original is None:  # not a transformers Trainer (a test's stand-in): it saves no checkpoints
        return

    def save_checkpoint(model, trial, *a, **kw):
        run_dir = Path(tr._get_output_dir(trial=trial))
        staging_root = run_dir / CHECKPOINT_STAGING
        name = f"{PREFIX_CHECKPOINT_DIR}-{tr.state.global_step}"
        staged, final = staging_root / name, run_dir / name
        tr._mllm_saving = name
        if _is_local_main(tr):  # (every node's, for nodes that do not share output_dir)
            shutil.rmtree(staged, ignore_errors=True)
            staging_root.mkdir(parents=True, exist_ok=True)
        _barrier(tr)  # on a shared output_dir, no node's clean-up may remove what another has begun to write
        tr._get_output_dir = lambda trial=None: str(staging_root)  # transformers writes staging_root/<name>
        try:
            original(model, trial, *a, **kw)
            best = tr.state.best_model_checkpoint
            if best and Path(best).parent == staging_root:  # the state names the folder where it will be
                tr.state.best_model_checkpoint = str(run_dir / Path(best).name)
                if tr.args.should_save:
                    tr.state.save_to_json(str(staged / "trainer_state.json"))
            _barrier(tr)  # every rank's part (optimizer shards, RNG states) is in the staged folder
            if _is_main(tr):
                commit_dir(staged, final)
            _barrier(tr)
            if _is_local_main(tr) and staged.exists():  # a node whose output_dir is not the main node's
                commit_dir(staged, final)
        except BaseException:  # (``_mllm_saving`` stays set: the error line names the save)
            if _is_local_main(tr):
                shutil.rmtree(staged, ignore_errors=True)
                with contextlib.suppress(OSError):
                    staging_root.rmdir()
            raise
        finally:
            del tr._get_output_dir  # back to the class's method
        tr._mllm_saving = None
        if _is_local_main(tr):
            with contextlib.suppress(OSError):
                staging_root.rmdir()
        if tr.args.should_save:
            rotate_checkpoints(output_dir=str(run_dir), save_total_limit=tr.args.save_total_limit,
                               best_model_checkpoint=tr.state.best_model_checkpoint, use_mtime=True)

    tr._save_checkpoint = save_checkpoint


def _move_into(src: Path, dst: Path) -> None:
    """Every entry of ``src`` renamed into ``dst`` (folders replaced whole), weights files last."""
    honour_umask(src)  # (safetensors writes its files 0600 whatever the umask)
    entries = sorted(src.iterdir(), key=lambda p: (p.name in _WEIGHTS_LAST, p.name))
    for p in entries:
        if p.is_dir():
            commit_dir(p, dst / p.name)
        else:
            os.replace(p, dst / p.name)
    src.rmdir()


def save_final(tr, processor: Any, output_dir: str | Path) -> None:
    """The trained adapter/model (every rank takes part, for sharded weights) and the processor, staged and
    moved into ``output_dir`` file by file, the weights last."""
    out = Path(output_dir)
    staged = out / FINAL_STAGING
    tr._mllm_saving = "the final adapter"
    try:
        if _is_local_main(tr):  # every node's (two nodes may share output_dir: neither may fail on the other's)
            shutil.rmtree(staged, ignore_errors=True)
            staged.mkdir(parents=True, exist_ok=True)
        _barrier(tr)
        tr.save_model(str(staged))
        if tr.is_world_process_zero() and processor is not None:
            processor.save_pretrained(str(staged))
        _barrier(tr)
        if _is_main(tr):
            _move_into(staged, out)
        _barrier(tr)  # then a node whose output_dir is not the main node's drops its (empty) staging folder
        if _is_local_main(tr) and staged.exists():
            _move_into(staged, out)
    except BaseException:
        if _is_local_main(tr):
            shutil.rmtree(staged, ignore_errors=True)
        raise
    tr._mllm_saving = None


def _chain(e: BaseException):
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__


_DISK_FULL = ("no space left on device", "disk quota exceeded", "storagefull", "filesystemquotaexceeded")
_PEER_LOST = ("connection closed by peer", "connection reset by peer", "nccl communicator was aborted",
              "remote process exited or there was a network error")


def _peer_message(e: BaseException) -> str:
    """gloo's/NCCL's message without the source location and the advice that follows ("... by peer")."""
    text = re.sub(r"^\[[^\]]*\.(?:cc|cpp):\d+\]\s*", "", " ".join(str(e).split()))
    m = re.search(r"by peer", text, flags=re.IGNORECASE)
    text = text[:m.end()] if m else text
    return text[:240] + ("..." if len(text) > 240 else "")


def where_run_stands(tr, output_dir: str | Path) -> str:
    """``stopped at step N; last complete checkpoint: DIR`` (or that none was saved yet)."""
    from transformers.trainer_utils import get_last_checkpoint

    step = getattr(getattr(tr, "state", None), "global_step", None)
    ck = get_last_checkpoint(str(output_dir)) if Path(output_dir).is_dir() else None
    where = f"stopped at step {step}; " if step is not None else ""
    return where + (f"last complete checkpoint: {ck}" if ck else "no checkpoint saved yet")


def stopped_error(e: BaseException, tr, output_dir: str | Path) -> RunStopped | None:
    """The one line for a full disk or a lost peer met during training or saving, else None."""
    saving = getattr(tr, "_mllm_saving", None)
    for link in _chain(e):
        low = str(link).lower()
        if isinstance(link, OSError) and link.errno in (errno.ENOSPC, errno.EDQUOT) or any(w in low for w in _DISK_FULL):
            what = f"while saving {saving}" if saving else "while writing"
            file = f" ({link.filename})" if getattr(link, "filename", None) else ""
            return RunStopped(f"no space left on device {what}{file} in {output_dir}: the partial save was removed; "
                              f"{where_run_stands(tr, output_dir)}. Free space, then rerun with "
                              "--resume_from_checkpoint true")
        if any(w in low for w in _PEER_LOST) or type(link).__name__ == "DistBackendError":
            return RunStopped(f"another process of this run was lost ({_peer_message(link)}); "
                              f"{where_run_stands(tr, output_dir)}. Restart every node/process with "
                              "--resume_from_checkpoint true")
    return None
