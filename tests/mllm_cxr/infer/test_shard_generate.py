"""``mllm-cxr generate --shard i/n`` + ``mllm-cxr merge-predictions`` == the unsharded run, row for row (tiny model)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mllm_cxr.config import ConfigError
from mllm_cxr.infer.shard import parse_shard, shard_slice


def test_shard_slices_cover_the_studies_once_in_order():
    items = list(range(11))
    for n in (1, 2, 3, 4, 11, 12):
        parts = [shard_slice(items, i, n) for i in range(n)]
        assert sum(parts, []) == items
        assert max(map(len, parts)) - min(map(len, parts)) <= 1
    assert parse_shard("1/4") == (1, 4)
    for bad in ("4/4", "-1/2", "1", "a/b", "0/0"):
        with pytest.raises(ConfigError, match="--shard"):
            parse_shard(bad)


def _gen(main, phantom: Path, model: Path, out: Path, *extra: str) -> int:
    return main(["generate", "--studies", str(phantom / "studies.jsonl"), "--model", str(model), "--split", "all",
                 "--limit", "9", "--max-new-tokens", "6", "--batch-size", "4", "--dtype", "float32", "--quiet",
                 "--out", str(out), *extra])


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_two_shards_merged_equal_the_unsharded_run(tmp_path, phantom_dir, tiny_model_dir, capsys):
    from mllm_cxr.cli import main

    whole = tmp_path / "whole.jsonl"
    assert _gen(main, phantom_dir, tiny_model_dir, whole) == 0
    shards = [tmp_path / f"pred.{i}.jsonl" for i in range(2)]
    for i, s in enumerate(shards):
        assert _gen(main, phantom_dir, tiny_model_dir, s, "--shard", f"{i}/2") == 0
    assert [len(_rows(s)) for s in shards] == [4, 5]  # 9 studies: [0, 4) and [4, 9)
    meta1 = json.loads((tmp_path / "pred.1.jsonl.meta.json").read_text())
    assert meta1["shard"] == {"index": 1, "count": 2, "total": 9, "limit": 9}

    # resumable per shard: a rerun of shard 1 finds everything done
    capsys.readouterr()
    assert _gen(main, phantom_dir, tiny_model_dir, shards[1], "--shard", "1/2") == 0
    assert "generated 0 studies (5 already done" in capsys.readouterr().out
    # a shard's file is not continued as another shard (or unsharded)
    assert _gen(main, phantom_dir, tiny_model_dir, shards[1], "--shard", "0/2") == 2
    assert "shard" in capsys.readouterr().err

    merged = tmp_path / "merged.jsonl"
    assert main(["merge-predictions", str(shards[1]), str(shards[0]), "--out", str(merged)]) == 0
    assert "merged 2 shards: 9 studies" in capsys.readouterr().out
    assert _rows(merged) == _rows(whole)
    m, w = (json.loads(Path(f"{p}.meta.json").read_text()) for p in (merged, whole))
    assert m.pop("merged_from") == [str(s.resolve()) for s in shards] and m == w

    # refusals, each one line (exit 2)
    def merge(*files, out="m2.jsonl"):
        capsys.readouterr()
        rc = main(["merge-predictions", *map(str, files), "--out", str(tmp_path / out)])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and len(err.splitlines()) == 1, err
        return err

    assert "shard(s) 1/2 missing" in merge(shards[0])
    assert "given twice" in merge(shards[0], shards[0], shards[1])
    assert "is not a shard" in merge(whole, shards[0])
    assert "exists" in merge(shards[0], shards[1], out="merged.jsonl")
    rows = _rows(shards[1])
    dup = tmp_path / "dup.1.jsonl"
    dup.write_text("".join(json.dumps(r) + "\n" for r in [_rows(shards[0])[0], *rows[1:]]))
    Path(f"{dup}.meta.json").write_text(Path(f"{shards[1]}.meta.json").read_text())
    err = merge(shards[0], dup)
    assert "is in" in err and rows[0]["study_id"] not in err and _rows(shards[0])[0]["study_id"] in err
    cut = tmp_path / "cut.1.jsonl"
    cut.write_text("".join(json.dumps(r) + "\n" for r in rows[1:]))
    Path(f"{cut}.meta.json").write_text(Path(f"{shards[1]}.meta.json").read_text())
    assert f"1 of 9 studies are in no shard: {rows[0]['study_id']}" in merge(shards[0], cut)
    other = tmp_path / "other.1.jsonl"
    other.write_text(shards[1].read_text())
    Path(f"{other}.meta.json").write_text(json.dumps({**meta1, "adapter": "elsewhere"}))
    assert "another run" in merge(shards[0], other) and "adapter" in merge(shards[0], other)
