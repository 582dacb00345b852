"""``mllm-cxr <verb>``: the verbs of :data:`VERB_MODULES` (prepare, label, score, eval, report, generate, export, ...).

Each package area registers its own verbs (``register(subparsers)``); :data:`VERB_MODULES` is the table
of those modules, wired in here.
User errors print one line and exit 2; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys

from cxr_io.cli_args import DebugArgs, add_arguments
from cxr_io.registry import import_entry

#: The verb table, in --help order: module (providing ``register(subparsers)``) -> the verbs it adds. Every row
#: is imported when the parser is built; a row naming a missing module or no ``register`` is a
#: :class:`cxr_io.registry.RegistryError` naming the row (tests/repo/test_import_graph.py imports every row, and
#: tests/evaluation/test_cli_metrics.py checks that ``--help`` lists the verbs). Adding a verb: its ``register`` in a
#: module, and that module's row here (a module's new verb: its name in its row).
VERB_MODULES: dict[str, tuple[str, ...]] = {
    "data_prep.cli": ("prepare",),
    "reward.cli_label": ("label",),
    "evaluation.cli": ("score", "eval", "report"),
    "mllm_cxr.cli.model": ("generate", "merge-predictions", "export", "serve", "tiny"),
    "mllm_cxr.cli.pairs": ("pairs",),
    "mllm_cxr.cli.launch": ("launch",),  # accelerate launch with the recipe's own exit
}


#: Options whose value is itself a list of flags (``--vllm-args "--enforce-eager --max-num-seqs 8"``): argparse
#: would take a value starting with "-" for an option, so ``--opt VALUE`` is passed on as ``--opt=VALUE``.
FLAG_VALUE_OPTIONS = ("--vllm-args",)


def join_flag_values(argv: list[str]) -> list[str]:
    """``[..., "--vllm-args", "--enforce-eager"]`` -> ``[..., "--vllm-args=--enforce-eager"]``."""
    out: list[str] = []
    it = iter(argv)
    for a in it:
        nxt = next(it, None) if a in FLAG_VALUE_OPTIONS else None
        out.append(a if nxt is None else f"{a}={nxt}")
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mllm-cxr", description="Chest X-ray report generation toolkit.")
    add_arguments(parser, DebugArgs)
    sub = parser.add_subparsers(dest="verb", metavar="<verb>")
    for module in VERB_MODULES:
        import_entry("mllm_cxr.cli.VERB_MODULES", module, f"{module}:register")(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one verb. Bad input (ours or a common OS/decode error): one line on stderr, exit 2;
    Ctrl-C: one line, exit 130; ``--debug`` (or ``MLLM_CXR_DEBUG=1``) shows the traceback instead."""
    from cxr_io import debug_requested, handle

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["launch"]:  # accelerate launch's own arguments, passed on untouched
        from mllm_cxr.cli.launch import run_launch

        return run_launch(argv[1:])
    parser = build_parser()
    args = parser.parse_args(join_flag_values(argv))
    logging.basicConfig(level=logging.INFO if not args.debug else logging.DEBUG,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    debug = args.debug or debug_requested([])
    return handle(lambda: args.func(args), prog=f"mllm-cxr {args.verb}", debug=debug)

if __name__ == "__main__":
    raise SystemExit(main())
