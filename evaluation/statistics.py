"""Statistics over metric groups: bootstrap confidence intervals and the paired permutation test.

Confidence intervals: studies are resampled with replacement ``n_boot`` times (seeded) and every metric is
recomputed on each resample from its group's per-study statistics (:mod:`evaluation.groups`), corpus
metrics included; the 95% interval is the 2.5/97.5 percentile of the bootstrap values.

Paired comparison: the same resamples are applied to both systems, giving the delta (this - other) and its
95% interval; the p-value is that of a two-sided paired permutation (randomisation) test, each study's
outputs swapped between the systems (:func:`scipy.stats.permutation_test`, ``permutation_type="samples"``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from evaluation.groups import Fn, MetricGroup


def bootstrap_weights(n: int, n_boot: int, seed: int, chunk: int | None = None):
    """Yield (chunk, n) int32 matrices: how often each study is drawn in each resample (seeded; the
    default chunk size depends on ``n`` only, so ``seed``, ``n`` and ``n_boot`` fix the resamples)."""
    rng = np.random.default_rng(seed)
    chunk = chunk or max(1, min(200, 2_000_000 // max(n, 1)))
    done = 0
    while done < n_boot:
        b = min(chunk, n_boot - done)
        idx = rng.integers(0, n, size=(b, n))
        w = np.zeros((b, n), dtype=np.int32)
        for i in range(b):
            w[i] = np.bincount(idx[i], minlength=n)
        done += b
        yield w


def _ci(samples: np.ndarray, level: float = 0.95) -> list[float] | None:
    s = samples[np.isfinite(samples)]
    if s.size == 0:
        return None
    a = (1 - level) / 2 * 100
    return [float(np.percentile(s, a)), float(np.percentile(s, 100 - a))]


def _num(x: Any) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def bootstrap_summary(groups: dict[str, MetricGroup], n: int, n_boot: int, seed: int) -> dict[str, dict[str, Any]]:
    """Point estimate and bootstrap CI of every stat: ``{key: {label, value, ci, group, ...}}``."""
    out: dict[str, dict[str, Any]] = {}
    boots: dict[str, list[np.ndarray]] = {k: [] for g in groups.values() for k in g.stats}
    if n_boot > 0:
        for w in bootstrap_weights(n, n_boot, seed):
            wf = w.astype(float)
            for g in groups.values():
                for k, v in g.weighted_values(wf).items():
                    boots[k].append(v)
    for g in groups.values():
        point = g.point_values()
        for k, s in g.stats.items():
            out[k] = {"label": s.label, "value": _num(point[k]), "group": g.name,
                      "higher_is_better": s.higher_is_better, "main": s.main,
                      "ci": _ci(np.concatenate(boots[k])) if boots[k] else None}
    return out


def permutation_p_value(S_a: np.ndarray, S_b: np.ndarray, fn: Fn, n_resamples: int, seed: int) -> float | None:
    """Two-sided paired permutation (randomisation) test of ``fn(sum S_a) - fn(sum S_b)``.

    Under the null hypothesis the two systems are exchangeable on every study, so each study's
    statistics rows are swapped between the systems with probability 1/2 and the metric is
    recomputed from the swapped sums (corpus metrics from their per-study counts).
    :func:`scipy.stats.permutation_test` (``permutation_type="samples"``) draws the swaps, runs the
    exact test when ``2**n <= n_resamples`` and adds the observed statistic to the null distribution.
    """
    from scipy.stats import permutation_test

    n = len(S_a)
    base, diff = S_a.sum(axis=0), (S_b - S_a).astype(float)
    total_b = S_b.sum(axis=0)

    def delta(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
        # x holds study positions 0..n-1 (row of system a) or n..2n-1 (swapped: row of system b)
        swapped = (x >= n).astype(float)
        ta = base + swapped @ diff
        tb = base + total_b - ta
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.asarray(fn(ta), dtype=float) - np.asarray(fn(tb), dtype=float)

    observed = float(fn(base) - fn(total_b))
    if not math.isfinite(observed) or n < 2:  # one shared study: no permutation distribution to test against
        return None
    idx = np.arange(n)
    batch = max(1, min(n_resamples, 20_000_000 // max(1, n * S_a.shape[1])))
    res = permutation_test((idx, idx + n), delta, permutation_type="samples", vectorized=True,
                           n_resamples=n_resamples, batch=batch, alternative="two-sided",
                           rng=np.random.default_rng(seed))
    return _num(min(1.0, res.pvalue))


def paired_compare(a: dict[str, MetricGroup], b: dict[str, MetricGroup], n: int, n_boot: int, seed: int
                   ) -> dict[str, dict[str, Any]]:
    """Deltas (a - b) with bootstrap CIs and paired permutation-test p-values; groups aligned by study.

    ``n_boot`` sets both the bootstrap resamples (CI of the delta) and the random swaps of the
    permutation test (:func:`permutation_p_value`).
    """
    names = [g for g in a if g in b]
    deltas: dict[str, list[np.ndarray]] = {k: [] for g in names for k in a[g].stats}
    if n_boot > 0:
        for w in bootstrap_weights(n, n_boot, seed):
            wf = w.astype(float)
            for g in names:
                va, vb = a[g].weighted_values(wf), b[g].weighted_values(wf)
                for k in a[g].stats:
                    deltas[k].append(va[k] - vb[k])
    out: dict[str, dict[str, Any]] = {}
    for g in names:
        pa, pb = a[g].point_values(), b[g].point_values()
        for k, s in a[g].stats.items():
            d = float(pa[k] - pb[k])
            row: dict[str, Any] = {"label": s.label, "group": g, "main": s.main, "value": _num(pa[k]),
                                   "other": _num(pb[k]), "delta": _num(d), "ci": None, "p_value": None,
                                   "higher_is_better": s.higher_is_better}
            if deltas[k]:
                ds = np.concatenate(deltas[k])
                ds = ds[np.isfinite(ds)]
                if ds.size:
                    row["ci"] = _ci(ds)
            if n_boot > 0 and n > 0:
                row["p_value"] = permutation_p_value(a[g].S, b[g].S, s.fn, n_boot, seed)
            out[k] = row
    return out


