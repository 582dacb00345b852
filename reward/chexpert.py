"""Our CheXpert rule labeler and the ``chexpert_f1`` scorer.

The labeler reads a free-text chest radiograph report and returns the 14 CheXpert observations
(:data:`reward.constants.CHEXPERT_LABELS`) with the CheXpert value convention: ``1.0`` positive,
``0.0`` negative, ``-1.0`` uncertain, ``None`` not mentioned.

How it works (rules in ``reward/resources/chexpert_rules.yaml``; the negation, hedge, change and
clause-break words it shares with the project's other text engines in ``reward/resources/cues.yaml``):

1. The text is lower-cased and split into sentences; scope breaks ("but", "however", ";", "there is",
   "is seen"...) cut sentences into clauses.
2. Mentions are found by the entries of each list, tried at word starts: at one word start the first
   entry of the list (YAML order) that matches gives the mention. *Finding* phrases
   ("cardiomegaly") are positive unless a cue covers them; *structure* phrases ("heart size",
   "mediastinal contour") take their label from a qualifier next to them ("enlarged" positive,
   "normal" negative, "borderline"/"stable" uncertain) and are dropped when there is none.
3. Negation and uncertainty cues act inside the clause: pre cues ("no", "without", "possible",
   "may reflect") on the mentions after them, post cues ("is absent", "has resolved", "cannot be
   excluded") on the mentions before them. The nearest pre cue wins; a negation from either side
   beats an uncertainty; a "?" makes its sentence uncertain. Pseudo-negations ("no change in")
   silence the cues they overlap.
4. Mentions of one observation are aggregated as in the CheXpert labeler: positive beats uncertain
   beats negative. "chf"/"heart failure" (positive or uncertain) adds Cardiomegaly = uncertain. No
   Finding is 1 when no observation other than Support Devices, and no other abnormal finding
   (granuloma, emphysema, scoliosis...), is positive or uncertain; otherwise it is blank.

Differences from the Stanford labeler worth knowing: an empty report gets no labels at all (not
No Finding = 1); the three-way mix negative+uncertain+positive aggregates to positive; a structure
mention without a qualifier ("the heart") is not a mention, and one qualified only as stable
("heart size is stable") is not labelled either (configurable, ``unchanged_structure``); "upper limits
of normal" heart size is negative; calcified nodules count as Lung Lesion; pulmonary vascular
congestion is an "other finding", not Edema. Text with no mention at all ("asdf") is No Finding = 1,
as in CheXpert, so a reward built on these labels should be combined with other scorers.

Compiled rules are cached per rules file; labelling runs at several thousand reports per second on
one CPU core (``bench/bench_labeler.py``).
"""

from __future__ import annotations

import bisect
import difflib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from cxr_io import read_yaml
from reward.base import RewardError, Scorer, ScoreResult
from reward.constants import CHEXPERT_LABELS, NEGATIVE, POSITIVE, UNCERTAIN
from reward.cues import expand_all
from reward.text import GLUED_SENTENCE, find_sections, split_sentences

RULES_PATH = Path(__file__).resolve().parent / "resources" / "chexpert_rules.yaml"
NO_FINDING = "No Finding"
SUPPORT_DEVICES = "Support Devices"
OTHER = "_other"  # abnormal findings outside the 13 observations (they only rule out No Finding)

_LABEL_NAMES = {"positive": POSITIVE, "negative": NEGATIVE, "uncertain": UNCERTAIN}
_UNCAPTURE_RE = re.compile(r"(?<!\\)\((?!\?)")
_WS_RE = re.compile(r"\s+")
_DOT_CAPITAL = re.compile(r"\.[A-Z]")
_PARA_RE = re.compile(r"\n\s*\n|\n\s*(?=\d{1,2}\s*[.)]\s)")


# ------------------------------------------------------------------------------------------------
# Rules: YAML -> one compiled matcher
# ------------------------------------------------------------------------------------------------
def _entry_regex(entry: str) -> str:
    """One YAML entry -> regex: plain groups made non-capturing, a word boundary at a word end."""
    entry = entry.strip()
    body = _UNCAPTURE_RE.sub("(?:", entry)
    last = entry[-1:]
    right = r"(?!\w)" if (last.isalnum() or last in ")?*+]") else ""
    if right and last == ")":  # no boundary after a trailing lookaround: "and (?=the )"
        items = _parse_regex(body)
        if items and items[-1][0] == "ASSERT":
            right = ""
    return f"(?:{body}){right}"


_MAX_PREFIXES = 256
_CLASS_ESCAPES = frozenset("dDwWsS")
_ZERO_WIDTH_ESCAPES = frozenset("bBAZ")


def _parse_regex(rx: str) -> list[tuple] | None:
    """A small reader for the regex syntax of the rules file, for :func:`_prefixes` and lookaround checks.

    Items: ``("LITERAL", ch)``, ``("IN", chars | None)`` (None: a class it does not enumerate, e.g.
    ``\\w``), ``("BRANCH", [items, ...])`` for a group, ``("REPEAT", lo, hi, items)``, ``("ASSERT",)``
    (lookarounds, anchors, ``\\b``) and ``("ANY",)``. Returns None for syntax outside this subset (the
    caller then makes no assumption), so the analysis never needs the private ``re._parser``.
    """
    pos = 0
    n = len(rx)

    def seq() -> list[tuple]:
        nonlocal pos
        alts: list[list[tuple]] = [[]]
        while pos < n and rx[pos] != ")":
            c = rx[pos]
            if c == "|":
                pos += 1
                alts.append([])
                continue
            item = atom()
            alts[-1].append(item)
            if pos < n and rx[pos] in "?*+{":
                lo, hi = quant()
                if item[0] == "ASSERT":
                    raise ValueError("quantified assertion")
                alts[-1][-1] = ("REPEAT", lo, hi, [item])
        return alts[0] if len(alts) == 1 else [("BRANCH", alts)]

    def quant() -> tuple[int, int]:
        nonlocal pos
        c = rx[pos]
        pos += 1
        if c in "?*+":
            lo, hi = {"?": (0, 1), "*": (0, 1 << 16), "+": (1, 1 << 16)}[c]
        else:
            m = re.compile(r"(\d*)(,?)(\d*)\}").match(rx, pos)
            if m is None:
                raise ValueError("bad repeat")
            pos = m.end()
            lo = int(m.group(1) or 0)
            hi = int(m.group(3)) if m.group(3) else (1 << 16 if m.group(2) else lo)
        if pos < n and rx[pos] in "?+":  # lazy or possessive
            pos += 1
        return lo, hi

    def atom() -> tuple:
        nonlocal pos
        c = rx[pos]
        pos += 1
        if c == "(":
            lookaround = False
            if rx.startswith("?:", pos):
                pos += 2
            elif rx.startswith(("?=", "?!"), pos):
                pos, lookaround = pos + 2, True
            elif rx.startswith(("?<=", "?<!"), pos):
                pos, lookaround = pos + 3, True
            elif rx.startswith("?", pos):
                raise ValueError("unsupported group")
            inner = seq()
            if pos >= n or rx[pos] != ")":
                raise ValueError("unbalanced")
            pos += 1
            return ("ASSERT",) if lookaround else ("BRANCH", [inner])
        if c == "[":
            return klass()
        if c == "\\":
            e = rx[pos]
            pos += 1
            if e in _ZERO_WIDTH_ESCAPES:
                return ("ASSERT",)
            if e in _CLASS_ESCAPES or e.isalnum():
                return ("IN", None)
            return ("LITERAL", e)
        if c in "^$":
            return ("ASSERT",)
        if c == ".":
            return ("ANY",)
        if c in "*+?{":
            raise ValueError("nothing to repeat")
        return ("LITERAL", c)

    def klass() -> tuple:
        nonlocal pos
        chars: list[str] | None = []
        if rx.startswith("^", pos):
            chars = None
            pos += 1
        first = True
        while pos < n and (rx[pos] != "]" or first):
            first = False
            c = rx[pos]
            pos += 1
            if c == "\\":
                e = rx[pos]
                pos += 1
                if e in _CLASS_ESCAPES or e.isalnum():
                    chars = None
                    continue
                c = e
            if pos + 1 < n and rx[pos] == "-" and rx[pos + 1] != "]":
                hi = rx[pos + 1]
                pos += 2
                if chars is not None:
                    if ord(hi) - ord(c) >= 12:
                        chars = None
                    else:
                        chars.extend(chr(x) for x in range(ord(c), ord(hi) + 1))
                continue
            if chars is not None:
                chars.append(c)
        if pos >= n:
            raise ValueError("unterminated class")
        pos += 1
        return ("IN", chars)

    try:
        items = seq()
    except (ValueError, IndexError):
        return None
    return items if pos == n else None


def _prefixes(entry_re: str, k: int = 3) -> set[str] | None:
    """Possible first ``k`` characters of matches of a regex (shorter strings: anything may follow).

    Used to try an entry only at word starts whose first letters fit. None when the analysis fails
    (the entry is then tried everywhere its first character is a word character).
    """
    seq = _parse_regex(entry_re)
    if seq is None:
        return None
    done: set[str] = set()

    def run(items, open_: set[str]) -> set[str]:
        for item in items:
            if not open_:
                return open_
            name = item[0]
            if name == "LITERAL":
                nxt = {s + item[1] for s in open_}
            elif name == "IN":
                if item[1] is None:
                    done.update(open_)
                    return set()
                nxt = {s + ch for s in open_ for ch in item[1]}
            elif name == "BRANCH":
                nxt = set()
                for alt in item[1]:
                    nxt |= run(alt, set(open_))
            elif name == "REPEAT":
                lo, hi, sub = item[1], item[2], item[3]
                once = run(sub, set(open_))
                if hi > 1 or lo > 1:  # further repetitions: stop the analysis here
                    done.update(once)
                    once = set()
                nxt = (once | open_) if lo == 0 else once
            elif name == "ASSERT":
                continue
            else:  # ANY
                done.update(open_)
                return set()
            full = {s for s in nxt if len(s) >= k}
            done.update(s[:k] for s in full)
            open_ = nxt - full
            if len(open_) + len(done) > _MAX_PREFIXES:
                return None
        return open_

    rest = run(seq, {""})
    if rest is None:
        return None
    done |= rest
    return done


class _Matcher:
    """Finds the matches of many keyed entry lists in one pass over a text.

    Each key (an observation's findings, a cue kind, a qualifier kind...) has a list of entries. The
    matching rule, which does not depend on the prefix index:

    - a match begins at a word start (a word character after a non-word character) or at a
      punctuation character (not white space); never inside a word;
    - at such a position, the match of a key is the match of its *first entry in YAML order* that
      matches there; an empty match counts as none;
    - a key's next match begins at or after the end of its previous one.

    :meth:`find_reference` applies the rule directly (every entry of every key at every position).
    :meth:`find` gives the same matches faster: a prefix index (:func:`_prefixes`) skips the entries
    whose matches cannot begin with the next letters (an entry the analysis cannot read is always
    tried), and the remaining entries run as one regex per distinct set of candidates: one capturing
    lookahead per key around the alternation of its entries in YAML order, so a single ``match``
    call tries every key and Python's leftmost-alternative rule keeps the first entry that matches.
    """

    _POSITIONS = re.compile(r"\b\w|[^\w\s]")

    def __init__(self, groups: Sequence[tuple[Any, Sequence[str], str]], k: int = 5, index: bool = True):
        self.k = k
        self.use_index = index
        self.keys: list[Any] = []
        self._entry_rx: list[str] = []  # entries in YAML order, over all keys
        self._entry_key: list[int] = []
        self._key_entries: list[list[int]] = []
        by_prefix: list[dict[str, list[int]]] = [{} for _ in range(k + 1)]
        for key, entries, where in groups:
            i = len(self.keys)
            self.keys.append(key)
            self._key_entries.append([])
            for entry in entries:
                if not isinstance(entry, str) or not entry.strip():
                    raise RewardError(f"chexpert rules: empty or non-text entry in {where}: {entry!r}")
                if "(?P" in entry:  # the matcher joins entries into one regex: their group names would clash
                    raise RewardError(f"chexpert rules: named groups are not supported in {where}: {entry!r}; "
                                      "write (...)")
                rx = _entry_regex(entry)
                try:
                    re.compile(rx)
                except re.error as e:
                    raise RewardError(f"chexpert rules: bad regex in {where}: {entry!r} ({e})") from e
                pre = _prefixes(rx, k)
                eid = len(self._entry_rx)
                self._entry_rx.append(rx)
                self._entry_key.append(i)
                self._key_entries[i].append(eid)
                for p in (pre if pre is not None else {""}):  # unknown start: try it everywhere
                    by_prefix[len(p)].setdefault(p, []).append(eid)
        self.index: list[dict[str, tuple[int, ...]]] = [{p: tuple(ids) for p, ids in level.items()}
                                                         for level in by_prefix]
        # Positions the index skips without a look-up: those whose first character begins no entry (periods,
        # digits, "xxxx"); all of them when an entry's start is unknown.
        firsts = {p[0] for level in self.index[1:] for p in level}
        words = "".join(re.escape(c) for c in sorted(firsts) if c.isalnum() or c == "_")
        punct = "".join(re.escape(c) for c in sorted(firsts) if not (c.isalnum() or c == "_"))
        alts = ([rf"\b[{words}]"] if words else []) + ([f"[{punct}]"] if punct else [])
        self._positions = self._POSITIONS if self.index[0] or not alts else re.compile("|".join(alts))
        self._combined: dict[tuple[int, ...], tuple[re.Pattern, tuple[tuple[int, int], ...]]] = {}
        self._cache: dict[str, tuple] = {}
        self._reference: list[re.Pattern | None] | None = None

    def _compile(self, ids: tuple[int, ...]) -> tuple[re.Pattern, tuple[tuple[int, int], ...]]:
        """Candidate entries (ids in YAML order) -> one regex and its (key, group number) slots."""
        got = self._combined.get(ids)
        if got is None:
            runs: list[list[int]] = []
            for e in ids:  # the ids of one key are consecutive: split them into per-key runs
                if runs and self._entry_key[runs[-1][0]] == self._entry_key[e]:
                    runs[-1].append(e)
                else:
                    runs.append([e])
            parts = [f"(?:(?=(?P<k{self._entry_key[r[0]]}>{'|'.join(self._entry_rx[e] for e in r)}))|)"
                     for r in runs]
            pat = re.compile("".join(parts))
            slots = tuple((self._entry_key[r[0]], pat.groupindex[f"k{self._entry_key[r[0]]}"]) for r in runs)
            got = self._combined[ids] = (pat, slots)
        return got

    def _candidates(self, head: str) -> tuple:
        """The regex and slots for a position whose text begins with ``head``; () when no entry fits."""
        got = self._cache.get(head)
        if got is None:
            ids = sorted({e for n in range(self.k + 1) for e in self.index[n].get(head[:n], ())})
            got = self._compile(tuple(ids)) if ids else ()
            if len(self._cache) < 200_000:
                self._cache[head] = got
        return got

    def find(self, t: str) -> list[tuple[Any, int, int]]:
        """All matches as (key, start, end), sorted by start (longest first at one start)."""
        if not self.use_index:
            return self.find_reference(t)
        out: list[tuple[Any, int, int]] = []
        last_end = [0] * len(self.keys)
        keys, k, cache, cands = self.keys, self.k, self._cache, self._candidates
        for ws in self._positions.finditer(t):
            pos = ws.start()
            head = t[pos:pos + k]
            todo = cache.get(head)
            if todo is None:
                todo = cands(head)
            if not todo:
                continue
            m = todo[0].match(t, pos)
            last = m.lastindex  # the highest group that matched (None: no key matched here)
            if last is None:
                continue
            regs = m.regs
            n = len(out)
            for i, g in todo[1]:
                if g > last:
                    break
                end = regs[g][1]
                if end > pos and pos >= last_end[i]:
                    last_end[i] = end
                    out.append((keys[i], pos, end))
            if len(out) - n > 1:  # positions come in order: only the matches at one position need sorting
                out[n:] = sorted(out[n:], key=lambda x: -x[2])
        return out

    def find_reference(self, t: str) -> list[tuple[Any, int, int]]:
        """:meth:`find` without the index: each key's entries, as one alternation in YAML order, tried at
        every position (several times slower; the tests compare it with :meth:`find`)."""
        if self._reference is None:
            self._reference = [re.compile("|".join(self._entry_rx[e] for e in ids)) if ids else None
                               for ids in self._key_entries]
        out: list[tuple[Any, int, int]] = []
        last_end = [0] * len(self.keys)
        for ws in self._POSITIONS.finditer(t):
            pos = ws.start()
            for i, rx in enumerate(self._reference):
                if rx is None or pos < last_end[i]:
                    continue
                m = rx.match(t, pos)
                if m is not None and m.end() > pos:
                    last_end[i] = m.end()
                    out.append((self.keys[i], pos, m.end()))
        out.sort(key=lambda x: (x[1], -x[2]))
        return out


@dataclass(frozen=True)
class _Rules:
    matcher: _Matcher
    observations: tuple[str, ...]
    unchanged_label: float | None
    reach_before_adjacent: int
    reach_after: int
    reach_before: int
    pre_window: int
    short_window: int
    post_window: int
    implications: tuple[tuple[str, re.Pattern, str, float], ...]
    source: str


_CUE_KINDS = ("pseudo_negation", "negated_uncertainty", "compound_negation", "post_negation",
              "bidirectional_negation", "pre_negation", "pre_negation_short", "pre_uncertainty",
              "post_uncertainty", "scope_breaks", "post_cue_barriers")
_QUALIFIER_KINDS = ("borderline", "normal", "abnormal", "unchanged")


def load_rules(path: str | Path | None = None) -> dict[str, Any]:
    """The rules YAML as a dict (the packaged ``chexpert_rules.yaml`` by default), ``$name`` entries of its
    cue and qualifier lists replaced by the shared cue lexicon's lists (:mod:`reward.cues`)."""
    p = Path(path) if path else RULES_PATH
    if not p.is_file():
        raise FileNotFoundError(f"chexpert rules file not found: {p}")
    data = read_yaml(p, role="chexpert rules", error=RewardError)
    if not isinstance(data, dict) or "observations" not in data:
        raise RewardError(f"{p}: field 'observations' missing (not a chexpert rules file)")
    # "$name" entries of the cue and qualifier lists: the shared cue lexicon's list (reward/resources/cues.yaml)
    for part, kinds in (("cues", _CUE_KINDS), ("qualifiers", _QUALIFIER_KINDS)):
        if part in data:
            data[part] = expand_all(data[part], kinds, f"{p}: field '{part}'")
    return data


@lru_cache(maxsize=8)
def _compiled(path: str, index: bool = True) -> _Rules:
    data = load_rules(path)
    groups: list[tuple[Any, Sequence[str], str]] = []
    names = []
    for name, spec in (data.get("observations") or {}).items():
        if name not in CHEXPERT_LABELS or name == NO_FINDING:
            raise RewardError(f"{path}: field 'observations' has unknown observation {name!r}")
        spec = spec or {}
        unknown = set(spec) - {"findings", "structures", "exclude"}
        if unknown:
            raise RewardError(f"{path}: field 'observations.{name}' has unknown keys {sorted(unknown)}")
        names.append(name)
        for part in ("findings", "structures", "exclude"):
            if spec.get(part):
                groups.append((("obs", name, part), spec[part], f"{name}.{part}"))
    other = data.get("other_findings") or {}
    for part in ("findings", "exclude"):
        if other.get(part):
            groups.append((("obs", OTHER, part), other[part], f"other_findings.{part}"))
    cue_spec = data.get("cues") or {}
    unknown = set(cue_spec) - set(_CUE_KINDS)
    if unknown:
        raise RewardError(f"{path}: field 'cues' has unknown kinds {sorted(unknown)}; known: {_CUE_KINDS}")
    for kind in _CUE_KINDS:
        if cue_spec.get(kind):
            groups.append((("cue", kind), cue_spec[kind], f"cues.{kind}"))
    qual_spec = data.get("qualifiers") or {}
    for kind in _QUALIFIER_KINDS:
        if qual_spec.get(kind):
            groups.append((("qual", kind), qual_spec[kind], f"qualifiers.{kind}"))
    reach = data.get("qualifier_reach") or {}
    unchanged = str(data.get("unchanged_structure", "uncertain"))
    if unchanged not in ("uncertain", "ignore"):
        raise RewardError(f"{path}: field 'unchanged_structure' must be uncertain|ignore, got {unchanged!r}")
    impl = []
    for i, item in enumerate(data.get("implications") or []):
        try:
            impl.append((item["observation"], re.compile(_entry_regex(item["mention"])), item["adds"],
                         _LABEL_NAMES[item["label"]]))
        except (KeyError, TypeError, re.error) as e:
            raise RewardError(f"{path}: field 'implications[{i}]' invalid: {item!r} ({e})") from e
    return _Rules(_Matcher(groups, index=index), tuple(names), UNCERTAIN if unchanged == "uncertain" else None,
                  int(reach.get("before_adjacent", 28)), int(reach.get("after", 90)),
                  int(reach.get("before", 60)), int(data.get("pre_window", 14)),
                  int(data.get("short_window", 3)), int(data.get("post_window", 7)), tuple(impl), path)


# ------------------------------------------------------------------------------------------------
# Text handling
# ------------------------------------------------------------------------------------------------
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


class Mention(NamedTuple):
    """One labelled mention: observation (``_other`` for other abnormal findings), span, label.

    (A named tuple: immutable like a frozen dataclass, and several times cheaper to build.)"""

    observation: str
    start: int
    end: int
    text: str
    label: float
    kind: str  # "finding" | "structure"


_NEG, _UNC = "neg", "unc"


class ChexpertRulesLabeler:
    """The rule labeler. ``sections``: report sections to label when the text has headers.

    ``prefix_index=False`` tries every rules entry at every word start instead of only those whose
    first letters fit: the same labels (the index is only a speed-up), several times slower.

    ``label(text)`` labels the text; when ``sections`` is given (e.g. ``("findings", "impression")``)
    and the text has ``FINDINGS:``/``IMPRESSION:`` headers, only those sections are labelled (the
    whole text when none of them is present). ``label_record(obj)`` labels the given fields of a
    mapping or an object such as a study record (default findings + impression).
    """

    def __init__(self, rules_path: str | Path | None = None, sections: Sequence[str] | None = None,
                 prefix_index: bool = True):
        self.rules = _compiled(str(Path(rules_path).resolve() if rules_path else RULES_PATH), bool(prefix_index))
        self.sections = tuple(sections) if sections else None

    # -- public API ---------------------------------------------------------------------------
    def label(self, text: str | None) -> dict[str, float | None]:
        """The 14 labels of one report (keys in CHEXPERT_LABELS order)."""
        if not isinstance(text, str):
            text = "" if text is None else str(text)
        if self.sections:
            picked = extract_sections(text, self.sections)
            if picked is not None:
                text = picked
        return self._aggregate(self.mentions(text), bool(text.strip()))

    def label_many(self, texts: Iterable[str | None], progress: bool = False) -> list[dict[str, float | None]]:
        """Labels for many reports; ``progress`` shows a tqdm bar."""
        if progress:
            from tqdm.auto import tqdm

            texts = tqdm(texts, desc="labelling", unit="report")
        return [self.label(t) for t in texts]

    def label_with_spans(self, text: str | None) -> tuple[dict[str, float | None], list[list]]:
        """:meth:`label` and, from the same mentions (one pass), where each labelled mention is in ``text``:
        ``[observation, start, end, label]`` with offsets in ``text`` as given. A mention that adds another
        observation through the implication rules ("CHF" adds Cardiomegaly) is listed under that one too.
        Mentions of findings outside the 14 observations are left out."""
        if not isinstance(text, str):
            text = "" if text is None else str(text)
        src, base = text, None  # base: the offset in ``text`` of each character of ``src`` (-1: inserted)
        if self.sections:
            found = find_sections(text, self.sections)
            if found:  # the text label() reads (extract_sections), with its offsets
                parts = []
                for _, a, b in found:
                    body = text[a:b].strip()
                    if body:
                        lead = a + len(text[a:b]) - len(text[a:b].lstrip())
                        parts.append((lead, body))
                src = "\n\n".join(body for _, body in parts)
                base = []
                for j, (lead, body) in enumerate(parts):
                    base += ([-1, -1] if j else []) + list(range(lead, lead + len(body)))
        mentions = self.mentions(src)
        labels = self._aggregate(mentions, bool(src.strip()))
        spans: list[list] = []
        if mentions:
            _, offsets = normalize_with_offsets(src)
            for m in mentions:
                se = _to_original(offsets, m.start, m.end)
                if se is None or m.observation not in labels:
                    continue
                a, b = se if base is None else (base[se[0]], base[se[1] - 1] + 1)
                spans.append([m.observation, a, b, m.label])
                if m.label != NEGATIVE:
                    spans += [[adds, a, b, lab] for ob, rx, adds, lab in self.rules.implications
                              if ob == m.observation and rx.fullmatch(m.text)]
        return labels, spans

    def label_record(self, record: Any, sections: Sequence[str] = ("findings", "impression")) -> dict:
        """Labels of the given text fields of a mapping or an object (e.g. a StudyRecord)."""
        parts = []
        for s in sections:
            v = record.get(s) if isinstance(record, Mapping) else getattr(record, s, None)
            if isinstance(v, str) and v.strip():
                parts.append(v)
        text = "\n\n".join(parts)
        return self._aggregate(self.mentions(text), bool(text.strip()))

    def mentions(self, text: str) -> list[Mention]:
        """All labelled mentions of a text (the evidence behind :meth:`label`)."""
        if not text or not text.strip():
            return []
        t = normalize(text)
        hits = self.rules.matcher.find(t)
        raw: list[tuple[str, int, int, str]] = []
        excl: dict[str, list[tuple[int, int]]] = {}
        cues: dict[str, list[tuple[int, int]]] = {}
        quals: list[tuple[int, int, str]] = []
        for key, s, e in hits:
            if key[0] == "obs":
                if key[2] == "exclude":
                    excl.setdefault(key[1], []).append((s, e))
                else:
                    raw.append((key[1], s, e, "structure" if key[2] == "structures" else "finding"))
            elif key[0] == "cue":
                cues.setdefault(key[1], []).append((s, e))
            elif not quals or s >= quals[-1][1]:  # overlapping qualifiers: the first, longest wins
                quals.append((s, e, key[1]))
            elif s == quals[-1][0] and e > quals[-1][1]:
                quals[-1] = (s, e, key[1])
        if excl:
            raw = [m for m in raw if not any(a <= m[1] < b or a < m[2] <= b for a, b in excl.get(m[0], ()))]
        if not raw:
            return []
        ctx = _Context(t, self.rules, cues, quals)
        structure_spans = [(s, e) for _, s, e, k in raw if k == "structure"]
        out = []
        for name, s, e, kind in raw:
            if kind == "structure":
                base = ctx.qualify(s, e, structure_spans)
                if base is None:
                    continue
                if base != POSITIVE:  # normal/borderline/unchanged: the qualifier decides
                    out.append(Mention(name, s, e, t[s:e], base, kind))
                    continue
            out.append(Mention(name, s, e, t[s:e], ctx.assertion(s, e), kind))
        return out

    # -- internals ----------------------------------------------------------------------------
    def _aggregate(self, mentions: list[Mention], has_text: bool) -> dict[str, float | None]:
        labels: dict[str, float | None] = dict.fromkeys(CHEXPERT_LABELS)
        if not has_text:
            return labels
        finding = False
        for m in mentions:
            if m.label != NEGATIVE and m.observation != SUPPORT_DEVICES:
                finding = True
            if m.observation != OTHER:
                old = labels[m.observation]
                labels[m.observation] = m.label if old is None else _combine(old, m.label)
            if m.label == NEGATIVE:
                continue
            for ob, rx, adds, lab in self.rules.implications:
                if ob == m.observation and rx.fullmatch(m.text):
                    old = labels[adds]
                    labels[adds] = lab if old is None else _combine(old, lab)
        if not finding:
            labels[NO_FINDING] = POSITIVE
        return labels


def _to_original(offsets: list[int], s: int, e: int) -> tuple[int, int] | None:
    """A span of the normalised text -> the span of the original text from its first to its last mapped character."""
    first = next((offsets[k] for k in range(s, min(e, len(offsets))) if offsets[k] >= 0), None)
    last = next((offsets[k] for k in range(min(e, len(offsets)) - 1, s - 1, -1) if offsets[k] >= 0), None)
    return None if first is None or last is None else (first, last + 1)


def _combine(a: float, b: float) -> float:
    """Aggregate two mentions of one observation: positive > uncertain > negative."""
    if POSITIVE in (a, b):
        return POSITIVE
    if UNCERTAIN in (a, b):
        return UNCERTAIN
    return NEGATIVE


def _free(spans: list[tuple[int, int]], blockers: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The spans that overlap none of the blockers."""
    if not blockers:
        return spans
    return [x for x in spans if not any(a < x[1] and x[0] < b for a, b in blockers)]


class _Context:
    """Sentences, clauses, cues and qualifiers of one normalised text."""

    _ALLOWED_GAP = frozenset(
        "and or the a is are was were be been being has have remains remain appears appear seems seem "
        "looks look to again still now also otherwise overall grossly mildly moderately markedly severely "
        "slightly somewhat stably noted seen in size of both all each which very minimally at within its "
        "their xxxx , - and/or sized appearing appearance contour contours configuration limits".split())

    def __init__(self, t: str, rules: _Rules, cues: dict[str, list[tuple[int, int]]],
                 quals: list[tuple[int, int, str]]):
        self.t, self.r, self.quals = t, rules, quals
        # sentence ends (reward.text.split_sentences): the final . ! ? of a sentence, else its last character + 1
        self.sent_ends = [b - 1 if t[b - 1] in ".!?" else b for _, b in split_sentences(t)]
        self.question = {i for i in self.sent_ends if i < len(t) and t[i] == "?"}
        get = cues.get
        silencers = get("pseudo_negation", [])
        neg_unc = get("negated_uncertainty", [])
        comp_neg = get("compound_negation", [])
        post_neg = get("post_negation", [])
        strong = silencers + neg_unc + comp_neg
        bi_neg = _free(get("bidirectional_negation", []), strong)
        pre: list[tuple[int, int, str, int]] = []  # (start, end, kind, window in words)
        post: list[tuple[int, int, str]] = []
        pre += [(s, e, _NEG, rules.pre_window) for s, e in _free(get("pre_negation", []), strong + post_neg + bi_neg)]
        pre += [(s, e, _NEG, rules.short_window) for s, e in _free(get("pre_negation_short", []), strong)]
        # a compound negation acts from its first word on (it may contain the mention itself)
        pre += [(s, s + len(t[s:e].split(' ', 1)[0]), _NEG, rules.pre_window) for s, e in comp_neg]
        pre += [(s, e, _NEG, rules.short_window) for s, e in bi_neg]
        post += [(s, e, _NEG) for s, e in bi_neg]
        post += [(s, e, _NEG) for s, e in _free(post_neg, silencers + neg_unc)]
        pre += [(s, e, _UNC, rules.pre_window) for s, e in neg_unc]
        post += [(s, e, _UNC) for s, e in neg_unc]
        pre += [(s, e, _UNC, rules.pre_window) for s, e in _free(get("pre_uncertainty", []), strong)]
        post += [(s, e, _UNC) for s, e in _free(get("post_uncertainty", []), strong)]
        pre.sort()
        post.sort()
        self.pre, self.pre_starts = pre, [p[0] for p in pre]
        self.post, self.post_starts = post, [p[0] for p in post]
        breaks = get("scope_breaks", [])
        self.break_starts = sorted(b[0] for b in breaks)
        self.break_ends = sorted(b[1] for b in breaks)
        self.barriers = sorted(b[0] for b in get("post_cue_barriers", []))

    def _sentence(self, s: int) -> tuple[int, int]:
        i = bisect.bisect_left(self.sent_ends, s)
        start = self.sent_ends[i - 1] + 1 if i > 0 else 0
        end = self.sent_ends[i] if i < len(self.sent_ends) else len(self.t)
        return start, end

    def _clause(self, s: int, e: int) -> tuple[int, int]:
        """The sentence around [s, e) cut at the nearest scope breaks."""
        start, end = self._sentence(s)
        j = bisect.bisect_right(self.break_ends, s)
        if j > 0:
            start = max(start, self.break_ends[j - 1])
        k = bisect.bisect_left(self.break_starts, e)
        if k < len(self.break_starts):
            end = min(end, self.break_starts[k])
        return start, end

    def assertion(self, s: int, e: int) -> float:
        """Label of a finding mention at [s, e): negative, uncertain or positive."""
        c0, c1 = self._clause(s, e)
        t = self.t
        pre_kind = None
        i = bisect.bisect_left(self.pre_starts, s)
        while i > 0:
            i -= 1
            ps, pe, kind, window = self.pre[i]
            if ps < c0:
                break
            if pe <= s and t.count(" ", pe, s) - 1 <= window:
                pre_kind = kind
                break
        if pre_kind == _NEG:
            return NEGATIVE
        post_kind = None
        j = bisect.bisect_left(self.post_starts, e)
        if j < len(self.post):
            ps, pe, kind = self.post[j]
            if pe <= c1 and t.count(" ", e, ps) - 1 <= self.r.post_window:
                k = bisect.bisect_left(self.barriers, e)
                if k >= len(self.barriers) or self.barriers[k] >= ps:
                    post_kind = kind
        if post_kind == _NEG:
            return NEGATIVE
        if pre_kind == _UNC or post_kind == _UNC:
            return UNCERTAIN
        _, end = self._sentence(e)
        if end in self.question:
            return UNCERTAIN
        return POSITIVE

    def _gap_ok(self, a: int, b: int, structures: list[tuple[int, int]]) -> bool:
        """Whether the text between a qualifier and a structure only links them (copulas, lists)."""
        gap = self.t[a:b]
        for s, e in structures:  # other structures in a coordinated list do not break the link
            if a <= s and e <= b:
                gap = gap.replace(self.t[s:e], " ")
        return all(w in self._ALLOWED_GAP for w in gap.replace(",", " , ").split())

    def qualify(self, s: int, e: int, structures: list[tuple[int, int]]) -> float | None:
        """Label given to a structure mention by its qualifier (None: no qualifier)."""
        r = self.r
        sent0, sent1 = self._sentence(s)
        lo = max(sent0, s - max(r.reach_before, r.reach_before_adjacent))
        hi = min(sent1, e + r.reach_after)
        before = [q for q in self.quals if lo <= q[0] and q[1] <= s]
        after = [q for q in self.quals if e <= q[0] and q[1] <= hi]
        # 1. a qualifier right in front ("normal heart size", "enlargement of the cardiac silhouette")
        if before and s - before[-1][1] <= r.reach_before_adjacent and self._gap_ok(before[-1][1], s, []):
            return self._value(before[-1][2])
        # 2. the first definite qualifier after, linked by copulas and coordinated structures
        pending = False
        pos = e
        for qs, qe, kind in after:
            if qs < pos:  # overlaps the previous qualifier
                continue
            if not self._gap_ok(pos, qs, structures):
                break
            if kind != "unchanged":
                return self._value(kind)
            pending, pos = True, qe
        if pending:
            return self._value("unchanged")
        # 3. a qualifier before a coordinated list ("normal heart size and mediastinal contours")
        if before and s - before[-1][1] <= r.reach_before and self._gap_ok(before[-1][1], s, structures):
            return self._value(before[-1][2])
        return None

    def _value(self, kind: str) -> float | None:
        if kind == "abnormal":
            return POSITIVE
        if kind == "normal":
            return NEGATIVE
        if kind == "unchanged":
            return self.r.unchanged_label
        return UNCERTAIN


# ------------------------------------------------------------------------------------------------
# Convenience functions
# ------------------------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def _default_labeler() -> ChexpertRulesLabeler:
    return ChexpertRulesLabeler()


def label_report(text: str | None) -> dict[str, float | None]:
    """The 14 CheXpert labels of one report (1.0, 0.0, -1.0 or None)."""
    return _default_labeler().label(text)


def label_reports(texts: Iterable[str | None], progress: bool = False) -> list[dict[str, float | None]]:
    """The 14 CheXpert labels of each report, in order (see :func:`label_report`)."""
    return _default_labeler().label_many(texts, progress=progress)


# ------------------------------------------------------------------------------------------------
# The chexpert_f1 scorer
# ------------------------------------------------------------------------------------------------
_AVERAGES = ("micro", "exact")


class ChexpertF1Scorer(Scorer):
    """Per-sample F1 between the CheXpert labels of each hypothesis and its reference.

    ``subset``: "14" (all observations, No Finding included) or "5" (CHEXPERT_5). ``uncertain``:
    "positive" (RRG convention, as F1-CheXbert) or "negative". ``average``: "micro" (F1 of the two
    positive sets; both empty -> 1.0) or "exact" (1.0 when every observation of the subset agrees).
    ``labeler``: a callable ``list[str] -> list[dict]`` to use another labeler (e.g. CheXbert); the
    rule labeler by default (``rules_path``, ``sections`` configure it). A context column
    ``ref_labels`` (list of label dicts) replaces labelling the references.

    ``spans=True`` (what ``eval`` asks for): each detail also holds both reports' 14 labels
    (``hyp_labels``/``ref_labels``) and where their mentions are (``hyp_spans``/``ref_spans``, see
    :meth:`ChexpertRulesLabeler.label_with_spans`; empty for a reference given as ``ref_labels`` or
    another labeler), from the same single labelling pass.

    ``ScoreResult.corpus`` holds micro/macro/weighted F1-14 and F1-5, accuracy_5, the per-class
    table and the uncertain convention.
    """

    name = "chexpert_f1"

    def __init__(self, subset: str = "14", uncertain: str = "positive", average: str = "micro",
                 labeler: Any = None, rules_path: str | Path | None = None, sections: Sequence[str] | None = None,
                 spans: bool = False):
        from reward.f1 import SUBSETS, UNCERTAIN_CHOICES

        subset = str(subset)
        if subset not in SUBSETS:
            raise RewardError(f"scorer 'chexpert_f1': subset must be one of {sorted(SUBSETS)}, got {subset!r}")
        if uncertain not in UNCERTAIN_CHOICES:
            raise RewardError(f"scorer 'chexpert_f1': uncertain must be one of {UNCERTAIN_CHOICES}, got {uncertain!r}")
        if average not in _AVERAGES:
            raise RewardError(f"scorer 'chexpert_f1': average must be one of {_AVERAGES}, got {average!r}")
        self.subset, self.uncertain, self.average = subset, uncertain, average
        self.spans = bool(spans)
        if labeler is None:
            rules = ChexpertRulesLabeler(rules_path=rules_path, sections=sections)
            self._label = rules.label_many
            self._analyse = lambda texts: [rules.label_with_spans(t) for t in texts]
            self.backend = "rules"
        elif callable(labeler):
            self._label = labeler
            self._analyse = lambda texts: [(lab, []) for lab in labeler(texts)]
            self.backend = getattr(labeler, "__name__", type(labeler).__name__)
        else:
            raise RewardError(f"scorer 'chexpert_f1': labeler must be callable, got {type(labeler).__name__}")
        self._ref_cache: dict[str, dict] = {}

    def _ref_labels(self, refs: Sequence[str]) -> list:
        """Labels of the references (with spans: (labels, spans) pairs), each distinct text labelled once."""
        todo = [r for r in dict.fromkeys(refs) if r not in self._ref_cache]
        if todo:
            if len(self._ref_cache) > 50_000:
                self._ref_cache.clear()
            self._ref_cache.update(zip(todo, self._analyse(todo) if self.spans else self._label(todo)))
        return [self._ref_cache[r] for r in refs]

    def score(self, hyps: Sequence[str], refs: Sequence[str] | None = None, **context: Any) -> ScoreResult:
        from reward.f1 import f1_report, per_sample_exact_match, per_sample_f1, to_binary

        ref_labels = context.get("ref_labels")
        ref_spans = hyp_spans = None
        if ref_labels is not None:
            if len(ref_labels) != len(hyps):
                raise RewardError(f"scorer 'chexpert_f1': {len(hyps)} hypotheses but {len(ref_labels)} ref_labels")
            ref_labels = [r if isinstance(r, Mapping) else {} for r in ref_labels]
            ref_spans = [[] for _ in ref_labels]
        elif self.spans:
            ref_labels, ref_spans = map(list, zip(*self._ref_labels(list(refs or [])))) if hyps else ([], [])
        else:
            ref_labels = self._ref_labels(list(refs or []))
        if self.spans:
            hyp_labels, hyp_spans = map(list, zip(*self._analyse(list(hyps)))) if hyps else ([], [])
        else:
            hyp_labels = self._label(list(hyps))
        if not hyps:
            return ScoreResult(scores=[], details=[], corpus={"n": 0, "uncertain": self.uncertain})
        if self.average == "micro":
            scores = per_sample_f1(hyp_labels, ref_labels, self.uncertain, self.subset)
        else:
            scores = per_sample_exact_match(hyp_labels, ref_labels, self.uncertain, self.subset)
        hb, rb = to_binary(hyp_labels, self.uncertain), to_binary(ref_labels, self.uncertain)
        details = [{"hyp_positive": [CHEXPERT_LABELS[j] for j in np.flatnonzero(h)],
                    "ref_positive": [CHEXPERT_LABELS[j] for j in np.flatnonzero(r)]} for h, r in zip(hb, rb)]
        if self.spans:
            for i, d in enumerate(details):
                d.update(hyp_labels=dict(hyp_labels[i]), ref_labels=dict(ref_labels[i]), hyp_spans=hyp_spans[i],
                         ref_spans=ref_spans[i])
        rep = f1_report(hyp_labels, ref_labels, self.uncertain)
        corpus = {k: rep[k] for k in ("uncertain", "convention", "n", "f1_14", "f1_5", "precision_14",
                                      "recall_14", "precision_5", "recall_5", "accuracy_5", "per_class")}
        corpus.update({"labeler": self.backend, "subset": self.subset, "average": self.average,
                       "mean_score": float(np.mean(scores))})
        return ScoreResult(scores=scores.tolist(), details=details, corpus=corpus)
