"""Every bad input ends in one clear line (file/field/value + what to do), exit code 2, no traceback, and
leaves its input files unchanged. One table, run in-process (``main(argv)``) except for the launcher and
Ctrl-C rows at the end, which need a real process.

Each row builds its inputs in a fresh folder and gives the runner, the arguments, the words the error
line must contain and the input files to hash before and after. Rows with ``rc=0`` are bad inputs the
tool handles by a counted skip (the words are then looked for in stdout).
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import importlib.util
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import REPO
from tests.test_converters import make_chexpert_plus, make_mimic

BAD_UTF8 = b'{"study_id": "a", "findings": "caf\xe9 \xff"}\n'
LANG_KEY = "base_model.model.model.language_model.layers.0.self_attn.q_proj.lora_{}.weight"
VIS_KEY = "base_model.model.model.visual.blocks.0.attn.qkv.lora_{}.weight"


# ------------------------------------------------------------------------------------------------
# Input builders
# ------------------------------------------------------------------------------------------------
def jl(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def raw(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return path


def fake_adapter(d: Path, *, rank: int = 8, vision: bool = False, weights: bytes | None = None, **cfg) -> Path:
    """A LoRA adapter folder (config + safetensors with LoRA keys of the right shapes, no model needed)."""
    import torch
    from safetensors.torch import save_file

    d.mkdir(parents=True, exist_ok=True)
    conf = {"peft_type": "LORA", "r": rank, "lora_alpha": 2 * rank, "target_modules": ["q_proj"], "bias": "none",
            "base_model_name_or_path": "tiny", **cfg}
    (d / "adapter_config.json").write_text(json.dumps(conf))
    if weights is not None:
        (d / "adapter_model.safetensors").write_bytes(weights)
        return d
    t = {LANG_KEY.format("A"): torch.zeros(rank, 16), LANG_KEY.format("B"): torch.zeros(16, rank)}
    if vision:
        t.update({VIS_KEY.format("A"): torch.zeros(rank, 16), VIS_KEY.format("B"): torch.zeros(48, rank)})
    save_file(t, str(d / "adapter_model.safetensors"))
    return d


def studies_copy(env, name: str = "studies.jsonl") -> Path:
    """The phantom studies file copied into the row's folder (its images stay where they are)."""
    dst = env.tmp / name
    shutil.copyfile(env.phantom / "studies.jsonl", dst)
    return dst


def preds(path: Path, n: int = 3, **extra) -> Path:
    return jl(path, [{"study_id": f"s{i}", "prediction": "No effusion.", "reference": "Small effusion.",
                      "context": {"has_prior": False}, **extra} for i in range(n)])


def recipe_yaml(env, **keys) -> Path:
    base = {"studies": str(env.phantom / "studies.jsonl"), "model_name_or_path": str(env.tiny),
            "output_dir": str(env.tmp / "run"), "max_steps": 1, "report_to": "none", "use_cpu": True}
    base.update(keys)
    import yaml

    return raw(env.tmp / "cfg.yaml", yaml.safe_dump(base))


# ------------------------------------------------------------------------------------------------
# The table
# ------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Env:
    tmp: Path
    phantom: Path
    tiny: Path


@dataclasses.dataclass
class Case:
    id: str
    build: Callable[[Env], tuple[str, list[str], list[Path]]]  # -> (runner, argv, input files)
    words: tuple[str, ...]
    rc: int = 2
    after: Callable[[Env], None] | None = None  # extra check (e.g. nothing partial left behind)


CASES: list[Case] = []


def case(id_: str, *words: str, rc: int = 2, after=None):
    def deco(fn):
        CASES.append(Case(id_, fn, tuple(words), rc, after))
        return fn
    return deco


# -- prepare ---------------------------------------------------------------------------------------
@case("prepare-out-under-a-file", "is a file", "choose another output path")
def _(e):
    f = raw(e.tmp / "afile", "x")
    return "cli", ["prepare", "phantom", "--n", "4", "--root", str(e.tmp / "ph"), "--out", str(f / "s.jsonl"),
                   "--quiet"], [f]


@case("prepare-iu-garbage-tgz", "not a readable tar archive", "NLMCXR_reports.tgz")
def _(e):
    f = raw(e.tmp / "NLMCXR_reports.tgz", os.urandom(2000))
    return "cli", ["prepare", "iu-xray", str(f), "--out", str(e.tmp / "o.jsonl"), "--quiet"], [f]


@case("prepare-iu-truncated-tgz", "corrupt or truncated archive", "re-download")
def _(e):
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for i in range(30):
            data = (f"<eCitation><MedlineCitation>{'x' * 3000}{i}</MedlineCitation></eCitation>").encode()
            info = tarfile.TarInfo(f"ecgen-radiology/{i}.xml")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    f = raw(e.tmp / "NLMCXR_reports.tgz", buf.getvalue()[: len(buf.getvalue()) // 2])
    return "cli", ["prepare", "iu-xray", str(f), "--out", str(e.tmp / "o.jsonl"), "--quiet"], [f]


@case("prepare-iu-annotation-not-utf8", "annotation.json", "unreadable annotation")
def _(e):
    f = raw(e.tmp / "annotation.json", b'{"train": ["\xff\xfe"]}')
    return "cli", ["prepare", "iu-xray", str(f), "--out", str(e.tmp / "o.jsonl"), "--quiet"], [f]


@case("prepare-chexpert-csv-not-utf8", "df_chexpert_plus_240401.csv", "utf-8")
def _(e):
    root = make_chexpert_plus(e.tmp / "cxp")
    csv_path = root / "df_chexpert_plus_240401.csv"
    csv_path.write_bytes(csv_path.read_bytes() + b"\n\xff\xfe,\xff\n")
    return "cli", ["prepare", "chexpert-plus", str(root), "--out", str(e.tmp / "o.jsonl"), "--quiet"], [csv_path]


@case("prepare-chexpert-csv-missing-columns", "lacks column", "path_to_image")
def _(e):
    f = raw(e.tmp / "cxp" / "df_chexpert_plus_240401.csv", "a,b\n1,2\n")
    return "cli", ["prepare", "chexpert-plus", str(f.parent), "--out", str(e.tmp / "o.jsonl"), "--quiet"], [f]


@case("prepare-out-is-the-source-csv", "is the input file", "never overwrites an input")
def _(e):
    root = make_chexpert_plus(e.tmp / "cxp")
    csv_path = root / "df_chexpert_plus_240401.csv"
    return "cli", ["prepare", "chexpert-plus", str(csv_path), "--out", str(csv_path), "--quiet"], [csv_path]


@case("prepare-out-is-the-splits-csv", "is the input file")
def _(e):
    f = raw(e.tmp / "splits.csv", "id,split\n")
    return "cli", ["prepare", "iu-xray", str(e.tmp / "missing.tgz"), "--splits-csv", str(f), "--out", str(f),
                   "--quiet"], [f]


@case("prepare-mimic-zero-byte-jpg", "image file is empty", ".jpg")
def _(e):
    root = make_mimic(e.tmp / "mimic")
    jpg = next(root.glob("files/**/*.jpg"))
    jpg.write_bytes(b"")
    return "cli", ["prepare", "mimic-cxr", str(root), "--out", str(e.tmp / "o.jsonl"), "--quiet"], [jpg]


@case("prepare-mimic-garbage-jpg", "unreadable or corrupt image", ".jpg")
def _(e):
    root = make_mimic(e.tmp / "mimic")
    jpg = next(root.glob("files/**/*.jpg"))
    jpg.write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg at all" * 4)
    return "cli", ["prepare", "mimic-cxr", str(root), "--out", str(e.tmp / "o.jsonl"), "--quiet"], [jpg]


def _skip_bad_counts(e):
    recs = [json.loads(x) for x in (e.tmp / "o.jsonl").read_text().splitlines()]
    assert recs and all(r["images"] for r in recs)  # nothing left without images
    summary = json.loads((e.tmp / "o.summary.json").read_text())
    assert summary["skipped"]["by_reason"]["no images"]["count"] == 1  # d3a was the study's only image
    assert any(k.startswith("bad image") for k in summary["skipped"]["by_reason"])


@case("prepare-skip-bad-counts-bad-images-and-imageless-studies", "skipped", rc=0, after=_skip_bad_counts)
def _(e):
    root = make_mimic(e.tmp / "mimic")
    bad = [next(root.glob("files/**/d3a.jpg")), next(root.glob("files/**/d1b.jpg"))]
    for b in bad:
        b.write_bytes(b"garbage")
    return "cli", ["prepare", "mimic-cxr", str(root), "--out", str(e.tmp / "o.jsonl"), "--skip-bad", "--quiet"], bad


@case("prepare-standalone-data-prep-cli", "is a file")
def _(e):
    f = raw(e.tmp / "afile", "x")
    return "data_prep", ["prepare", "phantom", "--n", "4", "--root", str(e.tmp / "ph"),
                         "--out", str(f / "s.jsonl"), "--quiet"], [f]


# -- label -----------------------------------------------------------------------------------------
@case("label-input-missing", "not found", "--input")
def _(e):
    return "cli", ["label", "--input", str(e.tmp / "nope.csv"), "--text-column", "r", "--out", str(e.tmp / "o.csv"),
                   "--quiet"], []


@case("label-csv-not-utf8", "reports.csv:2", "not UTF-8", "re-save")
def _(e):
    f = raw(e.tmp / "reports.csv", b"id,report\n1,caf\xe9\n")
    return "cli", ["label", "--input", str(f), "--text-column", "report", "--out", str(e.tmp / "o.csv"), "--quiet"], [f]


@case("label-csv-unclosed-quote", "reports.csv:3", "quote opened here is never closed")
def _(e):
    f = raw(e.tmp / "reports.csv", 'id,report\n1,"fine"\n2,"unclosed\n3,third\n4,fourth\n')
    return "cli", ["label", "--input", str(f), "--text-column", "report", "--out", str(e.tmp / "o.csv"), "--quiet"], [f]


@case("label-csv-stray-quote", "reports.csv:2", "malformed CSV")
def _(e):
    f = raw(e.tmp / "reports.csv", 'id,report\n1,"closed" then more\n')
    return "cli", ["label", "--input", str(f), "--text-column", "report", "--out", str(e.tmp / "o.csv"), "--quiet"], [f]


@case("label-csv-missing-column", "column(s) 'report' not found", "columns: id, text")
def _(e):
    f = raw(e.tmp / "reports.csv", "id,text\n1,x\n")
    return "cli", ["label", "--input", str(f), "--text-column", "report", "--out", str(e.tmp / "o.csv"), "--quiet"], [f]


@case("label-csv-extra-fields", "reports.csv:2", "quote fields that contain commas")
def _(e):
    f = raw(e.tmp / "reports.csv", "id,report\n1,no effusion, no pneumothorax\n")
    return "cli", ["label", "--input", str(f), "--text-column", "report", "--out", str(e.tmp / "o.csv"), "--quiet"], [f]


@case("label-csv-empty-file", "reports.csv", "empty")
def _(e):
    f = raw(e.tmp / "reports.csv", "")
    return "cli", ["label", "--input", str(f), "--text-column", "report", "--out", str(e.tmp / "o.csv"), "--quiet"], [f]


@case("label-csv-gz-corrupt", "reports.csv.gz", "corrupt or truncated")
def _(e):
    body = b"id,report\n" + b"".join(b"%d,%s\n" % (i, os.urandom(16).hex().encode()) for i in range(2000))
    data = gzip.compress(body)
    f = raw(e.tmp / "reports.csv.gz", data[: len(data) // 2])
    return "cli", ["label", "--input", str(f), "--text-column", "report", "--out", str(e.tmp / "o.csv"), "--quiet"], [f]


@case("label-jsonl-bad-json", "reports.jsonl:2", "not valid JSON")
def _(e):
    f = jl(e.tmp / "reports.jsonl", [{"report": "ok"}, "{not json"])
    return "cli", ["label", "--input", str(f), "--text-column", "report", "--out", str(e.tmp / "o.csv"), "--quiet"], [f]


@case("label-jsonl-not-object", "reports.jsonl:1", "expected a JSON object")
def _(e):
    f = jl(e.tmp / "reports.jsonl", ["[1, 2]"])
    return "cli", ["label", "--input", str(f), "--text-column", "report", "--out", str(e.tmp / "o.csv"), "--quiet"], [f]


@case("label-jsonl-not-utf8", "reports.jsonl:1", "not UTF-8")
def _(e):
    f = raw(e.tmp / "reports.jsonl", BAD_UTF8)
    return "cli", ["label", "--input", str(f), "--text-column", "findings", "--out", str(e.tmp / "o.csv"),
                   "--quiet"], [f]


@case("label-unsupported-suffix", "unsupported input type", ".txt")
def _(e):
    f = raw(e.tmp / "reports.txt", "x")
    return "cli", ["label", "--input", str(f), "--text-column", "r", "--out", str(e.tmp / "o.csv"), "--quiet"], [f]


@case("label-out-is-the-input", "is the input file", "an output never overwrites an input")
def _(e):
    f = raw(e.tmp / "reports.csv", "id,report\n1,No effusion.\n")
    return "cli", ["label", "--input", str(f), "--text-column", "report", "--out", str(f), "--quiet"], [f]


@case("label-out-under-a-file", "is a file")
def _(e):
    f = raw(e.tmp / "reports.csv", "id,report\n1,No effusion.\n")
    return "cli", ["label", "--input", str(f), "--text-column", "report", "--out", str(f / "o.csv"), "--quiet"], [f]


@case("label-rules-bad-yaml", "rules.yaml", "not valid YAML")
def _(e):
    f = raw(e.tmp / "reports.csv", "id,report\n1,No effusion.\n")
    r = raw(e.tmp / "rules.yaml", "observations: [unclosed\n")
    return "cli", ["label", "--input", str(f), "--text-column", "report", "--rules", str(r),
                   "--out", str(e.tmp / "o.csv"), "--quiet"], [f, r]


@case("label-rules-not-utf8", "rules.yaml", "not UTF-8")
def _(e):
    f = raw(e.tmp / "reports.csv", "id,report\n1,No effusion.\n")
    r = raw(e.tmp / "rules.yaml", b"observations: \xff\n")
    return "cli", ["label", "--input", str(f), "--text-column", "report", "--rules", str(r),
                   "--out", str(e.tmp / "o.csv"), "--quiet"], [f, r]


def _long_report_labelled(e):
    rows = (e.tmp / "o.csv").read_text().splitlines()
    assert len(rows) == 3 and rows[1].startswith("1,")


@case("label-report-over-131072-chars", "label: 2 reports", rc=0, after=_long_report_labelled)
def _(e):
    long = "Small left pleural effusion. " * 6000  # ~174,000 characters, over csv's default field limit
    f = raw(e.tmp / "reports.csv", f'id,report\n1,"{long}"\n2,No effusion.\n')
    return "cli", ["label", "--input", str(f), "--text-column", "report", "--id-column", "id",
                   "--out", str(e.tmp / "o.csv"), "--quiet"], [f]


# -- score -----------------------------------------------------------------------------------------
def _score_files(e):
    return (jl(e.tmp / "pred.jsonl", [{"study_id": "a", "prediction": "No effusion."}]),
            jl(e.tmp / "ref.jsonl", [{"study_id": "a", "findings": "Small effusion."}]))


@case("score-pred-not-utf8", "pred.jsonl:1", "not UTF-8")
def _(e):
    p, r = _score_files(e)
    raw(p, BAD_UTF8)
    return "cli", ["score", "--pred", str(p), "--ref", str(r), "--metrics", "bleu", "--out", str(e.tmp / "m.json"),
                   "--quiet"], [p, r]


@case("score-ref-bad-json", "ref.jsonl:2", "not valid JSON")
def _(e):
    p, r = _score_files(e)
    jl(r, [{"study_id": "a", "findings": "x"}, '{"study_id": '])
    return "cli", ["score", "--pred", str(p), "--ref", str(r), "--metrics", "bleu", "--out", str(e.tmp / "m.json"),
                   "--quiet"], [p, r]


@case("score-ref-missing", "ref.jsonl", "not found")
def _(e):
    p, r = _score_files(e)
    r.unlink()
    return "cli", ["score", "--pred", str(p), "--ref", str(r), "--metrics", "bleu", "--out", str(e.tmp / "m.json"),
                   "--quiet"], [p]


@case("score-json-list-with-a-non-object", "pred.json:2", "expected a JSON object")
def _(e):
    _, r = _score_files(e)
    p = raw(e.tmp / "pred.json", json.dumps([{"study_id": "a", "prediction": "x"}, 7]))
    return "cli", ["score", "--pred", str(p), "--ref", str(r), "--metrics", "bleu", "--out", str(e.tmp / "m.json"),
                   "--quiet"], [p, r]


@case("score-pred-gz-corrupt", "pred.jsonl.gz", "corrupt or truncated")
def _(e):
    _, r = _score_files(e)
    body = b"".join(b'{"study_id": "%d", "prediction": "%s"}\n' % (i, os.urandom(16).hex().encode())
                    for i in range(2000))
    data = gzip.compress(body)
    p = raw(e.tmp / "pred.jsonl.gz", data[: len(data) // 2])
    return "cli", ["score", "--pred", str(p), "--ref", str(r), "--metrics", "bleu", "--out", str(e.tmp / "m.json"),
                   "--quiet"], [p, r]


@case("score-unknown-metric", "unknown scorer 'blue'", "known:")
def _(e):
    p, r = _score_files(e)
    return "cli", ["score", "--pred", str(p), "--ref", str(r), "--metrics", "blue", "--out", str(e.tmp / "m.json"),
                   "--quiet"], [p, r]


@case("score-named-metric-cannot-run", "radgraph_f1", "needs model_dir", "MLLM_CXR_RADGRAPH_DIR")
def _(e):
    p, r = _score_files(e)
    return "cli", ["score", "--pred", str(p), "--ref", str(r), "--metrics", "bleu,radgraph",
                   "--out", str(e.tmp / "m.json"), "--quiet"], [p, r]


@case("score-out-is-the-pred-file", "is the input file")
def _(e):
    p, r = _score_files(e)
    return "cli", ["score", "--pred", str(p), "--ref", str(r), "--metrics", "bleu", "--out", str(p), "--quiet"], [p, r]


@case("score-per-sample-is-the-ref-file", "--per-sample", "is the input file")
def _(e):
    p, r = _score_files(e)
    return "cli", ["score", "--pred", str(p), "--ref", str(r), "--metrics", "bleu", "--out", str(e.tmp / "m.json"),
                   "--per-sample", str(r), "--quiet"], [p, r]


@case("score-spec-bad-yaml", "spec.yaml", "not valid YAML")
def _(e):
    p, r = _score_files(e)
    s = raw(e.tmp / "spec.yaml", "rewards:\n  - name: bleu\n   weight: [1\n")
    return "cli", ["score", "--pred", str(p), "--ref", str(r), "--spec", str(s), "--out", str(e.tmp / "m.json"),
                   "--quiet"], [p, r, s]


@case("score-spec-not-utf8", "spec.yaml", "not UTF-8")
def _(e):
    p, r = _score_files(e)
    s = raw(e.tmp / "spec.yaml", b"rewards:\n  - name: bl\xffeu\n")
    return "cli", ["score", "--pred", str(p), "--ref", str(r), "--spec", str(s), "--out", str(e.tmp / "m.json"),
                   "--quiet"], [p, r, s]


@case("score-no-reference-field", "ref.jsonl", "no reference field", "--ref-field")
def _(e):
    p, r = _score_files(e)
    jl(r, [{"study_id": "a", "text": "x"}])
    return "cli", ["score", "--pred", str(p), "--ref", str(r), "--metrics", "bleu", "--out", str(e.tmp / "m.json"),
                   "--quiet"], [p, r]


# -- generate --------------------------------------------------------------------------------------
@case("generate-out-is-the-studies-file-with-overwrite", "is the input file", "never overwrites an input")
def _(e):
    s = studies_copy(e)
    return "cli", ["generate", "--studies", str(s), "--data-root", str(e.phantom), "--model", str(e.tiny),
                   "--out", str(s), "--overwrite", "--quiet"], [s]


@case("generate-out-is-the-studies-file", "is the input file")
def _(e):
    s = studies_copy(e)
    return "cli", ["generate", "--studies", str(s), "--data-root", str(e.phantom), "--model", str(e.tiny),
                   "--out", str(s), "--quiet"], [s]


@case("generate-studies-not-utf8", "studies.jsonl:1", "not UTF-8")
def _(e):
    s = raw(e.tmp / "studies.jsonl", BAD_UTF8)
    return "cli", ["generate", "--studies", str(s), "--model", str(e.tiny), "--out", str(e.tmp / "p.jsonl"),
                   "--quiet"], [s]


@case("generate-studies-bad-json", "studies.jsonl:2", "not valid JSON")
def _(e):
    s = studies_copy(e)
    lines = s.read_text().splitlines()
    s.write_text("\n".join([lines[0], lines[1][: len(lines[1]) // 2], *lines[2:]]) + "\n")
    return "cli", ["generate", "--studies", str(s), "--model", str(e.tiny), "--out", str(e.tmp / "p.jsonl"),
                   "--quiet"], [s]


@case("generate-studies-gz-corrupt", "studies.jsonl.gz", "corrupt or truncated")
def _(e):
    data = gzip.compress((e.phantom / "studies.jsonl").read_bytes())
    s = raw(e.tmp / "studies.jsonl.gz", data[: len(data) // 2])
    return "cli", ["generate", "--studies", str(s), "--model", str(e.tiny), "--out", str(e.tmp / "p.jsonl"),
                   "--quiet"], [s]


@case("generate-mistyped-local-model-path", "model folder", "not found", "check the path")
def _(e):
    s = studies_copy(e)
    return "cli", ["generate", "--studies", str(s), "--data-root", str(e.phantom),
                   "--model", str(e.tiny) + "-typo", "--out", str(e.tmp / "p.jsonl"), "--quiet"], [s]


@case("generate-model-folder-without-config", "no config.json", "not a model folder")
def _(e):
    s = studies_copy(e)
    (e.tmp / "empty-model").mkdir()
    return "cli", ["generate", "--studies", str(s), "--data-root", str(e.phantom),
                   "--model", str(e.tmp / "empty-model"), "--out", str(e.tmp / "p.jsonl"), "--quiet"], [s]


@case("generate-zero-byte-adapter-safetensors", "adapter_model.safetensors", "the file is empty")
def _(e):
    s = studies_copy(e)
    a = fake_adapter(e.tmp / "adapter", weights=b"")
    return "cli", ["generate", "--studies", str(s), "--data-root", str(e.phantom), "--model", str(e.tiny),
                   "--adapter", str(a), "--out", str(e.tmp / "p.jsonl"), "--quiet"], [s, a / "adapter_config.json"]


@case("generate-adapter-folder-missing", "adapter folder", "not found")
def _(e):
    s = studies_copy(e)
    return "cli", ["generate", "--studies", str(s), "--data-root", str(e.phantom), "--model", str(e.tiny),
                   "--adapter", str(e.tmp / "nope"), "--out", str(e.tmp / "p.jsonl"), "--quiet"], [s]


@case("generate-openai-without-base-url", "--base-url")
def _(e):
    s = studies_copy(e)
    return "cli", ["generate", "--studies", str(s), "--backend", "openai", "--out", str(e.tmp / "p.jsonl"),
                   "--quiet"], [s]


@case("generate-split-with-no-studies", "no studies with split", "field 'split'")
def _(e):
    s = studies_copy(e)
    return "cli", ["generate", "--studies", str(s), "--split", "tset", "--model", str(e.tiny),
                   "--out", str(e.tmp / "p.jsonl"), "--quiet"], [s]


@case("generate-out-under-a-file", "is a file")
def _(e):
    s = studies_copy(e)
    f = raw(e.tmp / "afile", "x")
    return "cli", ["generate", "--studies", str(s), "--data-root", str(e.phantom), "--model", str(e.tiny),
                   "--out", str(f / "p.jsonl"), "--quiet"], [s, f]


def _no_image_skipped(e):
    rows = [json.loads(x) for x in (e.tmp / "p.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and rows[0]["study_id"] != "noimg"
    assert not (e.tmp / "p.jsonl.part").exists()


@case("generate-study-without-images-is-skipped-and-counted", "1 skipped: no images", rc=0, after=_no_image_skipped)
def _(e):
    recs = [json.loads(x) for x in (e.phantom / "studies.jsonl").read_text().splitlines()]
    test = [r for r in recs if r["split"] == "test"][:1]
    s = jl(e.tmp / "studies.jsonl", [*test, {**test[0], "study_id": "noimg", "images": []}])
    return "cli", ["generate", "--studies", str(s), "--data-root", str(e.phantom), "--model", str(e.tiny),
                   "--max-new-tokens", "4", "--out", str(e.tmp / "p.jsonl"), "--quiet"], [s]


# -- eval ------------------------------------------------------------------------------------------
@case("eval-pred-missing", "pred.jsonl", "not found")
def _(e):
    return "cli", ["eval", "--pred", str(e.tmp / "pred.jsonl"), "--out", str(e.tmp / "ev"), "--quiet"], []


@case("eval-pred-not-utf8", "pred.jsonl:1", "not UTF-8")
def _(e):
    p = raw(e.tmp / "pred.jsonl", BAD_UTF8)
    return "cli", ["eval", "--pred", str(p), "--out", str(e.tmp / "ev"), "--quiet"], [p]


@case("eval-pred-cut-last-line", "pred.jsonl:3", "not valid JSON", "run it again")
def _(e):
    p = preds(e.tmp / "pred.jsonl")
    p.write_text(p.read_text()[:-20])
    return "cli", ["eval", "--pred", str(p), "--out", str(e.tmp / "ev"), "--quiet"], [p]


@case("eval-pred-missing-field", "pred.jsonl:1", "field 'prediction'")
def _(e):
    p = jl(e.tmp / "pred.jsonl", [{"study_id": "a", "reference": "x"}])
    return "cli", ["eval", "--pred", str(p), "--out", str(e.tmp / "ev"), "--quiet"], [p]


@case("eval-unknown-metric", "unknown metric", "known:")
def _(e):
    p = preds(e.tmp / "pred.jsonl")
    return "cli", ["eval", "--pred", str(p), "--out", str(e.tmp / "ev"), "--metrics", "bleu,nope", "--quiet"], [p]


@case("eval-named-metric-cannot-run", "radgraph", "could not run", "MLLM_CXR_RADGRAPH_DIR",
      after=lambda e: not (e.tmp / "ev").exists() or pytest.fail("eval wrote output for a failed run"))
def _(e):
    p = preds(e.tmp / "pred.jsonl")
    return "cli", ["eval", "--pred", str(p), "--out", str(e.tmp / "ev"), "--metrics", "bleu,radgraph_f1",
                   "--n-boot", "0", "--no-plots", "--quiet"], [p]


@case("eval-out-is-a-file", "existing file", "writes a folder")
def _(e):
    p = preds(e.tmp / "pred.jsonl")
    return "cli", ["eval", "--pred", str(p), "--out", str(p), "--quiet"], [p]


@case("eval-metric-kwargs-bad-json", "--metric-kwargs", "not valid JSON")
def _(e):
    p = preds(e.tmp / "pred.jsonl")
    return "cli", ["eval", "--pred", str(p), "--out", str(e.tmp / "ev"), "--metric-kwargs", "{radgraph:",
                   "--quiet"], [p]


# -- export ----------------------------------------------------------------------------------------
@case("export-adapter-without-config", "no adapter_config.json")
def _(e):
    (e.tmp / "ad").mkdir()
    return "cli", ["export", "--base", str(e.tiny), "--adapter", str(e.tmp / "ad"), "--out", str(e.tmp / "ex")], []


@case("export-zero-byte-safetensors", "adapter_model.safetensors", "the file is empty",
      after=lambda e: not (e.tmp / "ex").exists() or pytest.fail("partial export left behind"))
def _(e):
    a = fake_adapter(e.tmp / "ad", weights=b"")
    return "cli", ["export", "--base", str(e.tiny), "--adapter", str(a), "--out", str(e.tmp / "ex")], [a]


@case("export-garbage-safetensors", "adapter_model.safetensors", "header")
def _(e):
    a = fake_adapter(e.tmp / "ad", weights=(10**9).to_bytes(8, "little") + b"{}")
    return "cli", ["export", "--base", str(e.tiny), "--adapter", str(a), "--out", str(e.tmp / "ex")], [a]


@case("export-out-is-a-file", "existing file", "folder")
def _(e):
    a = fake_adapter(e.tmp / "ad")
    f = raw(e.tmp / "ex", "x")
    return "cli", ["export", "--base", str(e.tiny), "--adapter", str(a), "--out", str(f)], [a, f]


@case("export-out-not-empty", "not empty", "--overwrite")
def _(e):
    a = fake_adapter(e.tmp / "ad")
    keep = raw(e.tmp / "ex" / "keep.txt", "mine")
    return "cli", ["export", "--base", str(e.tiny), "--adapter", str(a), "--out", str(e.tmp / "ex")], [a, keep]


@case("export-out-is-the-adapter", "is (or contains) the adapter")
def _(e):
    a = fake_adapter(e.tmp / "ad")
    return "cli", ["export", "--base", str(e.tiny), "--adapter", str(a), "--out", str(a), "--overwrite"], [a]


@case("export-vision-lora-refused", "vision-tower", "--allow-vision-lora")
def _(e):
    a = fake_adapter(e.tmp / "ad", vision=True)
    return "cli", ["export", "--base", str(e.tiny), "--adapter", str(a), "--out", str(e.tmp / "ex")], [a]


def _no_partial_export(e):
    assert not (e.tmp / "ex").exists(), "a failed export left its folder behind"
    assert not [p for p in e.tmp.iterdir() if p.name.startswith(".ex.tmp-")], "temporary folder left behind"


@case("export-failure-late-leaves-nothing-partial", "metrics.json", "not valid JSON", after=_no_partial_export)
def _(e):
    a = fake_adapter(e.tmp / "ad")
    m = raw(e.tmp / "ev" / "metrics.json", "{broken")
    return "cli", ["export", "--base", str(e.tiny), "--adapter", str(a), "--out", str(e.tmp / "ex"),
                   "--metrics", str(e.tmp / "ev")], [a, m]


# -- serve -----------------------------------------------------------------------------------------
@case("serve-dry-run-rank-below-adapter", "--max-lora-rank 8", "below the rank 16")
def _(e):
    a = fake_adapter(e.tmp / "ad", rank=16)
    return "cli", ["serve", "--model", str(e.tiny), "--adapter", str(a), "--max-lora-rank", "8", "--dry-run"], [a]


@case("serve-dry-run-rank-vllm-does-not-accept", "--max-lora-rank 12", "vLLM accepts")
def _(e):
    a = fake_adapter(e.tmp / "ad", rank=8)
    return "cli", ["serve", "--model", str(e.tiny), "--adapter", str(a), "--max-lora-rank", "12", "--dry-run"], [a]


@case("serve-dry-run-adapter-export-refuses", "cannot be served by vLLM", "modules_to_save", "--merge")
def _(e):
    a = fake_adapter(e.tmp / "ad", modules_to_save=["merger"])
    return "cli", ["serve", "--model", str(e.tiny), "--adapter", str(a), "--dry-run"], [a]


@case("serve-dry-run-vision-lora", "vision-tower")
def _(e):
    a = fake_adapter(e.tmp / "ad", vision=True)
    return "cli", ["serve", "--model", str(e.tiny), "--adapter", str(a), "--dry-run"], [a]


@case("serve-dry-run-zero-byte-safetensors", "adapter_model.safetensors", "the file is empty")
def _(e):
    a = fake_adapter(e.tmp / "ad", weights=b"")
    return "cli", ["serve", "--model", str(e.tiny), "--adapter", str(a), "--dry-run"], [a]


@case("serve-unbalanced-vllm-args", "--vllm-args", "balance the quotes")
def _(e):
    a = fake_adapter(e.tmp / "ad")
    return "cli", ["serve", "--model", str(e.tiny), "--adapter", str(a), "--vllm-args", "--foo 'bar",
                   "--dry-run"], [a]


@case("serve-adapter-folder-missing", "no adapter_config.json")
def _(e):
    return "cli", ["serve", "--model", str(e.tiny), "--adapter", str(e.tmp / "nope"), "--dry-run"], []


@case("serve-mistyped-model-path", "model folder", "not found")
def _(e):
    return "cli", ["serve", "--model", str(e.tmp / "models" / "tiny"), "--dry-run"], []


@case("serve-port-in-use", "--port", "stop the other server or pick another --port")
def _(e):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    e.hold = sock  # closed by the test after the run
    return "cli", ["serve", "--backend", "hf", "--model", str(e.tiny), "--port", str(sock.getsockname()[1])], []


# -- pairs -----------------------------------------------------------------------------------------
@case("pairs-out-is-the-studies-file", "is the input file")
def _(e):
    s = studies_copy(e)
    return "cli", ["pairs", "prior", "--studies", str(s), "--out", str(s)], [s]


@case("pairs-studies-not-utf8", "studies.jsonl:1", "not UTF-8")
def _(e):
    s = raw(e.tmp / "studies.jsonl", BAD_UTF8)
    return "cli", ["pairs", "prior", "--studies", str(s), "--out", str(e.tmp / "pairs.jsonl")], [s]


@case("pairs-summary-json-under-a-file", "--summary-json", "is a file")
def _(e):
    s = studies_copy(e)
    f = raw(e.tmp / "afile", "x")
    return "cli", ["pairs", "prior", "--studies", str(s), "--out", str(e.tmp / "pairs.jsonl"),
                   "--summary-json", str(f / "s.json")], [s, f]


@case("pairs-sample-k-below-2", "--k must be at least 2")
def _(e):
    s = studies_copy(e)
    return "cli", ["pairs", "sample", "--studies", str(s), "--model", str(e.tiny), "--k", "1",
                   "--out", str(e.tmp / "pairs.jsonl")], [s]


# -- recipes (in-process through run_recipe) -------------------------------------------------------
@case("sft-config-missing", "config file not found")
def _(e):
    return "sft", ["--config", str(e.tmp / "nope.yaml")], []


@case("sft-config-not-utf8", "cfg.yaml", "not UTF-8")
def _(e):
    c = raw(e.tmp / "cfg.yaml", b"learning_rate: 1e-4\noutput_dir: caf\xe9\n")
    return "sft", ["--config", str(c)], [c]


@case("sft-config-bad-yaml", "cfg.yaml:2", "not valid YAML")
def _(e):
    c = raw(e.tmp / "cfg.yaml", "learning_rate: 1e-4\n  bad: [indent\n")
    return "sft", ["--config", str(c)], [c]


@case("sft-config-unknown-key", "unknown config key", "did you mean 'learning_rate'")
def _(e):
    c = recipe_yaml(e, learnin_rate=1e-4)
    return "sft", ["--config", str(c)], [c]


@case("sft-finished-adapter-in-output-dir", "already holds a finished run", "--overwrite_output_dir")
def _(e):
    a = fake_adapter(e.tmp / "run")
    c = recipe_yaml(e)
    return "sft", ["--config", str(c)], [c, a / "adapter_model.safetensors", a / "adapter_config.json"]


@case("sft-output-dir-is-a-file", "output_dir", "is a file")
def _(e):
    f = raw(e.tmp / "run", "x")
    c = recipe_yaml(e)
    return "sft", ["--config", str(c)], [c, f]


@case("sft-4bit-without-peft", "load_in_4bit", "use_peft")
def _(e):
    c = recipe_yaml(e, load_in_4bit=True, use_peft=False)
    return "sft", ["--config", str(c)], [c]


@case("sft-mistyped-model-path", "model folder", "not found", "check the path")
def _(e):
    c = recipe_yaml(e, model_name_or_path=str(e.tiny) + "-typo")
    return "sft", ["--config", str(c)], [c]


@case("sft-studies-not-utf8", "studies.jsonl:1", "not UTF-8")
def _(e):
    s = raw(e.tmp / "studies.jsonl", BAD_UTF8)
    c = recipe_yaml(e, studies=str(s))
    return "sft", ["--config", str(c)], [c, s]


@case("dpo-unknown-loss-type", "loss_type", "'sigmod'", "known: sigmoid")
def _(e):
    c = recipe_yaml(e, loss_type=["sigmod"], pairs=str(e.tmp / "pairs.jsonl"))
    return "dpo", ["--config", str(c)], [c]


@case("dpo-adapter-zero-byte-safetensors", "adapter_model.safetensors", "the file is empty")
def _(e):
    pairs = jl(e.tmp / "pairs.jsonl", [])
    recs = [json.loads(x) for x in (e.phantom / "studies.jsonl").read_text().splitlines()]
    jl(pairs, [{"study_id": r["study_id"], "chosen": "No effusion.", "rejected": "Effusion, unchanged."}
               for r in recs if r["split"] == "train"][:4])
    a = fake_adapter(e.tmp / "sft", weights=b"")
    c = recipe_yaml(e, pairs=str(pairs), adapter_path=str(a))
    return "dpo", ["--config", str(c)], [c, pairs, a / "adapter_config.json"]


@case("grpo-unknown-reward", "unknown scorer 'chexpert_f2'")
def _(e):
    c = recipe_yaml(e, reward_spec="chexpert_f2", max_train_studies=4)
    return "grpo", ["--config", str(c)], [c]


@case("grpo-reward-spec-bad-yaml", "rewards.yaml", "not valid YAML")
def _(e):
    r = raw(e.tmp / "rewards.yaml", "rewards:\n - name: [chexpert_f1\n")
    c = recipe_yaml(e, reward_spec=str(r), max_train_studies=4)
    return "grpo", ["--config", str(c)], [c, r]


# -- issue 19: faults met mid-run and every new option ----------------------------------------------
def shipped(e, stage: str, cfg: str, *extra: str) -> tuple[str, list[str], list[Path]]:
    """A shipped real-model recipe config pointed at the tiny model, a LoRA adapter of it and phantom data (bf16
    off: CPU), so that without the fix the run reaches TRL's vLLM set-up."""
    from tests.model_helpers import make_random_adapter

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed here: the row is about an environment without it")
    a = make_random_adapter(e.tiny, e.tmp / "sft", run_config=False)
    return stage, ["--config", str(REPO / f"recipes/configs/qwen2.5-vl-3b/{cfg}.yaml"), "--studies",
                   str(e.phantom / "studies.jsonl"), "--model_name_or_path", str(e.tiny), "--adapter_path", str(a),
                   "--output_dir", str(e.tmp / "run"), "--bf16", "false", *extra], [a / "adapter_config.json"]


def _no_run_written(e):
    assert not (e.tmp / "run").exists(), sorted(p.name for p in (e.tmp / "run").iterdir())


@case("grpo-shipped-config-use-vllm-without-vllm", "use_vllm", "make vllm-env", "--use_vllm false",
      after=_no_run_written)
def _(e):
    return shipped(e, "grpo", "grpo")


@case("editgrpo-shipped-config-use-vllm-without-vllm", "use_vllm", "make vllm-env", "--use_vllm false")
def _(e):
    return shipped(e, "grpo", "editgrpo", "--reward_spec", str(REPO / "recipes/rewards/clinical.yaml"))


@case("grpo-dry-run-use-vllm-without-vllm", "use_vllm", "make vllm-env")
def _(e):
    return shipped(e, "grpo", "grpo_vllm_server", "--dry-run")


@case("sft-resume-missing-path", "resume_from_checkpoint", "not found", "trainer_state.json")
def _(e):
    c = recipe_yaml(e, resume_from_checkpoint=str(e.tmp / "run" / "checkpoint-9"))
    return "sft", ["--config", str(c)], [c]


@case("sft-resume-a-file", "resume_from_checkpoint", "is a file", "trainer_state.json")
def _(e):
    f = raw(e.tmp / "ckpt.pt", b"x" * 10)
    c = recipe_yaml(e, resume_from_checkpoint=str(f))
    return "sft", ["--config", str(c)], [c, f]


@case("sft-resume-folder-not-a-checkpoint", "is not a checkpoint", "found: adapter_config.json",
      "trainer_state.json")
def _(e):
    a = fake_adapter(e.tmp / "ck")
    c = recipe_yaml(e, resume_from_checkpoint=str(a))
    return "sft", ["--config", str(c)], [c, a]


@case("sft-resume-true-without-checkpoint", "no checkpoint-<step> folder", "found: no such folder",
      "trainer_state.json")
def _(e):
    c = recipe_yaml(e, resume_from_checkpoint=True)
    return "sft", ["--config", str(c)], [c]


@case("sft-negative-learning-rate", "learning_rate -0.0001", ">= 0")
def _(e):
    c = recipe_yaml(e, learning_rate=-1e-4)
    return "sft", ["--config", str(c)], [c]


@case("sft-max-steps-minus-5", "max_steps -5", "or -1")
def _(e):
    c = recipe_yaml(e, max_steps=-5)
    return "sft", ["--config", str(c)], [c]


@case("sft-duplicated-yaml-key", "cfg.yaml:3", "'learning_rate' is given twice", "keep one")
def _(e):
    c = raw(e.tmp / "cfg.yaml", f"studies: {e.phantom / 'studies.jsonl'}\nlearning_rate: 1e-4\n"
                                f"learning_rate: 1e-3\nmodel_name_or_path: {e.tiny}\n")
    return "sft", ["--config", str(c)], [c]


@case("sft-flag-prefix-abbreviation", "'learning_rat'", "did you mean 'learning_rate'")
def _(e):
    c = recipe_yaml(e)
    return "sft", ["--config", str(c), "--learning_rat", "1e-4"], [c]


@case("grpo-dry-run-unknown-reward", "unknown scorer 'chexpert_f2'", "known:")
def _(e):
    c = recipe_yaml(e, reward_spec="chexpert_f2", max_train_studies=4)
    return "grpo", ["--config", str(c), "--dry-run"], [c]


@case("grpo-dry-run-edit-key-with-algorithm-grpo", "edit_fraction", "algorithm: grpo", "algorithm: editgrpo")
def _(e):
    c = recipe_yaml(e, algorithm="grpo", edit_fraction=0.25, max_train_studies=4)
    return "grpo", ["--config", str(c), "--dry-run"], [c]


@case("dpo-dry-run-missing-adapter", "adapter_path", "adapter folder", "not found")
def _(e):
    c = recipe_yaml(e, adapter_path=str(e.tmp / "no-sft"), pairs=str(e.tmp / "pairs.jsonl"))
    return "dpo", ["--config", str(c), "--dry-run"], [c]


@case("sft-output-dir-inside-the-model-folder", "output_dir", "lies inside the input folder",
      after=lambda e: not (e.tiny / "run19").exists() or (_ for _ in ()).throw(AssertionError("written")))
def _(e):
    c = recipe_yaml(e, output_dir=str(e.tiny / "run19"))
    return "sft", ["--config", str(c)], [c]


@case("grpo-output-dir-is-the-adapter-with-overwrite", "output_dir", "is the input folder")
def _(e):
    a = fake_adapter(e.tmp / "sft")
    c = recipe_yaml(e, adapter_path=str(a), output_dir=str(a), overwrite_output_dir=True, max_train_studies=4)
    return "grpo", ["--config", str(c)], [c, a]


@case("serve-dry-run-port-99999", "--port 99999", "1 to 65535")
def _(e):
    return "cli", ["serve", "--model", str(e.tiny), "--backend", "hf", "--port", "99999", "--dry-run"], []


@case("generate-temperature-negative", "--temperature -1.0", ">= 0")
def _(e):
    s = studies_copy(e)
    return "cli", ["generate", "--studies", str(s), "--model", str(e.tiny), "--out", str(e.tmp / "p.jsonl"),
                   "--temperature", "-1", "--data-root", str(e.phantom)], [s]


@case("generate-limit-0", "--limit 0", "at least 1")
def _(e):
    s = studies_copy(e)
    return "cli", ["generate", "--studies", str(s), "--model", str(e.tiny), "--out", str(e.tmp / "p.jsonl"),
                   "--limit", "0", "--data-root", str(e.phantom)], [s]


@case("generate-limit-negative", "--limit -3", "at least 1")
def _(e):
    s = studies_copy(e)
    return "cli", ["generate", "--studies", str(s), "--model", str(e.tiny), "--out", str(e.tmp / "p.jsonl"),
                   "--limit", "-3", "--data-root", str(e.phantom)], [s]


@case("pairs-limit-0", "--limit 0", "at least 1")
def _(e):
    s = studies_copy(e)
    return "cli", ["pairs", "prior", "--studies", str(s), "--limit", "0", "--out", str(e.tmp / "pairs.jsonl")], [s]


@case("export-unknown-dtype", "--dtype 'float64x'", "unknown dtype", "bfloat16")
def _(e):
    a = fake_adapter(e.tmp / "a")
    return "cli", ["export", "--base", str(e.tiny), "--adapter", str(a), "--out", str(e.tmp / "x"), "--dtype",
                   "float64x"], [a]


@case("export-merge-and-allow-vision-lora", "--merge and --allow-vision-lora conflict")
def _(e):
    a = fake_adapter(e.tmp / "a", vision=True)
    return "cli", ["export", "--base", str(e.tiny), "--adapter", str(a), "--out", str(e.tmp / "x"), "--merge",
                   "--allow-vision-lora"], [a]


@case("export-merge-overwrite-out-is-the-base", "--out", "is the input folder", "never overwrites an input")
def _(e):
    base = e.tmp / "base"
    shutil.copytree(e.tiny, base)
    a = fake_adapter(e.tmp / "a")
    return "cli", ["export", "--base", str(base), "--adapter", str(a), "--out", str(base), "--merge",
                   "--overwrite"], [base, a]


@case("generate-out-inside-the-adapter", "--out", "lies inside the input folder")
def _(e):
    s, a = studies_copy(e), fake_adapter(e.tmp / "a")
    return "cli", ["generate", "--studies", str(s), "--model", str(e.tiny), "--adapter", str(a), "--out",
                   str(a / "adapter_config.json"), "--data-root", str(e.phantom)], [s, a]


@case("generate-out-not-a-predictions-file", "not a predictions file written by", "--overwrite")
def _(e):
    s = studies_copy(e)
    notes = raw(e.tmp / "notes.jsonl", '{"my": "notes"}\nnot json at all\n')
    return "cli", ["generate", "--studies", str(s), "--model", str(e.tiny), "--out", str(notes), "--data-root",
                   str(e.phantom)], [s, notes]


@case("eval-out-holds-the-pred", "--out", "is (or contains) the input", "per_study.jsonl")
def _(e):
    p = preds(e.tmp / "ev" / "per_study.jsonl")
    return "cli", ["eval", "--pred", str(p), "--out", str(e.tmp / "ev")], [p]


@case("tiny-over-an-existing-model", "not empty", "--overwrite")
def _(e):
    m = raw(e.tmp / "m" / "config.json", '{"model_type": "mine"}')
    return "cli", ["tiny", str(m.parent)], [m]


# -- images that went bad after `prepare`: met when the training dataset is built (before step 1) ------------
def png_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny PNG whose header claims ``width x height`` pixels (a decompression bomb)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + \
        chunk(b"IEND", b"")


def damaged_phantom(e, damage: Callable[[Path], None]) -> tuple[Path, Path, str]:
    """A copy of the phantom data whose first train study's first image is damaged after `prepare`."""
    root = e.tmp / "ph"
    shutil.copytree(e.phantom, root)
    first = next(json.loads(x) for x in (root / "studies.jsonl").read_text().splitlines()
                 if json.loads(x)["split"] == "train")
    img = root / first["images"][0]["path"]
    damage(img)
    return root / "studies.jsonl", img, first["study_id"]


def _image_row(e, damage, *extra: str):
    studies, img, sid = damaged_phantom(e, damage)
    e.study_id = sid
    c = recipe_yaml(e, studies=str(studies))
    return "sft", ["--config", str(c), *extra], [c, studies, img]


def _names_the_study(e):
    assert not (e.tmp / "run").exists()


@case("sft-image-corrupted-after-prepare", "unreadable or corrupt image", "image of study", "studies.jsonl",
      "skip_bad_images", after=_names_the_study)
def _(e):
    return _image_row(e, lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(300)))


@case("sft-image-truncated-after-prepare", "truncated image", "PNG end marker", "image of study",
      after=_names_the_study)
def _(e):
    return _image_row(e, lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]))


@case("sft-image-emptied-after-prepare", "image file is empty", "image of study", after=_names_the_study)
def _(e):
    return _image_row(e, lambda p: p.write_bytes(b""))


@case("sft-image-decompression-bomb", "decompression bomb", "image of study", after=_names_the_study)
def _(e):
    return _image_row(e, lambda p: p.write_bytes(png_bomb()))


@case("sft-image-1x30000", "30000x1", "aspect ratio above 200", "image of study", after=_names_the_study)
def _(e):
    return _image_row(e, lambda p: Image.new("L", (30000, 1)).save(p))


@case("sft-dry-run-skip-bad-images-counts", "1 studies skipped for a bad image", rc=0, after=_names_the_study)
def _(e):
    return _image_row(e, lambda p: p.write_bytes(b""), "--skip_bad_images", "true", "--dry-run")


# -- faults met during training and while saving (tests/fault_recipe.py injects them into a real SFT run) -----
def _fault_run(e, fault: str, *extra: str, studies: Path | None = None):
    """The tiny SFT on 4 studies, 4 steps of 2, a checkpoint after every step, with ``fault`` injected."""
    c = recipe_yaml(e, studies=str(studies or e.phantom / "studies.jsonl"), max_steps=4, max_train_studies=4,
                    per_device_train_batch_size=2, gradient_accumulation_steps=1, save_strategy="steps",
                    save_steps=1, max_pixels=12544, min_pixels=3136, max_images=1, context=[],
                    sections=["impression"], activation_checkpointing=False, dtype="float32")
    return "tests/fault_recipe", ["--fault", fault, "--config", str(c), *extra], [c]


def _checkpoint_loads(path: Path) -> None:
    """A complete checkpoint: trainer state, adapter weights and optimizer all read back."""
    import torch
    from safetensors.torch import load_file

    from mllm_cxr.train.recipe import resolve_resume

    assert resolve_resume(str(path), path.parent) == str(path)
    assert json.loads((path / "trainer_state.json").read_text())["global_step"] == int(path.name.split("-")[1])
    assert load_file(str(path / "adapter_model.safetensors"))
    torch.load(path / "optimizer.pt", weights_only=True)


def _nothing_partial(run: Path) -> None:
    hidden = [p.name for p in run.iterdir() if p.name.startswith(".")]
    assert not hidden, hidden  # no staging folder left


def _image_mid_run(e, *extra: str):
    studies, img, sid = damaged_phantom(e, lambda p: None)  # intact when the dataset is built
    e.study_id, e.image = sid, img
    runner, argv, inputs = _fault_run(e, f"corrupt-image={img}", *extra, studies=studies)
    return runner, argv, [*inputs, studies]


def _stopped_with_a_usable_checkpoint(e):
    run = e.tmp / "run"
    assert not (run / "adapter_model.safetensors").exists()
    cks = sorted(run.glob("checkpoint-*"))
    assert cks, sorted(p.name for p in run.iterdir())
    for ck in cks:
        _checkpoint_loads(ck)
    _nothing_partial(run)


@case("sft-image-truncated-mid-run", "image of study", "truncated image", "studies.jsonl", "stopped at step",
      "last checkpoint:", "--resume_from_checkpoint true", "--skip_bad_images true",
      after=_stopped_with_a_usable_checkpoint)
def _(e):
    return _image_mid_run(e)


def _skipped_mid_run(e):
    run = e.tmp / "run"
    record = json.loads((run / "skipped_images.json").read_text())
    assert [(r["study_id"], r["image"], r["when"]) for r in record] == [(e.study_id, str(e.image), "mid-run")], record
    assert "truncated" in record[0]["reason"] or "corrupt" in record[0]["reason"], record
    assert json.loads((run / "train_results.json").read_text())["skipped_bad_images"] == 1
    assert json.loads((run / "trainer_state.json").read_text())["global_step"] == 4  # the run went on
    assert (run / "adapter_model.safetensors").is_file() and not (run / "skipped_images.mid-run.jsonl").exists()
    _nothing_partial(run)


@case("sft-image-truncated-mid-run-skip-bad-images", "done: 4 steps", "1 studies skipped for a bad image",
      "skipped_images.json", rc=0, after=_skipped_mid_run)
def _(e):
    return _image_mid_run(e, "--skip_bad_images", "true")


def _checkpoint_1_only(e):
    run = e.tmp / "run"
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-1"]
    _checkpoint_loads(run / "checkpoint-1")
    _nothing_partial(run)


@case("sft-disk-full-saving-checkpoint", "no space left on device", "while saving checkpoint-2",
      "partial save was removed", "last complete checkpoint:", "checkpoint-1", "--resume_from_checkpoint true",
      after=_checkpoint_1_only)
def _(e):
    return _fault_run(e, "disk-full-checkpoint")


@case("sft-sigterm-saving-checkpoint", "terminated (SIGTERM)", "stopped at step 2", "checkpoint-1", rc=143,
      after=_checkpoint_1_only)
def _(e):
    return _fault_run(e, "sigterm-checkpoint")


def _no_half_written_adapter(e):
    run = e.tmp / "run"
    assert not (run / "adapter_model.safetensors").exists()  # not half of one
    assert sorted(p.name for p in run.glob("checkpoint-*")) == [f"checkpoint-{i}" for i in range(1, 5)]
    _checkpoint_loads(run / "checkpoint-4")
    _nothing_partial(run)


@case("sft-disk-full-saving-the-adapter", "no space left on device", "while saving the final adapter",
      "last complete checkpoint:", "checkpoint-4", after=_no_half_written_adapter)
def _(e):
    return _fault_run(e, "disk-full-final")


# -- smaller items of issue 19 ------------------------------------------------------------------------------
@case("generate-studies-repeated-study-id", "studies.jsonl:", "study_id repeated (first at line 1)")
def _(e):
    rows = [json.loads(x) for x in (e.phantom / "studies.jsonl").read_text().splitlines()][:3]
    rows.append(dict(rows[0], split="test"))
    s = jl(e.tmp / "studies.jsonl", rows)
    return "cli", ["generate", "--studies", str(s), "--model", str(e.tiny), "--out", str(e.tmp / "p.jsonl"),
                   "--data-root", str(e.phantom)], [s]


@case("sft-studies-repeated-study-id", "study_id repeated", "field 'study_id'")
def _(e):
    rows = [json.loads(x) for x in (e.phantom / "studies.jsonl").read_text().splitlines()]
    s = jl(e.tmp / "studies.jsonl", [*rows, rows[5]])
    c = recipe_yaml(e, studies=str(s), data_root=str(e.phantom))
    return "sft", ["--config", str(c)], [c, s]


@case("label-sections-bogus", "--sections", "'bogus' is not a report section", "known: findings")
def _(e):
    f = raw(e.tmp / "reports.csv", "id,report\n1,FINDINGS: No effusion.\n")
    return "cli", ["label", "--input", str(f), "--text-column", "report", "--sections", "bogus", "--out",
                   str(e.tmp / "labels.csv")], [f]


@case("label-jsonl-non-string-text", "reports.jsonl:2", "holds dict", "not report text")
def _(e):
    f = jl(e.tmp / "reports.jsonl", [{"report": "No effusion."}, {"report": {"findings": "Effusion."}}])
    return "cli", ["label", "--input", str(f), "--text-column", "report", "--out", str(e.tmp / "labels.csv")], [f]


@case("prepare-mimic-report-not-utf8", "not UTF-8", ".txt", "re-save")
def _(e):
    root = make_mimic(e.tmp / "mimic")
    rep = next(root.glob("files/**/s*.txt"))
    rep.write_bytes(rep.read_bytes() + b"\nCOMPARISON: caf\xe9 \xff\n")
    return "cli", ["prepare", "mimic-cxr", str(root), "--out", str(e.tmp / "o.jsonl"), "--quiet"], [rep]


# ------------------------------------------------------------------------------------------------
# Running a row
# ------------------------------------------------------------------------------------------------
def _recipe(name: str):
    """``recipes/<name>.py``, or a recipe file named by its path in the repository (``tests/fault_recipe``)."""
    path = REPO / f"{name}.py" if "/" in name else REPO / "recipes" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"_recipe_{name.replace('/', '_')}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def run_in_process(runner: str, argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        if runner == "cli":
            from mllm_cxr.cli import main

            rc = main(argv)
        elif runner == "data_prep":
            from data_prep.cli import main

            rc = main(argv)
        else:
            from mllm_cxr.train.recipe import run_recipe

            try:
                run_recipe(_recipe(runner).main, argv)
                rc = 0
            except SystemExit as e:
                rc = int(e.code or 0)
    return rc, out.getvalue(), err.getvalue()


def digest(paths: list[Path]) -> dict[str, str]:
    files = []
    for p in paths:
        files += sorted(x for x in p.rglob("*") if x.is_file()) if p.is_dir() else [p]
    return {str(f): hashlib.sha256(f.read_bytes()).hexdigest() if f.exists() else "absent" for f in files}


@pytest.fixture(scope="module")
def adapter_free_env(phantom_dir, tiny_model_dir):
    return phantom_dir, tiny_model_dir


#: Verbs whose bad inputs are tested in another module (a real process or a fixture this table lacks), and where.
BAD_INPUTS_ELSEWHERE = {"merge-predictions": ("tests/test_shard_generate.py", '"merge-predictions"'),
                        "report": ("tests/test_report_html.py", 'main(["report"'),
                        "launch": ("tests/test_bad_inputs.py", "def test_mllm_cxr_launch_ends_with_the_recipe_line")}


def test_every_verb_and_recipe_has_a_bad_input_row():
    """Each verb of the CLI's table and each recipe has a row here (ids start with its name) or a bad-input test
    in the module named in BAD_INPUTS_ELSEWHERE: a new verb without one fails here."""
    from mllm_cxr.cli import VERB_MODULES

    assert len({c.id for c in CASES}) == len(CASES)
    names = [v for verbs in VERB_MODULES.values() for v in verbs] + [p.stem for p in (REPO / "recipes").glob("*.py")]
    missing = []
    for name in names:
        if any(c.id.startswith(f"{name}-") for c in CASES):
            continue
        where = BAD_INPUTS_ELSEWHERE.get(name)
        if where is None or where[1] not in (REPO / where[0]).read_text():
            missing.append(name)
    assert not missing, f"no bad-input test for: {missing}"


@pytest.mark.parametrize("c", CASES, ids=[c.id for c in CASES])
def test_bad_input(c: Case, tmp_path, adapter_free_env, monkeypatch):
    phantom, tiny = adapter_free_env
    monkeypatch.delenv("MLLM_CXR_DEBUG", raising=False)
    monkeypatch.delenv("MLLM_CXR_RADGRAPH_DIR", raising=False)
    env = Env(tmp_path, phantom, tiny)
    runner, argv, inputs = c.build(env)
    before = digest(inputs)
    try:
        rc, out, err = run_in_process(runner, argv)
    finally:
        if getattr(env, "hold", None) is not None:
            env.hold.close()
    assert "Traceback" not in out + err
    assert rc == c.rc, (rc, err[-2000:])
    if c.rc != 0:
        lines = [x for x in err.splitlines() if "error:" in x or "terminated (SIGTERM)" in x]
        assert len(lines) == 1, err[-2000:]  # one line ...
        text = lines[0]
        assert err.strip().splitlines()[-1] == text  # ... and the last thing printed
    else:
        text = out
    for w in c.words:  # ... naming the file/field/value and what to do
        assert w.lower() in text.lower(), (w, text)
    assert digest(inputs) == before, "an input file changed"
    if c.after is not None:
        c.after(env)


# ------------------------------------------------------------------------------------------------
# Real processes: --debug, accelerate launch, Ctrl-C
# ------------------------------------------------------------------------------------------------
def _env() -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("MLLM_CXR_DEBUG", None)
    return env


def test_debug_shows_the_traceback(tmp_path):
    p = raw(tmp_path / "pred.jsonl", BAD_UTF8)
    args = [sys.executable, "-m", "mllm_cxr.cli", "eval", "--pred", str(p), "--out", str(tmp_path / "ev")]
    plain = subprocess.run(args, capture_output=True, text=True, env=_env(), timeout=300)
    assert plain.returncode == 2 and "Traceback" not in plain.stderr and "not UTF-8" in plain.stderr
    debug = subprocess.run(args[:3] + ["--debug"] + args[3:], capture_output=True, text=True, env=_env(),
                           timeout=300)
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_recipe_error_under_accelerate_launch_is_one_line(tmp_path, phantom_dir):
    """``accelerate launch -q``: the recipe's line is all there is (accelerate adds no traceback)."""
    accelerate = Path(sys.executable).with_name("accelerate")
    if not accelerate.exists():
        pytest.skip("accelerate CLI not installed next to this python")
    cfg = raw(tmp_path / "cfg.yaml", f"studies: {phantom_dir / 'studies.jsonl'}\nlearnin_rate: 1e-4\n")
    base = [str(accelerate), "launch", "--config_file", str(REPO / "recipes/accelerate/cpu.yaml")]
    quiet = subprocess.run([*base, "-q", str(REPO / "recipes/sft.py"), "--config", str(cfg)], capture_output=True,
                           text=True, env=_env(), timeout=600, cwd=tmp_path)
    assert quiet.returncode != 0
    assert "Traceback" not in quiet.stderr, quiet.stderr[-3000:]
    errors = [x for x in quiet.stderr.splitlines() if "error:" in x]
    assert len(errors) == 1 and "unknown config key(s) 'learnin_rate'" in errors[0], quiet.stderr[-3000:]
    # without -q the recipe exits 2 as well; accelerate then adds its CalledProcessError after our line
    loud = subprocess.run([*base, str(REPO / "recipes/sft.py"), "--config", str(cfg)], capture_output=True,
                          text=True, env=_env(), timeout=600, cwd=tmp_path)
    assert "returned non-zero exit status 2" in loud.stderr
    assert loud.stderr.index("unknown config key(s)") < loud.stderr.index("Traceback")


def test_mllm_cxr_launch_ends_with_the_recipe_line_and_exit_code(tmp_path):
    """``mllm-cxr launch`` (accelerate launch's arguments): the recipe's one line, its exit code 2, nothing after
    it, and nothing written; a good run still exits 0 (``--dry-run``)."""
    base = [sys.executable, "-m", "mllm_cxr.cli", "launch", "--config_file", str(REPO / "recipes/accelerate/cpu.yaml"),
            str(REPO / "recipes/sft.py")]
    bad = subprocess.run([*base, "--config", "nope.yaml"], capture_output=True, text=True, env=_env(), timeout=600,
                         cwd=tmp_path)
    assert bad.returncode == 2, bad.stderr[-3000:]
    assert "Traceback" not in bad.stderr and "CalledProcessError" not in bad.stderr, bad.stderr[-3000:]
    errors = [x for x in bad.stderr.splitlines() if "error:" in x]
    assert errors == ["sft.py: error: nope.yaml: config file not found"], bad.stderr[-3000:]
    assert bad.stderr.strip().splitlines()[-1] == errors[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_launch_maps_the_launchers_exceptions_to_the_child_exit_code():
    """Both launchers' failure exceptions give the recipe's exit code; anything else is not a child failure."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure

    from mllm_cxr.cli.launch import child_exit_code

    assert child_exit_code(subprocess.CalledProcessError(2, ["python", "sft.py"])) == 2
    failure = ProcessFailure(local_rank=0, pid=1, exitcode=2, error_file="")
    assert child_exit_code(ChildFailedError("sft.py", {0: failure})) == 2
    assert child_exit_code(ValueError("accelerate config")) is None


def test_launch_names_a_rank_killed_by_a_signal():
    """A recipe process killed by a signal printed nothing: launch says which rank and exits 128 + the signal."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure

    from mllm_cxr.cli.launch import child_exit_code, killed_child_line

    killed = ChildFailedError("sft.py", {1: ProcessFailure(local_rank=1, pid=4242, exitcode=-9, error_file="")})
    assert child_exit_code(killed) == 137
    assert killed_child_line(killed).startswith("process rank 1 (pid 4242) was killed by SIGKILL")
    assert child_exit_code(subprocess.CalledProcessError(-15, ["python"])) == 143
    assert killed_child_line(subprocess.CalledProcessError(2, ["python"])) is None


def test_stopped_error_names_a_full_disk_and_a_lost_peer(tmp_path):
    """A full disk (errno, or safetensors' Rust IoError text) and gloo's lost peer each become one line naming the
    save, the step and the last complete checkpoint; anything else is left to the traceback of a bug."""
    from types import SimpleNamespace

    from mllm_cxr.train.saving import stopped_error

    (tmp_path / "checkpoint-2").mkdir()
    tr = SimpleNamespace(state=SimpleNamespace(global_step=3), _mllm_saving="checkpoint-3")
    SafetensorError = type("SafetensorError", (Exception,), {})
    rust = SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space '
                           'left on device" })')
    for e in (OSError(28, "No space left on device", "x/optimizer.pt"), rust):
        line = str(stopped_error(e, tr, tmp_path))
        assert "no space left on device while saving checkpoint-3" in line and "stopped at step 3" in line
        assert f"last complete checkpoint: {tmp_path / 'checkpoint-2'}" in line
    lost = RuntimeError("[/__w/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:534] Connection closed by peer "
                        "[127.0.0.1]:29500. This is typically caused by a remote worker hanging. GLHF!")
    line = str(stopped_error(lost, SimpleNamespace(state=SimpleNamespace(global_step=3)), tmp_path))
    assert line.startswith("another process of this run was lost (Connection closed by peer)") and "GLHF" not in line
    assert stopped_error(ValueError("shapes do not match"), tr, tmp_path) is None


def _kill_tree(pid: int) -> None:
    import psutil

    try:
        parent = psutil.Process(pid)
        family = parent.children(recursive=True) + [parent]
    except psutil.NoSuchProcess:
        return
    for p in family:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass


@pytest.mark.slow
def test_killed_rank_of_a_two_process_run(tmp_path, phantom_dir, tiny_model_dir):
    """``mllm-cxr launch`` of a 2-process CPU run (ZeRO-2 over gloo) whose rank 1 is SIGKILLed after the
    checkpoint of step 2: exit 137, one line from the launcher naming the killed rank (it could print nothing
    itself), one line from rank 0 naming the last complete checkpoint (it meets gloo's lost connection, or the
    launcher's SIGTERM if that comes first), no traceback, and every checkpoint-<step> folder complete (a save
    cut short is never renamed into place). Measured: 145 s on a loaded 2-core machine."""
    import psutil

    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "mllm_cxr.cli", "launch", "--config_file",
           str(REPO / "recipes/accelerate/zero2_cpu.yaml"), str(REPO / "recipes/sft.py"), "--config",
           str(REPO / "recipes/configs/tiny/sft.yaml"), "--studies", str(phantom_dir / "studies.jsonl"),
           "--model_name_or_path", str(tiny_model_dir), "--output_dir", str(out), "--ddp_backend", "gloo",
           "--per_device_train_batch_size", "2", "--max_steps", "1000", "--save_strategy", "steps",
           "--save_steps", "2", "--logging_steps", "1"]
    env = dict(_env(), OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    with open(tmp_path / "stdout", "w") as so, open(tmp_path / "stderr", "w") as se:
        proc = subprocess.Popen(cmd, stdout=so, stderr=se, env=env, cwd=tmp_path, start_new_session=True)
    err = lambda: (tmp_path / "stderr").read_text()  # noqa: E731
    try:
        deadline = time.monotonic() + 600
        while not (out / "checkpoint-2").is_dir():  # renamed into place only when complete: both ranks train
            assert proc.poll() is None and time.monotonic() < deadline, err()[-3000:]
            time.sleep(0.5)
        ranks = {p.environ().get("RANK"): p for p in psutil.Process(proc.pid).children(recursive=True)
                 if p.environ().get("RANK") is not None}
        ranks["1"].send_signal(signal.SIGKILL)
        t = time.monotonic()
        rc = proc.wait(timeout=180)
        print(f"launch exited {time.monotonic() - t:.1f} s after rank 1 was killed")
    finally:
        if proc.poll() is None:
            _kill_tree(proc.pid)
            proc.wait(timeout=30)
    text = err()
    assert rc == 137, text[-3000:]
    assert "Traceback" not in text and "CalledProcessError" not in text, text[-3000:]
    # one line per process: the launcher's for the killed rank (which could print nothing), last ...
    launch = [x for x in text.splitlines() if x.startswith("mllm-cxr launch:")]
    assert len(launch) == 1 and text.strip().splitlines()[-1] == launch[0], text[-3000:]
    assert "process rank 1" in launch[0] and "was killed by SIGKILL" in launch[0]
    # ... and rank 0's: gloo's lost connection, or the launcher's SIGTERM if that came first
    survivor = [x for x in text.splitlines() if x.startswith("sft.py:")]
    assert len(survivor) == 1, text[-3000:]
    assert "another process of this run was lost" in survivor[0] or "terminated (SIGTERM)" in survivor[0]
    assert "last complete checkpoint: " + str(out / "checkpoint-") in survivor[0], survivor
    assert "done:" not in (tmp_path / "stdout").read_text()
    from safetensors.torch import load_file

    from mllm_cxr.train.recipe import resolve_resume

    cks = sorted(out.glob("checkpoint-*"))
    assert cks
    for ck in cks:  # every checkpoint folder is a complete one
        assert resolve_resume(str(ck), out) == str(ck)
        assert json.loads((ck / "trainer_state.json").read_text())["global_step"] == int(ck.name.split("-")[1])
        assert load_file(str(ck / "adapter_model.safetensors"))


def _load_factor() -> float:
    """The 1-minute load average per CPU core, at least 1 (how many times slower than idle this machine may be)."""
    try:
        return max(1.0, os.getloadavg()[0] / (os.cpu_count() or 1))
    except OSError:
        return 1.0


def test_ctrl_c_prints_one_line_and_exits_130(tmp_path, tiny_model_dir):
    """``serve --backend hf`` stopped by Ctrl-C: one line, exit 130, no traceback, nothing left running.

    This test once timed out at 60 s in a full suite on a loaded machine and passed alone in 32 s. The shutdown
    itself is already deterministic (SIGINT interrupts the select loop at once, ``serve_forever`` closes the
    socket, the handler prints its line; no thread is joined: the request threads are daemons), so what varied
    is only the CPU the process got. We chose to make the test robust, not the exit faster (``os._exit`` would
    skip the interpreter's clean-up): Ctrl-C goes to the process group only once the server answers HTTP
    (readiness, not a line printed just before the loop starts); stderr goes to a file (a pipe nobody reads
    could fill and stall the server); the exit gets 60 s per unit of load per core, at most 300 s; and the
    whole process group must be gone afterwards. Measured alone: ready in about 10 s, exit in under 1 s."""
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    err_path = tmp_path / "stderr"
    with open(err_path, "w") as err_fh:
        proc = subprocess.Popen([sys.executable, "-m", "mllm_cxr.cli", "serve", "--backend", "hf", "--model",
                                 str(tiny_model_dir), "--port", str(port)], stdout=subprocess.DEVNULL,
                                stderr=err_fh, env=_env(), start_new_session=True)
    try:
        deadline = time.monotonic() + min(600.0, 240 * _load_factor())
        while True:  # ready: the server answers, so its select loop is running
            assert proc.poll() is None, err_path.read_text()[-3000:]
            assert time.monotonic() < deadline, "serve not ready: " + err_path.read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole foreground group
        t = time.monotonic()
        limit = min(300.0, 60 * _load_factor())
        proc.wait(timeout=limit)
        print(f"serve exited {time.monotonic() - t:.1f} s after Ctrl-C (limit {limit:.0f} s)")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    with pytest.raises(ProcessLookupError):  # nothing of the server's process group is left
        os.killpg(proc.pid, 0)
    err = err_path.read_text()
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert [x for x in err.splitlines() if "interrupted" in x] == ["mllm-cxr serve: interrupted (Ctrl-C); outputs "
                                                                   "being written were not replaced"]


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 1])
def test_image_corrupted_mid_run_stops_with_one_line_and_a_usable_checkpoint(tmp_path, phantom_dir, tiny_model_dir,
                                                                            workers):
    """Images truncated after step 1 of a real SFT run: the run stops with one line naming the image, its
    study and the records file, and the step's checkpoint (also when a DataLoader worker meets it); that
    checkpoint resumes once the images are back, and with ``skip_bad_images`` a still-empty image is skipped,
    counted and listed in the run record."""
    from transformers import TrainerCallback

    from mllm_cxr.train.recipe import resolve_resume, run_recipe, run_training

    recipe = _recipe("sft")
    root = tmp_path / "ph"
    shutil.copytree(phantom_dir, root)
    out = tmp_path / "run"

    class TruncateImages(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == 1:
                for p in (root / "images").glob("*.png"):
                    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])

    def trainer(configs, data, model_args):
        tr, processor = recipe.trainer(configs, data, model_args)
        tr.add_callback(TruncateImages())
        return tr, processor

    argv = ["--config", str(REPO / "recipes/configs/tiny/sft.yaml"), "--studies", str(root / "studies.jsonl"),
            "--model_name_or_path", str(tiny_model_dir), "--output_dir", str(out), "--max_steps", "12",
            "--save_strategy", "steps", "--save_steps", "1", "--per_device_train_batch_size", "2",
            "--gradient_accumulation_steps", "1", "--dataloader_num_workers", str(workers), "--report_to", "none"]
    errbuf = io.StringIO()
    with redirect_stdout(io.StringIO()), redirect_stderr(errbuf), pytest.raises(SystemExit) as stop:
        run_recipe(lambda a: run_training(recipe.CONFIG_CLASSES, a, datasets=recipe.datasets, trainer=trainer,
                                          stage="sft"), argv)
    err = errbuf.getvalue()
    assert stop.value.code == 2 and "Traceback" not in err, err[-3000:]
    lines = [x for x in err.splitlines() if "error:" in x]
    assert len(lines) == 1 and err.strip().splitlines()[-1] == lines[0], err[-3000:]
    line = lines[0]
    for words in ("truncated image", "image of study", str(root / "studies.jsonl"), str(root / "images"),
                  "stopped at step", "last checkpoint:", "--resume_from_checkpoint true"):
        assert words in line, (words, line)
    ckpt = resolve_resume(True, out)  # a real checkpoint (trainer state + weights) ...
    assert Path(ckpt).name.startswith("checkpoint-")
    if workers:
        return
    # ... that resumes once the images are back; one image still empty is skipped with skip_bad_images
    shutil.rmtree(root / "images")
    shutil.copytree(phantom_dir / "images", root / "images")
    first = next(json.loads(x) for x in (root / "studies.jsonl").read_text().splitlines()
                 if json.loads(x)["split"] == "train")
    (root / first["images"][0]["path"]).write_bytes(b"")
    with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
        run_recipe(recipe.main, [*argv, "--resume_from_checkpoint", "true", "--skip_bad_images", "true",
                                 "--max_steps", "4"])
    record = json.loads((out / "skipped_images.json").read_text())
    assert [r["study_id"] for r in record] == [first["study_id"]] and record[0]["reason"] == "image file is empty"
    assert json.loads((out / "train_results.json").read_text())["skipped_bad_images"] == 1
    assert (out / "adapter_model.safetensors").is_file()


def test_skip_bad_images_fills_a_bad_rows_slot_with_the_same_good_study(tmp_path, phantom_dir):
    """Mid-run with ``skip_bad_images``: a row whose image stopped decoding is replaced by the next study whose
    images decode, the same one each time (a GRPO group's copies of one prompt stay one group), the batch keeps
    its size, the skip is recorded once (spooled for the run record); when no study decodes, one line says so."""
    from data_prep.errors import BadImageError
    from data_prep.schema import read_records
    from mllm_cxr.data import mid_run_skips, sft_dataset, transforms_of
    from mllm_cxr.prompts import PromptConfig

    root = tmp_path / "ph"
    shutil.copytree(phantom_dir, root)
    recs = read_records(root / "studies.jsonl", split="train")[:4]
    ds = sft_dataset(recs, root, PromptConfig(max_images=1), skip_bad_images=True, source="studies.jsonl")
    (decode,) = transforms_of({"train": ds})
    decode.spool = str(tmp_path / "spool.jsonl")
    bad = Path(ds.with_format(None)[1]["images"][0])
    bad.write_bytes(bad.read_bytes()[:100])  # after the dataset was built
    batch = ds[[1, 0, 1, 1]]
    assert len(batch["images"]) == 4 and all(im for im in batch["images"])
    assert batch["completion"][0] == batch["completion"][2] == batch["completion"][3] == ds[2]["completion"]
    assert [r["study_id"] for r in mid_run_skips(tmp_path / "spool.jsonl")] == [recs[1].study_id]
    ds[[1]]  # met again: skipped silently, not recorded twice
    assert len(decode.skipped) == 1 and decode.skipped[0]["when"] == "mid-run"
    for r in ds.with_format(None):
        Path(r["images"][0]).write_bytes(b"")
    with pytest.raises(BadImageError, match="no study of studies.jsonl has images that still decode"):
        ds[[0]]


def test_worker_error_is_unwrapped_to_its_one_line():
    """A BadImageError raised in a DataLoader worker comes back with the worker's traceback as its text."""
    from data_prep.errors import BadImageError
    from mllm_cxr.train.recipe import unwrap_worker_error

    wrapped = BadImageError("Caught BadImageError in DataLoader worker process 0.\nOriginal Traceback (most recent "
                            "call last):\n  File \"x.py\", line 1\ndata_prep.errors.BadImageError: /a.png: image of "
                            "study s1: truncated image")
    assert str(unwrap_worker_error(wrapped)) == "/a.png: image of study s1: truncated image"
    assert unwrap_worker_error(ValueError("x")) is None


def test_output_folders_honour_the_umask(tmp_path):
    """A folder filled in a temporary folder and renamed into place gets the umask's mode, not mkdtemp's 0700."""
    from cxr_io import atomic_dir

    old = os.umask(0o027)
    try:
        with atomic_dir(tmp_path / "export") as tmp:
            (Path(tmp) / "model.safetensors").write_bytes(b"x")
    finally:
        os.umask(old)
    assert (tmp_path / "export").stat().st_mode & 0o777 == 0o750
    assert (tmp_path / "export" / "model.safetensors").stat().st_mode & 0o777 == 0o640


def test_training_and_export_outputs_honour_the_umask(tmp_path, phantom_dir, tiny_model_dir):
    """Under umask 027 every folder and file a training run (checkpoints staged and renamed, the final adapter
    moved in) and ``export`` (filled in a temporary folder) leave is 0750 / 0640: none keeps a temporary
    file's 0600 or mkdtemp's 0700, and none is wider than the umask allows."""
    from mllm_cxr.cli import main

    env = Env(tmp_path, phantom_dir, tiny_model_dir)
    _, argv, _ = _fault_run(env, "none")
    argv = argv[2:]  # the plain SFT recipe: no fault
    old = os.umask(0o027)
    try:
        rc, _, err = run_in_process("sft", [*argv, "--max_steps", "2"])
        assert rc == 0, err[-2000:]
        with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
            assert main(["export", "--base", str(tiny_model_dir), "--adapter", str(tmp_path / "run"), "--out",
                         str(tmp_path / "export")]) == 0
    finally:
        os.umask(old)
    modes = {}
    for top in (tmp_path / "run", tmp_path / "export"):
        for p in [top, *top.rglob("*")]:
            modes[str(p.relative_to(tmp_path))] = p.stat().st_mode & 0o777
    assert "run/checkpoint-2/adapter_model.safetensors" in modes and "export/adapter_model.safetensors" in modes
    wrong = {k: oct(m) for k, m in modes.items()
             if m != (0o750 if (tmp_path / k).is_dir() else 0o640)}
    assert not wrong, wrong


def test_mimic_report_not_utf8_is_counted_under_skip_bad(tmp_path):
    """A non-UTF-8 MIMIC report is counted (not read with replacement characters) under --skip-bad."""
    from data_prep.prepare import prepare

    root = make_mimic(tmp_path / "mimic")
    rep = next(root.glob("files/**/s*.txt"))
    rep.write_bytes(b"FINDINGS: caf\xe9.\n")
    s = prepare("mimic-cxr", source=root, out=tmp_path / "o.jsonl", skip_bad=True, progress=False)
    assert s["skipped"]["by_reason"]["report not UTF-8"]["count"] == 1


def test_image_validation_happens_at_prepare_not_in_training(tmp_path):
    """A corrupt PNG is caught by ``prepare`` (decode check), never handed to a trainer."""
    from data_prep.prepare import prepare

    root = make_mimic(tmp_path / "mimic")
    jpg = next(root.glob("files/**/d5a.jpg"))
    Image.fromarray(np.zeros((32, 40), np.uint8)).save(jpg, format="JPEG")
    jpg.write_bytes(jpg.read_bytes()[:60])  # truncated JPEG: the header opens, the pixels do not
    s = prepare("mimic-cxr", source=root, out=tmp_path / "o.jsonl", skip_bad=True, progress=False)
    reasons = s["skipped"]["by_reason"]
    assert reasons["bad image: unreadable or corrupt image"]["examples"] == [str(jpg.relative_to(root))]
    assert reasons["no images"]["count"] == 1 and s["images_failed"] == 1
