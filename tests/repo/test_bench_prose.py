"""The benchmark prose (bench/_prose.py) follows the numbers: faster, slower or within noise, with the spread."""

from __future__ import annotations

import importlib.util

from tests.builders.repo import REPO


def _prose():
    spec = importlib.util.spec_from_file_location("bench_prose", REPO / "bench" / "_prose.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_verdict_follows_every_round():
    p = _prose()
    assert p.speed_verdict([1.8, 2.0, 1.6]) == "faster"
    assert p.speed_verdict([0.5, 0.6, 0.55]) == "slower"
    assert p.speed_verdict([1.3, 0.9, 1.2]) == "within noise"  # one round disagrees
    assert p.speed_verdict([1.03, 1.04]) == "within noise"  # below the noise margin
    assert p.speed_verdict([3.0]) == "within noise"  # one round: no spread to judge


def test_sentence_states_ratio_spread_and_verdict():
    p = _prose()
    fast = p.speed_sentence("vLLM rollouts", "`model.generate`", p.speed_ratios([2.0, 2.2, 1.8], [1.0, 1.0, 1.0]))
    assert "median 2.00x (range 1.80-2.20x over 3 interleaved rounds)" in fast and "faster than `model.generate` in every one of the interleaved rounds" in fast
    slow = p.speed_sentence("vLLM", "transformers", p.rate_ratios([10.0, 10.0], [4.0, 5.0]))
    assert "median 0.45x" in slow and "slower than transformers in every one" in slow and "faster" not in slow
    mixed = p.speed_sentence("vLLM", "hf", [1.2, 0.8])
    assert "not distinguishable from hf" in mixed and "faster" not in mixed and "slower" not in mixed


def test_interleaved_rounds_alternate_the_order():
    calls = []
    out = _prose().interleaved(lambda n, r: calls.append((n, r)) or len(calls), ["a", "b"], 3)
    assert calls == [("a", 0), ("b", 0), ("b", 1), ("a", 1), ("a", 2), ("b", 2)]
    assert out == {"a": [1, 4, 5], "b": [2, 3, 6]}


def test_the_unit_of_the_spread_is_named():
    p = _prose()
    s = p.speed_sentence("A cached lookup", "a cold fill", [100.0, 300.0, 200.0], over="files")
    assert "median 200.00x (range 100.00-300.00x over 3 files)" in s and "in every one of the files" in s
