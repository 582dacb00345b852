"""The rules file of the CheXpert rule labeler (:mod:`reward.chexpert`): :func:`load_rules` reads
``reward/resources/chexpert_rules.yaml`` (the shared cue lexicon's lists in place of its ``$name`` entries) and
:func:`compiled_rules` checks it and compiles it into one :class:`~reward.chexpert_matcher.Matcher` and the
settings the labeler reads (:class:`Rules`), cached per rules file.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from cxr_io import read_yaml
from reward.base import RewardError
from reward.chexpert_matcher import Matcher, entry_regex
from reward.constants import CHEXPERT_LABELS, NEGATIVE, POSITIVE, UNCERTAIN
from reward.cues import expand_all

RULES_PATH = Path(__file__).resolve().parent / "resources" / "chexpert_rules.yaml"
NO_FINDING = "No Finding"
SUPPORT_DEVICES = "Support Devices"
OTHER = "_other"  # abnormal findings outside the 13 observations (they only rule out No Finding)

_LABEL_NAMES = {"positive": POSITIVE, "negative": NEGATIVE, "uncertain": UNCERTAIN}


@dataclass(frozen=True)
class Rules:
    matcher: Matcher
    observations: tuple[str, ...]
    unchanged_label: float | None
    reach_before_adjacent: int
    reach_after: int
    reach_before: int
    pre_window: int
    short_window: int
    post_window: int
    implications: tuple[tuple[str, re.Pattern, str, float], ...]
    source: str


_CUE_KINDS = ("pseudo_negation", "negated_uncertainty", "compound_negation", "post_negation",
              "bidirectional_negation", "pre_negation", "pre_negation_short", "pre_uncertainty",
              "post_uncertainty", "scope_breaks", "post_cue_barriers")
_QUALIFIER_KINDS = ("borderline", "normal", "abnormal", "unchanged")


def load_rules(path: str | Path | None = None) -> dict[str, Any]:
    """The rules YAML as a dict (the packaged ``chexpert_rules.yaml`` by default), ``$name`` entries of its
    cue and qualifier lists replaced by the shared cue lexicon's lists (:mod:`reward.cues`)."""
    p = Path(path) if path else RULES_PATH
    if not p.is_file():
        raise FileNotFoundError(f"chexpert rules file not found: {p}")
    data = read_yaml(p, role="chexpert rules", error=RewardError)
    if not isinstance(data, dict) or "observations" not in data:
        raise RewardError(f"{p}: field 'observations' missing (not a chexpert rules file)")
    # "$name" entries of the cue and qualifier lists: the shared cue lexicon's list (reward/resources/cues.yaml)
    for part, kinds in (("cues", _CUE_KINDS), ("qualifiers", _QUALIFIER_KINDS)):
        if part in data:
            data[part] = expand_all(data[part], kinds, f"{p}: field '{part}'")
    return data


@lru_cache(maxsize=8)
def compiled_rules(path: str, index: bool = True) -> Rules:
    data = load_rules(path)
    groups: list[tuple[Any, Sequence[str], str]] = []
    names = []
    for name, spec in (data.get("observations") or {}).items():
        if name not in CHEXPERT_LABELS or name == NO_FINDING:
            raise RewardError(f"{path}: field 'observations' has unknown observation {name!r}")
        spec = spec or {}
        unknown = set(spec) - {"findings", "structures", "exclude"}
        if unknown:
            raise RewardError(f"{path}: field 'observations.{name}' has unknown keys {sorted(unknown)}")
        names.append(name)
        for part in ("findings", "structures", "exclude"):
            if spec.get(part):
                groups.append((("obs", name, part), spec[part], f"{name}.{part}"))
    other = data.get("other_findings") or {}
    for part in ("findings", "exclude"):
        if other.get(part):
            groups.append((("obs", OTHER, part), other[part], f"other_findings.{part}"))
    cue_spec = data.get("cues") or {}
    unknown = set(cue_spec) - set(_CUE_KINDS)
    if unknown:
        raise RewardError(f"{path}: field 'cues' has unknown kinds {sorted(unknown)}; known: {_CUE_KINDS}")
    for kind in _CUE_KINDS:
        if cue_spec.get(kind):
            groups.append((("cue", kind), cue_spec[kind], f"cues.{kind}"))
    qual_spec = data.get("qualifiers") or {}
    for kind in _QUALIFIER_KINDS:
        if qual_spec.get(kind):
            groups.append((("qual", kind), qual_spec[kind], f"qualifiers.{kind}"))
    reach = data.get("qualifier_reach") or {}
    unchanged = str(data.get("unchanged_structure", "uncertain"))
    if unchanged not in ("uncertain", "ignore"):
        raise RewardError(f"{path}: field 'unchanged_structure' must be uncertain|ignore, got {unchanged!r}")
    impl = []
    for i, item in enumerate(data.get("implications") or []):
        try:
            impl.append((item["observation"], re.compile(entry_regex(item["mention"])), item["adds"],
                         _LABEL_NAMES[item["label"]]))
        except (KeyError, TypeError, re.error) as e:
            raise RewardError(f"{path}: field 'implications[{i}]' invalid: {item!r} ({e})") from e
    return Rules(Matcher(groups, index=index), tuple(names), UNCERTAIN if unchanged == "uncertain" else None,
                  int(reach.get("before_adjacent", 28)), int(reach.get("after", 90)),
                  int(reach.get("before", 60)), int(data.get("pre_window", 14)),
                  int(data.get("short_window", 3)), int(data.get("post_window", 7)), tuple(impl), path)
