"""DPO for report generation: TRL's DPOTrainer plus a length-controlled sigmoid loss (R-DPO).

Preference data for reports is often length-biased: a "chosen" report can win because it lists more
findings, so plain DPO learns "longer is better" and drifts into verbose reports that the clinical
metrics do not reward. Length-regularised DPO (Park et al. 2024, "Disentangling Length from Quality
in Direct Preference Optimization") removes that shortcut. The RLHF objective with a length penalty,
``max E[r(x, y)] - alpha * |y| - beta * KL``, has the optimal policy
``pi*(y|x) ~ pi_ref(y|x) exp((r(x, y) - alpha |y|) / beta)``; solving for ``r`` and plugging it into
the Bradley-Terry model gives the loss::

    -log sigmoid( beta * [log pi(y_w)/pi_ref(y_w) - log pi(y_l)/pi_ref(y_l)] + alpha * (|y_w| - |y_l|) )

with ``|y|`` the number of completion tokens. The part of a preference that the length difference
explains is credited to the length term, not learnt by the policy. ``length_alpha = 0`` is plain
sigmoid DPO (TRL's own loss code runs then); TRL 1.16 has no such option (its ``ld_alpha`` down-weights
the tokens past the shorter answer instead, LD-DPO), hence this subclass.

Everything else -- the frozen ``ref`` copy of an SFT adapter, multi-image collation, logging -- is
TRL's :class:`trl.DPOTrainer`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from trl import DPOConfig, DPOTrainer


@dataclass
class ClinicalDPOConfig(DPOConfig):
    """:class:`trl.DPOConfig` plus ``length_alpha`` (R-DPO length regularisation; 0 = plain DPO)."""

    length_alpha: float = field(
        default=0.0,
        metadata={"help": "R-DPO: alpha in -log sigmoid(beta*delta + alpha*(|y_w|-|y_l|)), |y| in tokens; "
                          "0 = plain sigmoid DPO. Typical 0.001-0.05 (scale with beta)."},
    )

    def __post_init__(self):
        super().__post_init__()
        if self.length_alpha < 0:
            raise ValueError(f"length_alpha must be >= 0, got {self.length_alpha}")
        if self.length_alpha and ("sigmoid" not in self.loss_type or not set(self.loss_type) <= {"sigmoid", "sft"}):
            raise ValueError(f"length_alpha works with loss_type [sigmoid] or [sigmoid, sft] only, got {self.loss_type}")
        if self.length_alpha and self.f_divergence_type != "reverse_kl":
            raise ValueError("length_alpha works with f_divergence_type 'reverse_kl' only")
        if self.length_alpha and self.ld_alpha is not None:
            raise ValueError("length_alpha (R-DPO) and ld_alpha (LD-DPO) are two length controls; choose one")


def length_controlled_sigmoid_loss(chosen_logratios: torch.Tensor, rejected_logratios: torch.Tensor,
                                   chosen_len: torch.Tensor, rejected_len: torch.Tensor, beta: float,
                                   alpha: float) -> torch.Tensor:
    """Per-pair R-DPO loss ``-log sigmoid(beta * (lr_w - lr_l) + alpha * (|y_w| - |y_l|))``."""
    margin = beta * (chosen_logratios - rejected_logratios) + alpha * (chosen_len - rejected_len).to(chosen_logratios)
    return -F.logsigmoid(margin)


class ClinicalDPOTrainer(DPOTrainer):
    """:class:`trl.DPOTrainer` with the R-DPO length control of :class:`ClinicalDPOConfig`.

    With ``length_alpha = 0`` it is TRL's trainer unchanged. Otherwise the loss is
    :func:`length_controlled_sigmoid_loss` (plus, with ``loss_type: [sigmoid, sft]``, the weighted NLL
    of the chosen reports, as TRL's "sft" term); logged metrics: ``rewards/{chosen,rejected,accuracies,margins}``
    (``beta * log-ratio``, as TRL), ``logps/{chosen,rejected}``, ``length/{chosen,rejected}`` (tokens)
    and ``length/penalty`` (mean ``alpha * (|y_w| - |y_l|)``).
    """

    def _compute_loss(self, model, inputs, return_outputs):
        alpha = float(getattr(self.args, "length_alpha", 0.0) or 0.0)
        if not alpha:
            return super()._compute_loss(model, inputs, return_outputs)
        from accelerate.utils import is_peft_model
        from trl.models.utils import disable_gradient_checkpointing
        from trl.trainer.utils import use_adapter

        mode = "train" if self.model.training else "eval"
        skip = {"completion_mask", "ref_chosen_logps", "ref_rejected_logps"}
        model_kwargs = {k: v for k, v in inputs.items() if k not in skip}
        model_kwargs["use_cache"] = False
        completion_mask = inputs["completion_mask"]
        shift_mask = completion_mask[..., 1:]
        seq_len = shift_mask.size(1)
        labels = inputs["input_ids"].masked_fill(completion_mask == 0, -100)
        outputs = model(**model_kwargs, labels=labels, fused_lm_head=True)
        per_token_logps = outputs.log_probs[:, -seq_len:]
        logps = per_token_logps.sum(dim=1)
        chosen_logps, rejected_logps = logps.chunk(2, dim=0)

        if self.precompute_ref_logps:
            ref_chosen, ref_rejected = inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]
        else:
            with torch.no_grad(), disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs):
                if is_peft_model(self.model) and self.ref_model is None:
                    unwrapped = self.accelerator.unwrap_model(self.model)
                    with use_adapter(unwrapped, adapter_name="ref" if "ref" in unwrapped.peft_config else None):
                        ref_out = self.model(**model_kwargs, labels=labels, fused_lm_head=True)
                else:
                    ref_out = self.ref_model(**model_kwargs, labels=labels, fused_lm_head=True)
            ref_chosen, ref_rejected = ref_out.log_probs[:, -seq_len:].sum(dim=1).chunk(2, dim=0)

        lengths = shift_mask.sum(dim=1).float()
        chosen_len, rejected_len = lengths.chunk(2, dim=0)
        chosen_lr, rejected_lr = chosen_logps - ref_chosen, rejected_logps - ref_rejected
        loss = 0.0
        for loss_type, weight in zip(self.loss_types, self.loss_weights):
            if loss_type == "sigmoid":
                part = length_controlled_sigmoid_loss(chosen_lr, rejected_lr, chosen_len, rejected_len, self.beta,
                                                      alpha).mean()
            else:  # "sft": NLL of the chosen completions (RPO-style anchor)
                chosen_mask = shift_mask.chunk(2, dim=0)[0].bool()
                part = -per_token_logps.chunk(2, dim=0)[0][chosen_mask].mean()
            loss = loss + weight * part
        if self.aux_loss_enabled and getattr(outputs, "aux_loss", None) is not None:
            loss = loss + self.router_aux_loss_coef * outputs.aux_loss

        gather = self.accelerator.gather_for_metrics
        chosen_r, rejected_r = (self.beta * chosen_lr).detach(), (self.beta * rejected_lr).detach()
        m = self._metrics[mode]
        m["rewards/chosen"].append(gather(chosen_r).mean().item())
        m["rewards/rejected"].append(gather(rejected_r).mean().item())
        m["rewards/accuracies"].append(gather((chosen_r > rejected_r).float()).mean().item())
        m["rewards/margins"].append(gather(chosen_r - rejected_r).mean().item())
        m["logps/chosen"].append(gather(chosen_logps.detach()).mean().item())
        m["logps/rejected"].append(gather(rejected_logps.detach()).mean().item())
        m["length/chosen"].append(gather(chosen_len).mean().item())
        m["length/rejected"].append(gather(rejected_len).mean().item())
        m["length/penalty"].append(gather(alpha * (chosen_len - rejected_len)).mean().item())
        return (loss, outputs) if return_outputs else loss


@dataclass
class PairsArguments:
    """Which preference pairs to train on (``mllm-cxr pairs prior|sample`` output)."""

    pairs: str = field(default="", metadata={"help": "pairs JSONL ({study_id, chosen, rejected, ...})"})
    min_margin: float | None = field(default=None, metadata={"help": "drop pairs whose margin is not above this"})
    max_pairs: int | None = field(default=None, metadata={"help": "use at most this many pairs"})


def load_pair_dataset(pairs_args: PairsArguments, data_args, prompt_cfg):
    """Pairs + study records -> TRL's vision preference dataset (prompt, images, chosen, rejected)."""
    import logging

    from data_prep.schema import read_records
    from mllm_cxr.config import ConfigError
    from mllm_cxr.data import dpo_dataset
    from mllm_cxr.pairs import read_pairs

    if not pairs_args.pairs:
        raise ConfigError("pairs: no pairs file given (build one with `mllm-cxr pairs prior|sample`)")
    if not data_args.studies:
        raise ConfigError("studies: the study records the pairs refer to are needed (prompts and images)")
    pairs = read_pairs(pairs_args.pairs)
    n_all = len(pairs)
    if pairs_args.min_margin is not None:
        pairs = [p for p in pairs if (p.get("margin") or 0.0) > pairs_args.min_margin]
    if pairs_args.max_pairs:
        pairs = pairs[:pairs_args.max_pairs]
    if not pairs:
        raise ConfigError(f"{pairs_args.pairs}: no pair left after min_margin={pairs_args.min_margin}")
    logging.getLogger(__name__).info("DPO data: %d of %d pairs from %s", len(pairs), n_all, pairs_args.pairs)
    records = {r.study_id: r for r in read_records(data_args.studies)}
    return dpo_dataset(pairs, records, data_args.root(), prompt_cfg)


def check_adapter_prompt(model_args, prompt_cfg) -> list[str]:
    """Warn when the prompt or pixel budget differs from the one the starting adapter was trained with.

    A DPO/GRPO run that starts from an SFT adapter should show the model the prompt it learnt on (same
    sections, context fields, number of images, pixel budget); a silent mismatch costs a lot of what SFT
    taught. Returns the differences (``key: adapter -> now``), also logged as one warning.
    """
    import dataclasses
    import json
    import logging
    from pathlib import Path

    if not getattr(model_args, "adapter_path", None):
        return []
    path = Path(model_args.adapter_path) / "mllm_cxr_config.json"
    if not path.exists():
        return []
    saved = json.loads(path.read_text())
    diffs = []
    now = dataclasses.asdict(prompt_cfg)
    for k, v in (saved.get("PromptConfig") or {}).items():
        if k in now and now[k] != v:
            diffs.append(f"{k}: {v!r} -> {now[k]!r}")
    for k in ("min_pixels", "max_pixels"):
        v = (saved.get("ModelArguments") or {}).get(k)
        if v is not None and getattr(model_args, k, None) != v:
            diffs.append(f"{k}: {v!r} -> {getattr(model_args, k, None)!r}")
    if diffs:
        logging.getLogger(__name__).warning("the prompt differs from the one adapter %s was trained with (%s); set "
                                            "the same keys in this config", model_args.adapter_path, "; ".join(diffs))
    return diffs
