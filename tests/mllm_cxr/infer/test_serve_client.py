"""The OpenAI-compatible client against a real local HTTP server (the tiny model through transformers),
and the `vllm serve` command line."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import requests

from mllm_cxr.data import load_split
from mllm_cxr.infer.generate import (
    GenerationError,
    GenerationSettings,
    OpenAIGenerator,
    generate_predictions,
    load_hf_generator,
)
from mllm_cxr.infer.serve import ChatServer
from mllm_cxr.prompts import prompt_text
from mllm_cxr.run_config import resolve_prompt
from mllm_cxr.vllm_support import build_vllm_command, command_line
from tests.builders.adapters import RUN_PIXELS, make_random_adapter, one_torch_thread  # noqa: F401


@pytest.fixture(scope="module")
def adapter_dir(tiny_model_dir, tmp_path_factory) -> Path:
    return make_random_adapter(tiny_model_dir, tmp_path_factory.mktemp("adapter"), seed=3)


@pytest.fixture(scope="module")
def server(tiny_model_dir, adapter_dir):
    prompt = resolve_prompt(adapter_dir, tiny_model_dir)
    with ChatServer(tiny_model_dir, adapter_dir, served_model_name="cxr", host="127.0.0.1", port=0, dtype="float32",
                    min_pixels=prompt.min_pixels, max_pixels=prompt.max_pixels) as srv:
        yield srv


def test_openai_backend_gives_the_hf_backend_reports(server, tiny_model_dir, adapter_dir, phantom_dir, tmp_path,
                                                     capsys):
    """Same prompt, same images (lossless PNG data URLs), same model: the same greedy reports."""
    from mllm_cxr.cli import main

    out = tmp_path / "served.jsonl"
    before = server.n_requests
    rc = main(["generate", "--backend", "openai", "--base-url", server.url, "--served-model", "cxr",
               "--adapter", str(adapter_dir), "--studies", str(phantom_dir / "studies.jsonl"), "--limit", "3",
               "--out", str(out), "--max-new-tokens", "12", "--batch-size", "2", "--max-concurrency", "2", "--quiet"])
    assert rc == 0 and "with the openai backend" in capsys.readouterr().out
    assert server.n_requests - before == 3
    served = {json.loads(x)["study_id"]: json.loads(x)["prediction"] for x in out.read_text().splitlines()}

    studies = load_split(phantom_dir / "studies.jsonl", "test", 3)
    hf = load_hf_generator(str(tiny_model_dir), str(adapter_dir), resolve_prompt(adapter_dir, tiny_model_dir),
                           phantom_dir, GenerationSettings(max_new_tokens=12), dtype="float32")
    local = tmp_path / "local.jsonl"
    generate_predictions(hf, studies, local, batch_size=1, progress=False)
    expected = {json.loads(x)["study_id"]: json.loads(x)["prediction"] for x in local.read_text().splitlines()}
    assert served == expected and any(expected.values())


def test_request_body_carries_the_training_prompt(server, adapter_dir, phantom_dir):
    prompt = resolve_prompt(adapter_dir)
    gen = OpenAIGenerator(server.url + "/v1", prompt, phantom_dir, GenerationSettings(max_new_tokens=5))
    assert gen.served_model == "cxr"  # the server's only model
    study = load_split(phantom_dir / "studies.jsonl", "test", 1)[0]
    body = gen.request_body(study)
    system, user = body["messages"]
    assert system["role"] == "system" and user["role"] == "user"
    kinds = [p["type"] for p in user["content"]]
    assert kinds == ["image_url", "text"]  # max_images 1 in the adapter's run config
    assert user["content"][0]["image_url"]["url"].startswith("data:image/png;base64,")
    assert user["content"][1]["text"] == prompt_text(study, prompt.prompt)
    assert body["temperature"] == 0.0 and body["max_tokens"] == 5
    assert body["mm_processor_kwargs"] == RUN_PIXELS


def test_server_errors_are_clear(server, adapter_dir, phantom_dir):
    models = requests.get(server.url + "/v1/models", timeout=30).json()
    assert [m["id"] for m in models["data"]] == ["cxr"]
    study = load_split(phantom_dir / "studies.jsonl", "test", 1)
    gen = OpenAIGenerator(server.url, resolve_prompt(adapter_dir), phantom_dir, served_model="other", retries=0)
    with pytest.raises(GenerationError, match="HTTP 404.*does not exist"):
        gen.generate(study)
    bad_image = {"model": "cxr", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "http://example.org/x.png"}}, {"type": "text", "text": "hi"}]}]}
    r = requests.post(server.url + "/v1/chat/completions", json=bad_image, timeout=30)
    assert r.status_code == 400 and "data: URL" in r.json()["error"]["message"]
    r = requests.post(server.url + "/v1/chat/completions", data=b"{not json", timeout=30)
    assert r.status_code == 400
    r = requests.post(server.url + "/v1/chat/completions",
                      json={"messages": [{"role": "user", "content": "No pleural effusion."}], "max_tokens": 4},
                      timeout=30)
    answer = r.json()
    assert r.status_code == 200 and answer["choices"][0]["finish_reason"] in ("stop", "length")
    assert answer["usage"]["completion_tokens"] <= 4
    # a server that is not there: retried by the session, then a clear error naming the URL
    with pytest.raises(GenerationError, match=r"127\.0\.0\.1:9/v1/models: no answer after 2 tries"):
        OpenAIGenerator("http://127.0.0.1:9", resolve_prompt(adapter_dir), phantom_dir, retries=1, backoff=0.01)


def test_vllm_serve_command(tiny_model_dir, adapter_dir, tmp_path, capsys):
    cmd = build_vllm_command("Qwen/Qwen2.5-VL-3B-Instruct", {"cxr": str(adapter_dir)}, max_images=1,
                             min_pixels=RUN_PIXELS["min_pixels"], max_pixels=RUN_PIXELS["max_pixels"], port=8001)
    line = command_line(cmd)
    assert line.startswith("vllm serve Qwen/Qwen2.5-VL-3B-Instruct --enable-lora --lora-modules cxr=")
    assert cmd[cmd.index("--max-lora-rank") + 1] == "8" and cmd[cmd.index("--max-loras") + 1] == "1"
    assert json.loads(cmd[cmd.index("--limit-mm-per-prompt") + 1]) == {"image": 1}
    assert json.loads(cmd[cmd.index("--mm-processor-kwargs") + 1]) == RUN_PIXELS
    wide = tmp_path / "r24"
    shutil.copytree(adapter_dir, wide)
    cfg = json.loads((wide / "adapter_config.json").read_text())
    (wide / "adapter_config.json").write_text(json.dumps(dict(cfg, r=24)))
    two = build_vllm_command("base", {"a": str(adapter_dir), "b": str(wide)})
    assert two[two.index("--max-lora-rank") + 1] == "32" and two[two.index("--max-loras") + 1] == "2"

    from mllm_cxr.cli import main

    rc = main(["serve", "--model", str(tiny_model_dir), "--adapter", f"cxr={adapter_dir}", "--dry-run"])
    printed = capsys.readouterr().out.strip()
    assert rc == 0 and printed.startswith(f"vllm serve {tiny_model_dir} --enable-lora --lora-modules cxr=")
    assert "--limit-mm-per-prompt '{\"image\": 1}'" in printed  # from the adapter's run config
    if importlib.util.find_spec("vllm") is None and shutil.which("vllm") is None:
        assert main(["serve", "--model", str(tiny_model_dir), "--adapter", str(adapter_dir)]) == 2
        assert "vllm is not installed" in capsys.readouterr().err
