"""Text units of a report shared by the scorers: the one sentence splitter and the one
``FINDINGS:``/``IMPRESSION:`` section finder (for generated and reference reports; raw reports with
their many header spellings go through :mod:`data_prep.sections` when they are converted).

Pure Python, imports nothing from the project: the labeler (:mod:`reward.chexpert`), the prior
detector (:mod:`reward.prior`) and the trainers all split text the same way.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

# ----------------------------------------------------------------------------------------------------
# Sentence splitting
# ----------------------------------------------------------------------------------------------------

#: Words that end with a period without ending the sentence ("atelectasis vs. pneumonia").
_ABBREVIATIONS = frozenset({"vs", "e.g", "i.e", "dr", "mr", "mrs", "ms", "approx", "fig", "cf", "incl"})
_BOUNDARY = re.compile(r"[.!?]+[\"')\]]*\s+|\n\s*\n")
#: "... widened mediastinum 3. No effusion": a list number stuck to the end of the previous item.
#: (The blank's first character comes first in the pattern, so the scan jumps from blank to blank.)
_LIST_MARKER = re.compile(r"[ \t](?<=[^\s.!?:;][ \t])[ \t]*(?=\d{1,2}[.)]\s+\S)|\n\s*(?=(?:\d{1,2}[.)]|[-*\u2022])\s)")
_WORD_BEFORE = re.compile(r"([A-Za-z][A-Za-z.]*|\d+)$")
# Fast paths of split_sentences (same cuts): what a text must contain for each rule to apply.
_BOUNDARY_ONE_LINE = re.compile(r"([.!?][.!?]*[\"')\]]*)\s+")  # _BOUNDARY on a text without "\n"
_NUMBER_DOT = re.compile(r"[.)](?<=\d[.)])")  # a number before "." or ")" (the scan looks for the "." first)
_DOT_CAPITAL = re.compile(r"\.[A-Z]")
_CAPITALS_NL = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ\n")  # "$" in _WORD_BEFORE also matches before a final "\n"
_ABBREVIATION_TAILS = tuple(sorted(_ABBREVIATIONS))


def _maybe_not_an_end() -> re.Pattern:
    """A ``.``/``!``/``?`` right after a digit, a capital, a newline or an abbreviation, or a ``)`` after a digit:
    where a list number may start or the word test of split_sentences may keep a boundary from ending a
    sentence (the punctuation comes first in the pattern, so the scan jumps from one to the next)."""
    by_len: dict[int, list[str]] = {}
    for a in sorted(_ABBREVIATIONS):
        by_len.setdefault(len(a), []).append(re.escape(a))
    behind = [r"(?<=[\dA-Z\n][.!?])", r"(?<=\d\))"] + [f"(?<=(?i:{'|'.join(v)})[.!?])" for _, v in sorted(by_len.items())]
    return re.compile(r"[.!?)](?:" + "|".join(behind) + ")")


_MAYBE_NOT_AN_END = _maybe_not_an_end()
#: "No acute process.Enlarged heart.": a sentence end with no space after the period (a lower-case letter,
#: digit or ")" before it, a capital after it). The CheXpert labeler's ``normalize`` inserts the space.
GLUED_SENTENCE = re.compile(r"([a-z0-9)])\.([A-Z])")


def split_sentences(text: str) -> list[tuple[int, int]]:
    """Character spans ``(start, end)`` of the sentences of a report, white space excluded.

    Boundaries: ``.``/``!``/``?`` followed by white space (not after an abbreviation such as ``vs.``, an
    initial after a title such as ``Dr. J. Smith``, or a list number such as ``1.``), a period glued to the
    next sentence (``"process.Enlarged"``, :data:`GLUED_SENTENCE`), a blank line, and a list item that
    starts a new line or is glued to the end of the previous item (``"... mediastinum 3. No effusion."``).
    A list number stays at the start of its item. The text between two spans is only white space.
    """
    if "\n" not in text and _DOT_CAPITAL.search(text) is None and _MAYBE_NOT_AN_END.search(text) is None:
        return _split_plain(text)  # the labeler's lower-cased one-line text, as a rule
    return _split_general(text)


def _split_plain(text: str) -> list[tuple[int, int]]:
    """:func:`split_sentences` of a text with one line, no list number, no glued sentence and no period after
    a word that may not end a sentence (:data:`_MAYBE_NOT_AN_END`): every boundary ends a sentence."""
    spans = []
    start = len(text) - len(text.lstrip())
    for m in _BOUNDARY_ONE_LINE.finditer(text):  # a sentence ends after its punctuation (group 1)
        spans.append((start, m.end(1)))
        start = m.end()
    tail = text[start:].rstrip()
    if tail:
        spans.append((start, start + len(tail)))
    return spans


def _split_general(text: str) -> list[tuple[int, int]]:
    """:func:`split_sentences` of any text (every rule applied)."""
    newline = "\n" in text
    # The cheap tests skip the scans that cannot match.
    cuts = {m.end() for m in _LIST_MARKER.finditer(text)} if newline or _NUMBER_DOT.search(text) else set()
    if _DOT_CAPITAL.search(text):
        cuts |= {m.start(2) for m in GLUED_SENTENCE.finditer(text)}
    for m in (_BOUNDARY if newline else _BOUNDARY_ONE_LINE).finditer(text):
        at, end = m.span()
        c = text[at - 1] if at else ""
        # Only a number, a capital (an initial), an abbreviation or a "\n" before it can keep it from ending
        # a sentence (what the word test below looks for); most periods follow none of them.
        if c.isdecimal() or c in _CAPITALS_NL or text[max(0, at - 6):at].lower().endswith(_ABBREVIATION_TAILS):
            first = m.group(0)
            w = _WORD_BEFORE.search(text, max(0, at - 24), at) if first[0] in ".!?" else None
            if w is not None:
                w_start = w.start()
                word = w.group(1).lower().rstrip(".")
                if (word in _ABBREVIATIONS or _is_initial(text, w_start, w.group(1))) and first.count(".") == 1:
                    continue  # "vs. ", "Dr. ", an initial after a title ("Dr. J. Smith")
                if word.isdigit() and len(word) <= 2 and (w_start in cuts or _starts_item(text, w_start)):
                    continue
        cuts.add(end)
    return _spans(text, sorted(cuts))


def _spans(text: str, cuts: list[int]) -> list[tuple[int, int]]:
    """The non-blank pieces of ``text`` between sorted cut positions, white space excluded."""
    spans = []
    start = 0
    for cut in cuts + [len(text)]:
        piece = text[start:cut]
        body = piece.strip()
        if body:
            a = start + len(piece) - len(piece.lstrip())
            spans.append((a, a + len(body)))
        start = cut
    return spans


_TITLE_BEFORE = re.compile(r"\b(?:dr|mr|mrs|ms|prof|[a-z])\.\s+$", re.IGNORECASE)


def _is_initial(text: str, pos: int, word: str) -> bool:
    """A capital letter that follows a title or another initial: ``J`` in ``Dr. J. Smith``."""
    return len(word) == 1 and word.isupper() and _TITLE_BEFORE.search(text[max(0, pos - 8):pos]) is not None


def _starts_item(text: str, pos: int) -> bool:
    """Whether the number at ``pos`` starts the text, a line or a sentence (then it is a list marker)."""
    i = pos - 1
    while i >= 0 and text[i] in " \t":
        i -= 1
    return i < 0 or text[i] in "\n.!?:;"


def sentences(text: str) -> list[str]:
    """The sentences of ``text`` (see :func:`split_sentences`)."""
    return [text[a:b] for a, b in split_sentences(text)]


#: A section header at the start of a line: ``FINDINGS:``, ``Impression :`` (any case).
_SECTION_HEADER = re.compile(r"(?im)^[ \t]*([a-z][a-z /&]{2,40}?)[ \t]*:")


def find_sections(text: str, names: Sequence[str] | None = None, *,
                  other_headers_end: bool = True) -> list[tuple[str, int, int]]:
    """``(name, body_start, body_end)`` of the sections of a report with ``NAME:`` headers at line starts,
    in text order; names lower-cased. ``names`` keeps only those sections; a header not in ``names``
    still ends the section before it, unless ``other_headers_end=False`` (then it is body text, as
    for a report whose only real sections are FINDINGS and IMPRESSION). ``[]`` when the text has no
    such header."""
    wanted = None if names is None else {n.lower() for n in names}
    heads = [(m.start(), m.end(), m.group(1).strip().lower()) for m in _SECTION_HEADER.finditer(text or "")]
    if wanted is not None and not other_headers_end:
        heads = [h for h in heads if h[2] in wanted]
    out = []
    for i, (_, end, name) in enumerate(heads):
        if wanted is None or name in wanted:
            out.append((name, end, heads[i + 1][0] if i + 1 < len(heads) else len(text)))
    return out
