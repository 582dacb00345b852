"""Command-line options as dataclass fields: every verb's options are one dataclass, parsed like TRL's scripts.

TRL's scripts parse dataclasses (``TrlParser((ScriptArguments, SFTConfig, ModelConfig))``, built on
transformers' ``HfArgumentParser``): the field's type gives the option's type, ``Literal`` its choices, a
field without a default is required, and ``metadata={"help": ...}`` is its help, written once. The verbs do
the same here, with the standard library only (``cxr_io`` is the floor every package imports), so that
``data_prep`` and ``reward`` keep their own entry points without transformers, and with the argparse details
the verbs have always had, which ``HfArgumentParser`` would change (dash spellings only, ``store_true`` flags,
``--x/--no-x`` for an optional bool, positionals, repeatable options, titled groups):

- :func:`opt` makes a field (``help``, ``aliases``, ``flag``, ``metavar``, ``choices``, ``action``, ``nargs``,
  ``positional``, ``group``); the metadata keys are ``HfArg``'s where they overlap;
- a field whose type is a dataclass is a *part*: its fields become options too, in the part's group
  (``_argument_group_name`` on the class, as in ``HfArgumentParser``, or ``part(group=...)``), and the
  parsed verb holds an instance of it (``args.load.dtype``; ``args.dtype`` reads through, see :class:`Verb`);
- :func:`variant` derives a part for one verb from a shared one: a subset of its fields, other defaults,
  required-ness or flag spelling, the help text staying where it was declared;
- :func:`add_verb` adds a sub-command whose options are the dataclass's fields and whose function receives
  the parsed dataclass; :func:`option_fields` lists the declared fields (the test that every option comes
  from a field and each shared option is declared once uses it).

The shared parts live here, for every package's verbs: :class:`DataRootArgs`, :class:`QuietArgs`,
:class:`PixelBudgetArgs`, :class:`ModelLoadArgs` (base model, adapter, dtype, pixel budget,
trust_remote_code) and :class:`DebugArgs`. Adding an option that several verbs share is one field in one of
them (docs/design.md, "Worked example: an option").
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import types
import typing
from collections.abc import Callable, Iterator
from typing import Any, ClassVar, Literal

MISSING = dataclasses.MISSING

#: The ``--dtype`` values every verb accepts (what ``mllm_cxr.modeling.resolve_dtype`` knows).
DTYPES = ("auto", "hardware", "bfloat16", "bf16", "float16", "fp16", "float32", "fp32")

_OPT_KEYS = ("help", "aliases", "flag", "metavar", "choices", "action", "nargs", "positional", "group")


def opt(help: str | None = None, *, default: Any = MISSING, default_factory: Any = MISSING,
        **extra: Any) -> Any:
    """A dataclass field that is a command-line option; no default (and no ``default_factory``) = required.

    ``extra`` (all optional): ``aliases`` (more option strings), ``flag`` (the option string, default
    ``--field-name``), ``metavar``, ``choices``, ``action`` (e.g. ``"append"``), ``nargs``, ``positional``
    (a positional argument, named after the field), ``group`` (the title of the help group it is listed in)."""
    bad = set(extra) - set(_OPT_KEYS)
    if bad:
        raise TypeError(f"opt(): unknown option keys {sorted(bad)}; known: {', '.join(_OPT_KEYS)}")
    metadata = {"help": help, **extra}
    return dataclasses.field(default=default, default_factory=default_factory, metadata=metadata)


def split_list(value: str | typing.Iterable[Any] | None) -> list[str]:
    """A list-valued option or config key: a YAML list, a comma-separated string, or a list whose items are
    themselves comma-separated (``--x a,b`` through ``nargs``) -> its stripped, non-empty items, in order."""
    items = [value] if isinstance(value, str) else list(value or [])
    return [x.strip() for it in items for x in str(it).split(",") if x.strip()]


def part(group: str | None = None, *, flat: bool = False) -> Any:
    """A field holding a part (a dataclass of options): its options go in the help group ``group`` (default:
    the part's ``_argument_group_name``), or with the verb's own options when ``flat``."""
    return dataclasses.field(metadata={"part": True, "group": group, "flat": flat})


def _parts(obj: Any) -> Iterator[Any]:
    for f in dataclasses.fields(obj):
        sub = obj.__dict__.get(f.name)
        if dataclasses.is_dataclass(sub) and not isinstance(sub, type):
            yield sub


def flat_values(obj: Any, *, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """Option name -> value of a parsed dataclass, its parts' options included (but not the parts in ``skip``)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        if f.name in skip:
            continue
        v = obj.__dict__.get(f.name)
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            out.update(flat_values(v))
        else:
            out[f.name] = v
    return out


class Verb:
    """Base of a verb's dataclass: ``args.name`` also finds ``name`` in its parts, at any depth (the flat view
    of the parsed options that argparse and ``HfArgumentParser`` give), so code written for a namespace reads
    the dataclass unchanged."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        todo = list(_parts(self))
        while todo:
            sub = todo.pop(0)
            if name in sub.__dict__:
                return sub.__dict__[name]
            todo.extend(_parts(sub))
        raise AttributeError(f"{type(self).__name__} has no option {name!r}")


def _hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except NameError as e:  # a name only known where the class was built (make_dataclass)
        raise TypeError(f"{cls.__name__}: cannot resolve the field types ({e})") from None


def _unwrap_optional(t: Any) -> tuple[Any, bool]:
    """``X | None`` -> (X, True); anything else -> (t, False)."""
    if typing.get_origin(t) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(t) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(t)) == 2:
            return args[0], True
        raise TypeError(f"{t}: an option has one type (X or X | None)")
    return t, False


def _is_part(f: dataclasses.Field, t: Any) -> bool:
    return dataclasses.is_dataclass(t) and isinstance(t, type)


def _init_fields(cls: type) -> Iterator[tuple[dataclasses.Field, Any, bool]]:
    """``(field, resolved type, is a part)`` for each ``__init__`` field of ``cls``: the one walk that
    :func:`option_fields`, :func:`add_arguments` and :func:`from_namespace` share."""
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        if f.init:
            yield f, hints[f.name], _is_part(f, hints[f.name])


def option_fields(cls: type, *, _prefix: str = "") -> Iterator[tuple[str, dataclasses.Field, type]]:
    """(path, field, declaring class) for every option of a verb's dataclass, parts included
    (``path`` is ``load.dtype`` for the ``dtype`` of the part ``load``)."""
    for f, t, is_part in _init_fields(cls):
        if is_part:
            yield from option_fields(t, _prefix=f"{_prefix}{f.name}.")
        else:
            yield f"{_prefix}{f.name}", f, getattr(cls, "__option_origin__", {}).get(f.name, cls)


def _group(parser: argparse.ArgumentParser, title: str | None, groups: dict) -> Any:
    if not title:
        return parser
    if title not in groups:  # one group per title, whichever part or field names it first
        groups[title] = parser.add_argument_group(title)
    return groups[title]


def _add_field(container: Any, f: dataclasses.Field, t: Any, dests: dict[str, str]) -> None:
    md = f.metadata
    if f.name in dests:  # argparse would let the last one win silently
        raise TypeError(f"option {f.name!r} is declared twice ({dests[f.name]}); declare it once, in one part")
    dests[f.name] = getattr(container, "title", None) or "the verb's own options"
    inner, optional = _unwrap_optional(t)
    default = (f.default if f.default is not MISSING
               else f.default_factory() if f.default_factory is not MISSING else MISSING)
    kw: dict[str, Any] = {}
    if md.get("help") is not None:
        kw["help"] = md["help"]
    action = md.get("action")
    if action is not None:
        kw["action"] = action
    elif inner is bool:
        kw["action"] = argparse.BooleanOptionalAction if (optional or default is True) else "store_true"
    elif typing.get_origin(inner) is Literal:
        kw["choices"] = typing.get_args(inner)
        first = kw["choices"][0]
        if not isinstance(first, str):
            kw["type"] = type(first)
    elif typing.get_origin(inner) is list:
        kw["nargs"] = "+"
        elem = typing.get_args(inner)[0]
        if elem is not str:
            kw["type"] = elem
    elif inner is not str and inner is not Any:
        kw["type"] = inner
    for key in ("metavar", "choices", "nargs"):
        if md.get(key) is not None:
            kw[key] = md[key]
    if md.get("positional"):
        if default is not MISSING:
            kw["default"] = default
            kw.setdefault("nargs", "?")
        container.add_argument(f.name, **kw)
        return
    if default is MISSING:
        kw["required"] = True
    else:
        kw["default"] = default
    flag = md.get("flag") or "--" + f.name.replace("_", "-")
    if md.get("flag") and "metavar" not in kw and kw.get("action") is None:
        kw["metavar"] = flag.lstrip("-").replace("-", "_").upper()  # --base BASE, not --base MODEL
    container.add_argument(flag, *md.get("aliases", ()), dest=f.name, **kw)


def add_arguments(parser: argparse.ArgumentParser, cls: type, *, _container: Any = None,
                  _groups: dict | None = None) -> None:
    """Add the options of a verb's dataclass (its fields, its parts' fields) to ``parser``."""
    groups = {"": {}} if _groups is None else _groups  # title -> group; "" -> the dests so far
    container = parser if _container is None else _container
    for f, t, is_part in _init_fields(cls):
        if is_part:
            title = None if f.metadata.get("flat") else (f.metadata.get("group")
                                                          or getattr(t, "_argument_group_name", None))
            target = _group(parser, title, groups) if title else container
            add_arguments(parser, t, _container=target, _groups=groups)
        else:
            _add_field(_group(parser, f.metadata.get("group"), groups) if f.metadata.get("group") else container,
                       f, t, groups[""])


def from_namespace(cls: type, ns: argparse.Namespace) -> Any:
    """The dataclass (its parts built first) from a parsed namespace."""
    return cls(**{f.name: from_namespace(t, ns) if is_part else getattr(ns, f.name)
                  for f, t, is_part in _init_fields(cls)})


def add_verb(subparsers: Any, name: str, cls: type, run: Callable[[Any], int], *,
             check: Callable[[argparse.Namespace], None] | None = None, **parser_kwargs: Any
             ) -> argparse.ArgumentParser:
    """Add the sub-command ``name`` with the options of ``cls``; it runs ``run(cls instance)``. ``check`` sees
    the namespace first (range checks whose one-line errors come before a part's own ``__post_init__``)."""
    p = subparsers.add_parser(name, **parser_kwargs)
    add_arguments(p, cls)

    def func(ns: argparse.Namespace) -> int:
        if check is not None:
            check(ns)
        return run(from_namespace(cls, ns))

    p.set_defaults(func=func, verb_args=cls)
    return p


def build_parser(cls: type, **parser_kwargs: Any) -> argparse.ArgumentParser:
    """A script's own parser for the options of ``cls`` (``from_namespace(cls, parser.parse_args(argv))``
    then gives the dataclass, like ``HfArgumentParser(cls).parse_args_into_dataclasses(argv)[0]``)."""
    p = argparse.ArgumentParser(**parser_kwargs)
    add_arguments(p, cls)
    return p


def parse(cls: type, argv: list[str] | None = None, **parser_kwargs: Any) -> Any:
    """The options of ``cls`` parsed from ``argv`` into the dataclass (a script's ``main``)."""
    return from_namespace(cls, build_parser(cls, **parser_kwargs).parse_args(argv))


def variant(cls: type, name: str, *, only: tuple[str, ...] | None = None, defaults: dict[str, Any] | None = None,
            required: tuple[str, ...] = (), help: dict[str, str] | None = None,
            flags: dict[str, str] | None = None, group: Any = MISSING, overrides: bool = False) -> type:
    """A part derived from the shared dataclass ``cls`` for some verbs: the fields in ``only`` (all by
    default, in ``cls``'s order), with other ``defaults``, made ``required``, another ``help`` where the
    option means something else there, or another option string (``flags``: field -> ``--flag``).
    ``overrides``: every field optional with default ``None`` (a list becomes a comma-separated string), for
    flags that override a configuration read elsewhere (generate's prompt flags over the adapter's prompt).
    The field's type and the rest of its metadata stay ``cls``'s, and :func:`option_fields` names ``cls`` as
    where the option is declared (the variant, for a field whose help it rewrites)."""
    hints = _hints(cls)
    defaults, help, flags = defaults or {}, help or {}, flags or {}
    by_name = {f.name: f for f in dataclasses.fields(cls)}
    names = list(only) if only is not None else [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = [n for n in [*names, *defaults, *required, *help, *flags] if n not in by_name]
    if unknown:
        raise TypeError(f"variant({cls.__name__}): no field {unknown[0]!r}")
    spec = []
    for n in names:
        f, t = by_name[n], hints[n]
        md = {**f.metadata, **({"help": help[n]} if n in help else {}), **({"flag": flags[n]} if n in flags else {})}
        if overrides:
            inner, _ = _unwrap_optional(t)
            t = (str if typing.get_origin(inner) is list else inner) | None
            new = dataclasses.field(default=None, metadata=md)
        elif n in required:
            new = dataclasses.field(metadata=md)
        elif n in defaults:
            new = dataclasses.field(default=defaults[n], metadata=md)
        elif f.default_factory is not MISSING:
            new = dataclasses.field(default_factory=f.default_factory, metadata=md)
        else:
            new = dataclasses.field(default=f.default, metadata=md)
        spec.append((n, t, new))
    new_cls = dataclasses.make_dataclass(name, spec, kw_only=True)
    new_cls.__module__ = sys._getframe(1).f_globals.get("__name__", __name__)  # (make_dataclass's module=: 3.12)
    origin = getattr(cls, "__option_origin__", {})
    new_cls.__option_origin__ = {n: new_cls if n in help else origin.get(n, cls) for n in names}
    new_cls._argument_group_name = getattr(cls, "_argument_group_name", None) if group is MISSING else group
    return new_cls


# ------------------------------------------------------------------------------------------------
# The shared parts
# ------------------------------------------------------------------------------------------------
@dataclasses.dataclass(kw_only=True)
class DebugArgs:
    """``--debug`` of every entry point (``mllm-cxr``, ``python -m data_prep.cli``)."""

    _argument_group_name: ClassVar[str | None] = None
    debug: bool = opt("show tracebacks for errors", default=False)


@dataclasses.dataclass(kw_only=True)
class QuietArgs:
    """``--quiet``: no progress bar (the summary line is still printed)."""

    _argument_group_name: ClassVar[str | None] = None
    quiet: bool = opt("no progress bars", default=False)


@dataclasses.dataclass(kw_only=True)
class DataRootArgs:
    """``--data-root``: where the records' relative image paths start (``data_prep.schema.resolve_data_root``)."""

    _argument_group_name: ClassVar[str | None] = None
    data_root: str | None = opt("root of the image paths (default: the one `prepare` recorded next to the "
                                "studies, else their folder)", default=None)


@dataclasses.dataclass(kw_only=True)
class PixelBudgetArgs:
    """The image pixel budget (Qwen2.5-VL's ``min_pixels``/``max_pixels``; 28x28 pixels per vision token).
    ``None``: the adapter's ``mllm_cxr_config.json``, else the processor's."""

    _argument_group_name: ClassVar[str | None] = None
    min_pixels: int | None = opt("image pixel budget, lower bound", default=None)
    max_pixels: int | None = opt("image pixel budget, upper bound", default=None)


@dataclasses.dataclass(kw_only=True)
class ModelLoadArgs:
    """What loads a model: the base, a LoRA adapter, the dtype, remote code. ``variant`` picks the fields a
    verb has (export names the base ``--base`` and needs the adapter; serve repeats ``--adapter``)."""

    _argument_group_name: ClassVar[str | None] = None
    model: str | None = opt("base model (hub id or folder), or a merged export", default=None)
    adapter: str | None = opt("LoRA adapter folder (a recipe's output_dir, a checkpoint or an export)",
                              default=None)
    dtype: str | None = opt(f"weights dtype: {' | '.join(DTYPES)} (auto: the checkpoint's)", default="auto")
    trust_remote_code: bool = opt("allow the checkpoint's own modelling code", default=False)
