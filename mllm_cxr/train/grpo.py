"""The GRPO trainer of report generation: :class:`ClinicalGRPOTrainer`, and the reward curve.

:class:`ClinicalGRPOTrainer` is :class:`trl.GRPOTrainer` that feeds the collapse guard
(:mod:`mllm_cxr.train.collapse`) and logs where the time of a step goes (``timing/generate_s``,
``timing/reward_s``, ``timing/score_s``, ``timing/sync_s`` with vLLM). With ``use_vllm`` it applies the
vLLM rollout fixes of :mod:`mllm_cxr.train.upstream_fixes` (the prompt vLLM sees, the prompt guard, the
pixel budget, placeholder suppression, CPU weight sync) and stops when the mean vLLM-vs-trainer log-prob
gap exceeds ``vllm_max_logp_gap``. Its config is :class:`mllm_cxr.train.grpo_config.ClinicalGRPOConfig`.

Multi-image studies need nothing special: the dataset's ``images`` column holds every image of the
prompt (frontal, lateral, prior) and TRL places them at the prompt's image slots.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from trl import GRPOTrainer

from mllm_cxr.modeling import pixel_budget
from mllm_cxr.train.collapse import CollapseGuard, report_texts
from mllm_cxr.train.upstream_fixes import (
    VLLMRolloutMismatch,
    generate_with_trainer_prompt,
    install_rollout_fixes,
    rollout_engine_fixes,
    stack_versions,
)
from mllm_cxr.vllm_support import TRL_SUPPORTED, require_vllm_for_rollouts

log = logging.getLogger(__name__)


def completion_texts(completions: Sequence[Any]) -> list[str]:
    """Plain text of TRL completions (strings or ``[{"role": "assistant", "content": ...}]``)."""
    from reward.trl import completion_text

    return [completion_text(c) for c in completions]



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
        with rollout_engine_fixes(args_, pixel_budget(kwargs.get("processing_class"))):
            super().__init__(*args, callbacks=callbacks or None, **kwargs)
        self.collapse_guards = guards
        self.stage_times: dict[str, list[float]] = {"generate": [], "reward": [], "score": []}
        self.vllm_prompt_checks = 0
        if self.use_vllm:
            install_rollout_fixes(self)
            if self.vllm_generation.mode == "server":
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

    def _vllm_generate(self, prompts, images, num_generations, profiler=None):
        """TRL's ``VLLMGeneration.generate`` with the prompt vLLM must see, and the prompt guard
        (:func:`mllm_cxr.train.upstream_fixes.generate_with_trainer_prompt`)."""
        out = generate_with_trainer_prompt(self._vllm_generate_trl, self.vllm_generation.mode, prompts, images,
                                           num_generations, profiler,
                                           getattr(self.processing_class, "image_token_id", None),
                                           unexpand=self.vllm_unexpand_images)
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
                f"tested with trl{TRL_SUPPORTED}. Raise vllm_max_logp_gap only if you know the gap is numerical.")
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
