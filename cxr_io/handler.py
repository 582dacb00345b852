"""The one top-level handler every CLI and recipe uses: :func:`handle` (one line and exit code 2 for bad input,
:func:`describe_error`), SIGTERM as an exception (:func:`sigterm_raises`, :class:`Terminated`) and
:func:`debug_requested`."""

from __future__ import annotations

import contextlib
import gzip
import os
import sys
import zlib
from collections.abc import Callable, Iterator, Sequence

from cxr_io.errors import InputError
from cxr_io.readers import decode_hint


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
        return f"{decode_hint(e)}"
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
