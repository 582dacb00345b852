"""Sentences that refer to a previous examination: find them, strip them, penalise them.

A report written for a study that has no prior examination should not compare with one. Models
trained on MIMIC-CXR or IU X-ray learn to write "stable cardiomegaly" or "no interval change"
anyway, because many training reports were written with a prior at hand. This module

* finds the sentences of a report that refer to a previous examination
  (:func:`find_prior_references`),
* rewrites a report without them, keeping the findings (:func:`strip_prior_references`),
* decides whether a study had no prior (:func:`has_no_prior`), and
* registers the ``prior_penalty`` scorer: a negative reward for such sentences when the study had
  no prior.

What counts as a reference to a previous examination (the labelling rules of
``tests/fixtures/PRIOR_LABELING.md``, which the detector is measured against):

* an earlier imaging study of the patient is named ("compared to the prior study", "seen on prior
  CT", "not visualized on prior", "since XXXX");
* a finding is described as changed or not changed over time ("stable", "unchanged", "no interval
  change", "again seen", "redemonstrated", "persistent", "remains", "still", "improved", "worsening",
  "increased in size", "resolved", "new", "has been removed", "now");

and what does not:

* patient history and chronicity judged on the current image ("prior granulomatous disease",
  "previous CABG", "status post sternotomy", "history of", "known", "old healed rib fracture",
  "chronic changes", "residual of prior infection", "degenerative changes");
* "increased"/"decreased" meaning more or less than normal ("increased interstitial markings",
  "decreased lung volumes"), and side-to-side comparisons ("left worse than right");
* recommendations and conditionals about priors that do not claim one was seen ("recommend
  comparison with prior films", "if prior images are available", "no prior studies for comparison",
  "follow-up to ensure resolution").

The rules are regular expressions (no model): detection in :mod:`reward.prior_detect`, rewriting in
:mod:`reward.prior_strip`; this module re-exports their public names and holds :func:`has_no_prior` and the scorer. Measured on 3,955 IU X-ray reports, one CPU
core: detection ~2,600 reports/s (~15,000 sentences/s), stripping ~1,100 reports/s. On 530
hand-labelled IU sentences (``tests/fixtures/prior_sentences.tsv``) the detector reaches precision
1.000 / recall 1.000; on the 150 of them labelled blind after the rules were written, it measured
precision 1.000 / recall 0.986 before its one miss was added. Of the 2,309 IU reports whose COMPARISON
is empty or "None", 287 contain such a sentence.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from reward.base import RewardError, Scorer, ScoreResult
from reward.prior_detect import PriorReference, find_prior_references, find_prior_spans, prior_cues
from reward.prior_strip import strip_prior_references
from reward.text import sentences, split_sentences

__all__ = ["PriorPenalty", "PriorReference", "comparison_says_none", "find_prior_references", "find_prior_spans",
           "has_no_prior", "prior_cues", "sentences", "split_sentences", "strip_prior_references"]


# ----------------------------------------------------------------------------------------------------
# Has the study a prior?
# ----------------------------------------------------------------------------------------------------

_NONE_LIKE = re.compile(
    r"^(?:comparison\s*:?\s*)?(?:none(?:\s+available)?|n/?a|nil|-+|no(?:ne)?\s+(?:prior|previous|old|comparison|"
    r"comparisons)\b.*|not\s+available|unavailable|no\s+(?:\w+\s+)?(?:studies|study|exams?|examinations?|films?)"
    r"\s+(?:available|for\s+comparison)\b.*|none\.?\s+\w.*)?$",
    re.IGNORECASE,
)


def comparison_says_none(comparison: Any) -> bool:
    """True when a COMPARISON section is empty or says there is nothing to compare with.

    Mirrors ``data_prep.schema.comparison_is_empty`` (reimplemented: ``reward`` does not import
    ``data_prep``) and also accepts variants such as "None available.", "No prior studies.",
    "No comparison chest x-XXXX." and "N/A". A de-identified date ("XXXX, XXXX") means there was one.
    """
    if comparison is None:
        return True
    if isinstance(comparison, float) and comparison != comparison:  # NaN from pandas
        return True
    c = " ".join(str(comparison).split()).strip().strip(".;:").strip()
    return not c or bool(_NONE_LIKE.match(c))


def _prior_is_empty(prior: Any) -> bool:
    if prior is None:
        return True
    if isinstance(prior, float) and prior != prior:
        return True
    if isinstance(prior, dict):
        return not any(prior.get(k) for k in ("study_id", "findings", "impression", "images"))
    if isinstance(prior, str):
        return not prior.strip() or prior.strip().lower() in {"none", "null", "nan", "{}"}
    if isinstance(prior, Sequence):
        return len(prior) == 0
    return not bool(prior)


def has_no_prior(comparison: Any = None, prior: Any = None) -> bool:
    """True when the study had no prior: no prior study record and an empty/"None"-like COMPARISON.

    ``prior`` is the study record's ``prior`` field (a dict such as ``{"study_id": ...}``, or None).
    """
    return _prior_is_empty(prior) and comparison_says_none(comparison)


# ----------------------------------------------------------------------------------------------------
# The scorer
# ----------------------------------------------------------------------------------------------------


def _as_bool(v: Any, column: str, i: int) -> bool:
    if isinstance(v, bool):
        return v
    if v is None or (isinstance(v, float) and v != v):
        raise RewardError(f"prior_penalty: column '{column}' row {i} is empty (expected true/false)")
    if isinstance(v, int | float):
        return bool(v)
    s = str(v).strip().lower()
    if s in {"true", "1", "yes", "y", "t"}:
        return True
    if s in {"false", "0", "no", "n", "f"}:
        return False
    raise RewardError(f"prior_penalty: column '{column}' row {i} has value {v!r} (expected true/false)")


class PriorPenalty(Scorer):
    """Penalty for referring to a previous examination when the study had none.

    Per sample: ``-penalty`` (default -1.0) when the completion has at least one sentence that refers
    to a previous examination and the study had no prior, else 0.0. With ``per_sentence=True`` the
    penalty is ``-penalty * number_of_such_sentences`` (capped at ``max_count``).

    Context columns (one value per sample), checked in this order:

    * ``has_prior``: bool (or "true"/"false"/0/1);
    * ``comparison`` and/or ``prior``: the study record's fields; no prior means no prior study and a
      COMPARISON that is empty or "None"-like (:func:`has_no_prior`).

    With none of these columns the scorer raises :class:`RewardError`, unless ``assume_no_prior=True``
    (every study is treated as having no prior). No reference is needed.
    """

    name = "prior_penalty"
    needs_reference = False
    higher_is_better = True

    def __init__(self, penalty: float = 1.0, per_sentence: bool = False, max_count: int = 10,
                 assume_no_prior: bool = False) -> None:
        if penalty < 0:
            raise RewardError(f"prior_penalty: penalty must be >= 0 (the score is -penalty), got {penalty}")
        self.penalty = float(penalty)
        self.per_sentence = bool(per_sentence)
        self.max_count = int(max_count)
        self.assume_no_prior = bool(assume_no_prior)

    def _no_prior(self, n: int, has_prior=None, comparison=None, prior=None) -> list[bool]:
        for col, vals in (("has_prior", has_prior), ("comparison", comparison), ("prior", prior)):
            if vals is not None and len(vals) != n:
                raise RewardError(f"prior_penalty: {n} completions but {len(vals)} values in column '{col}'")
        if has_prior is not None:
            return [not _as_bool(v, "has_prior", i) for i, v in enumerate(has_prior)]
        if comparison is not None or prior is not None:
            comps = comparison if comparison is not None else [None] * n
            priors = prior if prior is not None else [None] * n
            return [has_no_prior(c, p) for c, p in zip(comps, priors)]
        if self.assume_no_prior:
            return [True] * n
        raise RewardError("prior_penalty needs a context column 'has_prior' or 'comparison'/'prior' "
                          "(or construct it with assume_no_prior=True)")

    def score(self, hyps: Sequence[str], refs: Sequence[str] | None = None, *, has_prior=None,
              comparison=None, prior=None, **_: Any) -> ScoreResult:
        no_prior = self._no_prior(len(hyps), has_prior, comparison, prior)
        scores, details = [], []
        for h, np_ in zip(hyps, no_prior):
            found = find_prior_spans(h)
            count = min(len(found), self.max_count)
            if np_ and count:
                s = -self.penalty * (count if self.per_sentence else 1)
            else:
                s = 0.0
            scores.append(s)
            details.append({"n_prior_sentences": len(found), "no_prior": np_,
                            "cues": sorted({c for r in found for c in r.cues})})
        n_flag = sum(1 for d in details if d["n_prior_sentences"] and d["no_prior"])
        corpus = {"mean": sum(scores) / len(scores) if scores else 0.0,
                  "rate_prior_reference_without_prior": n_flag / max(1, sum(no_prior)),
                  "n_no_prior": sum(no_prior)}
        return ScoreResult(scores, details, corpus)
