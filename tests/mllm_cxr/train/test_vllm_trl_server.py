"""GRPO's vLLM server mode on a real ``trl vllm-serve`` (marked ``vllm``; ``make test-vllm`` in ./.venv-vllm).

In server mode TRL 1.16 asks the server for the image features and places them over the runs of image
tokens in the trainer's own processor-expanded ids, so the server must generate from exactly the
trainer's prompt. This runs TRL's own server path (``VLLMGeneration.generate``, mode ``server``) against
the server and checks that (a) the prompt ids are the trainer's, (b) greedy completions equal
transformers' on those ids, and (c) a trainer prompt cut to a different pixel budget is stopped by
:func:`mllm_cxr.train.upstream_fixes.checked_place_features`. Weight sync (NCCL) does not run on CPU and is not tested.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.builders.processes import free_port
from tests.builders.repo import require_vllm

pytestmark = pytest.mark.vllm
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

PIXELS = {"min_pixels": 3136, "max_pixels": 12544}
N_STUDIES, MAX_TOKENS = 4, 16




@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory):
    """`trl vllm-serve` (python -m trl.scripts.vllm_serve) on a free port; stopped by its PID afterwards."""
    require_vllm()
    port = free_port()
    log = tmp_path_factory.mktemp("trl-serve") / "serve.log"
    cmd = [sys.executable, "-m", "trl.scripts.vllm_serve", "--model", str(tiny_model_dir), "--host", "127.0.0.1",
           "--port", str(port), "--dtype", "float32", "--max_model_len", "1024", "--enforce_eager", "true",
           "--mm-processor-kwargs", json.dumps(PIXELS), "--max-num-seqs", "8"]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR",
                                                              "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
    try:
        deadline, healthy = time.monotonic() + 300, False
        while not healthy and time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
                    healthy = r.status == 200
            except OSError:
                time.sleep(2)
        assert healthy, f"trl vllm-serve not healthy (exit code {proc.poll()}):\n{log.read_text()[-4000:]}"
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGTERM)  # trl vllm-serve exec's `vllm serve`: this PID is the server
        try:
            proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
            pytest.fail("trl vllm-serve did not stop within 90 s of SIGTERM")


def _server_generation(url, processor):
    """TRL's VLLMGeneration in server mode, without its NCCL weight-sync communicator (not on CPU)."""
    from accelerate import Accelerator
    from trl.generation.vllm_client import VLLMClient
    from trl.generation.vllm_generation import VLLMGeneration

    from mllm_cxr.train.upstream_fixes import checked_place_features, suppress_image_tokens

    g = VLLMGeneration.__new__(VLLMGeneration)
    g.mode, g.accelerator, g.processing_class = "server", Accelerator(cpu=True), processor
    g.vllm_client = VLLMClient(base_url=url, connection_timeout=60)
    g.temperature, g.top_p, g.top_k, g.min_p, g.repetition_penalty = 0.0, 1.0, 0, None, 1.0
    g.max_completion_length, g.logprobs, g.structured_outputs_regex = MAX_TOKENS, 0, None
    g.generation_kwargs = suppress_image_tokens(None, processor)  # as ClinicalGRPOTrainer
    g.enable_sleep_mode = False
    g._place_features = functools.partial(checked_place_features, g._place_features)  # as ClinicalGRPOTrainer
    return g


def _trainer_prompts(tiny_model_dir, phantom_dir, pixels):
    """The trainer's prompt ids (processor-expanded, as GRPOTrainer._tokenize_prompts) and the images."""
    from mllm_cxr.data import grpo_dataset, load_split
    from mllm_cxr.modeling import ModelArguments, load_processor
    from mllm_cxr.prompts import PromptConfig

    processor = load_processor(ModelArguments(model_name_or_path=str(tiny_model_dir), **pixels))
    rows = grpo_dataset(load_split(phantom_dir / "studies.jsonl", "train", N_STUDIES), phantom_dir,
                        PromptConfig(sections=["impression"], context=[], max_images=1))
    texts, ids, images = [], [], []
    for row in rows:
        texts.append(processor.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=False))
        ids.append([int(t) for t in processor(text=[texts[-1]], images=[row["images"]])["input_ids"][0]])
        images.append(list(row["images"]))
    return processor, texts, ids, images


def test_server_mode_generates_from_the_trainers_prompt(server, tiny_model_dir, phantom_dir):
    import torch

    from mllm_cxr.modeling import ModelArguments, load_model
    from mllm_cxr.train.upstream_fixes import check_rollout_prompts

    processor, texts, ids, images = _trainer_prompts(tiny_model_dir, phantom_dir, PIXELS)
    assert all(sum(t == processor.image_token_id for t in x) == 16 for x in ids)  # expanded: 16 per image
    g = _server_generation(server, processor)
    prompt_ids, completion_ids, _, _ = g.generate(prompts=ids, images=images, num_generations=1)
    check_rollout_prompts(prompt_ids, ids, processor.image_token_id, "server")
    model, _ = load_model(ModelArguments(model_name_or_path=str(tiny_model_dir), dtype="float32", **PIXELS),
                          is_trainable=False)
    model.eval()
    eos = model.generation_config.eos_token_id
    eos = set(eos if isinstance(eos, list) else [eos])
    with torch.no_grad():
        for text, x, im, got in zip(texts, ids, images, completion_ids):
            enc = processor(text=[text], images=[im], return_tensors="pt")
            assert enc["input_ids"][0].tolist() == x
            hf = model.generate(**enc, max_new_tokens=MAX_TOKENS, do_sample=False)[0, len(x):].tolist()
            n = len(got)
            assert n > 0 and list(got) == hf[:n] and (n == MAX_TOKENS or got[-1] in eos)


def test_server_mode_stops_on_a_different_pixel_budget(server, tiny_model_dir, phantom_dir):
    from mllm_cxr.train.upstream_fixes import VLLMRolloutMismatch

    processor, _, ids, images = _trainer_prompts(tiny_model_dir, phantom_dir, {"min_pixels": 3136, "max_pixels": 3136})
    assert all(sum(t == processor.image_token_id for t in x) == 4 for x in ids)
    g = _server_generation(server, processor)
    with pytest.raises(VLLMRolloutMismatch, match=r"cut the images into \[16\] tokens.*runs of \[4\] image tokens"):
        g.generate(prompts=ids, images=images, num_generations=1)


def test_server_info_carries_the_pixel_budget_the_trainer_checks(server):
    """The start-up check of ``ClinicalGRPOTrainer`` (server mode) on a real ``trl vllm-serve``: the budget it
    was started with (``--mm-processor-kwargs``) is found in ``/server_info``, and another trainer budget stops."""
    from trl.generation.vllm_client import VLLMClient

    from mllm_cxr.train.vllm_server import ServerMismatch, check_server_pixels, served_pixel_budget

    info = VLLMClient(base_url=server, connection_timeout=60).get_server_info()
    assert served_pixel_budget(info) == PIXELS
    assert check_server_pixels(PIXELS, info, server) == PIXELS
    with pytest.raises(ServerMismatch, match="max_pixels server 12544 != trainer 3136"):
        check_server_pixels({"min_pixels": 3136, "max_pixels": 3136}, info, server)
