"""What the report shows and holds, and its options: the per-study columns (from the metric table), the
shareable mode (:class:`Holds`), :class:`ReportOptions` with their checks, and :class:`ReportOptionArgs`, their
command-line options (a part of the ``report`` and ``eval --html`` verbs, :mod:`cxr_io.cli_args`)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from cxr_io import InputError
from cxr_io.cli_args import opt, split_list
from data_prep.errors import DataPrepError
from reward.metric_table import METRICS, PerStudy


class ReportOptionError(InputError):
    """A bad report option (``--sort``, ``--include``, ``--figure``, sizes) or output: one line, exit 2."""


REPORT_NAME = "report.html"
NO_FINDING = "No Finding"
DEFAULT_SORT = "chexpert_f1"
DEFAULT_THUMB = 160
DEFAULT_MAX_STUDIES = 2000
DEFAULT_MAX_THUMBS = 2
PAGE_SIZE = 50

#: The per-study columns of the metric table (:data:`reward.metric_table.METRICS`): those of the default sort's
#: metric first (the page opens sorted by it), then in the table's order.
COLUMNS: tuple[PerStudy, ...] = tuple(c for spec in sorted(METRICS, key=lambda s: DEFAULT_SORT not in
                                                          {c.key for c in s.per_study}) for c in spec.per_study)
#: Per-study metrics: key -> (label, higher_is_better). Those of ``per_study.jsonl`` are added when present.
PER_STUDY_METRICS: dict[str, tuple[str, bool | None]] = {c.key: (c.label, c.higher_is_better) for c in COLUMNS}
#: Per-study values read from a group's ``details`` entry: group -> [(detail field, metric key)].
_FROM_DETAILS: dict[str, list[tuple[str, str]]] = {
    spec.group: [(c.detail, c.key) for c in spec.per_study if c.detail]
    for spec in METRICS if spec.group and any(c.detail for c in spec.per_study)}
#: Colours of the boxes drawn on the thumbnails (eval's ``details.boxes``): reference and predicted.
BOX_COLOURS = {"ref": "#2f9e44", "pred": "#e8590c"}


#: What identifies a patient or a site in the page; the shareable mode leaves each out unless ``--include``-d.
SHARE_ITEMS = {"text": "report and indication texts", "images": "chest X-ray images", "ids": "study ids",
               "paths": "local file paths"}
#: A file path in free text, absolute or relative (two or more parts): ``/data/x``, ``runs/pred/a.jsonl``, ``C:\\d``.
_PATH = re.compile(r"(?<![\w.:/\\<])(?:~|[A-Za-z]:)?[/\\]?(?:[\w.@+~-]+[/\\])+[\w.@+~-]*")


@dataclass(frozen=True)
class Holds:
    """Which identifying items the page holds; ``shareable`` when made with ``--no-text``."""

    text: bool = True
    images: bool = True
    ids: bool = True
    paths: bool = True
    shareable: bool = False

    @classmethod
    def of(cls, shareable: bool, include: Sequence[str] = ()) -> Holds:
        if not shareable:
            return cls()
        return cls(**{k: k in include for k in SHARE_ITEMS}, shareable=True)

    def held(self) -> list[str]:
        return [k for k in SHARE_ITEMS if getattr(self, k)]

    def statement(self) -> str:
        """The page's first note: what it holds, plainly."""
        if not self.shareable:
            return ("This file contains report text, chest X-ray images, study ids and local file paths of the "
                    "evaluated studies. Keep it where the data may be kept; do not share it outside.")
        out = [SHARE_ITEMS[k] for k in SHARE_ITEMS if not getattr(self, k)]
        inc = [SHARE_ITEMS[k] for k in self.held()]
        text = ("Shareable version (--no-text): it holds metrics with their confidence intervals, finding labels, "
                "per-study scores and splits" + (f", and {_and(inc)} (--include)" if inc else "") + ". It holds no "
                + (_and(out, "or") if out else "other identifying data") + ".")
        if not self.ids:
            text += " Rows are numbered by their line in the predictions file instead of a study id."
        if inc:
            text += f" Share it only where {_and(inc)} may be shared."
        return text

    def path(self, p: Any) -> str:
        """A file path as the page shows it: whole, or its name only."""
        return str(p) if self.paths or not p else Path(str(p)).name

    def scrub(self, text: Any) -> str:
        """Free text (a skipped metric's reason) with file paths replaced by ``<path>``, unless paths are held."""
        return str(text) if self.paths else _PATH.sub("<path>", str(text))


def _and(items: Sequence[str], conj: str = "and") -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + f" {conj} " + items[-1]


def parse_include(value: str | Sequence[str] | None) -> tuple[str, ...]:
    """``--include images,ids``: the items checked against :data:`SHARE_ITEMS`."""
    items = split_list(value)
    bad = [x for x in items if x not in SHARE_ITEMS]
    if bad:
        raise ReportOptionError(f"--include {bad[0]!r}: not an item of the shareable report; choose from "
                          f"{', '.join(SHARE_ITEMS)} (comma-separated)")
    return tuple(dict.fromkeys(items))


@dataclass
class ReportOptions:
    """The report's options as :func:`~evaluation.report.build.build_report` takes them (checked by
    :func:`check_options`); on the command line they are :class:`ReportOptionArgs`."""

    sort: str = DEFAULT_SORT
    thumb_size: int = DEFAULT_THUMB
    max_studies: int = DEFAULT_MAX_STUDIES
    max_thumbs: int = DEFAULT_MAX_THUMBS
    shareable: bool = False  # --no-text: leave out texts, images, study ids and paths ...
    include: tuple[str, ...] = ()  # ... except these (SHARE_ITEMS)
    title: str | None = None
    thumb_cache: str | None = None
    figures: list[tuple[str, str]] = field(default_factory=list)  # (caption, PNG path): embedded, e.g. learning curves


@dataclass(kw_only=True)
class ReportOptionArgs:
    """The report's command-line options, one part shared by ``report`` and ``eval --html``;
    :meth:`options` gives the checked :class:`ReportOptions` (the one-line errors of :func:`check_options`)."""

    _argument_group_name: ClassVar[str | None] = None
    sort: str = opt("per-study metric for the worst-first order "
                    f"({', '.join(PER_STUDY_METRICS)}; b_/delta_ prefix for the compared system)",
                    default=DEFAULT_SORT)
    thumb_size: int = opt("thumbnail long side in pixels (0: no images)", default=DEFAULT_THUMB)
    max_thumbs: int = opt("images per row: the first of those the prediction row names (the prompt's, frontal "
                          "first)", default=DEFAULT_MAX_THUMBS)
    max_studies: int = opt("above this many studies, show the worst ones (with a note)", default=DEFAULT_MAX_STUDIES)
    no_text: bool = opt("a page to share: leave out report and indication texts, images, study ids (rows are "
                        "numbered) and local file paths; --include brings items back", default=False,
                        aliases=("--redact", "--shareable"))
    include: str | None = opt(f"with --no-text: keep these, comma-separated ({', '.join(SHARE_ITEMS)})",
                              default=None, metavar="ITEMS")
    title: str | None = opt("page title", default=None)
    figure: list[str] = opt("embed a PNG (e.g. a run's curves.png) with its caption; repeatable",
                            default_factory=list, action="append", metavar="CAPTION=PNG")
    thumb_cache: str | None = opt("keep thumbnails in DIR and reuse them in later reports (they are patient "
                                  "images: keep DIR with the data)", default=None, metavar="DIR")

    def options(self) -> ReportOptions:
        """The checked :class:`ReportOptions` (a bad value: :class:`ReportOptionError`, one line)."""
        return check_options(ReportOptions(sort=self.sort, thumb_size=self.thumb_size, max_studies=self.max_studies,
                                           max_thumbs=self.max_thumbs, shareable=self.no_text,
                                           include=parse_include(self.include), title=self.title,
                                           thumb_cache=self.thumb_cache, figures=_parse_figures(self.figure)))


def check_options(opt: ReportOptions) -> ReportOptions:
    """Refuse bad option values before any work (``eval --html`` checks them before evaluating)."""
    if opt.thumb_size < 0 or opt.max_studies < 1 or opt.max_thumbs < 0:
        raise ReportOptionError(f"report: --thumb-size must be >= 0 (got {opt.thumb_size}), --max-studies >= 1 (got "
                          f"{opt.max_studies}), --max-thumbs >= 0 (got {opt.max_thumbs})")
    for cap, path in opt.figures:
        if not Path(path).is_file():
            raise DataPrepError("--figure: file not found", file=str(path), field="figure", value=cap)
    if opt.include and not opt.shareable:
        raise ReportOptionError(f"--include {','.join(opt.include)}: only with --no-text (the page without it holds "
                          "everything)")
    parse_include(opt.include)
    base = opt.sort.removeprefix("b_").removeprefix("delta_")
    if base not in PER_STUDY_METRICS:
        raise ReportOptionError(f"--sort {opt.sort!r}: not a per-study metric; choose from {', '.join(PER_STUDY_METRICS)} "
                          "(prefix b_ or delta_ for the compared system)")
    return opt


def _parse_figures(values: Sequence[str]) -> list[tuple[str, str]]:
    out = []
    for v in values or []:
        cap, sep, path = v.partition("=")
        if not sep or not cap.strip() or not path.strip():
            raise ReportOptionError(f"--figure {v!r}: give CAPTION=PATH.png")
        out.append((cap.strip(), path.strip()))
    return out
