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
sigmoid DPO; either way TRL's own loss code runs (see :class:`ClinicalDPOTrainer`). TRL 1.16 has no such option (its ``ld_alpha`` down-weights
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

    With ``length_alpha = 0`` it is TRL's trainer unchanged. Otherwise TRL's own loss code runs on
    length-controlled reference log-probabilities: the reference log-prob of each completion is lowered
    by ``(alpha / beta) * |y|``, so TRL's sigmoid margin ``beta * (lr_w - lr_l)`` becomes
    :func:`length_controlled_sigmoid_loss`'s ``beta * (lr_w - lr_l) + alpha * (|y_w| - |y_l|)``.
    Everything else TRL does in its loss (the ``sft`` term, ``use_weighting``, MoE router loss, all
    metrics) applies unchanged. ``rewards/*`` are then R-DPO's implicit rewards
    ``beta * log pi/pi_ref + alpha * |y|``; ``length/{chosen,rejected}`` (tokens) and ``length/penalty``
    (mean ``alpha * (|y_w| - |y_l|)``) are logged beside them.
    """

    def _compute_loss(self, model, inputs, return_outputs):
        alpha = float(getattr(self.args, "length_alpha", 0.0) or 0.0)
        if not alpha:
            return super()._compute_loss(model, inputs, return_outputs)
        if self.precompute_ref_logps:
            ref_chosen, ref_rejected = inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]
        else:  # TRL's reference pass (the frozen "ref" adapter, the adapter-disabled base, or ref_model)
            ref_chosen, ref_rejected = self.compute_ref_log_probs(self.ref_model or self.model, inputs)
        lengths = inputs["completion_mask"][..., 1:].sum(dim=1).to(ref_chosen.dtype)
        chosen_len, rejected_len = lengths.chunk(2, dim=0)
        shifted = dict(inputs, ref_chosen_logps=ref_chosen - alpha / self.beta * chosen_len,
                       ref_rejected_logps=ref_rejected - alpha / self.beta * rejected_len)
        precomputed, self.precompute_ref_logps = self.precompute_ref_logps, True
        try:
            out = super()._compute_loss(model, shifted, return_outputs)
        finally:
            self.precompute_ref_logps = precomputed
        mode = "train" if self.model.training else "eval"
        gather, m = self.accelerator.gather_for_metrics, self._metrics[mode]
        m["length/chosen"].append(gather(chosen_len).mean().item())
        m["length/rejected"].append(gather(rejected_len).mean().item())
        m["length/penalty"].append(gather(alpha * (chosen_len - rejected_len)).mean().item())
        return out


@dataclass
class PairsArguments:
    """Which preference pairs to train on (``mllm-cxr pairs prior|sample`` output)."""

    pairs: list[str] = field(default_factory=list, metadata={
        "help": "pairs JSONL ({study_id, chosen, rejected, ...}); several files (a YAML list, or comma-separated) "
                "are read in order and trained on together"})
    min_margin: float | None = field(default=None, metadata={"help": "drop pairs whose margin is not above this"})
    max_pairs: int | None = field(default=None, metadata={"help": "use at most this many pairs"})

    def __post_init__(self) -> None:
        from cxr_io.cli_args import split_list

        self.pairs = split_list(self.pairs)


def load_pair_dataset(pairs_args: PairsArguments, data_args, prompt_cfg, *, min_pixels: int | None = None,
                      max_pixels: int | None = None):
    """Pairs + study records -> TRL's vision preference dataset (prompt, images, chosen, rejected).

    Pairs of a task (``pairs sample --task``) get their task's prompt and image back, rebuilt with
    ``data_args.box_family`` and the pixel budget; when ``data_args.tasks`` is set, every pair's task must
    be one of the mixture's (the pairs file itself is the mixture: its weights are not used)."""
    import logging

    from data_prep.errors import DataPrepError
    from data_prep.schema import read_records
    from mllm_cxr.config import ConfigError
    from mllm_cxr.data import dpo_dataset
    from mllm_cxr.train.pairs import read_pairs

    if not pairs_args.pairs:
        raise ConfigError("pairs: no pairs file given (build one with `mllm-cxr pairs prior|sample`)")
    if not data_args.studies:
        raise ConfigError("studies: the study records the pairs refer to are needed (prompts and images)")
    if getattr(data_args, "train_studies_from", None):
        raise ConfigError(f"train_studies_from: {data_args.train_studies_from!r}: DPO trains on the studies its pairs "
                          "file names; filter the pairs file instead, or remove the key")
    files = pairs_args.pairs
    records = {r.study_id: r for r in read_records(data_args.studies)}
    pairs = []
    for f in files:
        for i, p in enumerate(read_pairs(f), 1):
            if p["study_id"] not in records:
                raise DataPrepError(f"pair refers to a study that {data_args.studies} lacks", file=f, line=i,
                                    field="study_id", value=p["study_id"])
            pairs.append(p)
    n_all = len(pairs)
    if pairs_args.min_margin is not None:
        pairs = [p for p in pairs if (p.get("margin") or 0.0) > pairs_args.min_margin]
    if pairs_args.max_pairs:
        pairs = pairs[:pairs_args.max_pairs]
    if not pairs:
        raise ConfigError(f"{', '.join(files)}: no pair left after min_margin={pairs_args.min_margin}")
    logging.getLogger(__name__).info("DPO data: %d of %d pairs from %s", len(pairs), n_all, ", ".join(files))
    tasks = sorted({p.get("task") or "report" for p in pairs})
    task_cfg = None
    if getattr(data_args, "tasks", None):
        from mllm_cxr.tasks import parse_mixture_arg

        allowed = {e.name for e in parse_mixture_arg(data_args.tasks)}
        if set(tasks) - allowed:
            raise ConfigError(f"{', '.join(files)}: pairs of task(s) {sorted(set(tasks) - allowed)} are not in "
                              f"tasks: {data_args.tasks!r}")
    if tasks != ["report"]:
        from mllm_cxr.data import _task_config

        task_cfg = _task_config(prompt_cfg, tasks, getattr(data_args, "box_family", "qwen2_5_vl"), min_pixels,
                                max_pixels, data_args.root())
    return dpo_dataset(pairs, records, data_args.root(), prompt_cfg, task_cfg=task_cfg)


def check_loss_type(args) -> None:
    """An unknown ``loss_type`` is a config error now, not a crash at the first training step."""
    import dataclasses
    import re

    from mllm_cxr.config import ConfigError

    help_text = next(f.metadata.get("help", "") for f in dataclasses.fields(args) if f.name == "loss_type")
    known = re.findall(r"`'(\w+)'`", help_text)  # the loss types this TRL version documents
    values = [args.loss_type] if isinstance(args.loss_type, str) else list(args.loss_type or [])
    unknown = [v for v in values if v not in known]
    if known and unknown:
        raise ConfigError(f"loss_type: unknown {', '.join(map(repr, unknown))}; known: {', '.join(known)}")
