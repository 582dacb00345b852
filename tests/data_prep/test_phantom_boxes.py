"""The phantom records where it draws: detection boxes on the frontal image and grounded FINDINGS
sentences, without changing a pixel or a word of what the same seed gave before boxes were recorded."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from PIL import Image

from data_prep.phantom import DEVICE_TIP_LABELS, make_phantom
from data_prep.schema import read_records

# sha256 of (ids, report texts, labels, indication, image paths, image bytes) computed with the phantom
# as it was before it recorded boxes (commit d7cd821 and earlier)
BEFORE = {(16, 3, True, 224): "e2c4c305c4d21a639cd0389a7615da9319c0347b17e669c25cf9849fbc4b2882",
          (10, 7, False, 160): "eb278791ba1fe91cdb2abffbd8b066bb10a1ba28b46745365b934a4e414a9a7c"}


def _digest(d: Path) -> str:
    h = hashlib.sha256()
    for line in (d / "studies.jsonl").read_text().splitlines():
        r = json.loads(line)
        h.update(json.dumps([r["study_id"], r["findings"], r["impression"], r["labels"], r["indication"],
                             [im["path"] for im in r["images"]]]).encode())
        for im in r["images"]:
            h.update((d / im["path"]).read_bytes())
    return h.hexdigest()


def test_same_seed_same_images_and_reports_as_before(tmp_path):
    for (n, seed, lateral, size), want in BEFORE.items():
        out = tmp_path / f"{n}-{seed}"
        make_phantom(out, n=n, seed=seed, lateral=lateral, image_size=size)
        assert _digest(out) == want, (n, seed)


def test_boxes_are_where_the_findings_are_drawn(tmp_path):
    make_phantom(tmp_path, n=60, seed=5, image_size=256)
    recs = read_records(tmp_path / "studies.jsonl")
    seen = set()
    n_checked = 0
    for r in recs:
        frontal, *rest = r.images
        assert frontal.view in ("PA", "AP") and all(im.boxes is None for im in rest)
        labels = [b["label"] for b in frontal.boxes]
        seen |= set(labels)
        assert labels.count("Heart") == 1
        for name in ("Cardiomegaly", "Pneumothorax"):
            assert (name in labels) == (name in r.meta["findings"]), (r.study_id, name)
        assert "Consolidation" not in labels or "Consolidation" in r.meta["findings"]
        eff = r.meta["details"].get("Pleural Effusion")
        assert labels.count("Pleural Effusion") <= (0 if eff is None else 2 if eff["side"] == "bilateral" else 1)
        if eff and "Pneumothorax" not in r.meta["findings"]:
            assert labels.count("Pleural Effusion") == (2 if eff["side"] == "bilateral" else 1)
        devices = r.meta["details"].get("Support Devices", {}).get("devices", [])
        assert sorted(b for b in labels if b.endswith("tip")) == sorted(DEVICE_TIP_LABELS[d] for d in devices)
        # the drawing agrees: a consolidation box (away from a pneumothorax) is brighter than the lung
        # the same box shifted up by its height, where the texture is the plain lung's
        img = np.asarray(Image.open(tmp_path / frontal.path), dtype=float)
        for b in frontal.boxes:
            if b["label"] == "Consolidation" and "Pneumothorax" not in r.meta["findings"] \
                    and "Pleural Effusion" not in r.meta["findings"]:
                x0, y0, x1, y1 = (int(b[k] * 256) for k in ("x_min", "y_min", "x_max", "y_max"))
                cx, cy, hx, hy = (x0 + x1) // 2, (y0 + y1) // 2, (x1 - x0) // 6, (y1 - y0) // 6
                core = img[cy - hy:cy + hy, cx - hx:cx + hx].mean()
                dy = -(y1 - y0)  # upwards: still lung below the apex, never the diaphragm or the abdomen
                shifted = [img[cy - hy + dy:cy + hy + dy, cx - hx:cx + hx].mean()] if cy - hy + dy >= 0.2 * 256 else []
                assert all(core > s + 5 for s in shifted), (r.study_id, core, shifted)
                n_checked += bool(shifted)
    assert {"Heart", "Cardiomegaly", "Pleural Effusion", "Consolidation", "Pneumothorax"} <= seen
    assert n_checked >= 2


def test_grounded_findings_are_the_findings_sentences(tmp_path):
    make_phantom(tmp_path, n=60, seed=5, image_size=128)
    recs = read_records(tmp_path / "studies.jsonl")
    n_grounded = 0
    for r in recs:
        g = r.grounded_findings
        assert " ".join(x["text"] for x in g) == r.findings  # the sentences, in order, nothing else
        boxes = {(b["x_min"], b["y_min"], b["x_max"], b["y_max"]) for b in r.images[0].boxes}
        for x in g:
            assert x["image"] == 0
            low = x["text"].lower()
            if low.startswith("no ") or "not enlarged" in low or "normal" in low or "clear" in low:
                assert x["boxes"] is None, x
            for b in x["boxes"] or []:
                assert (b["x_min"], b["y_min"], b["x_max"], b["y_max"]) in boxes
            n_grounded += bool(x["boxes"])
            if "endotracheal" in low and x["boxes"]:
                ett = [b for b in r.images[0].boxes if b["label"] == "ETT tip"]
                assert [dict(b) for b in x["boxes"]] == [{k: v for k, v in e.items() if k != "label"} for e in ett]
    assert n_grounded > 20
