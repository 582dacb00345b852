"""``mllm-cxr launch``: ``accelerate launch`` that ends a failed recipe with the recipe's own line and exit code.

    mllm-cxr launch [accelerate launch options] recipes/sft.py --config recipes/configs/tiny/sft.yaml

Takes exactly the arguments of ``accelerate launch`` (same parser, same config files, same launchers).
What differs is the end of a failed run. The recipe has already printed its one line (``sft.py: error: ...``)
and exited 2; ``accelerate launch`` then raises ``subprocess.CalledProcessError`` (single process, DeepSpeed)
or torch's ``ChildFailedError`` (torchrun) and Python prints that exception's traceback after our line.
``accelerate launch -q`` hides the traceback but turns every failure into exit code 1. Here the launcher's
exception is caught and the process exits with the recipe's own exit code (2 for bad input, 130 for
Ctrl-C, 143 for SIGTERM), printing nothing more; the recipe's stdout and stderr went through to the terminal as
they came. A recipe process killed by a signal (SIGKILL, the out-of-memory killer) cannot print its line: then
this prints one naming the rank and the signal, and exits 128 + the signal's number (137 for SIGKILL); the
other processes, stopped by the launcher with SIGTERM, each print where the run stands.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

from cxr_io import debug_requested, handle


def _first_failure(error: BaseException) -> tuple[int | None, int | None, int | None] | None:
    """``(raw exit code, rank, pid)`` of the first recipe process that failed inside the launcher's exception
    (a negative code: killed by that signal), else None (not a child failure)."""
    if isinstance(error, subprocess.CalledProcessError):
        return error.returncode, None, None
    failures = getattr(error, "failures", None)  # torch.distributed.elastic ChildFailedError: rank -> failure
    if type(error).__name__ == "ChildFailedError" and isinstance(failures, dict) and failures:
        rank = min(failures, key=lambda r: getattr(failures[r], "timestamp", 0))
        code = getattr(failures[rank], "exitcode", None)
        return (code if isinstance(code, int) else None), rank, getattr(failures[rank], "pid", None)
    return None


def child_exit_code(error: BaseException) -> int | None:
    """The failed recipe process's exit code inside the launcher's exception (128 + N for one killed by
    signal N, as a shell reports it), else None (not a child failure)."""
    first = _first_failure(error)
    if first is None:
        return None
    code = first[0]
    if isinstance(code, int) and code < 0:
        return 128 - code
    return code if isinstance(code, int) and code > 0 else 1


def killed_child_line(error: BaseException) -> str | None:
    """The one line for a recipe process killed by a signal (it could print nothing itself), else None."""
    import signal

    first = _first_failure(error)
    if first is None or not isinstance(first[0], int) or first[0] >= 0:
        return None
    code, rank, pid = first
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = f"signal {-code}"
    who = "the recipe process" if rank is None else f"process rank {rank}" + (f" (pid {pid})" if pid else "")
    return (f"{who} was killed by {name}; the launcher stopped the other processes (each surviving one printed "
            "the last complete checkpoint); rerun every process with --resume_from_checkpoint true")


def launch(argv: list[str]) -> int:
    """Run ``accelerate launch argv``; a recipe that fails makes this return its exit code, silently."""
    from accelerate.commands.launch import launch_command, launch_command_parser

    args = launch_command_parser().parse_args(argv)
    try:
        launch_command(args)
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as e:  # noqa: BLE001 - the child's failure, or a real launcher error (re-raised)
        code = child_exit_code(e)
        if code is None:
            raise
        line = killed_child_line(e)
        if line:
            print(f"mllm-cxr launch: error: {line}", file=sys.stderr, flush=True)
        sys.stderr.flush()
        return code
    return 0


def run_launch(argv: list[str]) -> int:
    """``mllm-cxr launch ARGS``: the launcher's own bad input (a missing config file) is one line as well."""
    if any(a in ("-h", "--help") for a in argv[:1]):
        from accelerate.commands.launch import launch_command_parser

        launch_command_parser().print_help()
        return 0
    debug = debug_requested([])
    return handle(lambda: launch(argv), prog="mllm-cxr launch", debug=debug)


def register(subparsers) -> None:
    """``launch`` in ``mllm-cxr --help``; :func:`mllm_cxr.cli.main` hands its arguments over untouched
    (they are ``accelerate launch``'s, which argparse's sub-command parsing would mangle)."""
    subparsers.add_parser("launch", add_help=False, help="accelerate launch a recipe; a failure ends with the "
                          "recipe's one line and exit code (no launcher traceback)",
                          description=__doc__.split("\n\n")[0])
    p = subparsers.choices["launch"]
    p.add_argument("args", nargs=argparse.REMAINDER)
    p.set_defaults(func=lambda a: run_launch(a.args))
