"""Small helpers shared by the converters: CSV reading, split hashing, skip bookkeeping, summaries.

Nothing here knows about a particular dataset. Patient text never goes into a log message or an
error: errors name files, lines, fields and identifiers only.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import math
import os
import sys
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from cxr_io import not_utf8
from data_prep.errors import DataPrepError, UnknownLayoutError
from data_prep.schema import SPLITS, StudyRecord

# Report columns can be long (CheXpert Plus "report" holds whole reports).
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))

#: Fractions for the deterministic fallback split (train, validate, test).
HASH_SPLIT_FRACTIONS = (0.8, 0.1, 0.1)


def collapse_whitespace(value: Any) -> str:
    """Collapse whitespace; ``None`` and NaN become ``""`` (the text "None." is kept: it is a report's word)."""
    if value is None:
        return ""
    if isinstance(value, float) and math.isnan(value):
        return ""
    return " ".join(str(value).split())


def open_text(path: str | os.PathLike) -> io.TextIOBase:
    """Open a text file, transparently decompressing ``.gz``."""
    path = Path(path)
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def iter_csv(path: str | os.PathLike, required: Iterable[str] = ()) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield ``(line_number, row)`` from a CSV (optionally gzipped), checking required columns first.

    A missing column raises :class:`UnknownLayoutError` naming the file, what was expected and what
    was found. Line numbers count physical lines of the header as 1 (quoted multi-line fields make
    the row's line number the line where the row starts).
    """
    path = Path(path)
    try:
        fh = open_text(path)
    except OSError as e:
        raise DataPrepError(f"cannot open CSV ({e.strerror or e})", file=str(path)) from None
    with fh:
        reader = csv.DictReader(fh)
        start = 1
        try:
            header = reader.fieldnames or []
            missing = [c for c in required if c not in header]
            if missing:
                raise UnknownLayoutError(
                    f"CSV lacks column(s) {missing}; expected {sorted(required)}, found {header[:40]}",
                    file=str(path))
            start = reader.line_num + 1
            for row in reader:
                yield start, row
                start = reader.line_num + 1
        except UnicodeDecodeError:
            raise not_utf8(path, DataPrepError) from None
        except (csv.Error, EOFError, OSError, zlib.error) as e:
            raise DataPrepError(f"unreadable CSV ({e})", file=str(path), line=start) from None


def find_first(root: Path, names: Iterable[str], subdirs: Iterable[str] = ("",)) -> Path | None:
    """The first existing ``root/subdir/name`` (each name also tried with ``.gz``), else ``None``."""
    for sub in subdirs:
        for name in names:
            for cand in (name, name + ".gz") if not name.endswith(".gz") else (name,):
                p = root / sub / cand if sub else root / cand
                if p.is_file():
                    return p
    return None


def hash_split(key: str, fractions: tuple[float, float, float] = HASH_SPLIT_FRACTIONS) -> str:
    """Deterministic split from a key (use the patient id so a patient never spans two splits)."""
    h = int.from_bytes(hashlib.sha1(key.encode("utf-8")).digest()[:8], "big") / 2**64
    if h < fractions[0]:
        return "train"
    if h < fractions[0] + fractions[1]:
        return "validate"
    return "test"


class SkipLog:
    """Counts skipped items per reason and remembers every one (file/id and reason, never text)."""

    def __init__(self) -> None:
        self.items: list[dict[str, str]] = []
        self.counts: Counter[str] = Counter()

    def add(self, reason: str, what: str, *, kind: str = "study") -> None:
        self.counts[reason] += 1
        self.items.append({"kind": kind, "reason": reason, "item": str(what)})

    def extend(self, other: SkipLog) -> None:
        self.items.extend(other.items)
        self.counts.update(other.counts)

    def __len__(self) -> int:
        return len(self.items)

    def summary(self, examples: int = 5) -> dict[str, Any]:
        by_reason: dict[str, Any] = {}
        for reason, n in self.counts.most_common():
            ex = [it["item"] for it in self.items if it["reason"] == reason][:examples]
            by_reason[reason] = {"count": n, "examples": ex}
        return {"total": len(self.items), "by_reason": by_reason}


def split_counts(records: Iterable[StudyRecord]) -> dict[str, int]:
    c = Counter(r.split for r in records)
    return {s: c.get(s, 0) for s in SPLITS}


def build_prepare_summary(dataset: str, records: list[StudyRecord], skips: SkipLog, *, data_root: Path | str | None,
                          priors_linked: int, **extra: Any) -> dict[str, Any]:
    """The converter summary: counts that let a user see at a glance what was (and was not) kept."""
    return {
        "dataset": dataset,
        "data_root": None if data_root is None else str(data_root),
        "studies": len(records),
        "images": sum(len(r.images) for r in records),
        "patients": len({r.patient_id for r in records}),
        "splits": split_counts(records),
        "priors_linked": priors_linked,
        "empty_findings": sum(1 for r in records if not r.findings),
        "empty_impression": sum(1 for r in records if not r.impression),
        "without_images": sum(1 for r in records if not r.images),
        "skipped": skips.summary(),
        **extra,
    }


def fail_or_skip(skip_bad: bool, skips: SkipLog, error: DataPrepError, reason: str, what: str,
                 kind: str = "study") -> None:
    """Raise ``error`` unless the caller asked to skip bad input, in which case count it."""
    if not skip_bad:
        raise error
    skips.add(reason, what, kind=kind)
