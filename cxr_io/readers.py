"""Readers: JSON-lines, JSON, YAML, text and CSV files, each read error naming ``file:line`` and what to do
(gzip files read transparently; bytes that are not UTF-8 found and named)."""

from __future__ import annotations

import csv
import gzip
import io
import json
import sys
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from cxr_io.errors import InputError, PathLike

# Report columns can be long (CheXpert Plus "report" holds whole reports; a note can exceed 131,072 chars).
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


def decode_hint(e: UnicodeDecodeError) -> str:
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
