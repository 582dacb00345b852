"""Split a free-text radiology report (MIMIC-CXR style) into its sections.

Reports look like::

                                 FINAL REPORT
     EXAMINATION:  CHEST (PA AND LAT)
     INDICATION:  ___F with cough
     COMPARISON:  None.
     FINDINGS:
     The lungs are clear ...
     IMPRESSION:
     No acute cardiopulmonary process.

:func:`parse_sections` returns ``{section: text}`` with canonical lower-case keys (``examination``,
``indication``, ``history``, ``technique``, ``comparison``, ``findings``, ``impression``,
``addendum``, ``wet_read``, ``notification``, ``recommendation``, ...), whitespace collapsed. A known
header is recognised in any case, with or without a colon (``Findings:``, ``FINDINGS -``, ``findings``
alone on its line), and, in upper case with a colon, also in the middle of a line
(``... normal heart. IMPRESSION: No acute ...``). Other upper-case ``WORDS:`` at the start of a line
open a section of their own (``"PA AND LATERAL VIEWS"`` -> ``"pa_and_lateral_views"``). The title
``FINAL REPORT`` is dropped; text before the first header goes to ``preamble``. A header seen twice
(two addenda, two impressions) has its texts joined. Missing sections are simply absent.
"""

from __future__ import annotations

import re

#: canonical name -> header spellings (matched case-insensitively, any run of spaces between words)
HEADERS: dict[str, tuple[str, ...]] = {
    "examination": ("EXAMINATION", "EXAMINATIONS", "EXAM", "STUDY", "TYPE OF EXAMINATION"),
    "indication": ("INDICATION", "INDICATIONS", "REASON FOR EXAMINATION", "REASON FOR EXAM",
                   "REASON FOR STUDY", "CLINICAL INDICATION", "CLINICAL INDICATIONS", "INDICATION FOR EXAM"),
    "history": ("HISTORY", "CLINICAL HISTORY", "MEDICAL HISTORY", "CLINICAL INFORMATION",
                "PATIENT HISTORY", "CLINICAL DATA"),
    "technique": ("TECHNIQUE", "TECHNIQUES", "PROCEDURE", "VIEWS"),
    "comparison": ("COMPARISON", "COMPARISONS", "COMPARISON STUDY", "COMPARISON STUDIES", "PRIOR STUDIES",
                   "PRIOR STUDY", "PRIORS"),
    "findings": ("FINDINGS", "FINDING"),
    "findings_impression": ("FINDINGS AND IMPRESSION", "FINDINGS/IMPRESSION", "FINDINGS AND IMPRESSIONS",
                            "IMPRESSION AND FINDINGS"),
    "impression": ("IMPRESSION", "IMPRESSIONS", "CONCLUSION", "CONCLUSIONS", "OPINION"),
    "addendum": ("ADDENDUM", "ADDENDA", "ADDENDUM REPORT"),
    "wet_read": ("WET READ", "WET READ VERSION"),
    "notification": ("NOTIFICATION", "NOTIFICATIONS"),
    "recommendation": ("RECOMMENDATION", "RECOMMENDATIONS", "RECOMMENDATION(S)", "RECOMMENDATION (S)"),
}
#: Title lines that carry no content.
TITLES = ("FINAL REPORT", "PRELIMINARY REPORT", "RADIOLOGY REPORT", "FINAL ADDENDUM")

_ALIAS = {" ".join(a.split()): name for name, aliases in HEADERS.items() for a in aliases}


def _alias_pattern(words: list[str]) -> str:
    parts = []
    for a in sorted(words, key=len, reverse=True):
        parts.append(r"\s+".join(re.escape(w) for w in a.split()))
    return "|".join(parts)


_KNOWN = _alias_pattern(list(_ALIAS) + list(TITLES))
# A known header at the start of a line: followed by a colon, a dash, or the end of the line.
_LINE_HEADER = re.compile(rf"^[ \t]*(?P<h>{_KNOWN})[ \t]*(?P<d>:|[-\u2013\u2014](?=[ \t])|(?=[ \t]*$))",
                          re.IGNORECASE | re.MULTILINE)
# Any upper-case header with a colon at the start of a line (unknown ones open their own section).
_UPPER_HEADER = re.compile(r"^[ \t]*(?P<h>[A-Z][A-Z0-9 ,/&()'\-]{1,48}[A-Z)])[ \t]*:", re.MULTILINE)
# A known upper-case header with a colon in the middle of a line.
_INLINE_HEADER = re.compile(rf"(?<=[.;!?)\s])[ \t]*(?P<h>{_alias_pattern(list(_ALIAS))})[ \t]*:")


def canonical(header: str) -> str | None:
    """Canonical section name of a header (``"Clinical  History"`` -> ``"history"``); ``None`` for titles."""
    h = " ".join(header.upper().split())
    if h in TITLES:
        return None
    if h in _ALIAS:
        return _ALIAS[h]
    return re.sub(r"[^a-z0-9]+", "_", h.lower()).strip("_") or None


def _is_upper(s: str) -> bool:
    letters = [c for c in s if c.isalpha()]
    return bool(letters) and all(c.isupper() for c in letters)


def find_headers(text: str) -> list[tuple[int, int, str | None]]:
    """Header matches as ``(start, end, canonical name or None for a title)``, in text order."""
    found: dict[int, tuple[int, int, str | None]] = {}
    for m in _LINE_HEADER.finditer(text):
        if not m.group("d") and not m.group("h")[0].isupper():
            continue  # a bare lower-case word alone on a line is more likely wrapped prose than a header
        found[m.start("h")] = (m.start("h"), m.end(), canonical(m.group("h")))
    for m in _UPPER_HEADER.finditer(text):
        s = m.start("h")
        if s not in found:
            found[s] = (s, m.end(), canonical(m.group("h")))
    for m in _INLINE_HEADER.finditer(text):
        s = m.start("h")
        if s not in found and _is_upper(m.group("h")):
            found[s] = (s, m.end(), canonical(m.group("h")))
    # drop matches that start inside an earlier match (e.g. "FINDINGS" inside "FINDINGS AND IMPRESSION")
    out: list[tuple[int, int, str | None]] = []
    for start, end, name in sorted(found.values()):
        if out and start < out[-1][1]:
            continue
        out.append((start, end, name))
    return out


def _squash(text: str) -> str:
    return " ".join(text.split())


def parse_sections(text: str | None) -> dict[str, str]:
    """Split a report into ``{section: text}`` (see the module docstring for the rules)."""
    if not text:
        return {}
    sections: dict[str, list[str]] = {}
    headers = find_headers(text)
    bounds = [(0, 0, "preamble")] + headers
    for i, (_, body_start, name) in enumerate(bounds):
        body_end = bounds[i + 1][0] if i + 1 < len(bounds) else len(text)
        body = _squash(text[body_start:body_end])
        if name is None:  # a title such as FINAL REPORT: its body (if any) counts as preamble
            name = "preamble"
        if body or (name not in sections and name != "preamble"):
            sections.setdefault(name, [])
            if body:
                sections[name].append(body)
    return {k: " ".join(v) for k, v in sections.items() if v or k != "preamble"}


def split_paragraphs(text: str) -> list[str]:
    """Paragraphs (blank-line separated), whitespace collapsed, empty ones dropped."""
    return [p for p in (_squash(x) for x in re.split(r"\n[ \t]*\n", text or "")) if p]


def last_paragraph_impression(text: str) -> str:
    """Fallback impression for reports without FINDINGS/IMPRESSION headers: the last paragraph of the
    text that follows the last header (or of the whole report when it has none)."""
    headers = find_headers(text or "")
    tail = text[headers[-1][1]:] if headers else (text or "")
    paras = split_paragraphs(tail)
    return paras[-1] if paras else ""
