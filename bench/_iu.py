"""IU X-ray report texts for the benchmarks, read from the shared Open-i archive."""

from __future__ import annotations

import os
import tarfile
import xml.etree.ElementTree as ET
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
    with tarfile.open(tgz) as tar:
        for m in tar:
            if not m.name.endswith(".xml"):
                continue
            root = ET.parse(tar.extractfile(m)).getroot()
            parts = [(a.text or "").strip() for a in root.iter("AbstractText")
                     if a.get("Label") in ("FINDINGS", "IMPRESSION")]
            text = " ".join(p for p in parts if p)
            if text:
                out.append(text)
            if len(out) >= limit:
                break
    return out
