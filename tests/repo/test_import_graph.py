"""The packages' import graph, function-level imports included: no cycles, and the layering of
docs/design.md (cxr_io <- data_prep, reward <- evaluation <- mllm_cxr; reward and data_prep never import
evaluation or mllm_cxr, evaluation never imports mllm_cxr)."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.builders.repo import REPO

PACKAGES = ("cxr_io", "data_prep", "reward", "evaluation", "mllm_cxr")


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(name: str, modules: set[str]) -> str | None:
    """The project module an imported name lives in (``pkg.mod.func`` -> ``pkg.mod``), else None."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports anywhere in its body (top level or inside functions)."""
    files = {_module_name(p): p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py")}
    modules = set(files)
    graph: dict[str, set[str]] = {}
    for mod, path in files.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            for n in names:
                target = _resolve(n, modules)
                if target and target != mod and target.split(".")[0] in PACKAGES:
                    deps.add(target)
        graph[mod] = deps
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_cycle_finder_finds_a_cycle():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    graph = import_graph()
    assert "mllm_cxr.infer.generate" in graph and "mllm_cxr.vllm_support" in graph  # the walk saw the packages
    assert find_cycles(graph) == []


def test_layering():
    graph = import_graph()
    for mod, deps in graph.items():
        pkg = mod.split(".")[0]
        if pkg == "cxr_io":  # its modules import one another (the error type, the readers), nothing else
            assert not {d for d in deps if d.split(".")[0] != "cxr_io"}, (mod, deps)
        if pkg in ("reward", "data_prep"):
            assert not {d for d in deps if d.startswith(("mllm_cxr", "evaluation"))}, (mod, deps)
        if pkg == "evaluation":
            assert not {d for d in deps if d.startswith("mllm_cxr")}, (mod, deps)
        if pkg == "reward":
            assert not {d for d in deps if d.startswith("data_prep")}, (mod, deps)
        if pkg == "data_prep":  # the label names and the shared cue lexicon are all data_prep takes from reward
            assert {d for d in deps if d.startswith("reward")} <= {"reward.constants", "reward.cues"}, (mod, deps)
    # the metric table is data: the HTML report reads its labels without the scorers or the evaluation
    assert graph["reward.metric_table"] <= {"cxr_io.registry"}
    # evaluation in one place: the verbs, the report and generate's writer use its modules, which the walk sees
    assert {"evaluation.groups", "evaluation.report.options", "evaluation.score"} <= graph["evaluation.cli"]
    assert "evaluation.predictions" in graph["mllm_cxr.infer.generate"] & graph["mllm_cxr.infer.shard"]
    assert "evaluation.statistics" in graph["mllm_cxr.demo"]
    # the cue lexicon is data: it imports nothing of reward but the error type
    assert {d for d in graph["reward.cues"] if d.startswith("reward")} <= {"reward.base"}
    # the vLLM facts are a leaf: export, generate and serve import it, it imports none of them
    assert not graph["mllm_cxr.vllm_support"] & {"mllm_cxr.infer.export", "mllm_cxr.infer.generate", "mllm_cxr.infer.serve"}
    assert "mllm_cxr.vllm_support" in graph["mllm_cxr.infer.export"] & graph["mllm_cxr.infer.generate"] & graph["mllm_cxr.infer.serve"]
    # one run-config module, one inference loader: the others use them
    for user in ("mllm_cxr.infer.generate", "mllm_cxr.infer.export"):
        assert {"mllm_cxr.run_config", "mllm_cxr.infer.loader"} <= graph[user], user
    assert "mllm_cxr.infer.loader" in graph["mllm_cxr.infer.serve"]
    # the subpackages: cli/ drives train/ and infer/, which never import each other or cli/; the shared
    # top-level modules (config, data, prompts, modeling, run_config, ...) import none of the three
    for mod, deps in graph.items():
        sub = mod.split(".")[1] if mod.startswith("mllm_cxr.") else None
        if sub in ("train", "infer"):
            other = "infer" if sub == "train" else "train"
            assert not {d for d in deps if d.startswith((f"mllm_cxr.{other}", "mllm_cxr.cli"))}, (mod, deps)
        elif mod.startswith("mllm_cxr") and sub not in ("cli", "demo"):  # the demo drives the verbs, as cli/ does
            assert not {d for d in deps if d.startswith(("mllm_cxr.train", "mllm_cxr.infer", "mllm_cxr.cli"))}, \
                (mod, deps)


def test_one_home_for_the_run_config_and_the_jsonl_readers():
    """Only mllm_cxr/run_config.py names the run-config file; JSONL is parsed only by cxr_io (and by the
    predictions format's resumable writer, which must tolerate a line cut short by a killed run)."""
    allowed_loads = {"cxr_io/readers.py", "evaluation/predictions.py"}
    for pkg in PACKAGES:
        for path in (REPO / pkg).rglob("*.py"):
            rel = path.relative_to(REPO).as_posix()
            text = path.read_text(encoding="utf-8")
            if rel != "mllm_cxr/run_config.py":
                assert '"mllm_cxr_config.json"' not in text, rel
            if rel not in allowed_loads:
                assert "for line in fh" not in text or "json.loads(line)" not in text, rel


# ------------------------------------------------------------------------------------------------
# The registries: explicit tables whose every row imports
# ------------------------------------------------------------------------------------------------


def test_a_registry_row_with_a_typo_is_an_error_naming_the_row():
    import pytest

    from cxr_io.registry import RegistryError, import_entry

    with pytest.raises(RegistryError, match=r"T: row 'x' names module 'reward\.chexpertt'"):
        import_entry("T", "x", "reward.chexpertt:ChexpertF1Scorer")
    with pytest.raises(RegistryError, match=r"T: row 'x' .* reward\.chexpert has no 'ChexpertF1Scorr'"):
        import_entry("T", "x", "reward.chexpert:ChexpertF1Scorr")


def test_every_scorer_row_imports_a_scorer_factory():
    from reward.base import BUILTIN_SCORERS, Scorer, available_scorers, scorer_factory

    assert set(BUILTIN_SCORERS) <= set(available_scorers())
    for name in BUILTIN_SCORERS:
        factory = scorer_factory(name)
        assert isinstance(factory, type) and issubclass(factory, Scorer) and factory.name == name, (name, factory)


def test_every_metric_row_imports_its_group_builder():
    from reward.metric_table import METRICS

    groups = [s for s in METRICS if s.group]
    assert groups and all(callable(s.builder()) for s in groups)


def test_every_converter_row_imports_a_function():
    from data_prep.prepare import DATASETS, _converter

    for name in DATASETS:
        assert callable(_converter(name)), name


def test_every_verb_row_registers_exactly_its_verbs():
    import argparse

    from cxr_io.registry import import_entry
    from mllm_cxr.cli import VERB_MODULES, build_parser

    sub = argparse.ArgumentParser().add_subparsers()  # in table order: a row may extend an earlier verb
    for module, verbs in VERB_MODULES.items():
        before = list(sub.choices)
        import_entry("VERB_MODULES", module, f"{module}:register")(sub)
        assert tuple(v for v in sub.choices if v not in before) == verbs, module
    choices = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert list(choices) == [v for verbs in VERB_MODULES.values() for v in verbs]
