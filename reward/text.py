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
_LIST_MARKER = re.compile(r"(?<=[^\s.!?:;])[ \t]+(?=\d{1,2}[.)]\s+\S)|\n\s*(?=(?:\d{1,2}[.)]|[-*\u2022])\s)")
_WORD_BEFORE = re.compile(r"([A-Za-z][A-Za-z.]*|\d+)$")
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
    cuts = {m.end() for m in _LIST_MARKER.finditer(text)}
    cuts |= {m.start(2) for m in GLUED_SENTENCE.finditer(text)}
    for m in _BOUNDARY.finditer(text):
        if m.group(0)[0] in ".!?":
            lo = max(0, m.start() - 24)
            w = _WORD_BEFORE.search(text[lo:m.start()])
            if w is not None:
                w_start = lo + w.start()
                word = w.group(1).lower().rstrip(".")
                if (word in _ABBREVIATIONS or _is_initial(text, w_start, w.group(1))) and m.group(0).count(".") == 1:
                    continue  # "vs. ", "Dr. ", an initial after a title ("Dr. J. Smith")
                if word.isdigit() and len(word) <= 2 and (w_start in cuts or _starts_item(text, w_start)):
                    continue
        cuts.add(m.end())
    spans = []
    start = 0
    for cut in sorted(cuts) + [len(text)]:
        a, b = start, cut
        while a < b and text[a].isspace():
            a += 1
        while b > a and text[b - 1].isspace():
            b -= 1
        if b > a:
            spans.append((a, b))
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
