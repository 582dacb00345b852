"""Scorers as TRL reward functions, alone or as weighted composites.

TRL's ``GRPOTrainer`` calls every reward function as
``f(prompts=..., completions=..., completion_ids=..., **columns)`` where ``columns`` holds every other
dataset column (one value per completion) plus ``trainer_state``, ``log_extra`` and ``log_metric``.
Completions are strings, or lists of chat messages (``[{"role": "assistant", "content": ...}]``) when
the prompts are conversational. TRL logs each function under its ``__name__``.

    from reward.trl import reward_function, reward_funcs_and_weights

    reward = reward_function("chexpert_f1", reference_column="findings")
    funcs, weights = reward_funcs_and_weights("recipes/configs/rewards.yaml")
    GRPOTrainer(..., reward_funcs=funcs, args=GRPOConfig(..., reward_weights=weights))

A reward spec (YAML file, list or dict) is a list of entries::

    rewards:
      - {name: chexpert_f1, weight: 1.0, kwargs: {backend: rules}}
      - {name: prior_penalty, weight: 0.5}
      - {name: bleu, weight: 0.2, alias: bleu4, reference_column: impression}
      - {name: my_pkg.rewards.brevity, weight: 0.1, kwargs: {max_words: 80}}

``name`` is a registered scorer or a dotted path ``package.module.function`` to the user's own TRL
reward function ``f(prompts, completions, **columns) -> list[float]`` (its ``kwargs`` are passed on
every call) or to a :class:`~reward.base.Scorer` subclass (built with ``kwargs``), so a new reward
needs no change to the registry.

Robustness: a reward function never raises because of a completion. When the scorer raises on a
batch, the batch is scored sample by sample and the samples that still fail get ``error_value``
(0.0) and are counted (``fn.n_errors``; logged through TRL's ``log_metric`` as
``reward_errors/<name>``). Configuration errors (:class:`RewardError`: a missing column, a scorer
that is not installed) still raise, so a misconfigured run stops at its first step instead of
training on zeros. Model-backed scorers are built once per process (``get_scorer`` caches them).
"""

from __future__ import annotations

import inspect
import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from reward.base import (
    RewardError,
    Scorer,
    available_scorers,
    finite,
    get_scorer,
    to_scorable_text,
    unique_names,
)
from reward.references import DEFAULT_REFERENCE_FIELDS, choose_reference_field, field_parts, join_reference

logger = logging.getLogger(__name__)

#: Dataset columns searched for the reference text, in order, when ``reference_column`` is not given (the one
#: default of :mod:`reward.references`).
DEFAULT_REFERENCE_COLUMNS: tuple[str, ...] = DEFAULT_REFERENCE_FIELDS
#: Keyword arguments TRL passes that are not dataset columns.
_TRL_KWARGS = frozenset({"prompts", "completions", "completion_ids", "trainer_state", "log_extra", "log_metric",
                         "environments"})
_SPEC_KEYS = frozenset({"name", "weight", "kwargs", "alias", "reference_column"})


def completion_text(completion: Any) -> str:
    """The text of one completion as TRL hands it over; never raises.

    Accepts a string; a list of chat messages (the assistant messages' contents are joined; if no
    message has role "assistant", all contents are); one message dict; content given as a list of
    parts (``[{"type": "text", "text": ...}]``); anything else is turned into a string.
    """
    try:
        if completion is None:
            return ""
        if isinstance(completion, str):
            return completion
        if isinstance(completion, Mapping):
            return _content_text(completion.get("content", completion.get("text", "")))
        if isinstance(completion, Sequence) and not isinstance(completion, bytes | bytearray):
            msgs = list(completion)
            dicts = [m for m in msgs if isinstance(m, Mapping)]
            chosen = [m for m in dicts if m.get("role") == "assistant"] or dicts
            if dicts:
                return "\n".join(t for t in (_content_text(m.get("content", m.get("text", ""))) for m in chosen) if t)
            return " ".join(completion_text(m) for m in msgs)
        if isinstance(completion, bytes | bytearray):
            return bytes(completion).decode("utf-8", errors="replace")
        return str(completion)
    except Exception:  # a completion whose __str__ raises, a cyclic structure...
        return ""


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Mapping):
        return str(content.get("text", "")) if content.get("type", "text") == "text" else ""
    if isinstance(content, Sequence) and not isinstance(content, bytes | bytearray):
        return " ".join(_content_text(p) for p in content if not (isinstance(p, Mapping) and p.get("type") not in
                                                                 (None, "text")))
    return str(content)


def _accepted_context(scorer: Scorer) -> tuple[set[str], bool]:
    """Context keyword names ``scorer.score`` names explicitly, and whether it also takes ``**kwargs``."""
    try:
        params = inspect.signature(scorer.score).parameters
    except (TypeError, ValueError):
        return set(), True
    named = {n for n, p in params.items() if n not in ("hyps", "refs", "self")
             and p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)}
    return named, any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def _is_column(vals: Any) -> bool:
    """A per-sample column: a list, tuple, array or series (not a string or a mapping)."""
    return not isinstance(vals, str | bytes | Mapping) and hasattr(vals, "__len__") and hasattr(vals, "__getitem__")


def select_context(scorer: Scorer, columns: Mapping[str, Any], n: int) -> dict[str, list]:
    """The context columns ``scorer`` accepts, as lists of length ``n`` (TRL's extra dataset columns).

    A column the scorer names in its ``score`` signature must have ``n`` values (else
    :class:`RewardError`); other columns, passed only because the scorer takes ``**kwargs``, are left
    out when they are not per-sample lists of length ``n``.
    """
    named, takes_any = _accepted_context(scorer)
    out: dict[str, list] = {}
    for key, vals in columns.items():
        if key in _TRL_KWARGS or (key not in named and not takes_any):
            continue
        if not _is_column(vals) or len(vals) != n:
            if key in named and vals is not None:
                size = len(vals) if _is_column(vals) else type(vals).__name__
                raise RewardError(f"column '{key}' must have one value per completion ({n}), got {size}")
            continue
        out[key] = list(vals)
    return out


def resolve_references(columns: Mapping[str, Any], reference_column: str | Sequence[str] | None,
                       n: int, where: str = "reward") -> list[str] | None:
    """The reference texts from the dataset columns, or None when no candidate column is present.

    ``reference_column``: a column name, ``"a+b"`` (the non-empty values of both columns joined with
    a space, e.g. ``"findings+impression"``), or a list of such names (the first present is used).
    Default: ``reference``, then ``findings``, then ``impression`` (:mod:`reward.references`, the one rule).
    """
    cand = choose_reference_field(reference_column, lambda p: p in columns)
    if cand is not None:
        parts = field_parts(cand)
        cols = [columns[p] for p in parts]
        for p, c in zip(parts, cols):
            if not _is_column(c) or len(c) != n:
                size = f"{len(c)} values" if _is_column(c) else type(c).__name__
                raise RewardError(f"{where}: reference column '{p}' must have one value per completion "
                                  f"({n}), got {size}")
        return [join_reference(to_scorable_text(c[i]) for c in cols) for i in range(n)]
    return None


class RewardFunction:
    """One scorer as a TRL reward function (picklable; ``__name__`` is the logged name).

    Build with :func:`reward_function`. Attributes: ``scorer`` (the :class:`Scorer`), ``n_calls``,
    ``n_samples``, ``n_errors`` (samples scored ``error_value`` because the scorer raised on them).
    """

    def __init__(self, scorer: str | Scorer, *, scorer_kwargs: Mapping[str, Any] | None = None,
                 reference_column: str | Sequence[str] | None = None, name: str | None = None,
                 error_value: float = 0.0) -> None:
        self._scorer_name = scorer if isinstance(scorer, str) else None
        self._scorer_kwargs = dict(scorer_kwargs or {})
        if isinstance(scorer, str):
            self.scorer = get_scorer(scorer, **self._scorer_kwargs)
        elif isinstance(scorer, Scorer):
            if scorer_kwargs:
                raise RewardError("scorer kwargs given together with a scorer instance")
            self.scorer = scorer
        else:
            raise RewardError(f"expected a scorer name or a Scorer instance, got {type(scorer).__name__}")
        self.reference_column = reference_column
        self.error_value = float(error_value)
        self.__name__ = name or self._scorer_name or getattr(self.scorer, "name", type(self.scorer).__name__)
        self.n_calls = 0
        self.n_samples = 0
        self.n_errors = 0

    def __repr__(self) -> str:
        return f"RewardFunction({self.__name__!r}, scorer={type(self.scorer).__name__})"

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        if self._scorer_name is not None:  # rebuilt from the registry (and its cache) after unpickling
            state["scorer"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        if self.scorer is None:
            self.scorer = get_scorer(self._scorer_name, **self._scorer_kwargs)

    # -- scoring -----------------------------------------------------------------------------------

    def score_texts(self, hyps: Sequence[str], refs: Sequence[str] | None,
                    context: Mapping[str, list]) -> tuple[list[float], int]:
        """Scores of a batch and the number of samples that failed (scored ``error_value``)."""
        n = len(hyps)
        try:
            res = self.scorer(hyps, refs, **context)
            scores = list(res.scores)
            if len(scores) != n:
                raise RewardError(f"scorer '{self.__name__}' returned {len(scores)} scores for {n} samples")
            return [finite(s, self.error_value) for s in scores], 0
        except Exception as batch_exc:
            first_exc = batch_exc
        out, failed = [], []
        for i in range(n):
            try:
                ctx = {k: [v[i]] for k, v in context.items()}
                res = self.scorer([hyps[i]], None if refs is None else [refs[i]], **ctx)
                out.append(finite(res.scores[0], self.error_value))
            except Exception as e:
                failed.append(e)
                out.append(self.error_value)
        if failed and len(failed) == n and all(isinstance(e, RewardError) for e in failed):
            raise failed[0] from None  # every sample fails the same way: a configuration error
        if failed:
            logger.warning("reward '%s': %d of %d samples failed (%s: %s); scored %s",
                           self.__name__, len(failed), n, type(failed[0]).__name__,
                           _short(failed[0]), self.error_value)
        elif first_exc is not None:
            logger.debug("reward '%s': batch call failed (%s), per-sample calls succeeded",
                         self.__name__, type(first_exc).__name__)
        return out, len(failed)

    def __call__(self, prompts: Any = None, completions: Any = None, completion_ids: Any = None,
                 **columns: Any) -> list[float]:
        if completions is None:
            raise RewardError(f"reward '{self.__name__}' called without completions")
        completions = list(completions)
        n = len(completions)
        hyps = [to_scorable_text(completion_text(c)) for c in completions]
        refs = resolve_references(columns, self.reference_column, n, where=f"reward '{self.__name__}'")
        if refs is None and self.scorer.needs_reference:
            data_cols = sorted(k for k in columns if k not in _TRL_KWARGS)
            wanted = self.reference_column or list(DEFAULT_REFERENCE_COLUMNS)
            raise RewardError(f"reward '{self.__name__}' needs a reference column {wanted!r}; the dataset "
                              f"has columns {data_cols}")
        context = select_context(self.scorer, columns, n)
        scores, n_err = self.score_texts(hyps, refs, context)
        self.n_calls += 1
        self.n_samples += n
        self.n_errors += n_err
        log_metric = columns.get("log_metric")
        if callable(log_metric):
            try:
                log_metric(f"reward_errors/{self.__name__}", float(n_err))
            except Exception:  # logging must never cost a training step
                logger.debug("log_metric failed", exc_info=True)
        return scores


def _short(e: BaseException) -> str:
    """An exception message cut short (it may quote a completion; keep logs free of report text)."""
    msg = str(e).splitlines()[0] if str(e) else ""
    return msg[:120]


# ----------------------------------------------------------------------------------------------------
# Specs and composites
# ----------------------------------------------------------------------------------------------------


def load_reward_spec(spec: str | os.PathLike | Mapping | Sequence) -> list[dict[str, Any]]:
    """A reward spec as a list of ``{"name", "weight", "kwargs", "alias", "reference_column"}``.

    Accepts a YAML file path, a dict with a ``rewards`` list, a list of entries (dicts or scorer
    names), or one entry dict. Unknown keys, missing names and non-finite weights raise
    :class:`RewardError` naming the file and entry.
    """
    where = "reward spec"
    if isinstance(spec, str | os.PathLike) and not (isinstance(spec, str) and "\n" in spec):
        path = os.fspath(spec)
        if not os.path.exists(path):
            raise FileNotFoundError(f"reward spec file not found: {path}")
        from cxr_io import read_yaml

        spec = read_yaml(path, role="reward spec", error=RewardError)
        where = path
    if isinstance(spec, Mapping):
        if "rewards" in spec:
            spec = spec["rewards"]
        elif "name" in spec:
            spec = [spec]
        else:
            raise RewardError(f"{where}: expected a 'rewards' list or an entry with 'name'; got keys {sorted(spec)}")
    if isinstance(spec, str) or not isinstance(spec, Sequence) or not spec:
        raise RewardError(f"{where}: expected a non-empty list of rewards, got {spec!r}"[:300])
    entries = []
    for i, item in enumerate(spec):
        if isinstance(item, str):
            item = {"name": item}
        if not isinstance(item, Mapping):
            raise RewardError(f"{where}: entry {i} must be a mapping or a scorer name, got {type(item).__name__}")
        unknown = set(item) - _SPEC_KEYS
        if unknown:
            raise RewardError(f"{where}: entry {i} has unknown key(s) {sorted(unknown)} "
                              f"(allowed: {sorted(_SPEC_KEYS)})")
        name = item.get("name")
        if not isinstance(name, str) or not name:
            raise RewardError(f"{where}: entry {i} needs a scorer 'name'")
        weight = item.get("weight", 1.0)
        try:
            weight = float(weight)
        except (TypeError, ValueError):
            raise RewardError(f"{where}: entry {i} ('{name}') has weight {weight!r}, not a number") from None
        if not math.isfinite(weight):
            raise RewardError(f"{where}: entry {i} ('{name}') has a non-finite weight {weight}")
        kwargs = item.get("kwargs") or {}
        if not isinstance(kwargs, Mapping):
            raise RewardError(f"{where}: entry {i} ('{name}') kwargs must be a mapping, got {kwargs!r}")
        entries.append({"name": name, "weight": weight, "kwargs": dict(kwargs),
                        "alias": item.get("alias"), "reference_column": item.get("reference_column")})
    return entries


def import_dotted(path: str) -> Any:
    """The object a dotted path ``package.module.attribute`` names (a reward function or Scorer class)."""
    import importlib

    module, _, attr = path.rpartition(".")
    if not module or not attr:
        raise RewardError(f"reward '{path}': not a registered scorer and not a dotted path package.module.function")
    try:
        obj = getattr(importlib.import_module(module), attr)
    except ModuleNotFoundError as e:
        raise RewardError(f"reward '{path}': module '{module}' not found ({e}); known scorers: "
                          f"{', '.join(sorted(available_scorers()))}") from None
    except AttributeError:
        raise RewardError(f"reward '{path}': module '{module}' has no '{attr}'") from None
    if not callable(obj):
        raise RewardError(f"reward '{path}': {type(obj).__name__} is not callable")
    return obj


def is_dotted_reward(name: str) -> bool:
    """A spec name that is not a registered scorer but looks like ``package.module.function``."""
    return "." in name and name not in available_scorers() and not _looks_like_path(name)


class ImportedReward:
    """A user's TRL reward function ``f(prompts, completions, **columns)`` named by a dotted path in a
    reward spec; the entry's ``kwargs`` are passed on every call. ``__name__`` is what TRL logs."""

    def __init__(self, path: str, *, name: str | None = None, kwargs: Mapping[str, Any] | None = None) -> None:
        self.path, self.func, self.kwargs = path, import_dotted(path), dict(kwargs or {})
        self.__name__ = name or path.rpartition(".")[2]

    def __call__(self, *args: Any, **columns: Any) -> list[float | None]:
        return self.func(*args, **{**columns, **self.kwargs})

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "func"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.func = import_dotted(self.path)

    def __repr__(self) -> str:
        return f"ImportedReward({self.path!r})"


def dotted_reward(path: str, *, name: str | None, kwargs: Mapping[str, Any], reference_column: Any,
                  error_value: float):
    """A dotted path -> a reward function: a :class:`Scorer` subclass is built with ``kwargs`` and
    wrapped like a registered scorer; any other callable is a TRL reward function (:class:`ImportedReward`)."""
    obj = import_dotted(path)
    if isinstance(obj, type) and issubclass(obj, Scorer):
        return RewardFunction(obj(**kwargs), reference_column=reference_column,
                              name=name or getattr(obj, "name", None) or obj.__name__, error_value=error_value)
    return ImportedReward(path, name=name, kwargs=kwargs)


def reward_function(name_or_spec: str | os.PathLike | Scorer | Mapping | Sequence | Callable, *,
                    reference_column: str | Sequence[str] | None = None, name: str | None = None,
                    error_value: float = 0.0, **scorer_kwargs: Any) -> Callable[..., list[float]]:
    """ONE TRL reward function ``f(prompts, completions, completion_ids=None, **columns)`` for any way of
    naming a reward (the several rewards of a spec are summed with their weights).

    ``name_or_spec``: a registered scorer name (``"prior_penalty"``), a dotted ``package.module.function``,
    a :class:`Scorer` instance, one spec entry dict (``{"name", "kwargs", "reference_column", "alias"}``;
    its weight is ignored), a list / YAML path of entries (then a weighted :class:`CompositeReward`), or
    a reward function already (returned as it is). ``scorer_kwargs`` go to the scorer's constructor.
    ``reference_column``: see :func:`resolve_references`. ``name``: the ``__name__`` TRL logs (default:
    the scorer name). For GRPO, which logs each reward on its own, see :func:`reward_funcs_and_weights`.
    """
    if isinstance(name_or_spec, os.PathLike):
        name_or_spec = os.fspath(name_or_spec)
    if callable(name_or_spec) and not isinstance(name_or_spec, Scorer):
        return name_or_spec
    if isinstance(name_or_spec, Mapping) and "rewards" not in name_or_spec:
        entry = load_reward_spec([name_or_spec])[0]
        kwargs = {**entry["kwargs"], **scorer_kwargs}
        return RewardFunction(entry["name"], scorer_kwargs=kwargs,
                              reference_column=reference_column or entry["reference_column"],
                              name=name or entry["alias"], error_value=error_value)
    if isinstance(name_or_spec, str) and is_dotted_reward(name_or_spec):
        return dotted_reward(name_or_spec, name=name, kwargs=scorer_kwargs, reference_column=reference_column,
                             error_value=error_value)
    if isinstance(name_or_spec, str) and not _looks_like_path(name_or_spec):
        return RewardFunction(name_or_spec, scorer_kwargs=scorer_kwargs, reference_column=reference_column,
                              name=name, error_value=error_value)
    if isinstance(name_or_spec, Scorer):
        return RewardFunction(name_or_spec, reference_column=reference_column, name=name,
                              error_value=error_value)
    if scorer_kwargs:
        raise RewardError("scorer kwargs belong in the spec entries of a composite reward")
    return make_composite_reward(name_or_spec, name=name or "composite", reference_column=reference_column,
                                 error_value=error_value)


def _looks_like_path(s: str) -> bool:
    return s.endswith((".yaml", ".yml", ".json")) or os.sep in s


def reward_funcs_and_weights(spec: str | os.PathLike | Mapping | Sequence, *,
                             reference_column: str | Sequence[str] | None = None,
                             error_value: float = 0.0) -> tuple[list[RewardFunction], list[float]]:
    """Separate reward functions and their weights, for ``GRPOTrainer(reward_funcs=...)`` and
    ``GRPOConfig(reward_weights=...)`` (TRL then logs every reward on its own).

    ``spec``: a reward-spec file, a list of entries, or one scorer name / dotted function path.
    Names are made unique (``bleu``, ``bleu_2``) so TRL's per-reward logs do not collide; an entry's
    ``reference_column`` overrides the one given here.
    """
    if isinstance(spec, str) and "\n" not in spec and not _looks_like_path(spec):
        spec = [spec]  # one registered scorer or dotted function
    entries = load_reward_spec(spec)
    funcs, weights = [], []
    for e, nm in zip(entries, unique_names([e["alias"] or e["name"] for e in entries])):
        if is_dotted_reward(e["name"]):
            funcs.append(dotted_reward(e["name"], name=nm, kwargs=e["kwargs"],
                                       reference_column=e["reference_column"] or reference_column,
                                       error_value=error_value))
        else:
            funcs.append(RewardFunction(e["name"], scorer_kwargs=e["kwargs"],
                                        reference_column=e["reference_column"] or reference_column, name=nm,
                                        error_value=error_value))
        weights.append(e["weight"])
    return funcs, weights


def check_reward_spec(spec: str | os.PathLike | Mapping | Sequence) -> list[dict[str, Any]]:
    """The entries of a reward spec with every name checked (a registered scorer or alias, or an importable
    dotted function), building no scorer: what ``--dry-run`` can afford."""
    from reward.base import scorer_name

    if isinstance(spec, str) and "\n" not in spec and not _looks_like_path(spec):
        spec = [spec]
    entries = load_reward_spec(spec)
    for e in entries:
        if is_dotted_reward(e["name"]):
            import_dotted(e["name"])
        else:
            scorer_name(e["name"])
    return entries


class CompositeReward:
    """A weighted sum of reward functions as one TRL reward function.

    ``score = sum(w_i * f_i)`` (divided by ``sum(|w_i|)`` when ``normalize``). ``funcs`` and
    ``weights`` are public, so the same object can also feed TRL's ``reward_funcs``/``reward_weights``.
    The last batch's per-part scores are in ``last_parts`` (name -> list).
    """

    def __init__(self, funcs: Sequence[RewardFunction], weights: Sequence[float], *, name: str = "composite",
                 normalize: bool = False) -> None:
        if len(funcs) != len(weights) or not funcs:
            raise RewardError(f"composite reward needs as many weights as functions ({len(funcs)} vs {len(weights)})")
        self.funcs = list(funcs)
        self.weights = [float(w) for w in weights]
        self.normalize = bool(normalize)
        self.__name__ = name
        self.last_parts: dict[str, list[float]] = {}

    def __repr__(self) -> str:
        parts = ", ".join(f"{w:g}*{f.__name__}" for f, w in zip(self.funcs, self.weights))
        return f"CompositeReward({self.__name__!r}: {parts})"

    @property
    def n_errors(self) -> int:
        return sum(f.n_errors for f in self.funcs)

    def __call__(self, prompts: Any = None, completions: Any = None, completion_ids: Any = None,
                 **columns: Any) -> list[float]:
        completions = list(completions) if completions is not None else None
        if completions is None:
            raise RewardError(f"reward '{self.__name__}' called without completions")
        total = [0.0] * len(completions)
        self.last_parts = {}
        for f, w in zip(self.funcs, self.weights):
            part = f(prompts=prompts, completions=completions, completion_ids=completion_ids, **columns)
            self.last_parts[f.__name__] = part
            for i, s in enumerate(part):
                total[i] += w * s
        if self.normalize:
            z = sum(abs(w) for w in self.weights) or 1.0
            total = [t / z for t in total]
        return [finite(t) for t in total]


def make_composite_reward(spec: str | os.PathLike | Mapping | Sequence, *, name: str = "composite",
                          normalize: bool = False, reference_column: str | Sequence[str] | None = None,
                          error_value: float = 0.0) -> CompositeReward:
    """One reward function: the weighted sum of the spec's rewards (see :func:`load_reward_spec`).

    A dict spec may also carry ``name`` and ``normalize``.
    """
    if isinstance(spec, Mapping) and "rewards" in spec:
        name = spec.get("name", name)
        normalize = bool(spec.get("normalize", normalize))
        spec = {"rewards": spec["rewards"]}
    funcs, weights = reward_funcs_and_weights(spec, reference_column=reference_column, error_value=error_value)
    return CompositeReward(funcs, weights, name=name, normalize=normalize)


class TaskRoutedReward:
    """A reward function that scores only the rows of some tasks (multi-task GRPO, ``pairs sample``).

    ``func`` (a TRL reward function) is called on the rows whose ``task`` column is in ``tasks``, with every
    per-row column cut to those rows; the other rows get ``None``, which TRL's GRPO trainer reads as "not
    applicable" (NaN, left out of the weighted sum and of this reward's logged mean). Rows without a
    ``task`` column count as ``report``. The logged name is ``<func name>@<tasks joined by +>``.
    """

    def __init__(self, func: Callable, tasks: Sequence[str], *, name: str | None = None) -> None:
        if not tasks:
            raise RewardError("a task-routed reward needs at least one task")
        self.func = func
        self.tasks = frozenset(tasks)
        self.__name__ = name or f"{getattr(func, '__name__', 'reward')}@{'+'.join(sorted(self.tasks))}"

    def __repr__(self) -> str:
        return f"TaskRoutedReward({self.__name__!r})"

    @property
    def n_errors(self) -> int:
        return int(getattr(self.func, "n_errors", 0))

    def __call__(self, prompts: Any = None, completions: Any = None, completion_ids: Any = None,
                 **columns: Any) -> list[float | None]:
        if completions is None:
            raise RewardError(f"reward '{self.__name__}' called without completions")
        completions = list(completions)
        n = len(completions)
        tasks = columns.get("task")
        tasks = list(tasks) if isinstance(tasks, list | tuple) and len(tasks) == n else ["report"] * n
        idx = [i for i, t in enumerate(tasks) if (t or "report") in self.tasks]
        out: list[float | None] = [None] * n
        if not idx:
            return out

        def cut(v: Any) -> Any:
            return [v[i] for i in idx] if isinstance(v, list | tuple) and len(v) == n else v

        part = self.func(prompts=cut(list(prompts)) if prompts is not None else None,
                         completions=[completions[i] for i in idx],
                         completion_ids=cut(list(completion_ids)) if completion_ids is not None else None,
                         **{k: cut(v) for k, v in columns.items()})
        for i, s in zip(idx, part):
            out[i] = s
        return out
