"""mllm-cxr generate: resumable predictions, prompt settings from the adapter's run config, backends."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from evaluation.predictions import meta_path
from mllm_cxr.config import ConfigError
from mllm_cxr.data import load_split
from mllm_cxr.infer.generate import (
    GenerationError,
    GenerationSettings,
    check_resume,
    generate_predictions,
    load_hf_generator,
)
from mllm_cxr.run_config import resolve_prompt
from tests.builders.adapters import RUN_PIXELS, RUN_PROMPT, make_random_adapter, one_torch_thread  # noqa: F401


@pytest.fixture(scope="module")
def adapter_dir(tiny_model_dir, tmp_path_factory) -> Path:
    return make_random_adapter(tiny_model_dir, tmp_path_factory.mktemp("adapter"))


@pytest.fixture(scope="module")
def generator(tiny_model_dir, adapter_dir, phantom_dir):
    prompt = resolve_prompt(adapter_dir, tiny_model_dir)
    return load_hf_generator(str(tiny_model_dir), str(adapter_dir), prompt, phantom_dir,
                             GenerationSettings(max_new_tokens=10), dtype="float32")


def ids_in(path: Path) -> list[str]:
    return [json.loads(line)["study_id"] for line in path.read_text().splitlines()]


def test_resolve_prompt_follows_the_adapter_run_config(adapter_dir, tiny_model_dir, tmp_path):
    p = resolve_prompt(adapter_dir, tiny_model_dir)
    assert p.source.endswith("mllm_cxr_config.json")
    assert p.prompt.context == RUN_PROMPT["context"] and p.prompt.max_images == RUN_PROMPT["max_images"]
    assert (p.min_pixels, p.max_pixels) == (RUN_PIXELS["min_pixels"], RUN_PIXELS["max_pixels"])
    # flags win over the run config
    q = resolve_prompt(adapter_dir, None, overrides={"max_images": 2, "context": "indication,comparison",
                                                     "sections": None}, max_pixels=224 * 224)
    assert q.prompt.max_images == 2 and q.prompt.context == ["indication", "comparison"]
    assert q.prompt.sections == RUN_PROMPT["sections"] and q.max_pixels == 224 * 224
    # a checkpoint folder finds the run config one level up
    ckpt = adapter_dir / "checkpoint-2"
    ckpt.mkdir(exist_ok=True)
    assert resolve_prompt(ckpt).prompt.max_images == RUN_PROMPT["max_images"]
    d = resolve_prompt(tmp_path)  # no config anywhere: the PromptConfig defaults
    assert d.source == "defaults" and d.prompt.max_images == 2 and d.max_pixels is None
    with pytest.raises(ConfigError, match="max_images"):
        resolve_prompt(adapter_dir, overrides={"max_images": 0})


def test_killed_run_resumes_and_writes_each_study_once(generator, phantom_dir, tmp_path):
    studies = load_split(phantom_dir / "studies.jsonl", "test", 6)
    assert len(studies) == 6
    clean = tmp_path / "clean.jsonl"
    s = generate_predictions(generator, studies, clean, batch_size=2, progress=False)
    assert s["generated"] == 6 and ids_in(clean) == [x.study_id for x in studies]

    out = tmp_path / "resumed.jsonl"
    generate_predictions(generator, studies[:3], out, batch_size=2, progress=False)  # a run stopped early...
    text = out.read_text()
    out.write_text(text[: len(text) - len(text.splitlines()[-1]) // 2 - 1])  # ...and killed while writing line 3
    s = generate_predictions(generator, studies + studies[:2], out, batch_size=2, progress=False)  # repeats too
    assert s["generated"] == 4 and s["skipped_done"] == 2
    got = ids_in(out)
    assert sorted(got) == sorted(x.study_id for x in studies) and len(got) == len(set(got)) == 6
    rows = {json.loads(x)["study_id"]: json.loads(x) for x in out.read_text().splitlines()}
    ref = {json.loads(x)["study_id"]: json.loads(x) for x in clean.read_text().splitlines()}
    assert rows == ref  # same batches, greedy: the resumed file equals an uninterrupted run
    again = generate_predictions(generator, studies, out, batch_size=2, progress=False)
    assert again["generated"] == 0 and ids_in(out) == got
    row = rows[studies[0].study_id]
    assert row["reference"].startswith("FINDINGS:") and row["context"]["has_prior"] in (True, False)


def test_resume_refuses_other_settings(tmp_path):
    out = tmp_path / "p.jsonl"
    meta = {"model": "m", "adapter": "a", "prompt": {"max_images": 1}, "generation": {"max_new_tokens": 8}}
    check_resume(out, meta)
    out.write_text('{"study_id": "x", "prediction": "", "reference": "", "context": {}}\n')
    check_resume(out, dict(meta, backend="vllm"))  # another backend, same settings: fine
    with pytest.raises(GenerationError, match=r"prompt.max_images: 1 -> 2"):
        check_resume(out, dict(meta, prompt={"max_images": 2}))
    check_resume(out, dict(meta, prompt={"max_images": 2}), overwrite=True)
    assert not out.exists() and json.loads(meta_path(out).read_text())["prompt"] == {"max_images": 2}


def test_generation_settings_map_to_each_backend():
    g = GenerationSettings(max_new_tokens=7)
    assert g.hf_kwargs()["do_sample"] is False and "temperature" not in g.hf_kwargs()
    assert g.vllm_kwargs()["temperature"] == 0.0 and g.vllm_kwargs()["max_tokens"] == 7
    assert g.openai_kwargs()["temperature"] == 0.0 and "repetition_penalty" not in g.openai_kwargs()
    s = GenerationSettings(do_sample=True, temperature=0.7, num_return_sequences=3, repetition_penalty=1.1)
    assert s.vllm_kwargs()["n"] == 3 and s.openai_kwargs()["temperature"] == 0.7
    assert s.openai_kwargs()["repetition_penalty"] == 1.1
    with pytest.raises(ConfigError, match="do_sample"):
        GenerationSettings(num_return_sequences=2)
    with pytest.raises(ConfigError):
        GenerationSettings(max_new_tokens=0)


def test_cli_generate_uses_the_adapter_prompt(tiny_model_dir, adapter_dir, phantom_dir, tmp_path, capsys):
    from mllm_cxr.cli import main

    out = tmp_path / "pred.jsonl"
    argv = ["generate", "--studies", str(phantom_dir / "studies.jsonl"), "--model", str(tiny_model_dir),
            "--adapter", str(adapter_dir), "--out", str(out), "--limit", "2", "--max-new-tokens", "6",
            "--dtype", "float32", "--quiet"]
    assert main(argv) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("generated 2 studies (0 already done) with the hf backend") and str(out) in line
    meta = json.loads(meta_path(out).read_text())
    assert meta["prompt"]["prompt"]["max_images"] == RUN_PROMPT["max_images"]
    assert meta["prompt"]["max_pixels"] == RUN_PIXELS["max_pixels"] and meta["prompt_source"].endswith(".json")
    assert main(argv) == 0 and "generated 0 studies (2 already done)" in capsys.readouterr().out
    assert main(argv[:-3] + ["--max-new-tokens", "9", "--quiet"]) == 2  # other settings: refused
    assert "--overwrite" in capsys.readouterr().err
    assert main(["generate", "--studies", str(phantom_dir / "studies.jsonl"), "--out", str(out)]) == 2


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed here")
def test_vllm_backend_says_which_extra_to_install(tiny_model_dir, phantom_dir, tmp_path, capsys):
    from mllm_cxr.cli import main
    from mllm_cxr.infer.generate import VLLMGenerator

    with pytest.raises(ImportError, match=r"mllm-cxr\[gpu\]"):
        VLLMGenerator(str(tiny_model_dir), resolve_prompt(None), phantom_dir)
    rc = main(["generate", "--backend", "vllm", "--studies", str(phantom_dir / "studies.jsonl"), "--model",
               str(tiny_model_dir), "--out", str(tmp_path / "p.jsonl"), "--limit", "1"])
    assert rc == 2 and "mllm-cxr[gpu]" in capsys.readouterr().err


def test_openai_backend_retries_busy_servers_with_the_shared_session(tiny_model_dir, adapter_dir, phantom_dir):
    """A 503 with Retry-After is retried by reward.http's session (urllib3 Retry); a 400 is not retried
    and its message is shown; the study's columns are the ones every consumer records."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from mllm_cxr.data import reward_columns, study_columns
    from mllm_cxr.infer.generate import OpenAIGenerator

    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def _send(self, status, payload, headers=()):
            data = json.dumps(payload).encode()
            self.send_response(status)
            for k, v in headers:
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):  # noqa: N802
            seen.append("GET")
            if seen.count("GET") == 1:
                self._send(503, {"error": "busy"}, [("Retry-After", "0")])
            else:
                self._send(200, {"data": [{"id": "cxr"}]})

        def do_POST(self):  # noqa: N802
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            seen.append("POST")
            self._send(400, {"error": {"message": "bad field"}})

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}"
        gen = OpenAIGenerator(url, resolve_prompt(adapter_dir), phantom_dir, retries=2, backoff=0.01)
        assert gen.served_model == "cxr" and seen == ["GET", "GET"]
        study = load_split(phantom_dir / "studies.jsonl", "test", 1)
        with pytest.raises(GenerationError, match="HTTP 400.*bad field"):
            gen.generate(study)
        assert seen.count("POST") == 1
    finally:
        httpd.shutdown()
        httpd.server_close()
    s = study[0]
    cols = reward_columns(s, resolve_prompt(adapter_dir).prompt)
    ctx = study_columns(s)
    assert cols["study_id"] == s.study_id and cols["reference"]
    assert {k: v for k, v in cols.items() if k not in ("study_id", "reference", "labels")} == \
        {k: v for k, v in ctx.items() if k != "labels"}
    assert json.loads(cols["labels"] or "null") == ctx["labels"]


def test_one_loader_and_one_study_to_tensors_path(generator, tiny_model_dir, adapter_dir, phantom_dir):
    """load_for_inference: adapter on, frozen, eval mode, left padding, the pixel budget in the processor;
    study_inputs = chat_inputs over study_conversation, with one image placeholder run per image."""
    import torch

    from data_prep.schema import read_records
    from mllm_cxr.infer.loader import chat_inputs, load_for_inference, study_conversation, study_inputs
    from mllm_cxr.modeling import pixel_budget

    model, proc = load_for_inference(tiny_model_dir, adapter_dir, dtype="float32", device="cpu", **RUN_PIXELS)
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    assert any("lora_A" in n for n, _ in model.named_parameters())
    assert proc.tokenizer.padding_side == "left" and pixel_budget(proc) == RUN_PIXELS
    studies = [s for s in read_records(phantom_dir / "studies.jsonl", split="test") if s.images][:2]
    cfg = generator.cfg
    inputs = study_inputs(proc, studies, cfg, phantom_dir)
    same = chat_inputs(proc, [study_conversation(s, cfg, phantom_dir) for s in studies])
    assert torch.equal(inputs["input_ids"], same["input_ids"]) and torch.equal(inputs["pixel_values"], same["pixel_values"])
    merge = proc.image_processor.merge_size ** 2
    assert int((inputs["input_ids"] == proc.image_token_id).sum()) == int(inputs["image_grid_thw"].prod(-1).sum()) // merge
    assert bool(inputs["attention_mask"][:, -1].all())  # left-padded: every prompt ends at the last position
