"""The matching engine of the CheXpert rule labeler (:mod:`reward.chexpert`): rules entries -> regexes, and one
pass over a text that finds the matches of many keyed entry lists.

- :func:`entry_regex`: one YAML entry -> its regex (plain groups non-capturing, a word boundary at a word end);
- :func:`parse_regex` and :func:`prefixes`: a reader for the rules file's regex subset and, from it, the possible
  first letters of an entry's matches (the prefix index), without the private ``re._parser``;
- :class:`Matcher`: the matching rule (first entry in YAML order at each word start) with the prefix index as a
  speed-up, and :meth:`Matcher.find_reference` without it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from reward.base import RewardError

_UNCAPTURE_RE = re.compile(r"(?<!\\)\((?!\?)")


def entry_regex(entry: str) -> str:
    """One YAML entry -> regex: plain groups made non-capturing, a word boundary at a word end."""
    entry = entry.strip()
    body = _UNCAPTURE_RE.sub("(?:", entry)
    last = entry[-1:]
    right = r"(?!\w)" if (last.isalnum() or last in ")?*+]") else ""
    if right and last == ")":  # no boundary after a trailing lookaround: "and (?=the )"
        items = parse_regex(body)
        if items and items[-1][0] == "ASSERT":
            right = ""
    return f"(?:{body}){right}"


_MAX_PREFIXES = 256
_CLASS_ESCAPES = frozenset("dDwWsS")
_ZERO_WIDTH_ESCAPES = frozenset("bBAZ")


class _RegexReader:
    """The recursive-descent reader behind :func:`parse_regex` (``pos``: the next character of ``rx``)."""

    _REPEAT = re.compile(r"(\d*)(,?)(\d*)\}")

    def __init__(self, rx: str):
        self.rx, self.pos, self.n = rx, 0, len(rx)

    def seq(self) -> list[tuple]:
        rx, n = self.rx, self.n
        alts: list[list[tuple]] = [[]]
        while self.pos < n and rx[self.pos] != ")":
            c = rx[self.pos]
            if c == "|":
                self.pos += 1
                alts.append([])
                continue
            item = self.atom()
            alts[-1].append(item)
            if self.pos < n and rx[self.pos] in "?*+{":
                lo, hi = self.quant()
                if item[0] == "ASSERT":
                    raise ValueError("quantified assertion")
                alts[-1][-1] = ("REPEAT", lo, hi, [item])
        return alts[0] if len(alts) == 1 else [("BRANCH", alts)]

    def quant(self) -> tuple[int, int]:
        rx = self.rx
        c = rx[self.pos]
        self.pos += 1
        if c in "?*+":
            lo, hi = {"?": (0, 1), "*": (0, 1 << 16), "+": (1, 1 << 16)}[c]
        else:
            m = self._REPEAT.match(rx, self.pos)
            if m is None:
                raise ValueError("bad repeat")
            self.pos = m.end()
            lo = int(m.group(1) or 0)
            hi = int(m.group(3)) if m.group(3) else (1 << 16 if m.group(2) else lo)
        if self.pos < self.n and rx[self.pos] in "?+":  # lazy or possessive
            self.pos += 1
        return lo, hi

    def group(self) -> tuple:
        """A group, its "(" read: a branch, or an assertion for a lookaround."""
        rx = self.rx
        lookaround = False
        if rx.startswith("?:", self.pos):
            self.pos += 2
        elif rx.startswith(("?=", "?!"), self.pos):
            self.pos, lookaround = self.pos + 2, True
        elif rx.startswith(("?<=", "?<!"), self.pos):
            self.pos, lookaround = self.pos + 3, True
        elif rx.startswith("?", self.pos):
            raise ValueError("unsupported group")
        inner = self.seq()
        if self.pos >= self.n or rx[self.pos] != ")":
            raise ValueError("unbalanced")
        self.pos += 1
        return ("ASSERT",) if lookaround else ("BRANCH", [inner])

    def atom(self) -> tuple:
        rx = self.rx
        c = rx[self.pos]
        self.pos += 1
        if c == "(":
            return self.group()
        if c == "[":
            return self.klass()
        if c == "\\":
            e = rx[self.pos]
            self.pos += 1
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

    def klass(self) -> tuple:
        rx, n = self.rx, self.n
        chars: list[str] | None = []
        if rx.startswith("^", self.pos):
            chars = None
            self.pos += 1
        first = True
        while self.pos < n and (rx[self.pos] != "]" or first):
            first = False
            c = rx[self.pos]
            self.pos += 1
            if c == "\\":
                e = rx[self.pos]
                self.pos += 1
                if e in _CLASS_ESCAPES or e.isalnum():
                    chars = None
                    continue
                c = e
            if self.pos + 1 < n and rx[self.pos] == "-" and rx[self.pos + 1] != "]":
                hi = rx[self.pos + 1]
                self.pos += 2
                if chars is not None:
                    if ord(hi) - ord(c) >= 12:
                        chars = None
                    else:
                        chars.extend(chr(x) for x in range(ord(c), ord(hi) + 1))
                continue
            if chars is not None:
                chars.append(c)
        if self.pos >= n:
            raise ValueError("unterminated class")
        self.pos += 1
        return ("IN", chars)


def parse_regex(rx: str) -> list[tuple] | None:
    """A small reader for the regex syntax of the rules file, for :func:`prefixes` and lookaround checks.

    Items: ``("LITERAL", ch)``, ``("IN", chars | None)`` (None: a class it does not enumerate, e.g.
    ``\\w``), ``("BRANCH", [items, ...])`` for a group, ``("REPEAT", lo, hi, items)``, ``("ASSERT",)``
    (lookarounds, anchors, ``\\b``) and ``("ANY",)``. Returns None for syntax outside this subset (the
    caller then makes no assumption), so the analysis never needs the private ``re._parser``.
    """
    reader = _RegexReader(rx)
    try:
        items = reader.seq()
    except (ValueError, IndexError):
        return None
    return items if reader.pos == reader.n else None


def prefixes(entry_re: str, k: int = 3) -> set[str] | None:
    """Possible first ``k`` characters of matches of a regex (shorter strings: anything may follow).

    Used to try an entry only at word starts whose first letters fit. None when the analysis fails
    (the entry is then tried everywhere its first character is a word character).
    """
    seq = parse_regex(entry_re)
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


class Matcher:
    """Finds the matches of many keyed entry lists in one pass over a text.

    Each key (an observation's findings, a cue kind, a qualifier kind...) has a list of entries. The
    matching rule, which does not depend on the prefix index:

    - a match begins at a word start (a word character after a non-word character) or at a
      punctuation character (not white space); never inside a word;
    - at such a position, the match of a key is the match of its *first entry in YAML order* that
      matches there; an empty match counts as none;
    - a key's next match begins at or after the end of its previous one.

    :meth:`find_reference` applies the rule directly (every entry of every key at every position).
    :meth:`find` gives the same matches faster: a prefix index (:func:`prefixes`) skips the entries
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
                rx = entry_regex(entry)
                try:
                    re.compile(rx)
                except re.error as e:
                    raise RewardError(f"chexpert rules: bad regex in {where}: {entry!r} ({e})") from e
                pre = prefixes(rx, k)
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
