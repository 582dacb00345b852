"""``mllm-cxr <verb>``: prepare, label, score, generate, eval, export, serve, pairs, tiny.

Each package area registers its own verbs (``register(subparsers)``); this module wires them in.
User errors print one line and exit 2; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

#: Modules that provide ``register(subparsers)``, in the order their verbs appear in --help.
VERB_MODULES = (
    "data_prep.cli",          # prepare
    "reward.cli_label",       # label
    "reward.cli_score",       # score
    "mllm_cxr.cli_model",     # generate, eval, export, serve, tiny
    "mllm_cxr.cli_pairs",     # pairs
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mllm-cxr", description="Chest X-ray report generation toolkit.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = parser.add_subparsers(dest="verb", metavar="<verb>")
    for name in VERB_MODULES:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name == name:  # this area has no verbs in this version
                continue
            raise
        mod.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one verb. Bad input (ours or a common OS/decode error): one line on stderr, exit 2;
    Ctrl-C: one line, exit 130; ``--debug`` (or ``MLLM_CXR_DEBUG=1``) shows the traceback instead."""
    from cxr_io import debug_requested, handle

    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if not args.debug else logging.DEBUG,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    debug = args.debug or debug_requested([])
    return handle(lambda: args.func(args), prog=f"mllm-cxr {args.verb}", debug=debug)

if __name__ == "__main__":
    raise SystemExit(main())
