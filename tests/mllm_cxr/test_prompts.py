"""The one prompt builder: content, image order, priors, targets, OpenAI form, config validation."""

from __future__ import annotations

import pytest

from data_prep.schema import ImageRef, Prior, StudyRecord
from mllm_cxr.prompts import (
    PromptConfig,
    build_messages,
    prompt_text,
    target_text,
    to_openai_messages,
)


def study(**kw) -> StudyRecord:
    base = dict(study_id="s1", patient_id="p1", dataset="t", split="test",
                images=[ImageRef("lat.png", "LATERAL"), ImageRef("pa.png", "PA"), ImageRef("x.png", "UNKNOWN")],
                indication="Cough.", comparison="None.", findings="Lungs clear.", impression="Normal.")
    base.update(kw)
    return StudyRecord(**base)


def test_frontal_first_and_max_images():
    msgs, imgs = build_messages(study(), PromptConfig(max_images=2))
    assert [i.path for i in imgs] == ["pa.png", "lat.png"]
    user = msgs[-1]["content"]
    assert [p["type"] for p in user] == ["image", "image", "text"]
    assert msgs[0]["role"] == "system"


def test_context_fields_and_none_comparison():
    text = prompt_text(study(comparison=""), PromptConfig(context=["indication", "comparison"]))
    assert "INDICATION: Cough." in text and "COMPARISON: None." in text
    assert "FINDINGS and IMPRESSION" in text
    assert "INDICATION" not in prompt_text(study(), PromptConfig(context="none"))


def test_prior_report_and_prior_image():
    s = study(prior=Prior(study_id="s0", findings="Small effusion.", impression="Effusion.",
                          images=[ImageRef("old_pa.png", "PA")]))
    cfg = PromptConfig(max_images=2, include_prior_report=True, include_prior_images=True)
    msgs, imgs = build_messages(s, cfg)
    assert [i.path for i in imgs] == ["pa.png", "old_pa.png"]  # current frontal, then the prior's
    text = msgs[-1]["content"][-1]["text"]
    assert "PRIOR REPORT: FINDINGS: Small effusion." in text and "prior study" in text


def test_targets_and_section_roundtrip():
    s = study()
    both = target_text(s, PromptConfig())
    assert both == "FINDINGS: Lungs clear.\nIMPRESSION: Normal."
    from reward.text import find_sections

    assert [(n, both[a:b].strip()) for n, a, b in find_sections(both)] == [("findings", "Lungs clear."),
                                                                           ("impression", "Normal.")]
    assert target_text(s, PromptConfig(sections=["impression"])) == "Normal."
    assert find_sections("just text") == []


def test_openai_messages_inline_images():
    from PIL import Image

    msgs, imgs = build_messages(study(), PromptConfig(max_images=2))
    out = to_openai_messages(msgs, [Image.new("RGB", (8, 8)) for _ in imgs])
    parts = out[-1]["content"]
    assert [p["type"] for p in parts] == ["image_url", "image_url", "text"]
    assert parts[0]["image_url"]["url"].startswith("data:image/png;base64,")


@pytest.mark.parametrize("kw", [dict(sections=["findngs"]), dict(context=["history"]), dict(max_images=0)])
def test_bad_prompt_config_names_the_field(kw):
    with pytest.raises(ValueError, match="prompt\\."):
        PromptConfig(**kw)
