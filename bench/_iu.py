"""IU X-ray report texts for the benchmarks, read from the shared Open-i archive."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MLLM_CXR_SHARED", ROOT.parent / "shared")) / "data"


def iu_report_texts(limit: int) -> list[str]:
    """Up to ``limit`` non-empty FINDINGS + IMPRESSION texts; ``[]`` when the shared archive is absent.

    ``$MLLM_CXR_IU_TEXTS`` may name a gzipped JSON list of these texts instead (the lent GPU machine gets
    such a file carried for the run, not the shared folder).
    """
    texts = os.environ.get("MLLM_CXR_IU_TEXTS")
    if texts:
        import gzip
        import json

        with gzip.open(texts, "rt") as f:
            return json.load(f)[:limit]
    tgz = SHARED / "iu_xray" / "NLMCXR_reports.tgz"
    out: list[str] = []
    if not tgz.exists():
        return out
    from data_prep.iu_xray import iter_reports  # the project's one reader of the Open-i archive

    for r in iter_reports(tgz):
        text = " ".join(p for p in (r["findings"], r["impression"]) if p)
        if text:
            out.append(text)
        if len(out) >= limit:
            break
    return out
