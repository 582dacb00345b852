"""reward.trl: scorers as TRL reward functions, composites from specs, robustness."""

from __future__ import annotations

import math
import pickle
from collections.abc import Sequence

import pytest

from reward.base import RewardError, Scorer, ScoreResult, available_scorers, get_scorer
from reward.trl import (
    CompositeReward,
    RewardFunction,
    completion_text,
    load_reward_spec,
    make_composite_reward,
    resolve_references,
    reward_funcs_and_weights,
    reward_function,
)

# -- test-local scorers ----------------------------------------------------------------------------

BUILT: list[str] = []


class _Overlap(Scorer):
    name = "_test_overlap"

    def __init__(self, scale: float = 1.0) -> None:
        BUILT.append(f"overlap:{scale}")
        self.scale = scale

    def score(self, hyps: Sequence[str], refs: Sequence[str] | None = None, *, bonus=None) -> ScoreResult:
        out = []
        for i, (h, r) in enumerate(zip(hyps, refs)):
            a, b = set(h.lower().split()), set(r.lower().split())
            f1 = 2 * len(a & b) / (len(a) + len(b)) if a and b else 0.0
            out.append(self.scale * f1 + (float(bonus[i]) if bonus is not None else 0.0))
        return ScoreResult(out, corpus={"n": len(out)})


class _Fragile(Scorer):
    name = "_test_fragile"
    needs_reference = False

    def score(self, hyps, refs=None, **_) -> ScoreResult:
        if any("boom" in h for h in hyps):
            raise ZeroDivisionError("boom")
        return ScoreResult([float(len(h)) for h in hyps])


class _Misconfigured(Scorer):
    name = "_test_misconfigured"
    needs_reference = False

    def score(self, hyps, refs=None, **_) -> ScoreResult:
        raise RewardError("_test_misconfigured needs column 'labels'")


class _Nan(Scorer):
    name = "_test_nan"
    needs_reference = False

    def score(self, hyps, refs=None, **_) -> ScoreResult:
        return ScoreResult([math.nan, math.inf, 1.0][: len(hyps)] + [2.0] * max(0, len(hyps) - 3))


def _conv(text):
    return [{"role": "assistant", "content": text}]


# -- completion_text -------------------------------------------------------------------------------


@pytest.mark.parametrize("completion, expected", [
    ("plain", "plain"),
    (None, ""),
    ([{"role": "assistant", "content": "Stable."}], "Stable."),
    ([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "a"),
    ([{"role": "assistant", "content": [{"type": "text", "text": "x"}, {"type": "image"}]}], "x"),
    ({"role": "assistant", "content": "y"}, "y"),
    ([{"content": "no role"}], "no role"),
    (42, "42"),
    (b"bytes \xff", "bytes \ufffd"),
    ([], ""),
])
def test_completion_text(completion, expected):
    assert completion_text(completion) == expected


def test_completion_text_never_raises():
    class Bad:
        def __str__(self):
            raise RuntimeError("no")

    assert completion_text(Bad()) == ""
    loop: list = []
    loop.append(loop)
    assert isinstance(completion_text(loop), str)


# -- one reward function ---------------------------------------------------------------------------


def test_reward_fn_uses_reference_column_and_context():
    f = reward_function("_test_overlap")
    assert f.__name__ == "_test_overlap"
    assert getattr(f, "__name__", None) == "_test_overlap"  # what trl.trainer.utils.get_callable_name logs
    logged = {}
    out = f(prompts=["p", "p"], completions=[_conv("a b"), _conv("c d")], completion_ids=[[1], [2]],
            reference=["a b", "x y"], bonus=[0.5, 0.0], study_id=["s1", "s2"], trainer_state=object(),
            log_extra=lambda c, v: None, log_metric=lambda k, v: logged.__setitem__(k, v))
    assert out == [1.5, 0.0]
    assert logged == {"reward_errors/_test_overlap": 0.0}
    # another reference column, a joined one, a list of candidates
    assert reward_function("_test_overlap", reference_column="impression")(
        completions=["a b"], impression=["a b"], findings=["z"]) == [1.0]
    assert reward_function("_test_overlap", reference_column="findings+impression")(
        completions=["a b"], impression=["b"], findings=["a"]) == [1.0]
    assert reward_function("_test_overlap")(completions=["a"], findings=["a"], impression=["b"]) == [1.0]
    assert reward_function("_test_overlap", reference_column=["report", "impression"])(
        completions=["b"], findings=["a"], impression=["b"]) == [1.0]


def test_reward_fn_missing_reference_column_is_a_clear_error():
    f = reward_function("_test_overlap")
    with pytest.raises(RewardError, match=r"reference column.*has columns \['study_id'\]"):
        f(prompts=["p"], completions=["a"], study_id=["s"], trainer_state=None)
    with pytest.raises(RewardError, match="one value per completion"):
        f(completions=["a", "b"], reference=["only one"])


def test_columns_as_arrays_and_stray_columns():
    np = pytest.importorskip("numpy")
    f = reward_function("_test_overlap")
    out = f(completions=("a b", "c"), reference=np.array(["a b", "c"]), bonus=(0.25, 0.0),
            environments=None, extra=[1, 2, 3], note="not a column")
    assert out == [1.25, 1.0]
    with pytest.raises(RewardError, match="column 'bonus' must have one value per completion"):
        f(completions=["a"], reference=["a"], bonus=[1.0, 2.0])
    g = reward_function("prior_penalty")  # takes **kwargs: stray columns of another length are left out
    assert g(completions=["Stable."], has_prior=[False], images=[[1], [2]]) == [-1.0]


def test_resolve_references():
    assert resolve_references({"findings": ["a", None]}, None, 2) == ["a", ""]
    assert resolve_references({"x": [1]}, None, 1) is None
    assert resolve_references({"findings": ["a"], "impression": ["b"]}, "findings+impression", 1) == ["a b"]


def test_failing_sample_scores_zero_and_is_counted(caplog):
    f = reward_function("_test_fragile")
    logged = []
    out = f(completions=["ok", "boom here", "fine!"], log_metric=lambda k, v: logged.append((k, v)))
    assert out == [2.0, 0.0, 5.0]
    assert f.n_errors == 1 and f.n_samples == 3 and f.n_calls == 1
    assert logged == [("reward_errors/_test_fragile", 1.0)]
    assert "boom here" not in caplog.text  # no completion text in logs
    g = reward_function("_test_fragile", error_value=-1.0)
    assert g(completions=["boom"]) == [-1.0]


def test_configuration_error_is_raised_not_swallowed():
    f = reward_function("_test_misconfigured")
    with pytest.raises(RewardError, match="labels"):
        f(completions=["a", "b"])
    with pytest.raises(RewardError, match="has_prior"):
        reward_function("prior_penalty")(completions=["Stable."], reference=["x"])


def test_non_finite_scores_become_finite():
    assert reward_function("_test_nan")(completions=["a", "b", "c", "d"]) == [0.0, 0.0, 1.0, 2.0]


def test_prior_penalty_through_trl_adapter():
    f = reward_function("prior_penalty", penalty=2.0)
    out = f(prompts=[[{"role": "user", "content": "report"}]] * 3,
            completions=[_conv("Stable cardiomegaly."), _conv("Stable cardiomegaly."), _conv("No acute disease.")],
            comparison=["None.", "XXXX", "None."], prior=[None, None, None], reference=["r"] * 3)
    assert out == [-2.0, 0.0, 0.0]
    assert reward_function("prior_penalty")(completions=["Unchanged."], has_prior=[False]) == [-1.0]


def test_scorer_instances_are_shared_and_built_once():
    BUILT.clear()
    a = reward_function("_test_overlap", scale=3.0)
    b = reward_function({"name": "_test_overlap", "kwargs": {"scale": 3.0}})
    c = reward_function("_test_overlap", scale=3.0, name="again")
    assert a.scorer is b.scorer is c.scorer is get_scorer("_test_overlap", scale=3.0)
    assert BUILT.count("overlap:3.0") <= 1
    assert c.__name__ == "again"


def test_reward_fn_pickles():
    f = reward_function("_test_overlap", scale=2.0, reference_column="findings")
    g = pickle.loads(pickle.dumps(f))
    assert g.__name__ == f.__name__ and g.scorer is f.scorer
    assert g(completions=["a"], findings=["a"]) == [2.0]


def test_bad_arguments():
    with pytest.raises(RewardError, match="unknown scorer"):
        reward_function("no_such_scorer")
    with pytest.raises(RewardError):
        RewardFunction(object())
    with pytest.raises(RewardError):
        reward_function("_test_fragile")(completions=None)


# -- composites ------------------------------------------------------------------------------------


SPEC = [
    {"name": "_test_overlap", "weight": 2.0},
    {"name": "_test_overlap", "weight": 1.0, "kwargs": {"scale": 10.0}, "alias": "overlap10"},
    {"name": "prior_penalty", "weight": 0.5, "kwargs": {"assume_no_prior": True}},
]


def test_composite_weighted_sum():
    comp = make_composite_reward(SPEC)
    assert isinstance(comp, CompositeReward) and comp.__name__ == "composite"
    out = comp(completions=["a b", "Stable a b"], reference=["a b", "a b"])
    overlap2 = 2 * 2 / (3 + 2)
    assert out == pytest.approx([2 * 1 + 10, 2 * overlap2 + 10 * overlap2 - 0.5])
    assert set(comp.last_parts) == {"_test_overlap", "overlap10", "prior_penalty"}
    norm = make_composite_reward({"rewards": SPEC, "normalize": True, "name": "mix"})
    assert norm.__name__ == "mix"
    assert norm(completions=["a b"], reference=["a b"]) == pytest.approx([12 / 3.5])


def test_reward_funcs_for_trl_and_yaml(tmp_path):
    spec = tmp_path / "rewards.yaml"
    spec.write_text(
        "rewards:\n"
        "  - {name: _test_overlap, weight: 1.5, reference_column: impression}\n"
        "  - {name: _test_overlap, weight: 0.5}\n"
        "  - name: prior_penalty\n"
        "    weight: 1.0\n"
        "    kwargs: {per_sentence: true}\n")
    funcs, weights = reward_funcs_and_weights(spec)
    assert [f.__name__ for f in funcs] == ["_test_overlap", "_test_overlap_2", "prior_penalty"]
    assert weights == [1.5, 0.5, 1.0]
    cols = {"impression": ["a"], "reference": ["b"], "has_prior": [False]}
    assert [f(completions=["a"], **cols)[0] for f in funcs] == [1.0, 0.0, 0.0]
    comp = reward_function(str(spec))
    assert isinstance(comp, CompositeReward)
    # no word overlap ("a." vs "a"), two prior sentences at -1 each
    assert comp(completions=["Stable a. Unchanged b."], **cols) == pytest.approx([-2.0])


@pytest.mark.parametrize("spec, match", [
    ([{"name": "bleu", "wieght": 1}], "unknown key"),
    ([{"weight": 1}], "needs a scorer 'name'"),
    ([{"name": "bleu", "weight": "heavy"}], "not a number"),
    ([{"name": "bleu", "weight": float("inf")}], "non-finite"),
    ([{"name": "bleu", "kwargs": [1]}], "kwargs must be a mapping"),
    ([], "non-empty"),
    ({"foo": 1}, "rewards"),
])
def test_bad_specs(spec, match):
    with pytest.raises(RewardError, match=match):
        load_reward_spec(spec)


def test_spec_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_reward_spec(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("rewards: [name: {\n")
    with pytest.raises(RewardError, match="bad.yaml"):
        load_reward_spec(bad)


def test_composite_with_every_model_free_scorer():
    """All registered scorers that need no model and no configuration, in one composite."""
    names = []
    for name in available_scorers():
        if name.startswith("_test") or name == "prior_penalty":
            continue
        try:
            get_scorer(name)
        except RewardError:  # MissingBackendError (a model) or a required argument
            continue
        names.append(name)
    spec = [{"name": n, "weight": 1.0} for n in names] + [
        {"name": "prior_penalty", "weight": 1.0, "kwargs": {"assume_no_prior": True}}]
    comp = make_composite_reward(spec)
    refs = ["Heart size is normal. No pleural effusion.", "Stable mild cardiomegaly."]
    out = comp(completions=[_conv("Heart size is normal. No effusion."), _conv("")], reference=refs,
               has_prior=[False, False])
    assert len(out) == 2 and all(math.isfinite(x) for x in out)
    assert comp.n_errors == 0


# -- a real GRPO step ------------------------------------------------------------------------------

SEEN_COLUMNS: list[dict] = []


class _Recorder(Scorer):
    name = "_test_recorder"

    def score(self, hyps, refs=None, **context) -> ScoreResult:
        SEEN_COLUMNS.append({"n": len(hyps), "refs": list(refs), **{k: list(v) for k, v in context.items()}})
        return ScoreResult([len(h) / 100 for h in hyps])


@pytest.mark.slow
def test_grpo_trainer_calls_our_rewards(tmp_path):
    """TRL's GRPOTrainer (text-only tiny model) calls the functions with the dataset columns and logs
    them by name, with the weights from the spec."""
    torch = pytest.importorskip("torch")
    from datasets import Dataset
    from transformers import Qwen2Config, Qwen2ForCausalLM
    from trl import GRPOConfig, GRPOTrainer

    from mllm_cxr.tiny import build_tokenizer

    tok = build_tokenizer(512)
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256,
                      pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    ds = Dataset.from_list([{"prompt": [{"role": "user", "content": "Write the findings."}],
                             "findings": "Stable cardiomegaly.", "has_prior": i % 2 == 0, "study_id": f"s{i}"}
                            for i in range(4)])
    spec = [{"name": "_test_recorder", "weight": 1.0, "reference_column": "findings"},
            {"name": "prior_penalty", "weight": 0.5}]
    funcs, weights = reward_funcs_and_weights(spec)
    mix = make_composite_reward(spec, name="mix")
    SEEN_COLUMNS.clear()
    args = GRPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=4, num_generations=4,
                      max_completion_length=8, max_steps=1, logging_steps=1, report_to=[], use_cpu=True,
                      bf16=False, save_strategy="no", reward_weights=[*weights, 0.0])
    trainer = GRPOTrainer(model=Qwen2ForCausalLM(cfg), reward_funcs=[*funcs, mix], args=args,
                          train_dataset=ds, processing_class=tok)
    trainer.train()
    logs = trainer.state.log_history[0]
    for key in ("rewards/_test_recorder/mean", "rewards/prior_penalty/mean", "rewards/mix/mean",
                "reward_errors/_test_recorder", "reward_errors/prior_penalty"):
        assert key in logs, sorted(logs)
    assert SEEN_COLUMNS and SEEN_COLUMNS[0]["n"] == 4
    assert SEEN_COLUMNS[0]["refs"] == ["Stable cardiomegaly."] * 4
    sid = SEEN_COLUMNS[0]["study_id"]  # one prompt, four generations
    assert len(set(sid)) == 1 and sid[0] in {"s0", "s1", "s2", "s3"}
    assert SEEN_COLUMNS[0]["has_prior"] == [int(sid[0][1:]) % 2 == 0] * 4
    assert funcs[1].n_calls >= 1 and funcs[1].n_errors == 0 and mix.n_errors == 0


#: Test-local scorers, registered for this module only (other modules iterate the registry).
_LOCAL_SCORERS = [
    ("_test_overlap", "test only: word-overlap F1 with the reference", _Overlap),
    ("_test_fragile", "test only: raises on completions that contain 'boom'", _Fragile),
    ("_test_misconfigured", "test only: always raises RewardError", _Misconfigured),
    ("_test_nan", "test only: returns NaN and inf", _Nan),
    ("_test_recorder", "test only: records the context columns it receives; scores the length", _Recorder),
]


@pytest.fixture(autouse=True, scope="module")
def _local_scorers():
    from tests.builders.scorers import local_scorers

    with local_scorers(_LOCAL_SCORERS):
        yield


def test_reward_spec_names_a_dotted_path(tmp_path, monkeypatch):
    """A user's own reward function or Scorer subclass, by ``package.module.name``, with no registry change."""
    from reward.base import RewardError
    from reward.trl import reward_funcs_and_weights

    pkg = tmp_path / "my_rewards_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "custom.py").write_text(
        "from reward.base import Scorer, ScoreResult\n"
        "def brevity(prompts, completions, max_words=5, **columns):\n"
        "    texts = [c[0]['content'] if isinstance(c, list) else c for c in completions]\n"
        "    return [1.0 if len(t.split()) <= max_words else 0.0 for t in texts]\n"
        "class Shouty(Scorer):\n"
        "    name = 'shouty'\n"
        "    needs_reference = False\n"
        "    def __init__(self, bonus=1.0):\n"
        "        self.bonus = bonus\n"
        "    def score(self, hyps, refs=None, **context):\n"
        "        return ScoreResult([self.bonus * t.count('!') for t in hyps], [{} for _ in hyps], {})\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = [{"name": "my_rewards_pkg.custom.brevity", "weight": 0.5, "kwargs": {"max_words": 2}},
            {"name": "my_rewards_pkg.custom.Shouty", "kwargs": {"bonus": 2.0}}, "bleu"]
    funcs, weights = reward_funcs_and_weights(spec)
    assert [f.__name__ for f in funcs] == ["my_rewards_pkg.custom.brevity", "my_rewards_pkg.custom.Shouty", "bleu"]
    assert weights == [0.5, 1.0, 1.0]
    completions = [[{"role": "assistant", "content": "No effusion!"}], [{"role": "assistant", "content": "a b c"}]]
    cols = {"reference": ["No effusion.", "a b c"]}
    assert funcs[0](prompts=[None, None], completions=completions, **cols) == [1.0, 0.0]
    assert funcs[1](prompts=[None, None], completions=completions, **cols) == [2.0, 0.0]
    again = pickle.loads(pickle.dumps(funcs[0]))
    assert again(prompts=[None], completions=completions[:1], **{"reference": ["x"]}) == [1.0]
    one, _ = reward_funcs_and_weights("my_rewards_pkg.custom.brevity")  # reward_spec: one dotted name
    assert one[0](prompts=[None], completions=["a b c d e f"]) == [0.0]
    with pytest.raises(RewardError, match="has no 'nope'"):
        reward_funcs_and_weights(["my_rewards_pkg.custom.nope"])
    with pytest.raises(RewardError, match="module 'no_such_pkg.mod' not found"):
        reward_funcs_and_weights(["no_such_pkg.mod.f"])
