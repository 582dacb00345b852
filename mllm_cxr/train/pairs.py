"""Preference pairs for DPO: prior-reference suppression and reward-ranked samples.

Two builders, one output format. Every pair is one JSON line::

    {"study_id", "chosen", "rejected", "chosen_score", "rejected_score", "margin", "source"}

which :func:`mllm_cxr.data.dpo_dataset` turns into prompt/chosen/rejected rows (the prompt and the
images come from the study record, through the same prompt builder as every other stage).

* :func:`prior_suppression_pairs` (Banerjee et al. 2024, "Direct Preference Optimization for
  Suppressing Hallucinated Prior Exams in Radiology Report Generation"): for studies that had no
  prior exam, a report that still compares with one ("No interval change.") is the *rejected*
  answer and the same report with those references removed
  (:func:`reward.prior.strip_prior_references`) the *chosen* one. Scores are minus the number of
  sentences that refer to a prior exam; the margin is that number.
* :func:`reward_ranked_pairs` (CheXalign, Hein et al. 2024): sample ``k`` reports per study from
  the model being aligned, score them with a clinical reward against the reference report, keep
  the best as *chosen* and the worst as *rejected* when the score gap is above a threshold.

Both builders count what they skip (and why) in a summary dict; no pair ever has
``chosen == rejected``. Report text never goes to the logs.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from cxr_io import read_jsonl, write_jsonl
from data_prep.errors import DataPrepError
from data_prep.schema import StudyRecord, comparison_is_empty
from mllm_cxr.data import reward_columns, task_reward_row
from mllm_cxr.prompts import PromptConfig, build_messages, target_text_from
from reward.trl import reward_function

log = logging.getLogger(__name__)

#: The keys of one pair line, in the order they are written.
PAIR_KEYS = ("study_id", "chosen", "rejected", "chosen_score", "rejected_score", "margin", "source")


def study_had_no_prior(study: StudyRecord) -> bool:
    """True when the radiologist had nothing to compare with: no linked prior and an empty COMPARISON."""
    return study.prior is None and comparison_is_empty(study.comparison)


# ----------------------------------------------------------------------------------------------------
# Prior-reference suppression (Banerjee et al. 2024)
# ----------------------------------------------------------------------------------------------------


def strip_report_sections(study: StudyRecord, sections: Sequence[str]) -> tuple[str, str, int]:
    """``(original, stripped, n_prior_sentences)`` of the study's target text.

    Each section is stripped on its own and the target text is rebuilt from the stripped sections, so
    a section that held nothing but a comparison ("IMPRESSION: No interval change.") disappears with
    its header instead of leaving an empty one behind.
    """
    from reward.prior import find_prior_references, strip_prior_references

    values = {"findings": study.findings or "", "impression": study.impression or ""}
    n_refs = sum(len(find_prior_references(values[s])) for s in sections)
    original = target_text_from(values["findings"], values["impression"], sections)
    if not n_refs:
        return original, original, 0
    stripped = {s: strip_prior_references(values[s]).strip() if s in sections else values[s] for s in values}
    return original, target_text_from(stripped["findings"], stripped["impression"], sections), n_refs


def prior_suppression_pairs(studies: Iterable[StudyRecord], cfg: PromptConfig | None = None, *,
                            progress: bool = False) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Pairs (chosen = report without prior references, rejected = original) for studies without a prior.

    ``studies`` should be the training split. Studies with a prior are skipped (their comparisons are
    legitimate), as are reports without any prior reference and reports that would be empty once
    stripped. Returns ``(pairs, summary)``; the summary counts every study in exactly one bucket:
    ``pairs``, ``skipped_with_prior``, ``skipped_no_prior_reference``, ``skipped_empty_target``,
    ``skipped_empty_after_strip``.
    """
    from tqdm.auto import tqdm

    cfg = cfg or PromptConfig()
    t0 = time.perf_counter()
    counts: Counter[str] = Counter()
    pairs: list[dict[str, Any]] = []
    n_sentences = 0
    for s in tqdm(list(studies), desc="prior pairs", unit="study", disable=not progress):
        counts["studies"] += 1
        if not study_had_no_prior(s):
            counts["skipped_with_prior"] += 1
            continue
        original, stripped, n_refs = strip_report_sections(s, cfg.sections)
        if not original.strip():
            counts["skipped_empty_target"] += 1
            continue
        if not n_refs:
            counts["skipped_no_prior_reference"] += 1
            continue
        if not stripped.strip() or stripped == original:
            counts["skipped_empty_after_strip"] += 1
            continue
        n_sentences += n_refs
        pairs.append(_pair(s.study_id, stripped, original, 0.0, -float(n_refs), "prior_suppression"))
    summary = {
        "source": "prior_suppression",
        "studies": counts["studies"],
        "pairs": len(pairs),
        "skipped_with_prior": counts["skipped_with_prior"],
        "skipped_no_prior_reference": counts["skipped_no_prior_reference"],
        "skipped_empty_target": counts["skipped_empty_target"],
        "skipped_empty_after_strip": counts["skipped_empty_after_strip"],
        "prior_sentences_removed": n_sentences,
        "seconds": round(time.perf_counter() - t0, 3),
    }
    return pairs, summary


# ----------------------------------------------------------------------------------------------------
# Reward-ranked pairs (CheXalign)
# ----------------------------------------------------------------------------------------------------


def rank_samples(samples: Sequence[str], scores: Sequence[float]) -> tuple[int, int] | None:
    """Indices ``(best, worst)`` among non-empty samples with distinct texts, or None when there are fewer than 2.

    Ties keep the earliest sample, so the result is deterministic.
    """
    idx = [i for i, t in enumerate(samples) if t and t.strip() and math.isfinite(float(scores[i]))]
    if len({samples[i] for i in idx}) < 2:
        return None
    best = max(idx, key=lambda i: (scores[i], -i))
    worst = min(idx, key=lambda i: (scores[i], i))
    if samples[best] == samples[worst]:  # same text, different indices: take the worst distinct text
        distinct = [i for i in idx if samples[i] != samples[best]]
        worst = min(distinct, key=lambda i: (scores[i], i))
    return best, worst


def reward_ranked_pairs(studies: Sequence[StudyRecord], generator, reward, *, margin_threshold: float = 0.0,
                        batch_size: int = 4, cfg: PromptConfig | None = None, progress: bool = True,
                        keep_samples: bool = False) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Sample reports, score them, keep (best, worst) when ``best - worst > margin_threshold``.

    ``generator``: any object with ``generate(studies) -> list[list[str]]`` returning ``k`` samples per
    study (e.g. :class:`mllm_cxr.infer.generate.HFGenerator` with
    ``GenerationSettings(do_sample=True, num_return_sequences=k)``, or a vLLM generator with the same
    method) and a ``cfg`` :class:`PromptConfig` (or pass ``cfg``). ``reward``: a scorer name
    (``"chexpert_f1"``), a reward-spec file or list, a :class:`reward.base.Scorer`, or a TRL reward
    function ``f(prompts, completions, **columns)``; it gets the prompt messages (without images) and
    the columns of :func:`reward_columns`, one value per sample.

    Returns ``(pairs, summary)``. Skipped studies are counted: ``skipped_too_few_samples`` (fewer
    than two distinct non-empty samples) and ``skipped_low_margin``. With ``keep_samples`` each pair
    also carries all ``samples`` and their ``scores``.
    """
    from tqdm.auto import tqdm

    cfg = cfg or getattr(generator, "cfg", None) or PromptConfig()
    fn = reward_function(reward)
    t0 = time.perf_counter()
    counts: Counter[str] = Counter()
    pairs: list[dict[str, Any]] = []
    margins: list[float] = []
    gen_s = score_s = 0.0
    studies = list(studies)
    with tqdm(total=len(studies), desc="sample pairs", unit="study", disable=not progress) as bar:
        for start in range(0, len(studies), max(1, batch_size)):
            chunk = studies[start:start + max(1, batch_size)]
            t = time.perf_counter()
            outputs = generator.generate(chunk)
            gen_s += time.perf_counter() - t
            if len(outputs) != len(chunk):
                raise ValueError(f"generator returned {len(outputs)} sample lists for {len(chunk)} studies")
            flat, cols, prompts = _flatten_samples(chunk, outputs, cfg, counts)
            t = time.perf_counter()
            columns = {k: [c[k] for c in cols] for k in (cols[0] if cols else {})}
            scores = [float(x) for x in fn(prompts=prompts, completions=flat, **columns)] if flat else []
            score_s += time.perf_counter() - t
            _rank_chunk(chunk, outputs, scores, margin_threshold, keep_samples, counts, pairs, margins)
            bar.update(len(chunk))
    summary = {
        "source": "reward_ranked",
        "studies": counts["studies"],
        "pairs": len(pairs),
        "samples": counts["samples"],
        "empty_samples": counts["empty_samples"],
        "skipped_too_few_samples": counts["skipped_too_few_samples"],
        "skipped_low_margin": counts["skipped_low_margin"],
        "margin_threshold": margin_threshold,
        "mean_margin": round(sum(margins) / len(margins), 4) if margins else None,
        "reward": getattr(fn, "__name__", type(fn).__name__),
        "generate_seconds": round(gen_s, 2),
        "score_seconds": round(score_s, 2),
        "seconds": round(time.perf_counter() - t0, 2),
    }
    return pairs, summary


def _flatten_samples(chunk: Sequence[Any], outputs: Sequence[Sequence[str]], cfg: PromptConfig,
                     counts: Counter[str]) -> tuple[list[str], list[dict[str, Any]], list[Any]]:
    """The samples of a batch in one list, with each sample's reward columns and prompt messages; counts
    the samples and the empty ones."""
    flat, cols, prompts = [], [], []
    for s, samples in zip(chunk, outputs):
        counts["samples"] += len(samples)
        counts["empty_samples"] += sum(1 for x in samples if not (x or "").strip())
        flat.extend(samples)
        if hasattr(s, "task"):  # a task example (mllm_cxr.infer.generate.task_items): its columns, prompt
            cols.extend([task_reward_row(s.record, s, cfg)] * len(samples))
            prompts.extend([s.messages] * len(samples))
        else:
            cols.extend([reward_columns(s, cfg)] * len(samples))
            prompts.extend([build_messages(s, cfg)[0]] * len(samples))
    return flat, cols, prompts


def _rank_chunk(chunk: Sequence[Any], outputs: Sequence[Sequence[str]], scores: list[float], margin_threshold: float,
                keep_samples: bool, counts: Counter[str], pairs: list[dict[str, Any]], margins: list[float]) -> None:
    """Each study's (best, worst) samples as a pair when their margin exceeds ``margin_threshold`` (appended to
    ``pairs`` and ``margins``); the studies skipped are counted."""
    pos = 0
    for s, samples in zip(chunk, outputs):
        sc = scores[pos:pos + len(samples)]
        pos += len(samples)
        counts["studies"] += 1
        ranked = rank_samples(samples, sc)
        if ranked is None:
            counts["skipped_too_few_samples"] += 1
            continue
        b, w = ranked
        margin = sc[b] - sc[w]
        if not margin > margin_threshold:
            counts["skipped_low_margin"] += 1
            continue
        pair = _pair(s.study_id, samples[b], samples[w], sc[b], sc[w], "reward_ranked")
        if hasattr(s, "task"):  # dpo_dataset rebuilds the example's prompt from these
            pair.update(task=s.task, example=s.index)
        if keep_samples:
            pair["samples"], pair["scores"] = list(samples), list(sc)
        pairs.append(pair)
        margins.append(margin)


# ----------------------------------------------------------------------------------------------------
# Reading and writing
# ----------------------------------------------------------------------------------------------------


def _pair(study_id: str, chosen: str, rejected: str, chosen_score: float, rejected_score: float,
          source: str) -> dict[str, Any]:
    if chosen == rejected:  # the builders never produce this; guard against a future change
        raise AssertionError("a preference pair must not have chosen == rejected")
    return {"study_id": study_id, "chosen": chosen, "rejected": rejected, "chosen_score": float(chosen_score),
            "rejected_score": float(rejected_score), "margin": float(chosen_score) - float(rejected_score),
            "source": source}


def write_pairs(pairs: Iterable[dict[str, Any]], path: str | os.PathLike,
                inputs: Iterable[str | os.PathLike | None] = ()) -> int:
    """Write pairs as JSONL (one pair per line, keys in :data:`PAIR_KEYS` order first), atomically; a
    ``path`` equal to one of ``inputs`` is refused. Returns the count."""

    def rows():
        for pair in pairs:
            row = {k: pair[k] for k in PAIR_KEYS if k in pair}
            row.update({k: v for k, v in pair.items() if k not in row})
            yield row

    return write_jsonl(path, rows(), inputs=inputs)


def read_pairs(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read and check a pairs JSONL; a bad line raises :class:`DataPrepError` naming file, line and field."""
    p = Path(path)
    out = []
    for i, d in read_jsonl(p, role="preference pairs", error=DataPrepError):
        for k in ("study_id", "chosen", "rejected"):
            if not isinstance(d.get(k), str) or not d[k].strip():
                raise DataPrepError("must be a non-empty string", file=str(p), line=i, field=k, value=d.get(k))
        if d["chosen"] == d["rejected"]:
            raise DataPrepError("chosen equals rejected (no preference to learn)", file=str(p), line=i,
                                field="chosen")
        for k in ("chosen_score", "rejected_score", "margin"):
            if k in d and d[k] is not None and not isinstance(d[k], int | float):
                raise DataPrepError("must be a number", file=str(p), line=i, field=k, value=d[k])
        out.append(d)
    if not out:
        raise DataPrepError("no preference pairs in the file", file=str(p))
    return out
