"""The phantom's command line: ``python -m data_prep.phantom OUT_DIR`` and the ``phantom`` verb."""

from __future__ import annotations

from dataclasses import dataclass

from cxr_io.cli_args import Verb, add_verb, build_parser, from_namespace, opt
from data_prep.errors import DataPrepError
from data_prep.phantom.dataset import make_phantom

#: The first paragraph of the package's docstring: the command's description.
DESCRIPTION = "Phantom chest radiographs whose visible features determine the findings in their reports."


# ------------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------------
def _cmd(args: PhantomArgs) -> int:
    s = make_phantom(args.out_dir, n=args.n, seed=args.seed, lateral=not args.no_lateral,
                     prior_fraction=args.prior_fraction, hallucinated_prior_rate=args.hallucinated_prior_rate,
                     image_size=args.image_size, extra_test=args.extra_test)
    print(f"phantom: {s['studies']} studies ({s['splits']['train']} train / {s['splits']['validate']} validate / "
          f"{s['splits']['test']} test), {s['images']} images, {s['with_prior']} with a prior, "
          f"{s['hallucinated_prior']} hallucinated prior references, {s['elapsed_s']:.1f} s -> {s['out_dir']}")
    return 0


@dataclass(kw_only=True)
class PhantomArgs(Verb):
    """``phantom OUT_DIR`` (the verb and ``python -m data_prep.phantom``)."""

    out_dir: str = opt("folder for studies.jsonl and images/", positional=True)
    n: int = opt("number of studies (default 200)", default=200)
    seed: int = opt(default=0)
    image_size: int = opt("square image side in pixels (default 224)", default=224)
    prior_fraction: float = opt("share of studies with an earlier study", default=0.3)
    hallucinated_prior_rate: float = opt("share of studies without a prior whose report still mentions one",
                                         default=0.3)
    no_lateral: bool = opt("frontal views only", default=False)
    extra_test: int = opt("test studies added after the n from their own random streams (the n stay the same)",
                          default=0)


def register(subparsers) -> None:
    """Add the ``phantom`` verb: write a synthetic chest X-ray data set."""
    add_verb(subparsers, "phantom", PhantomArgs, _cmd,
             help="write a synthetic chest X-ray data set (studies.jsonl + PNGs)", description=DESCRIPTION)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser(PhantomArgs, prog="python -m data_prep.phantom", description=DESCRIPTION)
    args = from_namespace(PhantomArgs, parser.parse_args(argv))
    try:
        return _cmd(args)
    except DataPrepError as e:
        print(f"error: {e}")
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
