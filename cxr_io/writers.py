"""Writers: outputs go to a temporary name beside the target and are renamed on success (:func:`atomic_write`,
:func:`atomic_dir`, :func:`write_jsonl`); an output that is one of the inputs is refused (:func:`check_output`)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cxr_io.errors import InputError, PathLike


def _same_path(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def _inside(child: Path, folder: Path) -> bool:
    """``child`` is ``folder`` or lies under it (links resolved)."""
    try:
        return child.resolve().is_relative_to(folder.resolve())
    except (OSError, RuntimeError):
        return False


def check_disjoint(out: PathLike, inputs: Iterable[PathLike | None] = (), *, flag: str = "--out",
                   folder: bool = False) -> None:
    """The one output-safety rule of every verb and recipe: an output is never an input, never lies inside an
    input folder, and an output *folder* (``folder``) never holds an input (its files could replace it)."""
    o = Path(out)
    for i in inputs:
        if i is None or str(i) == "":
            continue
        ip = Path(i)
        if _same_path(o, ip):
            what = "folder" if ip.is_dir() else "file"
            raise InputError(f"{flag} is the input {what} {ip}; choose another output path "
                             "(an output never overwrites an input)", file=o)
        if ip.is_dir() and _inside(o, ip):
            raise InputError(f"{flag} lies inside the input folder {ip}; choose an output path outside it "
                             "(an output never writes into an input)", file=o)
        if folder and ip.exists() and _inside(ip, o):
            raise InputError(f"{flag} is (or contains) the input {ip}; choose another output folder "
                             "(an output never overwrites an input)", file=o)


def check_output(out: PathLike, inputs: Iterable[PathLike | None] = (), *, flag: str = "--out") -> Path:
    """Refuse an output that is one of the inputs, lies inside an input folder or under a file; create its
    folder."""
    o = Path(out)
    check_disjoint(o, inputs, flag=flag)
    make_parent(o, flag=flag)
    return o


def make_parent(path: PathLike, *, flag: str = "--out") -> None:
    """Create ``path``'s folder; a parent that is a file is an error naming it."""
    parent = Path(path).parent
    for p in (parent, *parent.parents):
        if p.exists():
            if not p.is_dir():
                raise InputError(f"{flag}: {p} is a file, so {path} cannot be created under it; choose another "
                                 "output path", file=path)
            break
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"{flag}: cannot create the folder {parent} ({e.strerror or e})", file=path) from None


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


@contextlib.contextmanager
def atomic_write(path: PathLike, mode: str = "w", *, inputs: Iterable[PathLike | None] = (),
                 flag: str = "--out", encoding: str | None = "utf-8", newline: str | None = None):
    """Open a temporary file beside ``path``; on success it replaces ``path`` (``os.replace``), on
    any exception it is removed and ``path`` is left as it was."""
    p = check_output(path, inputs, flag=flag)
    if p.is_dir():
        raise InputError(f"{flag} is a folder; give a file name", file=p)
    tmp = _tmp_name(p)
    kw = {} if "b" in mode else {"encoding": encoding, "newline": newline}
    try:
        fh = open(tmp, mode, **kw)
    except OSError as e:
        raise InputError(f"{flag}: cannot write ({e.strerror or e})", file=p) from None
    try:
        with fh:
            yield fh
        os.replace(tmp, p)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def write_text_atomic(path: PathLike, text: str, *, inputs: Iterable[PathLike | None] = (),
                      flag: str = "--out") -> Path:
    with atomic_write(path, inputs=inputs, flag=flag) as fh:
        fh.write(text)
    return Path(path)


def write_jsonl(path: PathLike, rows: Iterable[Any], *, inputs: Iterable[PathLike | None] = (),
                flag: str = "--out", ensure_ascii: bool = False) -> int:
    """Write one JSON value per line, atomically; returns the number of lines."""
    n = 0
    with atomic_write(path, inputs=inputs, flag=flag) as fh:
        for row in rows:
            fh.write((row if isinstance(row, str) else json.dumps(row, ensure_ascii=ensure_ascii)) + "\n")
            n += 1
    return n


def begin_dir(path: PathLike, *, overwrite: bool = False, flag: str = "--out",
              inputs: Iterable[PathLike | None] = ()) -> Path:
    """Check ``path`` as an output folder and make a temporary folder beside it to fill (see
    :func:`atomic_dir`); finish with :func:`commit_dir` or :func:`abort_dir`."""
    p = Path(path)
    check_disjoint(p, inputs, flag=flag, folder=True)
    if p.exists() and not p.is_dir():
        raise InputError(f"{flag} is an existing file; give a folder path", file=p)
    if p.is_dir() and any(p.iterdir()) and not overwrite:
        raise InputError(f"{flag} exists and is not empty; choose a new folder or pass --overwrite", file=p)
    make_parent(p, flag=flag)
    tmp = Path(tempfile.mkdtemp(prefix=f".{p.name}.tmp-", dir=p.parent))
    os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp's 0700 would survive the rename: honour the umask
    return tmp


def current_umask() -> int:
    """The process umask, read without changing it where Linux reports it (else set and restored at once)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def honour_umask(path: PathLike) -> None:
    """Give ``path`` and everything under it the modes the umask gives new files (0666) and folders (0777).
    Writers that go through a temporary file of their own keep its 0600 after their rename (safetensors'
    ``save_file``, hence every adapter and model weights file), and mkdtemp's folders are 0700: an output
    folder shared with a group would then hold weights nobody else can read."""
    mask = current_umask()
    root = Path(path)
    for p in [root, *root.rglob("*")] if root.is_dir() else [root]:
        if p.is_symlink():
            continue
        mode = (0o777 if p.is_dir() else 0o666) & ~mask
        with contextlib.suppress(OSError):
            if p.stat().st_mode & 0o777 != mode:
                os.chmod(p, mode)


def commit_dir(tmp: PathLike, path: PathLike) -> None:
    """Put the filled temporary folder in place of ``path`` (an old ``path`` is removed only now), its files
    and folders given the umask's modes first (:func:`honour_umask`)."""
    p, t = Path(path), Path(tmp)
    honour_umask(t)
    if p.exists():
        old = p.with_name(f".{p.name}.old-{os.getpid()}")
        os.replace(p, old)
        os.replace(t, p)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(t, p)


def abort_dir(tmp: PathLike) -> None:
    shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def atomic_dir(path: PathLike, *, overwrite: bool = False, flag: str = "--out",
               inputs: Iterable[PathLike | None] = ()):
    """A temporary folder beside ``path`` to fill; on success it becomes ``path`` (a non-empty ``path``
    is refused unless ``overwrite``), on failure it is removed, so a failed run never blocks a rerun."""
    tmp = begin_dir(path, overwrite=overwrite, flag=flag, inputs=inputs)
    try:
        yield tmp
        commit_dir(tmp, path)
    except BaseException:
        abort_dir(tmp)
        raise


def check_safetensors(path: PathLike, *, role: str = "weights") -> Path:
    """A ``.safetensors`` file that exists and has a readable header (8-byte length + JSON), else
    :class:`InputError` naming it: catches zero-byte, truncated and non-safetensors files up front."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{role} file not found", file=p)
    size = p.stat().st_size
    problem = None
    if size < 8:
        problem = "the file is empty" if size == 0 else f"the file has only {size} bytes"
    else:
        with open(p, "rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            if n <= 0 or 8 + n > size:
                problem = "the header length does not fit the file (truncated or not safetensors)"
            else:
                try:
                    header = json.loads(fh.read(n).decode("utf-8"))
                    if not isinstance(header, dict):
                        problem = "the header is not a JSON object"
                except (UnicodeDecodeError, json.JSONDecodeError):
                    problem = "the header is not valid JSON (not a safetensors file)"
    if problem:
        raise InputError(f"unreadable safetensors {role}: {problem}; re-save or re-copy it", file=p)
    return p
