"""The collapse guard of RL on report generation (GRPO, EditGRPO).

:class:`CollapseGuard` watches for the policy drifting to one generic "normal" report (or to empty
completions), which scores well on label-based rewards whenever most studies are normal and leaves no
learning signal. It logs ``collapse/normal_share`` and ``collapse/empty_share`` every step and warns when
they drift; :class:`mllm_cxr.train.grpo.ClinicalGRPOTrainer` feeds it each step's completions.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Sequence
from typing import Any

from transformers import TrainerCallback

log = logging.getLogger(__name__)


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
