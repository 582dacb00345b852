"""mllm_cxr.run_config: the one home of ``mllm_cxr_config.json`` (write, find, read, prompt resolution,
the adapter-prompt check of DPO/GRPO, the export copy)."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

from mllm_cxr.config import ConfigError
from mllm_cxr.prompts import PromptConfig
from mllm_cxr.run_config import (
    RUN_CONFIG_NAME,
    check_adapter_prompt,
    copy_run_config,
    find_run_config,
    read_run_config,
    resolve_prompt,
    write_run_config,
)

SFT_PROMPT = PromptConfig(sections=["impression"], context=[], max_images=1)


@pytest.fixture
def adapter(tmp_path):
    run = tmp_path / "sft"
    from mllm_cxr.modeling import ModelArguments

    write_run_config(run, [SFT_PROMPT, ModelArguments(model_name_or_path="base", min_pixels=3136, max_pixels=12544)])
    (run / "checkpoint-10").mkdir()
    return run


def test_written_once_found_from_the_run_and_its_checkpoints(adapter):
    assert find_run_config(adapter) == adapter / RUN_CONFIG_NAME
    assert find_run_config(None, adapter / "checkpoint-10") == adapter / RUN_CONFIG_NAME  # a checkpoint's run
    assert find_run_config(adapter.parent) is None
    saved = read_run_config(adapter / RUN_CONFIG_NAME)
    assert saved["PromptConfig"]["sections"] == ["impression"] and saved["ModelArguments"]["max_pixels"] == 12544


def test_resolve_prompt_takes_the_adapters_settings_then_overrides(adapter):
    p = resolve_prompt(adapter)
    assert p.prompt.sections == ["impression"] and (p.min_pixels, p.max_pixels) == (3136, 12544)
    assert p.source == str(adapter / RUN_CONFIG_NAME)
    q = resolve_prompt(adapter, overrides={"max_images": 2, "sections": None}, max_pixels=50176)
    assert q.prompt.max_images == 2 and q.prompt.sections == ["impression"] and q.max_pixels == 50176
    assert resolve_prompt(None).source == "defaults"


@pytest.mark.parametrize("text, match", [("{cut", "not a readable run config"), ("[1]", "expected a JSON object"),
                                         ('{"PromptConfig": 3}', "PromptConfig must be a JSON object")])
def test_a_bad_run_config_names_its_file(tmp_path, text, match):
    p = tmp_path / RUN_CONFIG_NAME
    p.write_text(text)
    with pytest.raises(ConfigError, match=match) as e:
        read_run_config(p)
    assert str(p) in str(e.value)


def test_check_adapter_prompt_lists_what_differs(adapter, caplog):
    same = SimpleNamespace(adapter_path=str(adapter), min_pixels=3136, max_pixels=12544)
    assert check_adapter_prompt(same, SFT_PROMPT) == []
    other = SimpleNamespace(adapter_path=str(adapter / "checkpoint-10"), min_pixels=3136, max_pixels=50176)
    with caplog.at_level(logging.WARNING):
        diffs = check_adapter_prompt(other, PromptConfig(sections=["findings", "impression"], context=[], max_images=1))
    assert diffs == ["sections: ['impression'] -> ['findings', 'impression']", "max_pixels: 12544 -> 50176"]
    assert "differs from the one adapter" in caplog.text
    assert check_adapter_prompt(SimpleNamespace(adapter_path=None), SFT_PROMPT) == []


def test_copy_run_config_adds_the_export_record(adapter, tmp_path):
    out = tmp_path / "export"
    out.mkdir()
    copy_run_config(adapter, out, {"merged": False})
    saved = read_run_config(out / RUN_CONFIG_NAME)
    assert saved["Export"] == {"merged": False} and saved["PromptConfig"]["max_images"] == 1
