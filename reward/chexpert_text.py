"""Text handling of the CheXpert rule labeler (:mod:`reward.chexpert`): :func:`normalize` (the text the rules
match), :func:`normalize_with_offsets` (with each character's offset in the report as written, to show spans),
:func:`to_original` and :func:`extract_sections`.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence

from reward.text import GLUED_SENTENCE, find_sections

_WS_RE = re.compile(r"\s+")
_DOT_CAPITAL = re.compile(r"\.[A-Z]")
_PARA_RE = re.compile(r"\n\s*\n|\n\s*(?=\d{1,2}\s*[.)]\s)")


def normalize(text: str) -> str:
    """Lower-case, paragraph and list-item breaks -> sentence ends, whitespace collapsed."""
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if "\n" in text:
        text = _PARA_RE.sub(" . ", text)
    if _DOT_CAPITAL.search(text):  # (a cheap test first: most texts have no glued sentence)
        text = GLUED_SENTENCE.sub(r"\1. \2", text)  # "process.Enlarged" -> two sentences (as reward.text splits)
    return " ".join(text.split()).lower()  # str.split's white space is the same as the regex \s


def _resub(s: str, idx: list[int], rx: re.Pattern, repl) -> tuple[str, list[int]]:
    """``rx.sub`` that carries, for every output character, the index of the original character (-1: inserted)."""
    out, oidx, pos = [], [], 0
    for m in rx.finditer(s):
        out.append(s[pos:m.start()])
        oidx.extend(idx[pos:m.start()])
        for piece, j in repl(m):
            out.append(piece)
            oidx.extend([j] * len(piece))
        pos = m.end()
    out.append(s[pos:])
    oidx.extend(idx[pos:])
    return "".join(out), oidx


def normalize_with_offsets(text: str) -> tuple[str, list[int]]:
    """:func:`normalize` of ``text`` and, per character, its offset in ``text`` (-1: inserted).

    The labeler reports mention spans in the normalised text; these offsets map them back onto the
    report as written. When the step-by-step rebuild differs from ``normalize`` (it should not), a
    character alignment (difflib) gives the offsets instead.
    """
    chars, idx = [], []
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\r":
            if i + 1 < len(text) and text[i + 1] == "\n":
                i += 1
                continue
            c = "\n"
        chars.append(c)
        idx.append(i)
        i += 1
    s = "".join(chars)
    s, idx = _resub(s, idx, _PARA_RE, lambda m: [(" . ", -1)])
    s, idx = _resub(s, idx, GLUED_SENTENCE, lambda m: [(m.group(1), idx[m.start(1)]), (".", idx[m.start(1) + 1]),
                                                  (" ", -1), (m.group(2), idx[m.start(2)])])
    s, idx = _resub(s, idx, _WS_RE, lambda m: [(" ", idx[m.start()])])
    a, b = 0, len(s)
    while a < b and s[a].isspace():
        a += 1
    while b > a and s[b - 1].isspace():
        b -= 1
    low, lidx = [], []
    for c, j in zip(s[a:b], idx[a:b]):
        lc = c.lower()
        low.append(lc)
        lidx.extend([j] * len(lc))
    t = "".join(low)
    want = normalize(text)
    if t == want:
        return t, lidx
    src = text.lower()
    off = [-1] * len(want)
    for blk in difflib.SequenceMatcher(None, src, want, autojunk=False).get_matching_blocks():
        for k in range(blk.size):
            off[blk.b + k] = blk.a + k
    return want, off


def extract_sections(text: str, sections: Sequence[str]) -> str | None:
    """The named sections of a report with ``NAME:`` headers, joined; None when none is present.

    ``sections`` are matched case-insensitively against header names ("findings", "impression")
    (:func:`reward.text.find_sections`).
    """
    found = find_sections(text, sections)
    if not found:
        return None
    return "\n\n".join(p for p in (text[a:b].strip() for _, a, b in found) if p)


def to_original(offsets: list[int], s: int, e: int) -> tuple[int, int] | None:
    """A span of the normalised text -> the span of the original text from its first to its last mapped character."""
    first = next((offsets[k] for k in range(s, min(e, len(offsets))) if offsets[k] >= 0), None)
    last = next((offsets[k] for k in range(min(e, len(offsets)) - 1, s - 1, -1) if offsets[k] >= 0), None)
    return None if first is None or last is None else (first, last + 1)
