"""Generation at scale: ``mllm-cxr generate --shard i/n`` and ``mllm-cxr merge-predictions``.

A shard is a contiguous block of the studies ``generate`` would run unsharded (after ``--split`` and
``--limit``), cut by index: shard ``i`` of ``n`` holds studies ``[i*N//n, (i+1)*N//n)``. Each shard
writes its own predictions file, resumable like any other (``--out`` per shard), and records
``{"shard": {"index", "count", "total", "limit"}}`` in its side file. Shards run anywhere (one per GPU,
one per node, a SLURM array); nothing coordinates them.

:func:`merge_predictions` joins the shard files into one that equals the unsharded run row for row:
it checks that every shard was generated with the same settings and that all ``n`` are there and
finished, refuses a study id that appears twice, names the studies that are missing, and writes the
rows in the unsharded order with the unsharded side file (plus ``merged_from``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

from cxr_io import make_parent, write_text_atomic
from evaluation.predictions import (
    index_by_study,
    meta_path,
    prediction_line,
    read_meta,
    read_rows,
    write_meta,
)
from mllm_cxr.config import ConfigError

T = TypeVar("T")


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` -> ``(i, n)`` with ``0 <= i < n``; anything else is a one-line :class:`ConfigError`."""
    try:
        i, n = (int(x) for x in str(text).split("/"))
    except ValueError:
        raise ConfigError(f"--shard: expected INDEX/COUNT such as 0/4, got {text!r}") from None
    if n < 1 or not 0 <= i < n:
        raise ConfigError(f"--shard: INDEX must be in 0..COUNT-1 and COUNT >= 1, got {text!r}")
    return i, n


def shard_slice(items: Sequence[T], index: int, count: int) -> list[T]:
    """The ``index``-th of ``count`` contiguous, near-equal blocks of ``items`` (deterministic by position)."""
    n = len(items)
    return list(items[index * n // count:(index + 1) * n // count])


def _load_expected(meta: dict[str, Any]) -> list[str]:
    """The study ids the unsharded run would have written, in its order (studies with images only)."""
    from data_prep.schema import split_filter
    from mllm_cxr.data import load_split

    studies = load_split(meta["studies"], split_filter(meta.get("split")), (meta.get("shard") or {}).get("limit"))
    seen: dict[str, None] = {}
    for s in studies:
        if s.images:
            seen.setdefault(s.study_id, None)
    return list(seen)


def merge_predictions(shards: Sequence[str | Path], out: str | Path, *, overwrite: bool = False) -> dict[str, Any]:
    """Join ``generate --shard`` outputs into ``out`` (and ``out.meta.json``). Raises :class:`ConfigError`
    (one line) for: a file that is not a finished shard, shards of different runs, a shard missing or
    given twice, a study in two shards, studies of the run in no shard."""
    paths = [Path(p) for p in shards]
    out = Path(out)
    if not paths:
        raise ConfigError("merge-predictions: give the shard files")
    if out.exists() and not overwrite:
        raise ConfigError(f"merge-predictions: {out} exists; pass --overwrite or choose another --out")
    if out.resolve() in {p.resolve() for p in paths}:
        raise ConfigError(f"merge-predictions: --out {out} is one of the shard files")
    metas: list[dict[str, Any]] = []
    for p in paths:
        if not p.is_file():
            part = p.with_name(p.name + ".part")
            hint = " (its .part file exists: the shard is unfinished; rerun its generate command to finish it)" \
                if part.exists() else ""
            raise ConfigError(f"merge-predictions: {p}: no such predictions file{hint}")
        m = read_meta(p)
        if not isinstance(m.get("shard"), dict):
            raise ConfigError(f"merge-predictions: {p} is not a shard (its side file {meta_path(p)} has no 'shard'; "
                              "it was not written by `mllm-cxr generate --shard i/n`)")
        metas.append(m)
    first = {k: v for k, v in metas[0].items() if k != "shard"}
    count = metas[0]["shard"].get("count")
    for p, m in zip(paths, metas):
        rest = {k: v for k, v in m.items() if k != "shard"}
        if rest != first or m["shard"].get("count") != count or m["shard"].get("total") != metas[0]["shard"].get(
                "total") or m["shard"].get("limit") != metas[0]["shard"].get("limit"):
            keys = sorted(k for k in set(rest) | set(first) if rest.get(k) != first.get(k)) or ["shard"]
            raise ConfigError(f"merge-predictions: {p} comes from another run than {paths[0]} (differs in "
                              f"{', '.join(keys)})")
    by_index: dict[int, Path] = {}
    for p, m in zip(paths, metas):
        i = m["shard"]["index"]
        if i in by_index:
            raise ConfigError(f"merge-predictions: shard {i}/{count} given twice: {by_index[i]} and {p}")
        by_index[i] = p
    absent = [i for i in range(count) if i not in by_index]
    if absent:
        raise ConfigError(f"merge-predictions: shard(s) {', '.join(f'{i}/{count}' for i in absent)} missing; "
                          f"got {len(by_index)} of {count}")
    rows: dict[str, tuple[Path, int, dict]] = {}
    for i in range(count):
        p = by_index[i]
        for sid, (no, rec) in index_by_study(p, read_rows(p, "predictions")).items():
            if sid in rows:
                q, qno, _ = rows[sid]
                raise ConfigError(f"merge-predictions: study {sid} is in {q}:{qno} and in {p}:{no}; a study "
                                  "belongs to one shard")
            rows[sid] = (p, no, rec)
    expected = _load_expected(metas[0])
    missing = [sid for sid in expected if sid not in rows]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise ConfigError(f"merge-predictions: {len(missing)} of {len(expected)} studies are in no shard: {shown}")
    extra = [sid for sid in rows if sid not in set(expected)]
    order = expected + extra  # extra: studies no longer in the studies file; kept, after the rest
    make_parent(out)
    write_text_atomic(out, "".join(prediction_line(rows[sid][2]) for sid in order))
    meta = dict(first, merged_from=[str(by_index[i].resolve()) for i in range(count)])
    write_meta(out, meta)
    return {"shards": count, "rows": len(order), "not_in_studies": len(extra), "out": str(out)}
