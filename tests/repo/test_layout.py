"""The tests mirror the product: one folder per package (tests/cxr_io, tests/data_prep, tests/reward,
tests/mllm_cxr), tests/e2e and tests/repo for what spans them, and tests/builders for what tests share.

A test module imports no other test module (nor tests/conftest.py, whose fixtures pytest gives every folder):
what two modules need lives in tests/builders. bench/ imports tests/builders only. Imports inside functions and
``pytest_plugins`` count.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

from tests.builders.repo import REPO

TESTS = REPO / "tests"
#: Folders of tests/ that are not a product package's: tests spanning the packages, shared builders, data files.
OTHER_FOLDERS = {"e2e", "repo", "builders", "fixtures"}


def product_packages() -> list[str]:
    """The top-level packages the wheel ships (pyproject's ``packages.find`` include list)."""
    conf = tomllib.loads((REPO / "pyproject.toml").read_text())
    include = conf["tool"]["setuptools"]["packages"]["find"]["include"]
    return sorted({p.rstrip("*").rstrip(".") for p in include})


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports (anywhere in the file), ``from a import b`` counted as ``a`` and ``a.b``,
    and the modules named by ``pytest_plugins``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "pytest_plugins"
                                                  for t in node.targets):
            out.update(c.value for c in ast.walk(node.value) if isinstance(c, ast.Constant) and isinstance(c.value, str))
    return out


def modules_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("test_*.py") if "fixtures" not in p.relative_to(TESTS).parts)


def _is_test_module(name: str) -> bool:
    parts = name.split(".")
    return parts[0] == "tests" and (parts[-1].startswith("test_") or parts[-1] == "conftest")


def test_no_test_module_imports_another():
    bad = {}
    for path in [*modules_under(TESTS), *sorted((TESTS / "builders").rglob("*.py"))]:
        names = {m for m in imported_modules(path) if _is_test_module(m)}
        if names:
            bad[path.relative_to(REPO).as_posix()] = sorted(names)
    assert not bad, f"move what they share to tests/builders: {bad}"


def test_bench_imports_only_the_builders():
    bad = {}
    for path in sorted((REPO / "bench").rglob("*.py")):
        names = {m for m in imported_modules(path) if m.split(".")[0] == "tests"}
        names = {m for m in names if m != "tests" and not m.startswith("tests.builders")}
        if names:
            bad[path.relative_to(REPO).as_posix()] = sorted(names)
    assert not bad, f"bench/ may import tests/builders only: {bad}"


def test_each_product_package_has_its_test_folder_and_every_test_is_in_a_folder():
    packages = product_packages()
    assert {"cxr_io", "data_prep", "reward", "mllm_cxr"} <= set(packages), packages
    for pkg in packages:
        assert modules_under(TESTS / pkg), f"tests/{pkg}/ (the tests of the package {pkg}) has no test module"
    folders = {p.name for p in TESTS.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert folders <= set(packages) | OTHER_FOLDERS, f"a test folder that is no package: {folders - set(packages)}"
    loose = [p.name for p in TESTS.glob("test_*.py")]
    assert not loose, f"test modules at the top of tests/ (put them in their package's folder): {loose}"


def test_every_test_folder_is_a_package():
    """``tests/<folder>/__init__.py`` everywhere: test modules are imported as ``tests.<folder>.test_x``, so two
    folders may hold modules of the same name, and ``from tests.builders...`` works in every one of them."""
    missing = sorted(p.parent.relative_to(REPO).as_posix() for p in TESTS.rglob("*.py")
                     if "fixtures" not in p.parts and not (p.parent / "__init__.py").exists())
    assert not missing, f"no __init__.py in {sorted(set(missing))}"


def test_the_repository_path_comes_from_the_builders():
    """``Path(__file__).parents[1]`` breaks when a file moves a folder down: tests take REPO / FIXTURES / SHARED
    from tests.builders.repo (the fault recipe, a script, computes it the same way)."""
    allowed = {"tests/builders/repo.py", "tests/builders/fault_recipe.py"}
    bad = [p.relative_to(REPO).as_posix() for p in sorted(TESTS.rglob("*.py"))
           if p.relative_to(REPO).as_posix() not in allowed
           and any(isinstance(n, ast.Name) and n.id == "__file__" for n in ast.walk(ast.parse(p.read_text())))]
    assert not bad, f"use tests.builders.repo.REPO instead of __file__ in {bad}"
