"""The sentences a benchmark writes, computed from its numbers: never a conclusion written in advance.

A comparison is measured as repeated *interleaved* runs (:func:`interleaved`: the backends take turns, the
order alternating between rounds, so a machine-load swing hits both) and summarised by the ratios of the
rounds. :func:`speed_verdict` calls the candidate ``faster`` only when every round says so by more than the
noise margin, ``slower`` likewise, and ``within noise`` otherwise; :func:`speed_sentence` writes the ratio,
its spread over the rounds and that verdict. tests/repo/test_bench_prose.py checks them with fake numbers.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from typing import Any

#: Relative margin below which a ratio is not called a difference (CPU timings on a shared machine).
NOISE = 0.05


def interleaved(measure: Callable[[str, int], Any], names: Sequence[str], rounds: int) -> dict[str, list[Any]]:
    """``{name: [measure(name, round) for each round]}``, the names taking turns within a round and the
    order reversed every other round."""
    out: dict[str, list[Any]] = {n: [] for n in names}
    for r in range(rounds):
        for n in (names if r % 2 == 0 else list(reversed(names))):
            out[n].append(measure(n, r))
    return out


def speed_ratios(baseline_seconds: Sequence[float], candidate_seconds: Sequence[float]) -> list[float]:
    """Per round: baseline time / candidate time (> 1: the candidate is faster)."""
    return [b / max(c, 1e-12) for b, c in zip(baseline_seconds, candidate_seconds, strict=True)]


def rate_ratios(baseline_rate: Sequence[float], candidate_rate: Sequence[float]) -> list[float]:
    """Per round: candidate rate / baseline rate (> 1: the candidate is faster)."""
    return [c / max(b, 1e-12) for b, c in zip(baseline_rate, candidate_rate, strict=True)]


def speed_verdict(ratios: Sequence[float], noise: float = NOISE) -> str:
    """``faster`` when every round's ratio (> 1: candidate faster) exceeds ``1 + noise``, ``slower`` when every
    one is below ``1 / (1 + noise)``, else ``within noise`` (also for fewer than two rounds: no spread to judge)."""
    if len(ratios) < 2:
        return "within noise"
    if min(ratios) > 1 + noise:
        return "faster"
    if max(ratios) < 1 / (1 + noise):
        return "slower"
    return "within noise"


def spread(ratios: Sequence[float], over: str = "interleaved rounds") -> str:
    """``"median 1.80x (range 1.60-2.00x over 3 interleaved rounds)"`` (``over``: what the ratios are per)."""
    if not ratios:
        return "no measurements"
    med = statistics.median(ratios)
    if len(ratios) == 1:
        return f"{med:.2f}x (one measurement: no spread)"
    return f"median {med:.2f}x (range {min(ratios):.2f}-{max(ratios):.2f}x over {len(ratios)} {over})"


def speed_sentence(candidate: str, baseline: str, ratios: Sequence[float], noise: float = NOISE,
                   over: str = "interleaved rounds") -> str:
    """One sentence: the candidate's speed relative to the baseline, its spread, and the verdict it supports."""
    verdict = speed_verdict(ratios, noise)
    if verdict == "within noise":
        tail = (f"not distinguishable from {baseline} here (the {over} straddle 1x or differ from it by less than "
                f"{noise:.0%})")
    else:
        tail = f"{verdict} than {baseline} in every one of the {over}"
    return f"{candidate}: {spread(ratios, over)} the speed of {baseline}; {tail}."
