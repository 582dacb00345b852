"""mllm-cxr export: vLLM-ready adapters, merged checkpoints, verification by reloading, refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mllm_cxr.data import load_split
from mllm_cxr.errors import ExportError
from mllm_cxr.infer.export import export, inspect_adapter
from mllm_cxr.infer.generate import GenerationSettings, HFGenerator
from mllm_cxr.modeling import ModelArguments, load_base_model, load_processor
from mllm_cxr.run_config import resolve_prompt
from mllm_cxr.vllm_support import vllm_max_lora_rank
from tests.builders.adapters import RUN_PROMPT, make_random_adapter, one_torch_thread  # noqa: F401


@pytest.fixture(scope="module")
def adapter_dir(tiny_model_dir, tmp_path_factory) -> Path:
    return make_random_adapter(tiny_model_dir, tmp_path_factory.mktemp("adapter"), seed=1)


@pytest.fixture(scope="module")
def vision_adapter_dir(tiny_model_dir, tmp_path_factory) -> Path:
    return make_random_adapter(tiny_model_dir, tmp_path_factory.mktemp("adapter-vision"), on_vision=True, seed=2)


def _greedy(model, model_dir, adapter, phantom_dir, studies) -> list[str]:
    prompt = resolve_prompt(adapter, model_dir)
    margs = ModelArguments(model_name_or_path=str(model_dir), dtype="float32", min_pixels=prompt.min_pixels,
                           max_pixels=prompt.max_pixels)
    gen = HFGenerator(model.eval(), load_processor(margs), prompt.prompt, phantom_dir,
                      GenerationSettings(max_new_tokens=12))
    return [t[0] for t in gen.generate(studies)]


def _base(model_dir) -> torch.nn.Module:
    return load_base_model(ModelArguments(model_name_or_path=str(model_dir), dtype="float32"))


def test_adapter_export_reloads_with_the_same_greedy_outputs(tiny_model_dir, adapter_dir, phantom_dir, tmp_path):
    from peft import PeftModel

    from evaluation.evaluate import run_eval

    pred = tmp_path / "pred.jsonl"
    pred.write_text("".join(json.dumps({"study_id": f"s{i}", "prediction": t, "reference": t,
                                        "context": {"has_prior": False}}) + "\n"
                            for i, t in enumerate(["Cardiomegaly.", "Small left pleural effusion.", "No pneumothorax."])))
    run_eval(pred, tmp_path / "eval", metrics=("bleu", "chexpert"), n_boot=20, plots=False, progress=False)
    out = tmp_path / "export"
    s = export(str(tiny_model_dir), adapter_dir, out, verify_studies=phantom_dir / "studies.jsonl", n_verify=3,
               metrics=tmp_path / "eval", dtype="float32")
    v = s["verification"]
    assert v["ok"] and v["identical"] == v["n"] == 3 and v["max_abs_logit_diff"] == 0.0
    for f in ("adapter_config.json", "adapter_model.safetensors", "chat_template.jinja", "tokenizer.json",
              "processor_config.json", "generation_config.json", "mllm_cxr_config.json", "README.md"):
        assert (out / f).is_file(), f
    src, dst = load_file(str(adapter_dir / "adapter_model.safetensors")), load_file(str(out / "adapter_model.safetensors"))
    assert src.keys() == dst.keys() and all(torch.equal(src[k], dst[k]) for k in src)
    assert not any("visual" in k for k in dst)
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == str(tiny_model_dir) and "(?!.*visual)" in cfg["target_modules"]
    assert not cfg.get("modules_to_save") and cfg["r"] == 8
    assert json.loads((out / "generation_config.json").read_text())["do_sample"] is False
    saved = json.loads((out / "mllm_cxr_config.json").read_text())["PromptConfig"]
    assert {k: saved[k] for k in RUN_PROMPT} == RUN_PROMPT
    card = (out / "README.md").read_text()
    from huggingface_hub import ModelCard

    front = ModelCard.load(out / "README.md").data
    assert front.base_model == str(tiny_model_dir) and front.library_name == "peft"
    assert front.pipeline_tag == "image-text-to-text" and "radiology" in front.tags
    assert "| BLEU-4 | 1.000 |" in card and "--enable-lora --lora-modules cxr=" in card and "4/4" not in card

    # independently of the export's own check: the reloaded export generates what the source adapter does
    studies = load_split(phantom_dir / "studies.jsonl", "test", 2)
    before = _greedy(PeftModel.from_pretrained(_base(tiny_model_dir), str(adapter_dir)), tiny_model_dir,
                     adapter_dir, phantom_dir, studies)
    after = _greedy(PeftModel.from_pretrained(_base(tiny_model_dir), str(out)), tiny_model_dir, out,
                    phantom_dir, studies)
    plain = _greedy(_base(tiny_model_dir), tiny_model_dir, adapter_dir, phantom_dir, studies)
    assert after == before and plain != before  # the adapter matters, and survives the export


def test_merged_export_gives_the_same_outputs_within_tolerance(tiny_model_dir, adapter_dir, phantom_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    out = tmp_path / "merged"
    s = export(str(tiny_model_dir), adapter_dir, out, merge=True, verify_studies=phantom_dir / "studies.jsonl",
               n_verify=3)  # dtype "auto": the checkpoint's float32, so the float32 tolerance (not half's 5%)
    v = s["verification"]
    assert v["ok"] and v["max_abs_logit_diff"] < 1e-3 and v["identical"] == 3
    assert v["atol"] < 1e-2, v
    assert (out / "model.safetensors").is_file() and not (out / "adapter_config.json").exists()
    merged = AutoModelForImageTextToText.from_pretrained(out, dtype=torch.float32).eval()
    assert not any("lora" in k for k in merged.state_dict())
    studies = load_split(phantom_dir / "studies.jsonl", "test", 2)
    peft_out = _greedy(PeftModel.from_pretrained(_base(tiny_model_dir), str(adapter_dir)), tiny_model_dir,
                       adapter_dir, phantom_dir, studies)
    assert _greedy(merged, out, out, phantom_dir, studies) == peft_out
    assert "library_name: transformers" in (out / "README.md").read_text()


def test_vision_tower_lora_is_refused_unless_allowed(tiny_model_dir, vision_adapter_dir, tmp_path):
    rep = inspect_adapter(vision_adapter_dir)
    assert rep.vision and rep.language and all("visual" in m for m in rep.vision)
    with pytest.raises(ExportError, match="vision-tower.*--allow-vision-lora"):
        export(str(tiny_model_dir), vision_adapter_dir, tmp_path / "refused")
    assert not (tmp_path / "refused").exists()
    s = export(str(tiny_model_dir), vision_adapter_dir, tmp_path / "kept", allow_vision_lora=True)
    assert any("vLLM drops them" in w for w in s["warnings"])
    keys = load_file(str(tmp_path / "kept" / "adapter_model.safetensors")).keys()
    assert any("visual" in k for k in keys)
    assert "vLLM drops them" in (tmp_path / "kept" / "README.md").read_text()


@pytest.mark.parametrize("change, message", [
    ({"modules_to_save": ["merger"]}, "modules_to_save"),
    ({"use_dora": True}, "DoRA"),
    ({"r": 600}, "rank 600"),
    ({"rank_pattern": {"q_proj": 4}}, "rank_pattern"),
])
def test_configs_vllm_cannot_load_are_refused(tiny_model_dir, adapter_dir, tmp_path, change, message):
    bad = tmp_path / "bad"
    shutil.copytree(adapter_dir, bad)
    cfg = json.loads((bad / "adapter_config.json").read_text())
    cfg.update(change)
    (bad / "adapter_config.json").write_text(json.dumps(cfg))
    old = tmp_path / "out"
    old.mkdir()
    (old / "keep.txt").write_text("an earlier export")
    with pytest.raises(ExportError, match=message) as e:
        export(str(tiny_model_dir), bad, old, overwrite=True)
    assert "--merge" in str(e.value)
    assert (old / "keep.txt").exists()  # a refused export leaves the old one alone


def test_vllm_max_lora_rank_choices():
    assert [vllm_max_lora_rank(r) for r in (1, 2, 8, 9, 16, 24, 64, 300, 512)] == [1, 8, 8, 16, 16, 32, 64, 320, 512]
    with pytest.raises(ExportError, match="512"):
        vllm_max_lora_rank(513)


@pytest.mark.vllm
def test_the_rank_list_is_vllms_own():
    """Our copy of vLLM's --max-lora-rank choices (VLLM_MAX_LORA_RANKS) against the Literal vLLM itself declares
    (``MaxLoRARanks`` in vllm/config/lora.py), not against itself: a vLLM upgrade that changes them fails here."""
    import typing

    from mllm_cxr.vllm_support import VLLM_MAX_LORA_RANKS
    from tests.builders.repo import require_vllm

    require_vllm()
    from vllm.config import lora

    assert VLLM_MAX_LORA_RANKS == tuple(sorted(typing.get_args(lora.MaxLoRARanks)))


def test_cli_export_summary_and_non_empty_out(tiny_model_dir, adapter_dir, tmp_path, capsys):
    from mllm_cxr.cli import main

    out = tmp_path / "cli-export"
    argv = ["export", "--base", str(tiny_model_dir), "--adapter", str(adapter_dir), "--out", str(out)]
    assert main(argv) == 0
    assert "exported vLLM-ready adapter (14 LoRA modules)" in capsys.readouterr().out
    assert main(argv) == 2 and "exists and is not empty" in capsys.readouterr().err
    assert main(argv + ["--overwrite"]) == 0
    assert main(["export", "--base", str(tiny_model_dir), "--adapter", str(adapter_dir), "--out",
                 str(adapter_dir.parent), "--overwrite"]) == 2  # would delete the adapter itself
    assert "contains) the adapter" in capsys.readouterr().err and (adapter_dir / "adapter_config.json").exists()
    assert main(["export", "--base", str(tiny_model_dir), "--adapter", str(tmp_path), "--out", str(tmp_path / "x")]) == 2
    assert "no adapter_config.json" in capsys.readouterr().err


def test_a_failed_verification_leaves_the_old_export(tiny_model_dir, adapter_dir, phantom_dir, tmp_path):
    """The export is written in a temporary folder (``cxr_io.atomic_dir``): a verification that fails after every
    file, card included, was written removes it, and an --overwrite target keeps its old contents."""
    old = tmp_path / "out"
    old.mkdir()
    (old / "keep.txt").write_text("an earlier export")
    with pytest.raises(ExportError, match=r"verification \(adapter via PEFT\).*FAILED"):
        export(str(tiny_model_dir), adapter_dir, old, verify_studies=phantom_dir / "studies.jsonl", n_verify=1,
               verify_max_new_tokens=4, dtype="float32", merge_atol=-1.0, overwrite=True)
    assert [p.name for p in old.iterdir()] == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary folder left beside it
