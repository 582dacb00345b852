"""The phantom's command line: ``python -m data_prep.phantom OUT_DIR`` and the ``phantom`` verb."""

from __future__ import annotations

import argparse

from data_prep.errors import DataPrepError
from data_prep.phantom.dataset import make_phantom

#: The first paragraph of the package's docstring: the command's description.
DESCRIPTION = "Phantom chest radiographs whose visible features determine the findings in their reports."


# ------------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------------
def _cmd(args: argparse.Namespace) -> int:
    s = make_phantom(args.out_dir, n=args.n, seed=args.seed, lateral=not args.no_lateral,
                     prior_fraction=args.prior_fraction, hallucinated_prior_rate=args.hallucinated_prior_rate,
                     image_size=args.image_size)
    print(f"phantom: {s['studies']} studies ({s['splits']['train']} train / {s['splits']['validate']} validate / "
          f"{s['splits']['test']} test), {s['images']} images, {s['with_prior']} with a prior, "
          f"{s['hallucinated_prior']} hallucinated prior references, {s['elapsed_s']:.1f} s -> {s['out_dir']}")
    return 0


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("out_dir", help="folder for studies.jsonl and images/")
    p.add_argument("--n", type=int, default=200, help="number of studies (default 200)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--image-size", type=int, default=224, help="square image side in pixels (default 224)")
    p.add_argument("--prior-fraction", type=float, default=0.3, help="share of studies with an earlier study")
    p.add_argument("--hallucinated-prior-rate", type=float, default=0.3,
                   help="share of studies without a prior whose report still mentions one")
    p.add_argument("--no-lateral", action="store_true", help="frontal views only")


def register(subparsers) -> None:
    """Add the ``phantom`` verb: write a synthetic chest X-ray data set."""
    p = subparsers.add_parser("phantom", help="write a synthetic chest X-ray data set (studies.jsonl + PNGs)",
                              description=DESCRIPTION)
    _add_arguments(p)
    p.set_defaults(func=_cmd)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m data_prep.phantom", description=DESCRIPTION)
    _add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return _cmd(args)
    except DataPrepError as e:
        print(f"error: {e}")
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
