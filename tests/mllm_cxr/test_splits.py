"""Every verb with a --split spells "every split" the same way: ``all`` (the older ``*`` and ``""`` still work)."""

from __future__ import annotations

import pytest

from data_prep.schema import ALL_SPLITS, read_records, split_filter
from mllm_cxr.data import load_split


def test_all_and_its_aliases_mean_every_split():
    assert ALL_SPLITS[0] == "all"
    assert [split_filter(s) for s in (None, "all", "*", "")] == [None] * 4
    assert split_filter("train") == "train"


@pytest.mark.parametrize("spelling", ALL_SPLITS)
def test_readers_take_every_spelling(phantom_dir, spelling):
    studies = phantom_dir / "studies.jsonl"
    every = [r.study_id for r in read_records(studies)]
    assert len({r.split for r in read_records(studies)}) > 1  # the phantom has several splits
    assert [r.study_id for r in read_records(studies, spelling)] == every
    assert [r.study_id for r in load_split(studies, spelling)] == every


@pytest.mark.parametrize("spelling", ALL_SPLITS)
def test_every_verb_reads_all_as_every_split(phantom_dir, tmp_path, spelling, capsys):
    """generate/export (``_split``), a sharded generate's merge (the split its meta recorded) and pairs: the
    same studies for every spelling."""
    from mllm_cxr.cli import main
    from mllm_cxr.cli.model import _split
    from mllm_cxr.infer.shard import _load_expected

    studies = phantom_dir / "studies.jsonl"
    every = [r.study_id for r in read_records(studies) if r.images]
    assert _split(spelling) is None
    assert _load_expected({"studies": str(studies), "split": spelling}) == every
    out = tmp_path / f"prior-{len(spelling)}.jsonl"
    assert main(["pairs", "prior", "--studies", str(studies), "--split", spelling, "--out", str(out)]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    ref = tmp_path / "prior-ref.jsonl"
    if not ref.exists():
        assert main(["pairs", "prior", "--studies", str(studies), "--split", "all", "--out", str(ref)]) == 0
    assert out.read_text() == ref.read_text() and str(out) in line
    train = tmp_path / "prior-train.jsonl"
    assert main(["pairs", "prior", "--studies", str(studies), "--out", str(train)]) == 0  # default: train only
    assert len(train.read_text().splitlines()) < len(out.read_text().splitlines())
