"""The configs of the GRPO recipe: TRL's config with EditGRPO's defaults, the script arguments, and the
EditGRPO config whose ``edit_*`` keys are generated from :class:`mllm_cxr.train.editor.EditSettings`.

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
* :class:`EditGRPOConfig` is :class:`ClinicalGRPOConfig` plus one ``edit_<name>`` key per field of
  :class:`~mllm_cxr.train.editor.EditSettings` (defaults and help taken from there, written once).
* :func:`check_algorithm_keys`: an ``edit_*`` key in a run with ``algorithm: grpo`` is an error (it
  would be parsed and ignored).
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field

from trl import GRPOConfig

from mllm_cxr.config import ConfigError
from mllm_cxr.train.editor import EditSettings

ALGORITHMS = ("grpo", "editgrpo")


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
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm must be 'grpo' or 'editgrpo', got {self.algorithm!r}")


def _edit_fields() -> list[tuple[str, object, dataclasses.Field]]:
    """``(edit_<name>, type, field)`` for every field of :class:`EditSettings`, its default and help kept."""
    hints = typing.get_type_hints(EditSettings)
    return [(EditSettings.PREFIX + f.name, hints[f.name], field(default=f.default, metadata=dict(f.metadata)))
            for f in dataclasses.fields(EditSettings)]


_EditGRPOFields = dataclasses.make_dataclass("_EditGRPOFields", _edit_fields(), bases=(ClinicalGRPOConfig,),
                                             namespace={"__module__": __name__})


@dataclass
class EditGRPOConfig(_EditGRPOFields):
    """:class:`ClinicalGRPOConfig` plus the post-rollout edit settings: ``edit_<name>`` for every field of
    :class:`~mllm_cxr.train.editor.EditSettings` (EditGRPO's published values), checked on construction."""

    def __post_init__(self):
        super().__post_init__()
        self.edit_settings()  # invalid values fail here, where they are parsed

    def edit_settings(self) -> EditSettings:
        """The ``edit_*`` keys as :class:`EditSettings` (what the trainer and its editor use)."""
        return EditSettings.from_config(self)


def check_algorithm_keys(configs: Iterable, given: Iterable[str], where: str) -> None:
    """An ``edit_*`` key given to a run whose ``algorithm`` is not ``editgrpo`` is an error naming the key(s)
    (the key would be parsed and then ignored). ``given``: the keys the config file and flags set."""
    script = next((c for c in configs if isinstance(c, GRPOScriptArguments)), None)
    if script is None or script.algorithm == "editgrpo":
        return
    unused = sorted(k for k in set(given) if k in EditSettings.config_keys())
    if unused:
        keys = ", ".join(unused)
        raise ConfigError(f"{where}: {keys}: EditGRPO setting{'s' if len(unused) > 1 else ''}, unused with "
                          f"algorithm: {script.algorithm}; set algorithm: editgrpo or remove "
                          f"{'them' if len(unused) > 1 else 'it'}")
