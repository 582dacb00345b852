"""EditGRPO (Zhang et al. 2025, arXiv 2509.22812): GRPO with sentence-level post-rollout edits.

Pure on-policy GRPO on report generation tends to collapse to generic reports: when every rollout of a
group misses the same finding, the group has no reward variance and no signal. EditGRPO mixes in
off-policy guidance that stays close to the policy: after the rollouts of a group are sampled, up to half
of the group's slots are replaced by *edited copies of other rollouts*, each edited by one sentence-level
operation toward the reference report (:mod:`mllm_cxr.train.editor`, which needs neither torch nor TRL).
The settings are :class:`mllm_cxr.train.editor.EditSettings`, the config keys ``edit_<name>`` of
:class:`mllm_cxr.train.grpo_config.EditGRPOConfig`.

:class:`EditGRPOTrainer` hooks the narrowest place of TRL 1.16's ``GRPOTrainer``: ``_generate``
(rollouts -> token ids and decoded completions), the step between sampling and everything that
consumes the samples. Edited completions are re-tokenised there, so the rest of
``_generate_and_score_completions`` treats them like any rollout: rewards, group advantages, the
completion mask, and the "old" policy log-probs, which TRL recomputes with the training model
whenever the step needs them (``num_iterations > 1``, off-step generation, vLLM importance
sampling); on a single on-policy iteration the old log-probs are the current ones by definition. With
vLLM, the sampling log-probs of an edited completion are unknown and marked as such (TRL then gives
it an importance ratio of 1). An edit longer than ``max_completion_length`` tokens is dropped (a cut
edit would lose the sentence it added). Groups keep their size. Per step the trainer logs how many edits of
each kind were injected (``edit/n_<kind>``) and their reward gain over the source rollout
(``edit/gain_<kind>``, the weighted total reward of the edited copy minus that of its source).
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from mllm_cxr.config import ConfigError
from mllm_cxr.train.editor import EDIT_KINDS, EditSettings, SentenceEditor
from mllm_cxr.train.grpo import ClinicalGRPOTrainer, completion_texts
from reward.references import choose_reference_field, field_parts, join_reference, reference_candidates

log = logging.getLogger(__name__)


def _group_runs(keys: Sequence[Any], size: int) -> list[list[int]]:
    """Indices of consecutive runs of equal keys, cut into chunks of at most ``size`` (TRL's prompt groups)."""
    groups: list[list[int]] = []
    for i, k in enumerate(keys):
        if groups and keys[groups[-1][-1]] == k and len(groups[-1]) < size:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


class EditGRPOTrainer(ClinicalGRPOTrainer):
    """GRPO with post-rollout edits (see the module docstring). ``editor`` overrides the config's editor.

    ``edit_log`` keeps one record per generation step: counts per kind, mean reward gains, and the
    (source, target, kind, gain) of every injected edit (indices local to the process' batch).
    """

    def __init__(self, *args, editor: SentenceEditor | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        a = self.args
        settings = a.edit_settings() if hasattr(a, "edit_settings") else EditSettings()
        self.edit_settings = settings
        self.edit_fraction = float(settings.fraction)
        self.edit_reference_column = settings.reference_column
        self.editor = editor or SentenceEditor(settings)
        self._edit_rng = random.Random(a.seed if settings.seed is None else settings.seed)
        self._edit_inputs: list[dict] | None = None
        self._pending_edits: list[dict[str, Any]] = []
        self._rollout_texts: list[str] | None = None
        self.edit_log: list[dict[str, Any]] = []

    def _generate_and_score_completions(self, inputs):
        self._edit_inputs = inputs
        try:
            return super()._generate_and_score_completions(inputs)
        finally:
            self._edit_inputs = None
            self._pending_edits = []
            self._rollout_texts = None

    def _generate(self, prompts: list):
        out = super()._generate(prompts)
        if (self._mode() != "train" or self.edit_fraction <= 0 or self._edit_inputs is None or self.tools
                or len(self._edit_inputs) != len(out[1])):
            return out
        t = time.perf_counter()
        prompt_ids, completion_ids, tool_mask, completions, logprobs, extra, images, tool_images = out
        completion_ids, completions, logprobs = self.apply_edits(self._edit_inputs, completion_ids, completions,
                                                                 logprobs)
        self._record_time("edit", time.perf_counter() - t)
        return prompt_ids, completion_ids, tool_mask, completions, logprobs, extra, images, tool_images

    def apply_edits(self, inputs: Sequence[dict], completion_ids: list[list[int]], completions: list,
                    logprobs: list | None):
        """Replace up to half of each group's slots by edited copies of the group's other rollouts.

        Returns new ``(completion_ids, completions, logprobs)`` lists of the same length; the edits
        made are kept in ``_pending_edits`` until the rewards are known.
        """

        col = choose_reference_field(self.edit_reference_column, lambda c: c in inputs[0])  # the one rule
        if col is None:
            wanted = "/".join(reference_candidates(self.edit_reference_column))
            raise ConfigError(f"EditGRPO: the dataset has no column '{wanted}' with the reference report "
                              f"(edit_reference_column); columns: {sorted(inputs[0])}")
        texts = completion_texts(completions)
        self._rollout_texts = list(texts)
        parts = field_parts(col)
        refs = [x.get(col) or "" if len(parts) == 1 else join_reference(str(x.get(p) or "") for p in parts)
                for x in inputs]
        keys = [x.get("study_id", repr(x.get("prompt"))) for x in inputs]
        completion_ids, completions = list(completion_ids), list(completions)
        logprobs = list(logprobs) if logprobs is not None else None
        conversational = bool(completions) and isinstance(completions[0], list)
        eos = self._tokenizer.eos_token_id
        if eos is None or eos not in self.eos_token_ids:
            eos = self.eos_token_ids[0]
        edits: list[dict[str, Any]] = []
        tried = too_long = 0
        for group in _group_runs(keys, self.num_generations):
            n = min(int(len(group) * self.edit_fraction), len(group) // 2)
            if n < 1:
                continue
            order = self._edit_rng.sample(group, len(group))
            for src, tgt in zip(order[:n], order[n:2 * n]):
                tried += 1
                res = self.editor.edit(texts[src], refs[src])
                if not res.changed:
                    continue
                ids = self._tokenizer(res.text, add_special_tokens=False)["input_ids"] + [eos]
                if self.max_completion_length and len(ids) > self.max_completion_length:
                    too_long += 1  # a cut edit would lose the sentence it added
                    continue
                decoded = self._tokenizer.decode(ids, skip_special_tokens=True)
                completion_ids[tgt] = ids
                completions[tgt] = [{"role": "assistant", "content": decoded}] if conversational else decoded
                if logprobs is not None:
                    logprobs[tgt] = [None] * len(ids)  # sampling log-probs unknown for an edit
                edits.append({"source": src, "target": tgt, "kind": res.kind,
                              "observation": res.ops[0].observation})
        self._pending_edits = edits
        self._edit_tried, self._edit_too_long = tried, too_long
        return completion_ids, completions, logprobs

    def _guard_texts(self, completions) -> list[str]:
        return self._rollout_texts if self._rollout_texts is not None else completion_texts(completions)

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        if self._mode() != "train" or self._edit_inputs is None:
            return rewards
        offset = self.accelerator.process_index * len(prompts)
        total = (rewards * self.reward_weights.to(rewards.device).unsqueeze(0)).nansum(dim=1)
        counts: Counter[str] = Counter()
        gains: dict[str, list[float]] = {k: [] for k in EDIT_KINDS}
        for e in self._pending_edits:
            gain = float(total[offset + e["target"]] - total[offset + e["source"]])
            e["gain"] = gain
            counts[e["kind"]] += 1
            gains[e["kind"]].append(gain)
        m = self._metrics["train"]
        n_slots = len(prompts)
        m["edit/injected"].append(float(len(self._pending_edits)))
        m["edit/share"].append(len(self._pending_edits) / n_slots if n_slots else 0.0)
        all_gains = [g for v in gains.values() for g in v]
        m["edit/gain_mean"].append(sum(all_gains) / len(all_gains) if all_gains else math.nan)
        for k in EDIT_KINDS:
            m[f"edit/n_{k}"].append(float(counts[k]))
            if gains[k]:
                m[f"edit/gain_{k}"].append(sum(gains[k]) / len(gains[k]))
        self.edit_log.append({
            "step": self.state.global_step, "slots": n_slots, "tried": getattr(self, "_edit_tried", 0),
            "too_long": getattr(self, "_edit_too_long", 0),
            "injected": len(self._pending_edits), "counts": dict(counts),
            "gain_mean": {k: (sum(v) / len(v)) for k, v in gains.items() if v},
            "edits": [dict(e) for e in self._pending_edits],
        })
        return rewards
