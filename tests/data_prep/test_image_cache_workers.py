"""``prepare --image-cache --workers N``: a process pool gives the same cache as one process, resumes, and
counts (or raises) bad images as one process does."""

from __future__ import annotations

import pytest

from data_prep._util import SkipLog
from data_prep.errors import BadImageError
from data_prep.images import ImageCache
from data_prep.prepare import cache_images, prepare
from data_prep.schema import read_records


def _images(records):
    return [im.path for r in records for im in r.images]


def test_two_processes_cache_like_one_and_resume(tmp_path):
    prepare("phantom", out=tmp_path / "p" / "studies.jsonl", n=8, seed=3, progress=False)

    def run(cache_dir, workers):
        records = read_records(tmp_path / "p" / "studies.jsonl")
        cache = ImageCache(tmp_path / cache_dir, min_pixels=3136, max_pixels=401408)
        stats = cache_images(records, tmp_path / "p", cache, skip_bad=False, skips=SkipLog(), workers=workers,
                             progress=False)
        return stats, records

    one, ra = run("c1", 1)
    two, rb = run("c2", 2)
    assert one["images_cached"] == two["images_cached"] == len(set(_images(ra))) > 0
    for k in ("images_failed", "vision_tokens_per_image", "vision_tokens_per_study"):
        assert one[k] == two[k], k
    assert _images(ra) == _images(rb)  # same cache keys, in the same records
    for rel in _images(ra):  # same bytes, image by image
        assert (tmp_path / "c1" / rel).read_bytes() == (tmp_path / "c2" / rel).read_bytes()
    again, _ = run("c2", 2)  # resumable: a rerun reuses every entry
    assert again["images_cached"] == 0 and again["images_reused"] == two["images_cached"]


def test_bad_image_in_a_worker_process(tmp_path):
    prepare("phantom", out=tmp_path / "p" / "studies.jsonl", n=6, seed=1, progress=False)
    records = read_records(tmp_path / "p" / "studies.jsonl")
    victim = records[0].images[0].path
    (tmp_path / "p" / victim).write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    cache = ImageCache(tmp_path / "cache", min_pixels=3136, max_pixels=12544)
    with pytest.raises(BadImageError):
        cache_images(list(records), tmp_path / "p", cache, skip_bad=False, skips=SkipLog(), workers=2, progress=False)
    skips = SkipLog()
    stats = cache_images(records, tmp_path / "p", cache, skip_bad=True, skips=skips, workers=2, progress=False)
    assert stats["images_failed"] == 1 and victim not in _images(records)
