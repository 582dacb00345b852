"""``mllm-cxr label``: CheXpert labels for a column of reports, written in the CheXpert CSV layout.

    mllm-cxr label --input reports.csv --text-column report --id-column study_id --out labels.csv

Input is a CSV (header row) or JSONL file. The output has the id column (or ``Reports`` with the
text itself when no id column is given, as the Stanford labeler writes it) and the 14 observation
columns with 1.0 positive, 0.0 negative, -1.0 uncertain and blank for not mentioned.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cxr_io import atomic_write, check_output, iter_csv_rows, read_jsonl
from cxr_io.cli_args import QuietArgs, Verb, add_verb, opt, part
from reward.base import RewardError
from reward.constants import CHEXPERT_LABELS


def _fmt(v: float | None) -> str:
    return "" if v is None else repr(float(v))


def _read_rows(path: Path, text_col: str, id_col: str | None) -> Iterator[tuple[str, str]]:
    """(id, text) per record; a missing column, an unclosed quote, non-UTF-8 text or a bad line raises
    RewardError naming the file and line (the readers of :mod:`cxr_io`)."""
    suffix = path.suffix.lower()
    if suffix in (".csv", ".gz") and path.name.lower().endswith((".csv", ".csv.gz")):
        required = [c for c in (text_col, id_col) if c is not None]
        for _, row in iter_csv_rows(path, required=required, role="input CSV", error=RewardError):
            text = row.get(text_col) or ""
            yield (row[id_col] if id_col else text), text
    elif suffix in (".jsonl", ".json"):
        for lineno, obj in read_jsonl(path, role="input", error=RewardError):
            for col in (text_col, id_col):
                if col is not None and col not in obj:
                    raise RewardError(f"{path}:{lineno}: column {col!r} not found "
                                      f"(keys: {', '.join(map(str, obj)) or 'none'})")
            text = obj.get(text_col)
            if text is not None and not isinstance(text, str):
                raise RewardError(f"{path}:{lineno}: column {text_col!r} holds {type(text).__name__} "
                                  f"{json.dumps(text)[:60]}, not report text (a string or null); fix the line")
            text = text or ""
            rid = obj.get(id_col) if id_col else text
            if id_col and (isinstance(rid, (dict, list, bool)) or rid is None):
                raise RewardError(f"{path}:{lineno}: id column {id_col!r} holds {json.dumps(rid)[:60]}, not an id "
                                  "(a string or a number)")
            yield str(rid), text
    else:
        raise RewardError(f"{path}: unsupported input type {suffix or '(none)'!r}; use .csv or .jsonl")


#: Report section headers ``--sections`` may name (a name outside these is a typo, not a header to look for).
REPORT_SECTIONS = ("findings", "impression", "indication", "history", "clinical history", "comparison", "comparisons",
                   "technique", "examination", "exam", "reason for exam", "reason for examination", "procedure",
                   "conclusion", "conclusions", "recommendation", "recommendations", "addendum", "summary")


def check_sections(sections: list[str] | None) -> None:
    """Every ``--sections`` name is a report section header (case-insensitive)."""
    bad = [s for s in sections or [] if s.lower() not in REPORT_SECTIONS]
    if bad:
        raise RewardError(f"--sections: {', '.join(map(repr, bad))} is not a report section; known: "
                          f"{', '.join(REPORT_SECTIONS)}")


def label_file(input_path: str | Path, text_column: str, out_path: str | Path, id_column: str | None = None,
               sections: list[str] | None = None, rules_path: str | None = None,
               progress: bool = True) -> dict:
    """Label every record of a CSV/JSONL file and write the CheXpert CSV; returns a summary dict."""
    from tqdm.auto import tqdm

    from reward.chexpert import ChexpertRulesLabeler, extract_sections

    src, out = Path(input_path), Path(out_path)
    if not src.is_file():
        raise RewardError(f"{src}: input file not found; check --input")
    check_sections(sections)
    check_output(out, [src, rules_path])
    labeler = ChexpertRulesLabeler(rules_path=rules_path, sections=sections)
    t0 = time.perf_counter()
    n = empty = whole = 0
    positives = dict.fromkeys(CHEXPERT_LABELS, 0)
    with atomic_write(out, inputs=[src, rules_path], newline="") as f:
        w = csv.writer(f)
        w.writerow([id_column or "Reports", *CHEXPERT_LABELS])
        for rid, text in tqdm(_read_rows(src, text_column, id_column), desc="labelling", unit="report",
                              disable=not progress):
            lab = labeler.label(text)
            n += 1
            whole += bool(sections) and extract_sections(text, sections) is None
            empty += not text.strip()
            for k, v in lab.items():
                positives[k] += v == 1.0
            w.writerow([rid, *(_fmt(lab[k]) for k in CHEXPERT_LABELS)])
    return {"reports": n, "empty": empty, "sections_not_found": whole, "positives": positives, "out": str(out),
            "elapsed_s": round(time.perf_counter() - t0, 3)}


@dataclass(kw_only=True)
class LabelArgs(Verb):
    """``mllm-cxr label``."""

    input: str = opt("CSV (with header) or JSONL file")
    text_column: str = opt("column/key holding the report text")
    id_column: str | None = opt("column/key to copy as the first output column", default=None)
    out: str = opt("output CSV (CheXpert layout)")
    sections: str | None = opt("comma list of report sections to label when the text has headers, e.g. "
                               "findings,impression", default=None)
    rules: str | None = opt("a rules YAML replacing the packaged chexpert_rules.yaml", default=None)
    progress: QuietArgs = part(flat=True)


def _cmd(args: LabelArgs) -> int:
    sections = [s.strip() for s in args.sections.split(",") if s.strip()] if args.sections else None
    s = label_file(args.input, args.text_column, args.out, id_column=args.id_column, sections=sections,
                   rules_path=args.rules, progress=not args.quiet)
    rate = s["reports"] / s["elapsed_s"] if s["elapsed_s"] > 0 else float("inf")
    whole = (f", {s['sections_not_found']} without a {'/'.join(sections)} header (whole text labelled)"
             if s["sections_not_found"] else "")
    print(f"label: {s['reports']} reports ({s['empty']} empty{whole}), {s['positives']['No Finding']} No Finding, "
          f"{s['elapsed_s']:.1f} s ({rate:.0f}/s) -> {s['out']}")
    return 0


def register(subparsers) -> None:
    """Add the ``label`` verb: CheXpert labels (rule labeler) for a CSV/JSONL column of reports."""
    add_verb(subparsers, "label", LabelArgs, _cmd, help="CheXpert labels for a column of reports (rule labeler)",
             description=__doc__.split("\n\n")[0])
