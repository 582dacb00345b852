"""The bottom of the import graph: our one input-error type, JSONL/CSV readers and atomic writers.

Imported by ``data_prep``, ``reward`` and ``mllm_cxr`` alike, it imports nothing from them (and only the
standard library), so ``reward`` never needs ``mllm_cxr`` and ``data_prep`` never needs torch:

    data_prep ─┐
    reward ────┼─> cxr_io   (stdlib only)
    mllm_cxr ──┘

- :class:`InputError`: the base of every "your input is wrong" exception (DataPrepError, RewardError,
  ConfigError, ExportError, ...). Command lines turn it into one line and exit code 2.
- :func:`read_jsonl` / :func:`write_jsonl`: one reader and one writer of JSON-lines files; every read
  error names ``file:line`` and what to do.
- :func:`iter_csv_rows`: CSV rows with a field-size limit large enough for any report, and unbalanced
  quotes detected (``strict``) instead of silently merging the rest of the file into one field.
- :func:`atomic_write` / :func:`atomic_dir`: outputs go to a temporary name beside the target and are
  renamed on success; an output that is one of the inputs is refused (:func:`check_output`).
- :func:`describe_error` and :func:`handle`: the one top-level handler every CLI and recipe uses.

The modules: :mod:`cxr_io.errors` (:class:`InputError`), :mod:`cxr_io.readers`, :mod:`cxr_io.writers` (atomic
writes, output checks), :mod:`cxr_io.handler` (the top-level handler); their public names are imported from
``cxr_io`` itself. :mod:`cxr_io.boxes`, :mod:`cxr_io.cli_args` and :mod:`cxr_io.registry` are imported by name.
"""

from __future__ import annotations

from cxr_io.errors import (
    InputError,
    PathLike,
)
from cxr_io.handler import (
    Terminated,
    debug_requested,
    describe_error,
    handle,
    sigterm_raises,
)
from cxr_io.readers import (
    first_bad_utf8_line,
    iter_csv_rows,
    not_utf8,
    open_text_checked,
    read_json,
    read_jsonl,
    read_text,
    read_yaml,
)
from cxr_io.writers import (
    abort_dir,
    atomic_dir,
    atomic_write,
    begin_dir,
    check_disjoint,
    check_output,
    check_safetensors,
    commit_dir,
    current_umask,
    honour_umask,
    make_parent,
    write_jsonl,
    write_text_atomic,
)

__all__ = ["InputError", "PathLike", "Terminated", "abort_dir", "atomic_dir", "atomic_write", "begin_dir",
           "check_disjoint", "check_output", "check_safetensors", "commit_dir", "current_umask",
           "debug_requested", "describe_error", "first_bad_utf8_line", "handle", "honour_umask",
           "iter_csv_rows", "make_parent", "not_utf8", "open_text_checked", "read_json", "read_jsonl",
           "read_text", "read_yaml", "sigterm_raises", "write_jsonl", "write_text_atomic"]
