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
- :func:`describe_error` and :func:`run_cli`: the one top-level handler every CLI and recipe uses.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import json
import os
import shutil
import sys
import tempfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

# Report columns can be long (CheXpert Plus "report" holds whole reports; a note can exceed 131,072 chars).
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))

PathLike = str | os.PathLike


class InputError(ValueError):
    """Bad input from the user: a file, field or value that is wrong, with what to do about it.

    ``file``/``line``/``field``/``value`` are kept as attributes; the message names them.
    """

    def __init__(self, message: str, *, file: PathLike | None = None, line: int | None = None,
                 field: str | None = None, value: object = None):
        self.file, self.line, self.field, self.value = (None if file is None else str(file)), line, field, value
        where = []
        if file is not None:
            where.append(str(file) + (f":{line}" if line is not None else ""))
        if field is not None:
            where.append(f"field '{field}'")
        if value is not None:
            v = repr(value)
            where.append(f"value {v[:80] + '...' if len(v) > 80 else v}")
        super().__init__(f"{', '.join(where)}: {message}" if where else message)


# ------------------------------------------------------------------------------------------------
# Reading
# ------------------------------------------------------------------------------------------------
def _decode_hint(e: UnicodeDecodeError) -> str:
    bad = e.object[e.start:e.start + 1].hex() if isinstance(e.object, bytes | bytearray) else "?"
    return f"not UTF-8 text (byte 0x{bad}); re-save the file as UTF-8"


def first_bad_utf8_line(path: PathLike) -> tuple[int | None, str]:
    """``(line number, hint)`` of the first line that is not UTF-8 (decoders read ahead, so the error they
    raise does not know its line); ``(None, hint)`` if the file cannot be re-read."""
    p = Path(path)
    try:
        fh = gzip.open(p, "rb") if p.suffix == ".gz" else open(p, "rb")
        with fh:
            for no, raw in enumerate(fh, start=1):
                try:
                    raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    return no, f"not UTF-8 text (byte 0x{raw[e.start:e.start + 1].hex()} at column {e.start + 1}); " \
                               "re-save the file as UTF-8"
    except (OSError, EOFError, zlib.error):
        pass
    return None, "not UTF-8 text; re-save the file as UTF-8"


def not_utf8(path: PathLike, error: type[InputError] = None) -> InputError:
    """The error for a file that is not UTF-8, naming its first bad line."""
    line, hint = first_bad_utf8_line(path)
    return (error or InputError)(hint, file=path, line=line)


def _require_file(p: Path, role: str, error: type[InputError]) -> None:
    """``p`` is an existing file, or ``error`` says it is missing or a folder."""
    if not p.exists():
        raise error(f"{role} file not found; check the path", file=p)
    if p.is_dir():
        raise error(f"{role} is a folder, expected a file", file=p)


def open_text_checked(path: PathLike, role: str = "input", error: type[InputError] = InputError) -> io.TextIOBase:
    """Open a UTF-8 text file (``.gz`` decompressed) or raise :class:`InputError` saying why it cannot be."""
    p = Path(path)
    _require_file(p, role, error)
    try:
        if p.suffix == ".gz":
            return io.TextIOWrapper(gzip.open(p, "rb"), encoding="utf-8", newline="")
        return open(p, encoding="utf-8", newline="")
    except OSError as e:
        raise error(f"cannot open {role} ({e.strerror or e})", file=p) from None


def read_jsonl(path: PathLike, *, role: str = "input", objects: bool = True,
               error: type[InputError] = InputError) -> Iterator[tuple[int, Any]]:
    """``(line number, value)`` for every non-blank line of a JSONL file (``.gz`` too).

    Anything wrong (missing file, folder, not UTF-8, corrupt gzip, invalid JSON, a value that is not
    an object when ``objects``) raises :class:`InputError` naming ``file:line``.
    """
    p = Path(path)
    fh = open_text_checked(p, role, error)
    lineno = 0
    with fh:
        while True:
            try:
                raw = fh.readline()
            except UnicodeDecodeError:
                raise not_utf8(p, error) from None
            except (EOFError, OSError, zlib.error) as e:
                raise error(f"cannot read {role}: corrupt or truncated ({e}); re-download or re-create it",
                                 file=p, line=lineno + 1) from None
            if not raw:
                return
            lineno += 1
            if not raw.strip():
                continue
            try:
                value = json.loads(raw)
            except json.JSONDecodeError as e:
                raise error(f"not valid JSON ({e.msg}, column {e.colno}); fix or remove the line",
                                 file=p, line=lineno) from None
            except RecursionError:
                raise error("JSON nested too deeply", file=p, line=lineno) from None
            if objects and not isinstance(value, dict):
                raise error(f"expected a JSON object per line, got {type(value).__name__}",
                                 file=p, line=lineno)
            yield lineno, value


def read_text(path: PathLike, *, role: str = "input", error: type[InputError] = InputError) -> str:
    """A whole text file (plain or .gz) with the one set of read errors."""
    fh = open_text_checked(path, role, error)
    with fh:
        try:
            text = fh.read()
        except UnicodeDecodeError:
            raise not_utf8(path, error) from None
        except (EOFError, OSError, zlib.error) as e:
            raise error(f"cannot read {role}: corrupt or truncated ({e})", file=path) from None
    return text


def read_json(path: PathLike, *, role: str = "input", error: type[InputError] = InputError) -> Any:
    """A whole JSON file, with the same errors as :func:`read_jsonl`."""
    text = read_text(path, role=role, error=error)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise error(f"not valid JSON ({e.msg}, column {e.colno})", file=path, line=e.lineno) from None
    except RecursionError:
        raise error("JSON nested too deeply", file=path) from None


_UNIQUE_LOADER = None


def _unique_key_loader():
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping (PyYAML keeps the last silently, so a
    duplicated ``learning_rate`` would train with whichever came second)."""
    global _UNIQUE_LOADER
    if _UNIQUE_LOADER is None:
        import yaml

        class UniqueKeyLoader(yaml.SafeLoader):
            def construct_mapping(self, node, deep=False):
                seen: dict[Any, int] = {}
                for key_node, _ in node.value:
                    if key_node.tag == "tag:yaml.org,2002:merge":
                        continue
                    key = self.construct_object(key_node, deep=True)
                    line = key_node.start_mark.line + 1
                    try:
                        if key in seen:
                            raise yaml.constructor.ConstructorError(
                                None, None, f"key {key!r} is given twice (lines {seen[key]} and {line}); keep one",
                                key_node.start_mark)
                        seen[key] = line
                    except TypeError:  # an unhashable key: PyYAML's own error follows
                        continue
                return super().construct_mapping(node, deep=deep)

        _UNIQUE_LOADER = UniqueKeyLoader
    return _UNIQUE_LOADER


def read_yaml(path: PathLike, *, role: str = "YAML file", error: type[InputError] = InputError) -> Any:
    """A YAML file (``yaml.safe_load``): missing, folder, not UTF-8 or invalid YAML raise ``error`` naming
    the file (and line, for a syntax error). PyYAML is imported here only (a core dependency)."""
    import yaml

    text = read_text(path, role=role, error=error)
    try:
        return yaml.load(text, Loader=_unique_key_loader())  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise error(f"not valid YAML ({' '.join(str(getattr(e, 'problem', None) or e).split())})", file=path,
                    line=line) from None
    except RecursionError:
        raise error("YAML nested too deeply", file=path) from None


def iter_csv_rows(path: PathLike, *, required: Iterable[str] = (), role: str = "CSV", encoding: str = "utf-8-sig",
                  error: type[InputError] = InputError) -> Iterator[tuple[int, dict[str, str]]]:
    """``(line number, row)`` of a CSV with a header; quotes must balance (an unclosed quote is an error
    naming the line where it opened, not a silent merge of the rest of the file)."""
    p = Path(path)
    _require_file(p, role, error)
    try:
        fh = (io.TextIOWrapper(gzip.open(p, "rb"), encoding=encoding, newline="") if p.suffix == ".gz"
              else open(p, encoding=encoding, newline=""))
    except OSError as e:
        raise error(f"cannot open {role} ({e.strerror or e})", file=p) from None
    with fh:
        reader = csv.reader(fh, strict=True)
        start = 1
        try:
            header = next(reader, None)
            if header is None:
                raise error(f"{role} is empty; expected a header row", file=p)
            missing = [c for c in required if c not in header]
            if missing:
                raise error(f"column(s) {', '.join(map(repr, missing))} not found "
                                 f"(columns: {', '.join(header[:40]) or 'none'})", file=p, line=1)
            start = reader.line_num + 1
            for values in reader:
                if values:
                    if len(values) > len(header):
                        raise error(f"{len(values)} fields but the header has {len(header)}; "
                                         "quote fields that contain commas", file=p, line=start)
                    yield start, dict(zip(header, values + [""] * (len(header) - len(values))))
                start = reader.line_num + 1
        except csv.Error as e:
            what = ("a quote opened here is never closed" if "end of data" in str(e)
                    else f"malformed CSV ({e})")
            raise error(f"{what}; fix the quoting of this row", file=p, line=start) from None
        except UnicodeDecodeError:
            raise not_utf8(p, error) from None
        except (EOFError, OSError, zlib.error) as e:
            raise error(f"cannot read {role}: corrupt or truncated ({e})", file=p, line=start) from None


# ------------------------------------------------------------------------------------------------
# Writing
# ------------------------------------------------------------------------------------------------
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


# ------------------------------------------------------------------------------------------------
# The one top-level handler
# ------------------------------------------------------------------------------------------------
def _chain(e: BaseException) -> Iterator[BaseException]:
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__


def describe_error(e: BaseException) -> str | None:
    """One line for an error that is the user's input (ours, or a common OS/decode/format error);
    ``None`` for anything else (a bug: the caller shows the traceback)."""
    if isinstance(e, InputError):
        return str(e)
    name, mod = type(e).__name__, type(e).__module__ or ""
    msg = str(e).strip().splitlines()[0] if str(e).strip() else name
    if isinstance(e, UnicodeDecodeError):
        return f"{_decode_hint(e)}"
    if isinstance(e, gzip.BadGzipFile | zlib.error | EOFError) or name in ("ReadError", "CompressionError") \
            and mod.startswith("tarfile"):
        return f"corrupt or truncated archive ({msg}); re-download or re-create it"
    if mod.startswith("yaml"):
        return f"not valid YAML: {' '.join(str(e).split())}"
    if name in ("SafetensorError", "HeaderTooLarge", "HeaderTooSmall") or "safetensor" in mod.lower():
        return f"unreadable safetensors file ({msg}); the file is empty, truncated or not safetensors"
    if name in ("HFValidationError", "RepositoryNotFoundError", "LocalEntryNotFoundError", "GatedRepoError",
                "OfflineModeIsEnabled"):
        return (f"{msg}; if this is a local folder, check the path (it does not exist), otherwise the hub "
                "id cannot be reached from this machine")
    if isinstance(e, FileNotFoundError | NotADirectoryError | IsADirectoryError | PermissionError | FileExistsError):
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        return f"{e.strerror or msg}{where}" if e.strerror else msg
    if isinstance(e, OSError):
        low = msg.lower()
        if "address already in use" in low:
            return f"{msg}; the port is taken: stop the other server or pick another --port"
        if e.errno is not None or "not a valid model identifier" in low or "does not appear to have" in low \
                or "local folder" in low or "can't load" in low:
            return msg
    if isinstance(e, ImportError):
        return f"{msg}; install the missing package"
    return None


#: Set by :func:`handle` once the work it runs has failed: a SIGTERM then (a launcher stopping every process after
#: this one's error) lets the process end with the line already printed instead of raising again.
_STOPPING = False


class Terminated(BaseException):
    """SIGTERM (a scheduler's stop, a launcher stopping the other ranks) turned into an exception by
    :func:`sigterm_raises`, so that atomic writes remove their temporary files and :func:`handle` prints one
    line and returns 143 (128 + SIGTERM). Its text, if any, says where the work stood. A ``BaseException``, so
    that library code catching ``Exception`` does not swallow it."""


@contextlib.contextmanager
def sigterm_raises():
    """While inside: SIGTERM raises :class:`Terminated` in this process's main thread (elsewhere, or in a
    forked child such as a DataLoader worker, SIGTERM keeps its default action)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pid = os.getpid()

    def raise_terminated(signum, frame):
        if os.getpid() != pid:  # a forked child inherited the handler: die as SIGTERM says
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        if _STOPPING:  # handle() is already ending the work with its one line: exit as it says, nothing more
            return
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _print_err(prog: str, text: str) -> None:
    one_line = " ".join(part.strip() for part in str(text).splitlines() if part.strip())
    print(f"{prog}: error: {one_line}", file=sys.stderr, flush=True)


def handle(fn: Callable[[], int | None], *, prog: str, debug: bool = False) -> int:
    """Run ``fn``; user errors -> one line on stderr and 2, Ctrl-C -> one line and 130, :class:`Terminated`
    (SIGTERM under :func:`sigterm_raises`) -> one line and 143; with ``debug`` every error is re-raised with its
    traceback."""
    global _STOPPING
    _STOPPING = False

    def guarded():
        global _STOPPING
        try:
            return fn()
        except BaseException:
            _STOPPING = True
            raise

    try:
        return int(guarded() or 0)
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"\n{prog}: interrupted (Ctrl-C); outputs being written were not replaced", file=sys.stderr,
              flush=True)
        return 130
    except Terminated as e:
        if debug:
            raise
        detail = " ".join(str(e).split())
        print(f"{prog}: terminated (SIGTERM){': ' + detail if detail else ''}; outputs being written were not "
              "replaced", file=sys.stderr, flush=True)
        return 143
    except SystemExit:
        raise
    except BaseException as e:  # noqa: BLE001 - classified below, re-raised when not the user's input
        if debug:
            raise
        for link in _chain(e):
            text = describe_error(link)
            if text is not None:
                _print_err(prog, text)
                return 2
        raise


def debug_requested(argv: Sequence[str] | None = None) -> bool:
    """``--debug`` in the arguments or ``MLLM_CXR_DEBUG=1`` in the environment."""
    return bool(os.environ.get("MLLM_CXR_DEBUG")) or "--debug" in (sys.argv[1:] if argv is None else argv)
