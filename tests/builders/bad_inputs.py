"""The bad-input table of tests/e2e/test_bad_inputs.py: every row builds its inputs in a fresh folder and gives
the runner, the arguments, the words the error line must contain and the input files to hash before and after.
Rows with ``rc=0`` are bad inputs the tool handles by a counted skip (the words are then looked for in stdout).

bench/bad_inputs.py runs the same rows (CASES, Env, digest, load_recipe) to count clear / traceback / silent.
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
import socket
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
from PIL import Image

from tests.builders.datasets import make_chexpert_plus, make_mimic
from tests.builders.repo import REPO

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
    from tests.builders.adapters import make_random_adapter

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


# -- faults met during training and while saving (tests/builders/fault_recipe.py injects them into a real SFT run) -----
def fault_run(e, fault: str, *extra: str, studies: Path | None = None):
    """The tiny SFT on 4 studies, 4 steps of 2, a checkpoint after every step, with ``fault`` injected."""
    c = recipe_yaml(e, studies=str(studies or e.phantom / "studies.jsonl"), max_steps=4, max_train_studies=4,
                    per_device_train_batch_size=2, gradient_accumulation_steps=1, save_strategy="steps",
                    save_steps=1, max_pixels=12544, min_pixels=3136, max_images=1, context=[],
                    sections=["impression"], activation_checkpointing=False, dtype="float32")
    return "tests/builders/fault_recipe", ["--fault", fault, "--config", str(c), *extra], [c]


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
    runner, argv, inputs = fault_run(e, f"corrupt-image={img}", *extra, studies=studies)
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
    return fault_run(e, "disk-full-checkpoint")


@case("sft-sigterm-saving-checkpoint", "terminated (SIGTERM)", "stopped at step 2", "checkpoint-1", rc=143,
      after=_checkpoint_1_only)
def _(e):
    return fault_run(e, "sigterm-checkpoint")


def _no_half_written_adapter(e):
    run = e.tmp / "run"
    assert not (run / "adapter_model.safetensors").exists()  # not half of one
    assert sorted(p.name for p in run.glob("checkpoint-*")) == [f"checkpoint-{i}" for i in range(1, 5)]
    _checkpoint_loads(run / "checkpoint-4")
    _nothing_partial(run)


@case("sft-disk-full-saving-the-adapter", "no space left on device", "while saving the final adapter",
      "last complete checkpoint:", "checkpoint-4", after=_no_half_written_adapter)
def _(e):
    return fault_run(e, "disk-full-final")


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
def load_recipe(name: str):
    """``recipes/<name>.py``, or a recipe file named by its path in the repository (``tests/builders/fault_recipe``)."""
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
                run_recipe(load_recipe(runner).main, argv)
                rc = 0
            except SystemExit as e:
                rc = int(e.code or 0)
    return rc, out.getvalue(), err.getvalue()


def digest(paths: list[Path]) -> dict[str, str]:
    files = []
    for p in paths:
        files += sorted(x for x in p.rglob("*") if x.is_file()) if p.is_dir() else [p]
    return {str(f): hashlib.sha256(f.read_bytes()).hexdigest() if f.exists() else "absent" for f in files}
