"""Exported adapters in real vLLM (marked ``vllm``; ``make test-vllm`` runs them inside ./.venv-vllm).

An LM-only LoRA adapter trained by ``recipes/sft.py`` and exported by ``mllm-cxr export --verify-backend
vllm`` is loaded by vLLM offline (``LoRARequest``), by ``mllm-cxr generate --backend vllm`` and by
``mllm-cxr serve`` (``vllm serve --enable-lora``); every path must give the greedy output of
transformers + PEFT. Without vLLM the tests fail (they never skip in the vLLM venv).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.builders.processes import child_env as env
from tests.builders.processes import free_port
from tests.builders.processes import run_cli as cli
from tests.builders.repo import REPO, require_vllm

pytestmark = pytest.mark.vllm
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

SFT_CFG = REPO / "recipes" / "configs" / "tiny" / "sft.yaml"
N_STUDIES = 6
MAX_TOKENS = 24


@pytest.fixture(scope="module")
def exported(tiny_model_dir, phantom_dir, tmp_path_factory):
    """(adapter from recipes/sft.py with LoRA on the language model only, its export, the export's output)."""
    require_vllm()
    work = tmp_path_factory.mktemp("vllm-export")
    sft = work / "sft"
    proc = subprocess.run([sys.executable, str(REPO / "recipes" / "sft.py"), "--config", str(SFT_CFG),
                           "--studies", str(phantom_dir / "studies.jsonl"), "--model_name_or_path",
                           str(tiny_model_dir), "--output_dir", str(sft), "--freeze_projector", "true",
                           "--max_steps", "12", "--lora_r", "8", "--lora_alpha", "16"],
                          capture_output=True, text=True, timeout=600, env=env(), cwd=work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = work / "export"
    exp = cli("export", "--base", str(tiny_model_dir), "--adapter", str(sft), "--out", str(out),
              "--verify-studies", str(phantom_dir / "studies.jsonl"), "--verify-backend", "vllm",
              "--verify-n", "4", "--dtype", "float32")
    return sft, out, exp


def test_export_is_verified_by_vllm(exported):
    _, out, proc = exported
    assert "vLLM: 4/4 identical greedy reports: OK" in proc.stdout, proc.stdout
    card = (out / "README.md").read_text()
    assert "verification (vLLM greedy vs in-memory model): 4/4 greedy reports identical: OK" in card
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert not cfg.get("modules_to_save")


def _studies(phantom_dir):
    from mllm_cxr.data import load_split

    return load_split(phantom_dir / "studies.jsonl", "test", N_STUDIES)


def _trim(ids, eos):
    ids = [int(t) for t in ids]
    for i, t in enumerate(ids):
        if t in eos:
            return ids[:i + 1]
    return ids


def test_vllm_lora_tokens_equal_hf_peft_and_differ_from_base(exported, tiny_model_dir, phantom_dir):
    """LLM + LoRARequest on the export: the greedy tokens of transformers + PEFT, and not those of the base."""
    import torch
    from vllm import SamplingParams

    from mllm_cxr.infer.generate import VLLMGenerator
    from mllm_cxr.modeling import ModelArguments, load_model, load_processor
    from mllm_cxr.prompts import build_messages, load_images
    from mllm_cxr.run_config import resolve_prompt

    _, out, _ = exported
    studies = _studies(phantom_dir)
    assert len(studies) >= 4
    prompt = resolve_prompt(out, None)
    margs = ModelArguments(model_name_or_path=str(tiny_model_dir), dtype="float32", min_pixels=prompt.min_pixels,
                           max_pixels=prompt.max_pixels)
    processor = load_processor(margs)
    texts, images = [], []
    for s in studies:
        messages, refs = build_messages(s, prompt.prompt)
        texts.append(processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False))
        images.append(load_images(refs, phantom_dir))

    def hf_tokens(adapter):
        model, _ = load_model(ModelArguments(model_name_or_path=str(tiny_model_dir), dtype="float32",
                                             adapter_path=str(adapter) if adapter else None), is_trainable=False)
        model.eval()
        eos = set(model.generation_config.eos_token_id if isinstance(model.generation_config.eos_token_id, list)
                  else [model.generation_config.eos_token_id])
        rows = []
        with torch.no_grad():
            for t, im in zip(texts, images):
                enc = processor(text=[t], images=im, return_tensors="pt")
                o = model.generate(**enc, max_new_tokens=MAX_TOKENS, do_sample=False)
                rows.append(_trim(o[0, enc["input_ids"].shape[1]:].tolist(), eos))
        return rows, eos

    hf_lora, eos = hf_tokens(out)
    hf_base, _ = hf_tokens(None)
    gen = VLLMGenerator(str(tiny_model_dir), prompt, phantom_dir, adapter=str(out), dtype="float32",
                        processor=processor, enforce_eager=True, max_model_len=1024)
    inputs = [{"prompt": t, "multi_modal_data": {"image": im}} for t, im in zip(texts, images)]
    sp = SamplingParams(temperature=0.0, max_tokens=MAX_TOKENS)
    v_lora = [_trim(o.outputs[0].token_ids, eos) for o in gen.llm.generate(inputs, sp, lora_request=gen.lora,
                                                                            use_tqdm=False)]
    v_base = [_trim(o.outputs[0].token_ids, eos) for o in gen.llm.generate(inputs, sp, use_tqdm=False)]
    assert v_lora == hf_lora
    assert v_base == hf_base
    assert v_lora != v_base  # the adapter is applied


def _predictions(path: Path) -> dict[str, str]:
    return {r["study_id"]: r["prediction"] for r in map(json.loads, path.read_text().splitlines())}


@pytest.fixture(scope="module")
def hf_predictions(exported, tiny_model_dir, phantom_dir, tmp_path_factory):
    _, out, _ = exported
    pred = tmp_path_factory.mktemp("hf-pred") / "hf.jsonl"
    cli("generate", "--studies", str(phantom_dir / "studies.jsonl"), "--limit", str(N_STUDIES), "--model",
        str(tiny_model_dir), "--adapter", str(out), "--backend", "hf", "--dtype", "float32", "--max-new-tokens",
        str(MAX_TOKENS), "--out", str(pred), "--quiet")
    rows = _predictions(pred)
    assert len(rows) == N_STUDIES
    return rows


def test_generate_backend_vllm_equals_hf(exported, hf_predictions, tiny_model_dir, phantom_dir, tmp_path):
    _, out, _ = exported
    pred = tmp_path / "vllm.jsonl"
    proc = cli("generate", "--studies", str(phantom_dir / "studies.jsonl"), "--limit", str(N_STUDIES), "--model",
               str(tiny_model_dir), "--adapter", str(out), "--backend", "vllm", "--dtype", "float32",
               "--max-new-tokens", str(MAX_TOKENS), "--enforce-eager", "--max-model-len", "1024", "--out",
               str(pred), "--quiet")
    assert f"generated {N_STUDIES} studies" in proc.stdout and "vllm backend" in proc.stdout
    assert _predictions(pred) == hf_predictions


def _alive(pids) -> list[int]:
    import psutil

    out = []
    for pid in pids:
        try:
            p = psutil.Process(pid)
            if p.status() != psutil.STATUS_ZOMBIE:
                out.append(pid)
        except psutil.NoSuchProcess:
            pass
    return out


def test_serve_then_openai_backend_equals_hf(exported, hf_predictions, tiny_model_dir, phantom_dir, tmp_path):
    """`mllm-cxr serve` (vllm serve --enable-lora) on a free port; the OpenAI client gets the HF reports."""
    import psutil

    _, out, _ = exported
    port = free_port()
    log = tmp_path / "serve.log"
    cmd = [sys.executable, "-m", "mllm_cxr.cli", "serve", "--model", str(tiny_model_dir), "--adapter",
           f"cxr={out}", "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32", "--max-model-len", "1024",
           "--vllm-args", "--enforce-eager --max-num-seqs 8"]
    with open(log, "w") as fh:
        server = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env())
    family: list[int] = [server.pid]
    try:
        deadline = time.monotonic() + 300
        healthy = False
        while time.monotonic() < deadline and server.poll() is None:
            family = sorted(set(family) | {c.pid for c in psutil.Process(server.pid).children(recursive=True)})
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
                    healthy = r.status == 200
            except OSError:
                pass
            if healthy:
                break
            time.sleep(2)
        assert healthy, f"server not healthy (exit code {server.poll()}):\n{log.read_text()[-4000:]}"
        first = log.read_text().splitlines()[0]
        assert first.startswith("vllm serve ") and "--enforce-eager --max-num-seqs 8" in first
        pred = tmp_path / "served.jsonl"
        cli("generate", "--backend", "openai", "--base-url", f"http://127.0.0.1:{port}", "--served-model", "cxr",
            "--adapter", str(out), "--studies", str(phantom_dir / "studies.jsonl"), "--limit", str(N_STUDIES), "--max-new-tokens",
            str(MAX_TOKENS), "--out", str(pred), "--quiet", timeout=300)
        assert _predictions(pred) == hf_predictions
    finally:
        family = sorted(set(family) | ({c.pid for c in psutil.Process(server.pid).children(recursive=True)}
                                       if server.poll() is None else set()))
        server.send_signal(signal.SIGTERM)  # the server's own PID: `mllm-cxr serve` exec'd `vllm serve`
        try:
            server.wait(timeout=90)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=30)
            pytest.fail("vllm serve did not stop within 90 s of SIGTERM")
        deadline = time.monotonic() + 60
        while _alive(family) and time.monotonic() < deadline:
            time.sleep(1)
        left = _alive(family)
        for pid in left:
            psutil.Process(pid).kill()
    assert not left, f"processes left running after the server stopped: {left}"
    assert server.returncode is not None
