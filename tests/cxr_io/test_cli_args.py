"""Every verb's options come from dataclass fields (cxr_io.cli_args), and an option the verbs share is
declared once: its help lives on one field."""

from __future__ import annotations

import argparse
import contextlib
import io
from dataclasses import dataclass
from typing import ClassVar, Literal

import pytest

from cxr_io import cli_args
from cxr_io.cli_args import Verb, build_parser, from_namespace, opt, option_fields, part, variant
from tests.builders.repo import REPO

#: The modules whose options are dataclass fields: none calls ``add_argument`` itself.
CONVERTED = ("mllm_cxr/cli/__init__.py", "mllm_cxr/cli/model.py", "mllm_cxr/cli/pairs.py", "data_prep/cli.py",
             "data_prep/phantom/cli.py", "reward/cli_label.py", "mllm_cxr/tiny.py", "mllm_cxr/pretrain.py",
             "mllm_cxr/demo.py", "mllm_cxr/train/vllm_server.py", "evaluation/cli.py",
             "evaluation/report/options.py")
#: Verbs not built from dataclasses: launch hands its arguments to accelerate untouched.
NOT_CONVERTED = {"launch"}


def _parsers(p: argparse.ArgumentParser, name: str = "mllm-cxr"):
    yield name, p
    for a in p._actions:
        if isinstance(a, argparse._SubParsersAction):
            for k, sp in a.choices.items():
                yield from _parsers(sp, f"{name} {k}")


def _verb_parsers():
    from mllm_cxr.cli import build_parser as mllm_parser

    for name, p in _parsers(mllm_parser()):
        if name.split()[1:2] and name.split()[1] in NOT_CONVERTED:
            continue
        if not any(isinstance(a, argparse._SubParsersAction) for a in p._actions) and name != "mllm-cxr":
            yield name, p


@pytest.mark.parametrize("path", CONVERTED)
def test_no_add_argument_left(path):
    assert ".add_argument(" not in (REPO / path).read_text(encoding="utf-8")


def test_every_option_of_every_verb_is_a_field():
    seen = 0
    for name, p in _verb_parsers():
        cls = p._defaults.get("verb_args")
        assert cls is not None, f"{name}: not added by cxr_io.cli_args.add_verb"
        fields = {path.rpartition(".")[2] for path, _, _ in option_fields(cls)}
        dests = {a.dest for a in p._actions if not isinstance(a, argparse._HelpAction)}
        assert dests == fields, name
        seen += 1
    assert seen >= 21  # generate, merge-predictions, export, serve, tiny, label, score, eval, report, pairs x2,
    # prepare x10
    assert {"mllm-cxr score", "mllm-cxr eval", "mllm-cxr report"} <= {name for name, _ in _verb_parsers()}


def _declared(names):
    """option name -> the classes that declare it, over every converted verb."""
    out: dict[str, set[type]] = {n: set() for n in names}
    for _, p in _verb_parsers():
        for path, _, origin in option_fields(p._defaults["verb_args"]):
            n = path.rpartition(".")[2]
            if n in out:
                out[n].add(origin)
    return out


def test_a_shared_option_is_declared_once():
    from data_prep.cli import PreparePixelArgs
    from evaluation.report.options import ReportOptionArgs
    from mllm_cxr.cli.model import ServeArgs

    d = _declared(("data_root", "quiet", "dtype", "model", "trust_remote_code", "min_pixels", "max_pixels",
                   "adapter", "max_new_tokens", "temperature", "context", "max_images", "sort", "no_text", "include",
                   "figure", "thumb_cache"))
    assert d["data_root"] == {cli_args.DataRootArgs}
    assert d["quiet"] == {cli_args.QuietArgs}  # score, eval and report too
    # report's options and eval --html's: one part
    assert d["sort"] == d["no_text"] == d["include"] == d["figure"] == d["thumb_cache"] == {ReportOptionArgs}
    assert d["dtype"] == d["model"] == d["trust_remote_code"] == {cli_args.ModelLoadArgs}
    # prepare's budget is the image cache's (defaults, "must match the processor"): its own help
    assert d["min_pixels"] == d["max_pixels"] == {cli_args.PixelBudgetArgs, PreparePixelArgs}
    assert d["adapter"] == {cli_args.ModelLoadArgs, ServeArgs}  # serve's is repeatable NAME=DIR
    from mllm_cxr.infer.generate import GenerationSettings
    from mllm_cxr.prompts import PromptConfig

    assert d["max_new_tokens"] >= {GenerationSettings} and d["temperature"] == {GenerationSettings}
    assert d["context"] == {PromptConfig}
    assert {cls.__name__ for cls in d["max_images"]} == {"PromptConfig", "ServeArgs"}  # serve: per request


def test_the_help_is_the_fields():
    from mllm_cxr.cli import build_parser as mllm_parser

    gen = dict(_parsers(mllm_parser()))["mllm-cxr generate"]
    helps = {a.dest: a.help for a in gen._actions}
    assert helps["data_root"] == cli_args.DataRootArgs.__dataclass_fields__["data_root"].metadata["help"]
    from mllm_cxr.prompts import PromptConfig

    assert helps["sections"] == PromptConfig.__dataclass_fields__["sections"].metadata["help"]
    titles = [g.title for g in gen._action_groups]
    assert len(titles) == len(set(titles))  # one group per title, whichever part names it


def test_eval_html_takes_the_report_options():
    """``eval --html`` and ``report`` parse the report's options into the same part, grouped under --html in eval."""
    from evaluation.cli import HTML_GROUP, EvalArgs, ReportArgs
    from evaluation.report.options import ReportOptionArgs
    from mllm_cxr.cli import build_parser as mllm_parser

    parsers = dict(_parsers(mllm_parser()))
    flags = ["--sort", "delta_bleu", "--shareable", "--include", "images", "--figure", "a=b.png", "--figure", "c=d.png"]
    ev = parsers["mllm-cxr eval"].parse_args(["--pred", "p", "--out", "o", "--html", *flags])
    rep = parsers["mllm-cxr report"].parse_args(["--eval", "o", *flags])
    a, b = from_namespace(EvalArgs, ev), from_namespace(ReportArgs, rep)
    assert isinstance(a.page, ReportOptionArgs) and a.page == b.page and a.html and a.quiet is False
    assert (a.sort, a.no_text, a.include, a.figure) == ("delta_bleu", True, "images", ["a=b.png", "c=d.png"])
    html = next(g for g in parsers["mllm-cxr eval"]._action_groups if g.title == HTML_GROUP)
    assert {x.dest for x in html._group_actions} == {"html"} | {f.name for _, f, _ in option_fields(ReportOptionArgs)}


# ------------------------------------------------------------------------------------------------
# The binder
# ------------------------------------------------------------------------------------------------
@dataclass(kw_only=True)
class _Shared:
    _argument_group_name: ClassVar[str | None] = "shared"
    level: int = opt("a level", default=3)
    mode: Literal["a", "b"] = opt("a mode", default="a")


_Deep = variant(_Shared, "_Deep", only=("level",), defaults={"level": 5}, flags={"level": "--depth"}, group=None)


@dataclass(kw_only=True)
class _Args(Verb):
    src: str = opt("input", positional=True)
    files: list[str] | None = opt("more", default=None, action="append", metavar="F")
    out: str = opt("output")
    fast: bool = opt("go fast", default=False)
    prior: bool | None = opt("prior", default=None)
    shared: _Shared = part()


@dataclass(kw_only=True)
class _Twice(Verb):
    shared: _Shared = part()
    deep: _Deep = part()


@dataclass(kw_only=True)
class _DeepOnly(Verb):
    deep: _Deep = part()


def _parse(argv):
    return from_namespace(_Args, build_parser(_Args, prog="t").parse_args(argv))


def test_binder_types_defaults_and_parts():
    with pytest.raises(SystemExit), contextlib.redirect_stderr(io.StringIO()):
        _parse(["x"])  # --out is required
    a = _parse(["x", "--out", "o", "--files", "1", "--files", "2", "--fast", "--no-prior", "--level", "4",
                "--mode", "b"])
    assert (a.src, a.out, a.files, a.fast, a.prior) == ("x", "o", ["1", "2"], True, False)
    assert isinstance(a.shared, _Shared) and (a.shared.level, a.mode) == (4, "b")  # a.mode: through the part
    assert [g.title for g in build_parser(_Args)._action_groups][-1] == "shared"
    with pytest.raises(SystemExit), contextlib.redirect_stderr(io.StringIO()):
        _parse(["x", "--out", "o", "--mode", "c"])  # Literal -> choices


def test_variant_keeps_the_help_and_changes_only_what_it_says():
    depth = next(a for a in build_parser(_DeepOnly)._actions if "--depth" in a.option_strings)
    assert (depth.dest, depth.default, depth.help, depth.metavar, depth.type) == ("level", 5, "a level", "DEPTH", int)
    assert [o for _, _, o in option_fields(_DeepOnly)] == [_Shared]  # declared by the shared part
    assert from_namespace(_DeepOnly, build_parser(_DeepOnly).parse_args(["--depth", "7"])).level == 7


def test_an_option_declared_by_two_parts_is_refused():
    with pytest.raises(TypeError, match="'level'.*twice"):
        build_parser(_Twice)
