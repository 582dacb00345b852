"""GRPO server mode: the trainer and ``trl vllm-serve`` cut images with the same min/max pixels.

The server's command is built from the trainer's recipe config (:func:`serve_command`), and at start-up the
trainer reads the server's resolved config (``GET /server_info``, through TRL's own
``VLLMClient.get_server_info`` against a stand-in HTTP server here) and stops with one line when the
budgets differ. No vLLM needed; the real server's weight sync (NCCL) is GPU-cluster only.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest
import yaml

from mllm_cxr.config import ConfigError
from mllm_cxr.train.vllm_server import (
    ServerMismatch,
    check_server_pixels,
    serve_command,
    served_pixel_budget,
)
from tests.builders.repo import REPO

CFG_7B = REPO / "recipes" / "configs" / "qwen2.5-vl-7b" / "grpo_server.yaml"
OURS = {"min_pixels": 200704, "max_pixels": 401408}


def info(mm_kwargs) -> dict:
    """The shape of vLLM's ``/server_info`` ``vllm_config`` tree around the processor kwargs."""
    return {"model_config": {"model": "Qwen/Qwen2.5-VL-7B-Instruct", "max_model_len": 4096,
                             "multimodal_config": {"limit_per_prompt": {"image": 2}, "mm_processor_kwargs": mm_kwargs}},
            "parallel_config": {"tensor_parallel_size": 4}}


def test_served_budget_found_anywhere_in_the_tree():
    assert served_pixel_budget(info(OURS)) == OURS
    assert served_pixel_budget(info(json.dumps(OURS))) == OURS  # serialised as a string
    assert served_pixel_budget(info({"size": {"shortest_edge": 3136, "longest_edge": 12544}})) == {
        "min_pixels": 3136, "max_pixels": 12544}
    assert served_pixel_budget(info(None)) == {}


def test_equal_budgets_pass_and_different_ones_stop_with_one_line():
    assert check_server_pixels(OURS, info(dict(OURS)), "http://n1:8000") == OURS
    with pytest.raises(ServerMismatch) as e:
        check_server_pixels(OURS, info({"min_pixels": 200704, "max_pixels": 1003520}), "http://n1:8000")
    msg = str(e.value)
    assert "\n" not in msg and "http://n1:8000" in msg
    assert "max_pixels server 1003520 != trainer 401408" in msg and "min_pixels server" not in msg
    assert """--mm-processor-kwargs '{"min_pixels":200704,"max_pixels":401408}'""" in msg
    with pytest.raises(ServerMismatch, match="runs without a pixel budget"):
        check_server_pixels(OURS, info(None), "http://n1:8000")
    assert isinstance(e.value, ConfigError)  # the recipes print it as one line and exit 2


def test_serve_command_comes_from_the_trainers_config(tmp_path):
    cfg = yaml.safe_load(CFG_7B.read_text())
    cmd = serve_command(cfg, tensor_parallel_size=4, port=8123)
    assert cmd[:4] == ["trl", "vllm-serve", "--model", "Qwen/Qwen2.5-VL-7B-Instruct"]
    flags = dict(zip(cmd[2::2], cmd[3::2]))
    assert flags["--tensor_parallel_size"] == "4" and flags["--data_parallel_size"] == "1"
    assert flags["--port"] == "8123" and flags["--max_model_len"] == "4096" and flags["--dtype"] == "bfloat16"
    assert json.loads(flags["--mm-processor-kwargs"]) == {"min_pixels": cfg["min_pixels"], "max_pixels": cfg["max_pixels"]}
    # what the server is started with is what the trainer checks against
    assert check_server_pixels({"min_pixels": cfg["min_pixels"], "max_pixels": cfg["max_pixels"]},
                               info(json.loads(flags["--mm-processor-kwargs"])), "x") == OURS
    with pytest.raises(ConfigError, match="min_pixels and max_pixels"):
        serve_command({"model_name_or_path": "m", "max_pixels": 1})
    # `trl vllm-serve` takes the TRL options and hands --mm-processor-kwargs on to `vllm serve` unchanged
    from trl.scripts.vllm_serve import build_command, make_parser

    *parsed, extra = make_parser().parse_args_and_config(args=cmd[2:], return_remaining_strings=True)
    served = build_command(parsed[0], extra)
    assert served[served.index("--mm-processor-kwargs") + 1] == flags["--mm-processor-kwargs"]
    assert served[served.index("--tensor-parallel-size") + 1] == "4"
    # the command-line form the launch scripts read (one argument per line)
    out = subprocess.run([sys.executable, "-m", "mllm_cxr.train.vllm_server", str(CFG_7B), "--lines", "--tp", "4"],
                         capture_output=True, text=True, cwd=REPO, check=True).stdout.splitlines()
    assert out == serve_command(cfg, tensor_parallel_size=4)
    bad = tmp_path / "bad.yaml"
    bad.write_text("model_name_or_path: m\n")
    proc = subprocess.run([sys.executable, "-m", "mllm_cxr.train.vllm_server", str(bad)], capture_output=True,
                          text=True, cwd=REPO)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1


class _Server(BaseHTTPRequestHandler):
    payload: dict = {}

    def do_GET(self):  # noqa: N802 - http.server's name
        body = json.dumps({"vllm_config": self.payload}).encode()
        ok = self.path.startswith("/server_info")
        self.send_response(200 if ok else 404)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body if ok else b"{}")

    def log_message(self, *a):
        pass


@pytest.fixture
def stand_in_server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Server)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.shutdown()


@pytest.mark.parametrize("served,ok", [(OURS, True), ({"min_pixels": 3136, "max_pixels": 401408}, False)])
def test_trainer_start_up_check_through_trls_client(stand_in_server, served, ok, caplog):
    """``ClinicalGRPOTrainer._check_server_pixels`` with TRL's ``VLLMClient.get_server_info`` on HTTP."""
    import requests
    from trl.generation.vllm_client import VLLMClient

    from mllm_cxr.train.grpo import ClinicalGRPOTrainer

    _Server.payload = info(served)
    port = stand_in_server.server_address[1]
    client = SimpleNamespace(session=requests.Session(), base_url=f"http://127.0.0.1:{port}")
    client.get_server_info = lambda: VLLMClient.get_server_info(client)
    processor = SimpleNamespace(image_processor=SimpleNamespace(size={"shortest_edge": 200704,
                                                                      "longest_edge": 401408}))
    trainer = SimpleNamespace(vllm_generation=SimpleNamespace(vllm_client=client), processing_class=processor,
                              args=SimpleNamespace(vllm_server_base_url=None, vllm_server_host="127.0.0.1",
                                                   vllm_server_port=port))
    if ok:
        ClinicalGRPOTrainer._check_server_pixels(trainer)
    else:
        with pytest.raises(ServerMismatch, match="min_pixels server 3136 != trainer 200704"):
            ClinicalGRPOTrainer._check_server_pixels(trainer)
    # a non-main rank has no client and checks nothing
    ClinicalGRPOTrainer._check_server_pixels(SimpleNamespace(vllm_generation=SimpleNamespace()))


def test_unreachable_server_info_is_one_line():
    from mllm_cxr.train.grpo import ClinicalGRPOTrainer

    def boom():
        raise RuntimeError("The vLLM server at http://x:1 does not expose its development endpoints")

    trainer = SimpleNamespace(vllm_generation=SimpleNamespace(vllm_client=SimpleNamespace(get_server_info=boom)),
                              processing_class=None, args=SimpleNamespace(vllm_server_base_url="http://x:1"))
    with pytest.raises(ServerMismatch, match=r"cannot read the vLLM server's config at http://x:1/server_info"):
        ClinicalGRPOTrainer._check_server_pixels(trainer)
