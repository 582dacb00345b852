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
from typing import Any

from data_prep.images import DEFAULT_MAX_PIXELS, DEFAULT_MIN_PIXELS, FACTOR


def _common(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("output and images")
    g.add_argument("--out", required=True, help="records file to write (.jsonl, or .parquet)")
    g.add_argument("--image-cache", metavar="DIR", default=None,
                   help="decode, window and resize every image once into DIR (PNG); records then point there")
    g.add_argument("--min-pixels", type=int, default=DEFAULT_MIN_PIXELS,
                   help=f"pixel budget, lower bound (default {DEFAULT_MIN_PIXELS} = {DEFAULT_MIN_PIXELS // FACTOR**2} "
                        "vision tokens)")
    g.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                   help=f"pixel budget, upper bound (default {DEFAULT_MAX_PIXELS} = {DEFAULT_MAX_PIXELS // FACTOR**2} "
                        "vision tokens); must match the model's image processor")
    g.add_argument("--skip-bad", action="store_true",
                   help="skip (and count) missing or corrupt images/reports instead of stopping at the first")
    g.add_argument("--workers", type=int, default=1, help="processes for --image-cache decoding/resizing, threads for "
                                                            "image checks (default 1)")
    g.add_argument("--quiet", action="store_true", help="no progress bars")


def _add(sub, name: str, help_: str, positional: str | None, pos_help: str = "") -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help_, description=help_)
    if positional:
        p.add_argument(positional, help=pos_help)
    _common(p)
    p.set_defaults(func=run_prepare, prepare_dataset=name)
    return p


_SPLITS = ("train", "validate", "test")


def _split(p: argparse.ArgumentParser) -> None:
    p.add_argument("--split", choices=_SPLITS, default="test", help="split of every record (default: test)")


def _images_dir(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--images-dir", metavar="DIR",
                   help=f"{what}; the records' image paths are relative to it, every image is checked (or cached "
                        "with --image-cache; --skip-bad leaves a missing or unreadable one out)")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``prepare <dataset>`` (iu-xray, mimic-cxr, chexpert-plus, rexgradient, phantom; the box annotations
    nih-bbox, chestx-det, radfact, vindr-cxr, ms-cxr)."""
    prep = subparsers.add_parser("prepare", help="convert a dataset into study records (and cache resized images)",
                                 description="Convert a public chest X-ray dataset into canonical study records.")
    sub = prep.add_subparsers(dest="prepare_dataset", metavar="DATASET", required=True)

    p = _add(sub, "iu-xray", "IU X-ray (Open-i XML archive or R2Gen annotation.json)", "source",
             "NLMCXR_reports.tgz, its extracted folder, or annotation.json (or its folder)")
    p.add_argument("--png-dir", help="folder with the PNG images (Open-i, Kaggle or R2Gen naming)")
    p.add_argument("--dicom-metadata", help="nlmcxr_dicom_metadata.csv.gz (image views)")
    p.add_argument("--splits-csv", help="r2gen_splits.csv (standard split); default: hash of the patient id")
    p.add_argument("--reports", help="with annotation.json: the XML archive, to add indication/comparison/impression")
    p.add_argument("--unlisted", choices=("skip", "train", "hash"), default="skip",
                   help="reports absent from --splits-csv (default: skip)")

    p = _add(sub, "mimic-cxr", "MIMIC-CXR-JPG (files/p1x/..., metadata/split/chexpert CSVs, reports)", "root",
             "the mimic-cxr-jpg/<version> folder")
    p.add_argument("--reports-root", help="mimic-cxr-reports folder when the .txt reports are not beside the images")
    p.add_argument("--metadata-csv", help="mimic-cxr-2.0.0-metadata.csv(.gz) if not in ROOT")
    p.add_argument("--split-csv", help="mimic-cxr-2.0.0-split.csv(.gz) if not in ROOT")
    p.add_argument("--chexpert-csv", help="mimic-cxr-2.0.0-chexpert.csv(.gz) if not in ROOT")
    p.add_argument("--image-ext", default=".jpg", help="image suffix (.jpg; .dcm for the DICOM release)")
    p.add_argument("--no-check-images", action="store_true", help="do not check that image files exist")

    p = _add(sub, "chexpert-plus", "CheXpert Plus (df_chexpert_plus_240401.csv)", "source",
             "the CSV or the folder holding it")
    p.add_argument("--image-root", help="folder the CSV's image paths are relative to (checked when given)")
    p.add_argument("--use-dicom", action="store_true", help="use path_to_dcm instead of path_to_image")

    p = _add(sub, "rexgradient", "ReXGradient-160K (metadata CSVs + view-position JSON)", "root",
             "the dataset folder (holding metadata/ and deid_png/)")
    p.add_argument("--splits", nargs="+", choices=("train", "validate", "test"), help="only these split files")
    p.add_argument("--no-check-images", action="store_true", help="do not check that image files exist")

    p = _add(sub, "phantom", "synthetic phantom studies (for demos and tests)", None)
    p.add_argument("--n", type=int, default=48, help="number of studies (default 48)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--root", help="folder to generate the phantom data in (default: the --out folder)")

    # box annotations (data_prep/grounding.py); a malformed row stops with its file, line and field
    p = _add(sub, "nih-bbox", "NIH ChestX-ray14 radiologist boxes (BBox_List_2017.csv)", "source",
             "BBox_List_2017.csv")
    _images_dir(p, "folder of the NIH PNGs: each image's size is read from its header (default: no folder, the "
                   "stated 1024x1024, paths images/<file>)")
    _split(p)

    p = _add(sub, "chestx-det", "ChestX-Det boxes and polygons (JSON list of file_name, syms, boxes, polygons)",
             "source", "the ChestX-Det JSON (e.g. ChestX_Det_test.json)")
    _images_dir(p, "folder of the ChestX-Det / NIH PNGs: each image's size is read from its header (default: no "
                   "folder, the stated 1024x1024, paths images/<file>)")
    _split(p)

    p = _add(sub, "radfact", "RadFact grounded-report examples (text-only records; no images)", "source",
             "the examples JSON ([{example_id, prediction, target}])")
    _split(p)

    p = _add(sub, "vindr-cxr", "VinDr-CXR boxes (annotations_train/test.csv or train.csv; DICOM pixels)", "source",
             "the VinDr-CXR annotations CSV")
    _images_dir(p, "folder of the images (<image_id><suffix>): sizes not in --sizes-csv are read from their "
                   "headers (DICOM, or full-resolution PNG/JPG)")
    p.add_argument("--sizes-csv", metavar="CSV",
                   help="image sizes as image_id,width,height (pixels of the DICOM); wins over --images-dir. "
                        "One of --sizes-csv / --images-dir is needed")
    p.add_argument("--image-suffix", default=".dicom", help="image file suffix (default .dicom, as released)")
    _split(p)

    p = _add(sub, "ms-cxr", "MS-CXR phrase grounding (MS_CXR_Local_Alignment_v1.0.0.csv; sizes in the CSV)",
             "source", "MS_CXR_Local_Alignment_v1.0.0.csv")
    _images_dir(p, "the MIMIC-CXR-JPG folder the CSV's path column is relative to (files/p1x/...)")
    _split(p)


def _options(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    d = args.prepare_dataset
    if d == "iu-xray":
        return args.source, {"png_dir": args.png_dir, "dicom_metadata": args.dicom_metadata,
                             "splits_csv": args.splits_csv, "reports": args.reports, "unlisted": args.unlisted}
    if d == "mimic-cxr":
        return args.root, {"reports_root": args.reports_root, "metadata_csv": args.metadata_csv,
                           "split_csv": args.split_csv, "chexpert_csv": args.chexpert_csv,
                           "image_ext": args.image_ext, "check_images": not args.no_check_images}
    if d == "chexpert-plus":
        return args.source, {"image_root": args.image_root, "use_dicom": args.use_dicom}
    if d == "rexgradient":
        return args.root, {"splits": tuple(args.splits) if args.splits else None,
                           "check_images": not args.no_check_images}
    if d in ("nih-bbox", "chestx-det", "ms-cxr"):
        return args.source, {"images_dir": args.images_dir, "split": args.split}
    if d == "radfact":
        return args.source, {"split": args.split}
    if d == "vindr-cxr":
        return args.source, {"images_dir": args.images_dir, "sizes_csv": args.sizes_csv,
                             "image_suffix": args.image_suffix, "split": args.split}
    return args.root, {"n": args.n, "seed": args.seed}


def run_prepare(args: argparse.Namespace) -> int:
    """Run one ``prepare`` sub-command; prints the summary line; returns the exit code."""
    from data_prep.prepare import prepare, prepare_summary_line

    source, options = _options(args)
    summary = prepare(args.prepare_dataset, out=args.out, source=source, image_cache=args.image_cache,
                      min_pixels=args.min_pixels, max_pixels=args.max_pixels, skip_bad=args.skip_bad,
                      workers=args.workers, progress=not args.quiet, **options)
    print(prepare_summary_line(summary), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (``python -m data_prep.cli prepare ...``) for users of data_prep alone."""
    from cxr_io import debug_requested, handle

    parser = argparse.ArgumentParser(prog="data_prep")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return handle(lambda: args.func(args), prog="data_prep", debug=args.debug or debug_requested([]))

if __name__ == "__main__":
    raise SystemExit(main())
