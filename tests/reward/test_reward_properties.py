"""Property tests: every scorer that needs no model gives finite scores and raises nothing on any
completion (empty, huge, unicode, markup, control characters, chat messages, non-strings), called
directly and through the TRL adapter. The scores checked are the scorer's raw output: ``ScoreResult``
replaces a non-finite score by 0.0, so a check of ``result.scores`` alone could never fail
(:func:`raw_scores` records what the scorer handed to ``ScoreResult``).

Scorers are taken from the registry (``available_scorers()``). The model-backed ``chexbert_f1`` and
``green`` run on the tiny random CheXbert checkpoint and the tiny random GREEN judge of
tests/builders/scorers.py; other scorers that cannot be built here (a package
that is not installed: MissingBackendError, or a required argument: RewardError) are skipped with the reason.
"""

from __future__ import annotations

import contextlib
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reward.base import RewardError, available_scorers, get_scorer
from reward.trl import completion_text, reward_function, select_context

#: Constructor arguments for scorers that need one to run without a dataset column.
SCORER_KWARGS = {"prior_penalty": {"assume_no_prior": False}}
#: Model-backed scorers run on tiny random models (:func:`_tiny_model_kwargs`).
TINY_MODEL_SCORERS = ("chexbert_f1", "green")


def _tiny_model_kwargs(name: str, folder) -> dict:
    """Constructor arguments that run ``name`` on a tiny random model saved under ``folder``."""
    pytest.importorskip("torch")
    if name == "chexbert_f1":
        from tests.builders.scorers import save_tiny_chexbert

        root, _, ckpt = save_tiny_chexbert(folder)
        return {"checkpoint": str(ckpt), "tokenizer": str(root / "bert"), "device": "cpu", "progress": False}
    from tests.builders.scorers import save_tiny_green_judge

    return {"model": str(save_tiny_green_judge(folder)), "device": "cpu", "max_new_tokens": 4, "batch_size": 4}


@pytest.fixture(scope="module")
def scorer(tmp_path_factory):
    """``scorer(name)``: one scorer per name for the module; the model-backed ones load a tiny model once."""
    built: dict = {}

    def get(name: str):
        if name not in built:
            kwargs = (_tiny_model_kwargs(name, tmp_path_factory.mktemp(name)) if name in TINY_MODEL_SCORERS
                      else SCORER_KWARGS.get(name, {}))
            built[name] = get_scorer(name, **kwargs)
        return built[name]

    return get
CONTEXT_KEYS = ("has_prior", "comparison", "prior")

REPORTISH = ["Stable cardiomegaly.", "No acute cardiopulmonary process.", "Interval resolution of the effusion.",
             "Heart size is normal. Lungs are clear. No pleural effusion or pneumothorax.",
             "1. Mild pulmonary edema. 2. Small bilateral effusions, increased since ___."]

_text = st.one_of(
    st.text(max_size=300),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=200),
    st.text(alphabet=st.characters(max_codepoint=0x1F), max_size=50),  # control characters
    st.sampled_from(REPORTISH + ["", " ", "\n\n", "<b>Stable</b> <script>x</script>", "```json\n{}\n```",
                                 "ünchanged ☃ 稳定 🫁", "\u202e\u200b\ufeff", "....", "1. 2. 3."]),
    st.lists(st.sampled_from(REPORTISH), max_size=8).map(" ".join),
)
_completion = st.one_of(
    _text,
    _text.map(lambda t: [{"role": "assistant", "content": t}]),
    _text.map(lambda t: [{"role": "assistant", "content": [{"type": "text", "text": t}]}]),
    st.just(None),
    st.integers(),
    st.lists(st.dictionaries(st.sampled_from(["role", "content", "x"]), _text, max_size=3), max_size=3),
)
_batch = st.lists(_completion, min_size=1, max_size=4)


def _model_free_scorers() -> list:
    params = []
    for name in sorted(available_scorers()):
        if name.startswith("_test"):  # test-local scorers of other test modules
            continue
        if name in TINY_MODEL_SCORERS:
            continue  # MODEL_SCORERS
        try:
            get_scorer(name, **SCORER_KWARGS.get(name, {}))
            params.append(pytest.param(name, id=name))
        except RewardError as e:  # includes MissingBackendError
            params.append(pytest.param(name, id=name, marks=pytest.mark.skip(
                reason=f"needs a model or configuration here: {type(e).__name__}: {str(e)[:100]}")))
    return params


SCORERS = _model_free_scorers()
MODEL_SCORERS = [pytest.param(name, id=name) for name in TINY_MODEL_SCORERS]


def _columns(n: int) -> dict:
    return {"reference": [REPORTISH[i % len(REPORTISH)] for i in range(n)], "has_prior": [i % 2 == 0 for i in range(n)],
            "comparison": ["None."] * n, "prior": [None] * n, "study_id": [f"s{i}" for i in range(n)]}


def _check(scores, n):
    assert len(scores) == n
    assert all(isinstance(s, float) and math.isfinite(s) for s in scores)


@contextlib.contextmanager
def raw_scores():
    """The ``scores`` every :class:`reward.base.ScoreResult` built in the block was given, before its coercion."""
    from reward import base

    seen: list[list] = []
    coerce = base.ScoreResult.__post_init__

    def record(self):
        seen.append(list(self.scores))
        coerce(self)

    base.ScoreResult.__post_init__ = record
    try:
        yield seen
    finally:
        base.ScoreResult.__post_init__ = coerce


def _check_raw(seen: list[list], n: int | None) -> None:
    """The scorer's own scores: a real number per sample, finite (None, NaN or inf would be hidden by coercion).
    ``n``: the length of the last result; None checks every result built (the TRL adapter may split a batch)."""
    assert seen, "the scorer built no ScoreResult"
    raw = seen[-1] if n is not None else [s for r in seen for s in r]
    assert n is None or len(raw) == n, raw
    bad = [s for s in raw if isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s)]
    assert not bad, f"non-finite or non-numeric raw scores {bad[:5]} (hidden by ScoreResult's coercion)"


def test_raw_score_check_sees_what_coercion_hides():
    from reward.base import ScoreResult

    with raw_scores() as seen:
        res = ScoreResult([1.0, float("nan"), None])
    assert res.scores == [1.0, 0.0, 0.0]
    with pytest.raises(AssertionError, match="non-finite"):
        _check_raw(seen, 3)


def test_some_scorer_is_checked():
    assert any(not p.marks for p in SCORERS), "no model-free scorer registered"
    checked = {p.values[0] for p in SCORERS + MODEL_SCORERS if not p.marks}
    assert set(TINY_MODEL_SCORERS) <= checked and {"chexpert_f1", "bleu", "prior_penalty"} <= checked


@pytest.mark.parametrize("name", SCORERS + MODEL_SCORERS)
def test_fixed_nasty_inputs(name, scorer):
    """A fixed set of the worst cases, including 100k-character completions, for every scorer."""
    huge = ("Stable cardiomegaly with ünicode ☃. " * 3000)[:100_000]
    batch = ["", huge, "x" * 100_000, "\x00" * 1000, "<" * 5000, " ".join(["new"] * 20000),
             [{"role": "assistant", "content": huge}], None, 3.5]
    sc = scorer(name)
    cols = _columns(len(batch))
    hyps = [completion_text(c) for c in batch]
    with raw_scores() as seen:
        res = sc(hyps, cols["reference"] if sc.needs_reference else None, **select_context(sc, cols, len(batch)))
    _check_raw(seen, len(batch))
    _check(res.scores, len(batch))
    f = reward_function(scorer(name), name=name)
    _check(f(prompts=[None] * len(batch), completions=batch, **cols), len(batch))
    assert f.n_errors == 0


def _finite_scores(name, scorer, batch):
    sc = scorer(name)
    n = len(batch)
    cols = _columns(n)
    with raw_scores() as seen:
        res = sc([completion_text(c) for c in batch], cols["reference"] if sc.needs_reference else None,
                 **select_context(sc, cols, n))
    _check_raw(seen, n)
    _check(res.scores, n)


def _finite_through_trl(name, scorer, batch, refs):
    n = len(batch)
    cols = _columns(n)
    cols["reference"] = refs[:n]  # strange references too
    f = reward_function(scorer(name), name=name)
    with raw_scores() as seen:
        out = f(prompts=[[{"role": "user", "content": "Write the report."}]] * n, completions=batch,
                completion_ids=[[1, 2]] * n, trainer_state=None, log_extra=lambda *a: None,
                log_metric=lambda *a: None, **cols)
    _check_raw(seen, None)
    _check(out, n)
    assert f.n_errors == 0


def _examples(n: int):
    return settings(max_examples=n, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("name", SCORERS)
@_examples(40)
@given(batch=_batch)
def test_any_completion_gives_finite_scores(name, scorer, batch):
    _finite_scores(name, scorer, batch)


@pytest.mark.parametrize("name", SCORERS)
@_examples(40)
@given(batch=_batch, refs=st.lists(_text, min_size=4, max_size=4))
def test_any_completion_through_trl_adapter(name, scorer, batch, refs):
    _finite_through_trl(name, scorer, batch, refs)


@pytest.mark.parametrize("name", MODEL_SCORERS)
@_examples(8)   # a model call per example: fewer, the fixed worst cases above run in full
@given(batch=_batch, refs=st.lists(_text, min_size=4, max_size=4))
def test_model_backed_scorers_on_any_completion(name, scorer, batch, refs):
    _finite_scores(name, scorer, batch)
    _finite_through_trl(name, scorer, batch, refs)


@settings(max_examples=50, deadline=None)
@given(text=st.one_of(_text, st.lists(st.sampled_from(REPORTISH + ["Evidence of prior granulomatous disease.",
                                                                    "Unchanged.", "No interval change."]),
                                      max_size=10).map(" ".join)))
def test_strip_removes_every_reference_and_is_idempotent(text):
    from reward.prior import find_prior_references, strip_prior_references

    out = strip_prior_references(text)
    assert find_prior_references(out) == []
    assert strip_prior_references(out) == out
