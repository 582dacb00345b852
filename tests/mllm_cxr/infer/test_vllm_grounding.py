"""Grounded answers through real vLLM decode to the boxes transformers gives (marked ``vllm``; ``make
test-vllm`` runs it inside ./.venv-vllm, and it fails, never skips, without vLLM).

A tiny LM-only LoRA adapter is trained by ``recipes/sft.py`` on the ``phrase_grounding`` task (so its
answers are in the qwen2_5_vl box JSON) and exported. Then, for the task's prompts:

* greedy vLLM (``LLM`` + ``LoRARequest``) returns the token ids of greedy transformers + PEFT, its text is
  the text transformers decodes from those ids, and :func:`mllm_cxr.boxes.decode_boxes` gives the same
  boxes and the same parse-failure count from both;
* ``mllm-cxr generate --task phrase_grounding --backend vllm`` writes the rows ``--backend hf`` writes (answers
  and the fields eval scores them by), so ``mllm-cxr eval`` gives both the same box details.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.builders.processes import child_env as env
from tests.builders.processes import run_cli as cli
from tests.builders.repo import REPO, require_vllm

pytestmark = pytest.mark.vllm
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

SFT_CFG = REPO / "recipes" / "configs" / "tiny" / "sft.yaml"
N_STUDIES = 6
MAX_TOKENS = 48


@pytest.fixture(scope="module")
def grounding_adapter(tiny_model_dir, phantom_dir, tmp_path_factory) -> Path:
    """An export of a LoRA adapter (language model only) trained on phrase_grounding answers."""
    require_vllm()
    work = tmp_path_factory.mktemp("vllm-grounding")
    sft = work / "sft"
    proc = subprocess.run([sys.executable, str(REPO / "recipes" / "sft.py"), "--config", str(SFT_CFG),
                           "--studies", str(phantom_dir / "studies.jsonl"), "--model_name_or_path",
                           str(tiny_model_dir), "--output_dir", str(sft), "--tasks", "phrase_grounding",
                           "--box_family", "qwen2_5_vl", "--freeze_projector", "true", "--max_steps", "60",
                           "--lora_r", "8", "--lora_alpha", "16"],
                          capture_output=True, text=True, timeout=900, env=env(), cwd=work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = work / "export"
    cli("export", "--base", str(tiny_model_dir), "--adapter", str(sft), "--out", str(out), "--dtype", "float32")
    return out


def _examples(phantom_dir: Path, prompt):
    from mllm_cxr.data import load_split
    from mllm_cxr.infer.generate import task_items
    from mllm_cxr.tasks import TaskConfig

    cfg = TaskConfig(prompt=prompt.prompt, family="qwen2_5_vl", min_pixels=prompt.min_pixels,
                     max_pixels=prompt.max_pixels, data_root=phantom_dir)
    studies = load_split(phantom_dir / "studies.jsonl", "test", N_STUDIES)
    items = task_items(studies, "phrase_grounding", cfg)
    assert len(items) >= 4
    return items


def _trim(ids, eos):
    ids = [int(t) for t in ids]
    for i, t in enumerate(ids):
        if t in eos:
            return ids[:i + 1]
    return ids


def _boxes(text: str, size, prompt):
    from mllm_cxr.boxes import decode_boxes

    got = decode_boxes(text, "qwen2_5_vl", size, min_pixels=prompt.min_pixels, max_pixels=prompt.max_pixels)
    return [dict(b) for b in got], got.n_failed


def test_vllm_grounded_tokens_and_boxes_equal_hf(grounding_adapter, tiny_model_dir, phantom_dir):
    import torch
    from vllm import SamplingParams

    from mllm_cxr.infer.generate import VLLMGenerator
    from mllm_cxr.infer.loader import chat_text, study_conversation
    from mllm_cxr.modeling import ModelArguments, load_model, load_processor
    from mllm_cxr.run_config import resolve_prompt

    prompt = resolve_prompt(grounding_adapter, None)
    assert prompt.min_pixels and prompt.max_pixels  # qwen2_5_vl boxes are pixels of this budget's resize
    items = _examples(phantom_dir, prompt)
    processor = load_processor(ModelArguments(model_name_or_path=str(tiny_model_dir), dtype="float32",
                                              min_pixels=prompt.min_pixels, max_pixels=prompt.max_pixels))
    convs = [study_conversation(x, prompt.prompt, phantom_dir) for x in items]
    texts = [chat_text(processor, m) for m, _ in convs]
    assert all("bounding boxes" in t for t in texts)  # the task's prompt, not the report's

    model, _ = load_model(ModelArguments(model_name_or_path=str(tiny_model_dir), dtype="float32",
                                         adapter_path=str(grounding_adapter)), is_trainable=False)
    model.eval()
    eos_id = model.generation_config.eos_token_id
    eos = set(eos_id if isinstance(eos_id, list) else [eos_id])
    hf_ids = []
    with torch.no_grad():
        for t, (_, ims) in zip(texts, convs):
            enc = processor(text=[t], images=ims, return_tensors="pt")
            o = model.generate(**enc, max_new_tokens=MAX_TOKENS, do_sample=False)
            hf_ids.append(_trim(o[0, enc["input_ids"].shape[1]:].tolist(), eos))

    gen = VLLMGenerator(str(tiny_model_dir), prompt, phantom_dir, adapter=str(grounding_adapter), dtype="float32",
                        processor=processor, enforce_eager=True, max_model_len=1024)
    inputs = [{"prompt": t, "multi_modal_data": {"image": ims}} for t, (_, ims) in zip(texts, convs)]
    outs = gen.llm.generate(inputs, SamplingParams(temperature=0.0, max_tokens=MAX_TOKENS), lora_request=gen.lora,
                            use_tqdm=False)
    v_ids = [_trim(o.outputs[0].token_ids, eos) for o in outs]
    assert v_ids == hf_ids  # the same tokens...
    for x, o, ids in zip(items, outs, hf_ids):
        hf_text = processor.batch_decode([ids], skip_special_tokens=True)[0].strip()
        v_text = o.outputs[0].text.strip()
        assert v_text == hf_text
        size = x.columns["image_size"]
        v_boxes, hf_boxes = _boxes(v_text, size, prompt), _boxes(hf_text, size, prompt)
        assert v_boxes == hf_boxes  # ...the same boxes and the same parse failures
    # the backend's own path (VLLMGenerator.generate on task examples, its own longer token limit) continues
    # those texts: greedy, so each of the MAX_TOKENS-token texts above is a prefix of its answer
    own = [g[0] for g in gen.generate(items)]
    assert len(own) == len(outs)
    assert all(a.startswith(o.outputs[0].text.strip()) for a, o in zip(own, outs)), own


def test_generate_task_vllm_rows_equal_hf_and_eval_agrees(grounding_adapter, tiny_model_dir, phantom_dir, tmp_path):
    rows = {}
    for backend in ("hf", "vllm"):
        out = tmp_path / f"{backend}.jsonl"
        extra = ["--enforce-eager", "--max-model-len", "1024"] if backend == "vllm" else []
        proc = cli("generate", "--studies", str(phantom_dir / "studies.jsonl"), "--limit", str(N_STUDIES),
                   "--model", str(tiny_model_dir), "--adapter", str(grounding_adapter), "--backend", backend,
                   "--dtype", "float32", "--max-new-tokens", str(MAX_TOKENS), "--task", "phrase_grounding",
                   "--box-family", "qwen2_5_vl", "--out", str(out), "--quiet", *extra)
        assert f"with the {backend} backend" in proc.stdout
        rows[backend] = {r["study_id"]: r for r in map(json.loads, out.read_text().splitlines())}
        cli("eval", "--pred", str(out), "--out", str(tmp_path / f"eval-{backend}"), "--metrics", "boxes",
            "--n-boot", "20", "--no-plots", "--quiet")
    assert rows["hf"] and rows["hf"].keys() == rows["vllm"].keys()
    for sid, r in rows["hf"].items():
        v = rows["vllm"][sid]
        assert v["prediction"] == r["prediction"], sid
        for k in ("task", "box_family", "image_size", "boxes", "min_pixels", "max_pixels", "phrase"):
            assert v[k] == r[k], (sid, k)
    per = {b: [json.loads(x)["details"]["boxes"] for x in (tmp_path / f"eval-{b}" / "per_study.jsonl")
               .read_text().splitlines()] for b in ("hf", "vllm")}
    assert per["hf"] == per["vllm"]
