"""Serve a report generator over an OpenAI-compatible API: ``vllm serve`` or a small transformers server.

    mllm-cxr serve --model Qwen/Qwen2.5-VL-3B-Instruct --adapter exports/cxr [--dry-run]
    mllm-cxr serve --backend hf --model runs/tiny-model --adapter runs/tiny-sft --port 8000

``--backend vllm`` (default) builds and runs::

    vllm serve BASE --enable-lora --lora-modules NAME=DIR --max-lora-rank R --max-loras K \\
        --limit-mm-per-prompt '{"image": N}' --mm-processor-kwargs '{"min_pixels": .., "max_pixels": ..}'

with ``R`` the adapters' largest rank rounded up to a value vLLM accepts, ``N`` the prompt's
``max_images`` and the pixel budget the adapter was trained with (both from its
``mllm_cxr_config.json``). The command is printed first; ``--dry-run`` only prints it.

``--backend hf`` runs :class:`ChatServer`: ``/v1/chat/completions`` and ``/v1/models`` for one model
(base + optional adapter) through transformers, images as ``data:`` URLs. It answers one request at a
time, so it is for tests, demos and machines without vLLM, not for throughput. Request bodies
(patient text) are never logged.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import shutil
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from mllm_cxr.vllm_support import VLLM_MISSING, command_line

log = logging.getLogger(__name__)

def run_vllm(cmd: Sequence[str], *, dry_run: bool = False) -> int:
    """Print the command; unless ``dry_run``, replace this process with it (``exec``).

    The server then has this process's PID, so a signal to it (Ctrl-C, ``kill PID``) reaches vLLM
    itself, which shuts its engine processes down; nothing is left behind.
    """
    print(command_line(cmd), flush=True)
    if dry_run:
        return 0
    # the vllm of this interpreter's venv first (.venv-vllm/bin/mllm-cxr serve works unactivated), then PATH
    exe = shutil.which(cmd[0], path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    if exe is None:
        raise ImportError(VLLM_MISSING)
    sys.stderr.flush()
    os.execv(exe, [exe, *cmd[1:]])
    return 1  # not reached


# ------------------------------------------------------------------------------------------------
# A small OpenAI-compatible server on transformers
# ------------------------------------------------------------------------------------------------
class RequestError(ValueError):
    """A bad request: answered with HTTP ``status`` and the message."""

    def __init__(self, message: str, status: int = 400, kind: str = "BadRequestError"):
        super().__init__(message)
        self.status, self.kind = status, kind


def decode_data_url(url: str):
    """A ``data:image/...;base64,...`` URL -> RGB PIL image (other URLs are refused: no network here)."""
    from PIL import Image, UnidentifiedImageError

    if not isinstance(url, str) or not url.startswith("data:"):
        raise RequestError("image_url must be a data: URL (base64 image); remote URLs are not fetched")
    head, _, payload = url.partition(",")
    if ";base64" not in head or not payload:
        raise RequestError("image_url data: URL must be base64-encoded")
    try:
        raw = base64.b64decode(payload, validate=True)
        return Image.open(io.BytesIO(raw)).convert("RGB")
    except (ValueError, UnidentifiedImageError, OSError) as e:
        raise RequestError(f"image_url could not be decoded as an image ({type(e).__name__})") from None


def openai_to_hf_messages(messages: Any) -> tuple[list[dict[str, Any]], list]:
    """OpenAI chat messages -> transformers chat messages (``{"type": "image"}`` parts) and the images."""
    if not isinstance(messages, list) or not messages:
        raise RequestError("'messages' must be a non-empty list")
    out, images = [], []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant"):
            raise RequestError(f"messages[{i}] needs a role of system, user or assistant")
        content = m.get("content")
        parts = [{"type": "text", "text": content}] if isinstance(content, str) else content
        if not isinstance(parts, list):
            raise RequestError(f"messages[{i}].content must be a string or a list of parts")
        hf_parts = []
        for j, part in enumerate(parts):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text":
                hf_parts.append({"type": "text", "text": str(part.get("text", ""))})
            elif kind == "image_url":
                url = (part.get("image_url") or {}).get("url") if isinstance(part.get("image_url"), dict) \
                    else part.get("image_url")
                images.append(decode_data_url(url))
                hf_parts.append({"type": "image"})
            else:
                raise RequestError(f"messages[{i}].content[{j}]: unsupported part type {kind!r}")
        out.append({"role": m["role"], "content": hf_parts})
    return out, images


class ChatServer:
    """OpenAI-compatible chat server for one transformers model (base + optional LoRA adapter).

    ``port=0`` picks a free port (see :attr:`url`). Requests are answered one at a time. Supported
    request fields: ``model``, ``messages`` (text and ``image_url`` data-URL parts), ``max_tokens`` /
    ``max_completion_tokens``, ``temperature`` (0 or absent with a greedy generation config = greedy),
    ``top_p``, ``n``, ``seed``, ``repetition_penalty`` and ``mm_processor_kwargs`` (``min_pixels``,
    ``max_pixels``).
    """

    def __init__(self, model: str | Path, adapter: str | Path | None = None, *, served_model_name: str | None = None,
                 host: str = "127.0.0.1", port: int = 8000, dtype: str = "auto", min_pixels: int | None = None,
                 max_pixels: int | None = None, max_images: int = 8, max_tokens_limit: int = 4096):
        from mllm_cxr.infer.loader import (
            load_for_inference,  # torch + transformers: only when a server starts
        )

        self.model, self.processor = load_for_inference(model, adapter, dtype=dtype, min_pixels=min_pixels,
                                                        max_pixels=max_pixels)
        self.name = served_model_name or (Path(adapter).name if adapter else str(model))
        self.max_images, self.max_tokens_limit = max_images, max_tokens_limit
        self._lock = threading.Lock()
        self.n_requests = 0
        self.httpd = ThreadingHTTPServer((host, port), self._handler())
        self.httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> ChatServer:
        """Serve in a background thread (returns at once)."""
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="mllm-cxr-chat", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve until stopped; Ctrl-C closes the socket and propagates (the CLI prints one line, exit 130)."""
        try:
            self.httpd.serve_forever()
        finally:
            self.httpd.server_close()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> ChatServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the API -----------------------------------------------------------------------------------
    def models(self) -> dict[str, Any]:
        return {"object": "list", "data": [{"id": self.name, "object": "model", "owned_by": "mllm-cxr"}]}

    def chat_completion(self, body: Any) -> dict[str, Any]:
        import torch

        if not isinstance(body, dict):
            raise RequestError("the request body must be a JSON object")
        if body.get("model") not in (None, self.name):
            raise RequestError(f"The model `{body.get('model')}` does not exist.", 404, "NotFoundError")
        messages, images = openai_to_hf_messages(body.get("messages"))
        if len(images) > self.max_images:
            raise RequestError(f"at most {self.max_images} images per request, got {len(images)}")
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens") or 256
        n = body.get("n") or 1
        if not isinstance(max_tokens, int) or not 1 <= max_tokens <= self.max_tokens_limit:
            raise RequestError(f"max_tokens must be an integer in [1, {self.max_tokens_limit}]")
        if not isinstance(n, int) or not 1 <= n <= 16:
            raise RequestError("n must be an integer in [1, 16]")
        temperature = body.get("temperature")
        gen: dict[str, Any] = {"max_new_tokens": max_tokens, "num_return_sequences": n}
        if temperature is not None:
            if not isinstance(temperature, int | float) or temperature < 0:
                raise RequestError("temperature must be a number >= 0")
            gen["do_sample"] = temperature > 0
            if temperature > 0:
                gen.update(temperature=float(temperature), top_p=float(body.get("top_p") or 1.0))
        if n > 1 and not gen.get("do_sample", self.model.generation_config.do_sample):
            raise RequestError("n > 1 needs temperature > 0 (greedy decoding gives one answer)")
        if body.get("repetition_penalty") is not None:
            gen["repetition_penalty"] = float(body["repetition_penalty"])
        mm = body.get("mm_processor_kwargs") or {}
        if not isinstance(mm, dict) or set(mm) - {"min_pixels", "max_pixels"}:
            raise RequestError("mm_processor_kwargs may hold min_pixels and max_pixels only")
        proc_kw: dict[str, Any] = {}
        if mm and images:  # the pixel budget lives in the image processor's ``size`` (transformers 5)
            from mllm_cxr.modeling import size_with_budget

            proc_kw["size"] = size_with_budget(self.processor.image_processor, min_pixels=mm.get("min_pixels") or None,
                                               max_pixels=mm.get("max_pixels") or None)
        from mllm_cxr.infer.loader import chat_inputs

        with self._lock:
            inputs = chat_inputs(self.processor, [(messages, images)], self.model.device, **proc_kw)
            if body.get("seed") is not None:
                torch.manual_seed(int(body["seed"]))
            with torch.no_grad():
                out = self.model.generate(**inputs, **gen)
            self.n_requests += 1
        n_prompt = int(inputs["input_ids"].shape[1])
        eos = self.model.generation_config.eos_token_id
        eos = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        choices, n_completion = [], 0
        for i, seq in enumerate(out[:, n_prompt:]):
            ids = seq.tolist()
            pad = self.model.generation_config.pad_token_id
            while ids and ids[-1] == pad and pad not in eos:
                ids.pop()
            finished = any(t in eos for t in ids)
            if finished:
                ids = ids[:next(k for k, t in enumerate(ids) if t in eos) + 1]
            n_completion += len(ids)
            content = self.processor.decode(ids, skip_special_tokens=True).strip()
            choices.append({"index": i, "message": {"role": "assistant", "content": content},
                            "finish_reason": "stop" if finished else "length"})
        return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
                "model": self.name, "choices": choices,
                "usage": {"prompt_tokens": n_prompt, "completion_tokens": n_completion,
                          "total_tokens": n_prompt + n_completion}}

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, fmt, *args):  # request line and status only; never bodies
                log.debug("%s %s", self.address_string(), fmt % args)

            def _send(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _error(self, status: int, message: str, kind: str) -> None:
                self._send(status, {"error": {"message": message, "type": kind, "code": status}})

            def do_GET(self):  # noqa: N802 (http.server's naming)
                path = self.path.split("?")[0].rstrip("/")
                if path in ("/v1/models", "/models"):
                    self._send(200, server.models())
                elif path in ("/health", "/v1/health"):
                    self._send(200, {"status": "ok"})
                else:
                    self._error(404, f"no route {path}", "NotFoundError")

            def do_POST(self):  # noqa: N802
                path = self.path.split("?")[0].rstrip("/")
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                if path not in ("/v1/chat/completions", "/chat/completions"):
                    self._error(404, f"no route {path}", "NotFoundError")
                    return
                try:
                    body = json.loads(raw or b"null")
                    self._send(200, server.chat_completion(body))
                except json.JSONDecodeError:
                    self._error(400, "the request body is not valid JSON", "BadRequestError")
                except RequestError as e:
                    self._error(e.status, str(e), e.kind)
                except Exception as e:  # a model failure: say what kind, not the input
                    log.exception("chat completion failed")
                    self._error(500, f"internal error ({type(e).__name__})", "InternalServerError")

        return Handler
