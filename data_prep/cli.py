"""``mllm-cxr prepare <dataset> ...``: the data-preparation verbs.

:func:`register` adds them to the main CLI's sub-parsers; each sub-command ends with one summary
line. Bad input raises our exception types (the main CLI prints one line and exits 2).

    mllm-cxr prepare iu-xray ../shared/data/iu_xray/NLMCXR_reports.tgz --splits-csv r2gen_splits.csv --out iu.jsonl
    mllm-cxr prepare mimic-cxr /data/mimic-cxr-jpg/2.1.0 --out mimic.jsonl --image-cache cache/ --skip-bad
    mllm-cxr prepare chexpert-plus /data/chexpert-plus --image-root /data/chexpert-plus/PNG --out cxp.jsonl
    mllm-cxr prepare rexgradient /data/ReXGradient-160K --out rex.jsonl
    mllm-cxr prepare phantom --n 48 --seed 0 --out data/phantom/studies.jsonl

Box annotations (docs/boxes.md): the annotation file is SOURCE; --images-dir (the image folder) makes
the records' paths relative to it, checks the images and allows --image-cache.

    mllm-cxr prepare nih-bbox ../shared/data/boxes/nih_bbox_list_2017.csv --images-dir /data/nih/images --out nih.jsonl
    mllm-cxr prepare chestx-det ../shared/data/boxes/chestx_det_test.json --out chestx_det.jsonl
    mllm-cxr prepare radfact ../shared/data/boxes/radfact_grounded_reporting_examples.json --out radfact.jsonl
    mllm-cxr prepare vindr-cxr annotations_test.csv --images-dir /data/vindr/test --split test --out vindr.jsonl
    mllm-cxr prepare ms-cxr MS_CXR_Local_Alignment_v1.0.0.csv --images-dir /data/mimic-cxr-jpg/2.1.0 --out ms_cxr.jsonl
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from cxr_io.cli_args import (
    DebugArgs,
    PixelBudgetArgs,
    QuietArgs,
    Verb,
    add_arguments,
    add_verb,
    flat_values,
    from_namespace,
    opt,
    part,
    variant,
)
from data_prep.images import DEFAULT_MAX_PIXELS, DEFAULT_MIN_PIXELS, FACTOR

#: prepare's pixel budget is the image cache's: the size every image is resized to once, with defaults.
PreparePixelArgs = variant(
    PixelBudgetArgs, "PreparePixelArgs", defaults={"min_pixels": DEFAULT_MIN_PIXELS, "max_pixels": DEFAULT_MAX_PIXELS},
    help={"min_pixels": f"pixel budget, lower bound (default {DEFAULT_MIN_PIXELS} = "
                        f"{DEFAULT_MIN_PIXELS // FACTOR**2} vision tokens)",
          "max_pixels": f"pixel budget, upper bound (default {DEFAULT_MAX_PIXELS} = "
                        f"{DEFAULT_MAX_PIXELS // FACTOR**2} vision tokens); must match the model's image processor"})


@dataclass(kw_only=True)
class PrepareOutputArgs:
    """The options every ``prepare <dataset>`` has."""

    _argument_group_name: ClassVar[str] = "output and images"
    out: str = opt("records file to write (.jsonl, or .parquet)")
    image_cache: str | None = opt("decode, window and resize every image once into DIR (PNG); records then point "
                                  "there", default=None, metavar="DIR")
    pixels: PreparePixelArgs = part(flat=True)
    skip_bad: bool = opt("skip (and count) missing or corrupt images/reports instead of stopping at the first",
                         default=False)
    workers: int = opt("processes for --image-cache decoding/resizing, threads for image checks (default 1)",
                       default=1)
    progress: QuietArgs = part(flat=True)


@dataclass(kw_only=True)
class BoxSplitArgs:
    """The split written into every record of a box-annotation file."""

    _argument_group_name: ClassVar[str | None] = None
    split: Literal["train", "validate", "test"] = opt("split of every record (default: test)", default="test")


def _images_dir(what: str) -> Any:
    return opt(f"{what}; the records' image paths are relative to it, every image is checked (or cached with "
               "--image-cache; --skip-bad leaves a missing or unreadable one out)", default=None, metavar="DIR")


@dataclass(kw_only=True)
class PrepareArgs(Verb):
    output: PrepareOutputArgs = part()


@dataclass(kw_only=True)
class IUXrayArgs(PrepareArgs):
    source: str = opt("NLMCXR_reports.tgz, its extracted folder, or annotation.json (or its folder)", positional=True)
    png_dir: str | None = opt("folder with the PNG images (Open-i, Kaggle or R2Gen naming)", default=None)
    dicom_metadata: str | None = opt("nlmcxr_dicom_metadata.csv.gz (image views)", default=None)
    splits_csv: str | None = opt("r2gen_splits.csv (standard split); default: hash of the patient id", default=None)
    reports: str | None = opt("with annotation.json: the XML archive, to add indication/comparison/impression",
                              default=None)
    unlisted: Literal["skip", "train", "hash"] = opt("reports absent from --splits-csv (default: skip)",
                                                     default="skip")


@dataclass(kw_only=True)
class MimicArgs(PrepareArgs):
    root: str = opt("the mimic-cxr-jpg/<version> folder", positional=True)
    reports_root: str | None = opt("mimic-cxr-reports folder when the .txt reports are not beside the images",
                                   default=None)
    metadata_csv: str | None = opt("mimic-cxr-2.0.0-metadata.csv(.gz) if not in ROOT", default=None)
    split_csv: str | None = opt("mimic-cxr-2.0.0-split.csv(.gz) if not in ROOT", default=None)
    chexpert_csv: str | None = opt("mimic-cxr-2.0.0-chexpert.csv(.gz) if not in ROOT", default=None)
    image_ext: str = opt("image suffix (.jpg; .dcm for the DICOM release)", default=".jpg")
    no_check_images: bool = opt("do not check that image files exist", default=False)


@dataclass(kw_only=True)
class ChexpertPlusArgs(PrepareArgs):
    source: str = opt("the CSV or the folder holding it", positional=True)
    image_root: str | None = opt("folder the CSV's image paths are relative to (checked when given)", default=None)
    use_dicom: bool = opt("use path_to_dcm instead of path_to_image", default=False)


@dataclass(kw_only=True)
class RexGradientArgs(PrepareArgs):
    root: str = opt("the dataset folder (holding metadata/ and deid_png/)", positional=True)
    splits: list[str] | None = opt("only these split files", default=None, choices=("train", "validate", "test"))
    no_check_images: bool = opt("do not check that image files exist", default=False)


@dataclass(kw_only=True)
class PhantomPrepareArgs(PrepareArgs):
    n: int = opt("number of studies (default 48)", default=48)
    seed: int = opt("random seed (default 0)", default=0)
    extra_test: int = opt("test studies added after the n from their own random streams (the n stay the same; "
                          "default 0)", default=0)
    root: str | None = opt("folder to generate the phantom data in (default: the --out folder)", default=None)


@dataclass(kw_only=True)
class NihBboxArgs(PrepareArgs):
    source: str = opt("BBox_List_2017.csv", positional=True)
    images_dir: str | None = _images_dir("folder of the NIH PNGs: each image's size is read from its header (default: "
                                         "no folder, the stated 1024x1024, paths images/<file>)")
    splits: BoxSplitArgs = part(flat=True)


@dataclass(kw_only=True)
class ChestXDetArgs(PrepareArgs):
    source: str = opt("the ChestX-Det JSON (e.g. ChestX_Det_test.json)", positional=True)
    images_dir: str | None = _images_dir("folder of the ChestX-Det / NIH PNGs: each image's size is read from its "
                                         "header (default: no folder, the stated 1024x1024, paths images/<file>)")
    splits: BoxSplitArgs = part(flat=True)


@dataclass(kw_only=True)
class RadfactArgs(PrepareArgs):
    source: str = opt("the examples JSON ([{example_id, prediction, target}])", positional=True)
    splits: BoxSplitArgs = part(flat=True)


@dataclass(kw_only=True)
class VindrArgs(PrepareArgs):
    source: str = opt("the VinDr-CXR annotations CSV", positional=True)
    images_dir: str | None = _images_dir("folder of the images (<image_id><suffix>): sizes not in --sizes-csv are "
                                         "read from their headers (DICOM, or full-resolution PNG/JPG)")
    sizes_csv: str | None = opt("image sizes as image_id,width,height (pixels of the DICOM); wins over --images-dir. "
                                "One of --sizes-csv / --images-dir is needed", default=None, metavar="CSV")
    image_suffix: str = opt("image file suffix (default .dicom, as released)", default=".dicom")
    splits: BoxSplitArgs = part(flat=True)


@dataclass(kw_only=True)
class MsCxrArgs(PrepareArgs):
    source: str = opt("MS_CXR_Local_Alignment_v1.0.0.csv", positional=True)
    images_dir: str | None = _images_dir("the MIMIC-CXR-JPG folder the CSV's path column is relative to "
                                         "(files/p1x/...)")
    splits: BoxSplitArgs = part(flat=True)


#: ``prepare <dataset>``: its options and its one-line description (the converter is
#: ``data_prep.prepare.DATASETS[dataset]``). Box annotations (data_prep/grounding.py): a malformed row stops
#: with its file, line and field.
PREPARE_VERBS: dict[str, tuple[type, str]] = {
    "iu-xray": (IUXrayArgs, "IU X-ray (Open-i XML archive or R2Gen annotation.json)"),
    "mimic-cxr": (MimicArgs, "MIMIC-CXR-JPG (files/p1x/..., metadata/split/chexpert CSVs, reports)"),
    "chexpert-plus": (ChexpertPlusArgs, "CheXpert Plus (df_chexpert_plus_240401.csv)"),
    "rexgradient": (RexGradientArgs, "ReXGradient-160K (metadata CSVs + view-position JSON)"),
    "phantom": (PhantomPrepareArgs, "synthetic phantom studies (for demos and tests)"),
    "nih-bbox": (NihBboxArgs, "NIH ChestX-ray14 radiologist boxes (BBox_List_2017.csv)"),
    "chestx-det": (ChestXDetArgs, "ChestX-Det boxes and polygons (JSON list of file_name, syms, boxes, polygons)"),
    "radfact": (RadfactArgs, "RadFact grounded-report examples (text-only records; no images)"),
    "vindr-cxr": (VindrArgs, "VinDr-CXR boxes (annotations_train/test.csv or train.csv; DICOM pixels)"),
    "ms-cxr": (MsCxrArgs, "MS-CXR phrase grounding (MS_CXR_Local_Alignment_v1.0.0.csv; sizes in the CSV)"),
}


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``prepare <dataset>`` (iu-xray, mimic-cxr, chexpert-plus, rexgradient, phantom; the box annotations
    nih-bbox, chestx-det, radfact, vindr-cxr, ms-cxr)."""
    prep = subparsers.add_parser("prepare", help="convert a dataset into study records (and cache resized images)",
                                 description="Convert a public chest X-ray dataset into canonical study records.")
    sub = prep.add_subparsers(dest="prepare_dataset", metavar="DATASET", required=True)
    for name, (cls, help_) in PREPARE_VERBS.items():
        add_verb(sub, name, cls, lambda a, name=name: run_prepare(name, a), help=help_, description=help_)


def _options(args: PrepareArgs) -> tuple[Any, dict[str, Any]]:
    """(source, the converter's keyword options) from a ``prepare <dataset>``'s parsed options."""
    options = flat_values(args, skip=("output",))
    source = options.pop("source") if "source" in options else options.pop("root")
    if "no_check_images" in options:
        options["check_images"] = not options.pop("no_check_images")
    if options.get("splits"):
        options["splits"] = tuple(options["splits"])
    return source, options


def run_prepare(dataset: str, args: PrepareArgs) -> int:
    """Run one ``prepare`` sub-command; prints the summary line; returns the exit code."""
    from data_prep.prepare import prepare, prepare_summary_line

    source, options = _options(args)
    summary = prepare(dataset, out=args.out, source=source, image_cache=args.image_cache,
                      min_pixels=args.min_pixels, max_pixels=args.max_pixels, skip_bad=args.skip_bad,
                      workers=args.workers, progress=not args.quiet, **options)
    print(prepare_summary_line(summary), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (``python -m data_prep.cli prepare ...``) for users of data_prep alone."""
    from cxr_io import debug_requested, handle

    parser = argparse.ArgumentParser(prog="data_prep")
    add_arguments(parser, DebugArgs)
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    debug = from_namespace(DebugArgs, args).debug or debug_requested([])
    return handle(lambda: args.func(args), prog="data_prep", debug=debug)

if __name__ == "__main__":
    raise SystemExit(main())
