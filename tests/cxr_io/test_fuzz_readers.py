"""Fuzzing the readers: hypothesis-generated JSONL lines, CSV rows and YAML configs.

Whatever the bytes, every reader either returns or raises our one error type (:class:`cxr_io.InputError`,
whose subclasses are DataPrepError, RewardError, ConfigError...). Well-formed input round-trips.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import tempfile
import warnings
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cxr_io import InputError, iter_csv_rows, read_jsonl, read_yaml

FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- strategies ------------------------------------------------------------------------------------
json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=30)
json_values = st.recursive(json_scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=10), c,
                                                                                               max_size=4), max_leaves=12)
RECORD_KEYS = ["study_id", "patient_id", "dataset", "split", "study_time", "images", "indication", "findings",
               "impression", "comparison", "prior", "labels", "meta", "prediction", "reference", "context", "chosen",
               "rejected", "chosen_score", "text"]
records = st.dictionaries(st.sampled_from(RECORD_KEYS) | st.text(max_size=8), json_values, max_size=10)
json_line = st.one_of(records.map(lambda d: json.dumps(d)), json_values.map(json.dumps), st.text(max_size=60))
raw_line = st.one_of(json_line.map(lambda s: s.encode("utf-8")), st.binary(max_size=60))
jsonl_bytes = st.lists(raw_line, max_size=8).map(lambda ls: b"\n".join(x.replace(b"\n", b" ") for x in ls) + b"\n")

cell = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=20)
csv_rows = st.lists(st.lists(cell, min_size=1, max_size=4), min_size=1, max_size=6)


def _file(data: bytes, name: str) -> Path:
    d = Path(tempfile.mkdtemp(prefix="fuzz-"))
    p = d / name
    p.write_bytes(data)
    return p


def only_our_error(fn, *args, **kw):
    """Run ``fn``; our error type is fine, anything else fails the example."""
    try:
        out = fn(*args, **kw)
        return list(out) if hasattr(out, "__next__") else out
    except InputError as e:
        assert str(e), "an error with no message"
        return e


# -- JSONL -----------------------------------------------------------------------------------------
@FUZZ
@given(data=jsonl_bytes, gz=st.booleans(), cut=st.integers(0, 40))
def test_jsonl_readers_raise_only_our_error(data, gz, cut):
    from data_prep.schema import read_records
    from evaluation.predictions import predictions_to_evaluate, read_predictions, read_rows
    from mllm_cxr.train.pairs import read_pairs
    from reward.cli_label import _read_rows

    if gz:
        data = gzip.compress(data)
        data = data[: max(0, len(data) - cut)]  # sometimes a truncated archive
    p = _file(data, "x.jsonl.gz" if gz else "x.jsonl")
    only_our_error(read_jsonl, p)
    only_our_error(read_jsonl, p, objects=False)
    only_our_error(read_records, p)
    only_our_error(read_rows, p, "reference")
    only_our_error(predictions_to_evaluate, p)
    only_our_error(read_predictions, p)
    only_our_error(read_pairs, p)
    if not gz:
        only_our_error(_read_rows, p, "text", "study_id")


@FUZZ
@given(rows=st.lists(records, max_size=6))
def test_jsonl_round_trip(rows):
    from cxr_io import write_jsonl

    p = _file(b"", "x.jsonl")
    write_jsonl(p, rows)
    assert [r for _, r in read_jsonl(p)] == json.loads(json.dumps(rows))


# -- CSV -------------------------------------------------------------------------------------------
def _csv_bytes(rows) -> bytes:
    buf = io.StringIO()
    csv.writer(buf).writerows(rows)
    return buf.getvalue().encode("utf-8")


@FUZZ
@given(rows=csv_rows, damage=st.sampled_from(["none", "quote", "bytes", "cut", "crlf"]), junk=st.binary(max_size=8),
       where=st.integers(0, 400))
def test_csv_readers_raise_only_our_error(rows, damage, junk, where):
    from data_prep._util import iter_csv
    from reward.cli_label import _read_rows

    data = _csv_bytes([["id", "report", "extra"], *rows])
    i = min(where, len(data))
    if damage == "quote":
        data = data[:i] + b'"' + data[i:]
    elif damage == "bytes":
        data = data[:i] + junk + data[i:]
    elif damage == "cut":
        data = data[:i]
    elif damage == "crlf":
        data = data.replace(b"\n", b"\r\n")
    p = _file(data, "reports.csv")
    only_our_error(iter_csv_rows, p, required=["id"])
    only_our_error(iter_csv, p, required=["id"])
    only_our_error(_read_rows, p, "report", "id")


@FUZZ
@given(rows=st.lists(st.lists(cell, min_size=3, max_size=3), max_size=6))
def test_csv_round_trip_keeps_every_field(rows):
    p = _file(_csv_bytes([["id", "report", "extra"], *rows]), "reports.csv")
    assert [list(r.values()) for _, r in iter_csv_rows(p)] == rows


# -- YAML configs ----------------------------------------------------------------------------------
CONFIG_KEYS = ["studies", "data_root", "train_split", "max_train_studies", "model_name_or_path", "lora_r",
               "lora_alpha", "lora_target_modules", "load_in_4bit", "use_peft", "learning_rate", "max_steps",
               "output_dir", "sections", "max_images", "context", "min_pixels", "max_pixels", "bf16",
               "per_device_train_batch_size", "gradient_accumulation_steps", "report_to", "seed"]
yaml_scalars = st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=False) | st.text(max_size=20)
yaml_values = st.recursive(yaml_scalars, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c,
                                                                                            max_size=3), max_leaves=6)
configs = st.dictionaries(st.sampled_from(CONFIG_KEYS) | st.text(max_size=10), yaml_values, max_size=6)
yaml_bytes = st.one_of(configs.map(lambda d: yaml.safe_dump(d).encode("utf-8")),
                       st.text(max_size=80).map(lambda s: s.encode("utf-8")), st.binary(max_size=80))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=yaml_bytes)
def test_recipe_config_reader_raises_only_our_error(data):
    from trl import SFTConfig

    from mllm_cxr.config import DataArguments, parse_recipe_args
    from mllm_cxr.modeling import ModelArguments
    from mllm_cxr.prompts import PromptConfig

    p = _file(data, "cfg.yaml")
    out = p.parent / "run"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        only_our_error(parse_recipe_args, (DataArguments, ModelArguments, PromptConfig, SFTConfig),
                       ["--config", str(p), "--output_dir", str(out), "--report_to", "none"])


@FUZZ
@given(data=yaml_bytes)
def test_yaml_readers_raise_only_our_error(data):
    from reward.chexpert import load_rules
    from reward.trl import load_reward_spec

    p = _file(data, "spec.yaml")
    only_our_error(read_yaml, p)
    only_our_error(load_reward_spec, str(p))
    only_our_error(load_rules, p)


def test_our_error_is_the_base_of_every_user_error():
    from data_prep.errors import BadImageError, DataPrepError
    from mllm_cxr.config import ConfigError
    from mllm_cxr.errors import ExportError
    from mllm_cxr.infer.generate import GenerationError
    from reward.base import MissingBackendError, RewardError

    for cls in (DataPrepError, BadImageError, ConfigError, ExportError, GenerationError, RewardError,
                MissingBackendError):
        assert issubclass(cls, InputError), cls
    with pytest.raises(InputError, match=r"x.jsonl:2: not UTF-8"):
        list(read_jsonl(_file(b'{"a": 1}\n{"b": "\xff"}\n', "x.jsonl")))


def test_cxr_io_is_a_leaf_and_the_packages_keep_their_import_rules():
    import subprocess
    import sys

    from tests.builders.repo import REPO

    code = ("import sys, cxr_io; assert not {'data_prep', 'reward', 'mllm_cxr', 'yaml'} & set(sys.modules), 'leaf';"
            "import data_prep.cli, data_prep.prepare, data_prep.schema; assert 'torch' not in sys.modules, 'torch';"
            "import evaluation.cli, reward.cli_label, reward.trl; assert 'mllm_cxr' not in sys.modules, 'mllm_cxr'")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                       env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
