"""``train_studies_from``: a recipe trains on the train-split studies a file names (a pairs file, or ids)."""

from __future__ import annotations

import json

import pytest

from data_prep.errors import DataPrepError
from data_prep.schema import read_records
from mllm_cxr.config import ConfigError, DataArguments
from mllm_cxr.data import read_study_ids, recipe_datasets, select_studies


def _ids_build(records, root, cfg, **kw):
    """A dataset builder that returns the study ids it was given (what the recipe would train on)."""
    return [r.study_id for r in records]


def _args(studies, **kw):
    return DataArguments(studies=str(studies), **kw)


def test_a_pairs_file_selects_its_studies_in_split_order(phantom_dir, tmp_path):
    studies = phantom_dir / "studies.jsonl"
    train = [r.study_id for r in read_records(studies, "train")]
    chosen = [train[5], train[1], train[3], train[1]]  # out of order, one twice
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"study_id": s, "chosen": "a", "rejected": "b"}) + "\n" for s in chosen))
    assert read_study_ids(pairs) == [train[5], train[1], train[3]]
    out = recipe_datasets(_args(studies, train_studies_from=str(pairs)), _ids_build, None)
    assert out["train"] == [train[1], train[3], train[5]]
    limited = recipe_datasets(_args(studies, train_studies_from=str(pairs), max_train_studies=2), _ids_build, None)
    assert limited["train"] == [train[1], train[3]]  # the limit applies after the selection
    assert recipe_datasets(_args(studies), _ids_build, None)["train"] == train  # without it: the whole split


def test_a_plain_id_list_with_comments_works(phantom_dir, tmp_path):
    studies = phantom_dir / "studies.jsonl"
    train = [r.study_id for r in read_records(studies, "train")]
    ids = tmp_path / "ids.txt"
    ids.write_text(f"# hard studies\n{train[2]}\n\n  {train[0]}  \n")
    assert [r.study_id for r in select_studies(read_records(studies, "train"), ids, "train")] == [train[0], train[2]]


@pytest.mark.parametrize("content, message", [
    ("", "names no study"),
    ("# only a comment\n", "names no study"),
    ('{"chosen": "a"}\n', "study_id"),
    ('{"study_id": ""}\n', "study_id"),
    ('{"study_id": "x"\n', "not valid JSON"),
])
def test_bad_id_files_name_the_file(tmp_path, content, message):
    p = tmp_path / "ids.jsonl"
    p.write_text(content)
    with pytest.raises(DataPrepError, match=message) as e:
        read_study_ids(p)
    assert str(p) in str(e.value)


def test_missing_file_and_foreign_ids_are_errors(phantom_dir, tmp_path):
    studies = phantom_dir / "studies.jsonl"
    with pytest.raises(DataPrepError, match="not found|no such|missing") as e:
        recipe_datasets(_args(studies, train_studies_from=str(tmp_path / "nope.jsonl")), _ids_build, None)
    assert "nope.jsonl" in str(e.value)
    test_id = read_records(studies, "test")[0].study_id
    train_id = read_records(studies, "train")[0].study_id
    ids = tmp_path / "ids.txt"
    ids.write_text(f"{train_id}\n{test_id}\nph-unknown\n")
    with pytest.raises(DataPrepError, match="2 of its 3 study ids are not in split 'train'") as e:
        recipe_datasets(_args(studies, train_studies_from=str(ids)), _ids_build, None)
    assert test_id in str(e.value) and str(ids) in str(e.value)


def test_dpo_refuses_it(tmp_path):
    from mllm_cxr.train.dpo import PairsArguments, load_pair_dataset

    pairs = PairsArguments(pairs=str(tmp_path / "p.jsonl"))
    with pytest.raises(ConfigError, match="train_studies_from: .*filter the pairs file"):
        load_pair_dataset(pairs, _args(tmp_path / "s.jsonl", train_studies_from="ids.txt"), None)


def _pairs_file(path, ids, tag):
    path.write_text("".join(json.dumps({"study_id": s, "chosen": f"{tag} good {i}", "rejected": f"{tag} bad {i}"})
                            + "\n" for i, s in enumerate(ids)))
    return path


def test_dpo_trains_on_several_pairs_files_in_order(phantom_dir, tmp_path):
    """``pairs`` takes several files (a YAML list or comma-separated); their pairs are read in order, and a pair
    naming a study the studies file lacks is an error naming its own file and line."""
    from mllm_cxr.prompts import PromptConfig
    from mllm_cxr.train.dpo import PairsArguments, load_pair_dataset

    studies = phantom_dir / "studies.jsonl"
    train = [r.study_id for r in read_records(studies, "train")]
    a, b = _pairs_file(tmp_path / "a.jsonl", train[:3], "a"), _pairs_file(tmp_path / "b.jsonl", train[1:3], "b")
    assert PairsArguments(pairs=f"{a}, {b}").pairs == [str(a), str(b)]
    assert PairsArguments(pairs=[str(a), f"{b},"]).pairs == [str(a), str(b)]
    ds = load_pair_dataset(PairsArguments(pairs=[str(a), str(b)]), _args(studies), PromptConfig(sections=["findings"]))
    assert len(ds) == 5
    chosen = [str(r["chosen"]) for r in ds]
    assert [c for c in chosen if "a good" in c] == chosen[:3]  # a's three pairs, then b's two
    assert "a good 0" in chosen[0] and "b good 0" in chosen[3] and "b good 1" in chosen[4]
    bad = _pairs_file(tmp_path / "c.jsonl", [train[0], "no-such-study"], "c")
    with pytest.raises(DataPrepError, match=r"c\.jsonl:2, field 'study_id'.*lacks") as e:
        load_pair_dataset(PairsArguments(pairs=[str(a), str(bad)]), _args(studies), PromptConfig())
    assert "no-such-study" in str(e.value)
