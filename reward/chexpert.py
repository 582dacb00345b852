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

The parts: the rules file and its compiled form in :mod:`reward.chexpert_rules`, the matching engine (regexes,
prefix index) in :mod:`reward.chexpert_matcher`, the text normalisation in :mod:`reward.chexpert_text`; this module
holds the labeler (mentions, negation and uncertainty scope, aggregation), its shortcuts and the scorer.

Compiled rules are cached per rules file; labelling runs at several thousand reports per second on
one CPU core (``bench/bench_labeler.py``).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from reward.base import RewardError, Scorer, ScoreResult
from reward.chexpert_rules import (
    NO_FINDING,
    OTHER,
    RULES_PATH,
    SUPPORT_DEVICES,
    Rules,
    compiled_rules,
    load_rules,
)
from reward.chexpert_text import extract_sections, normalize, normalize_with_offsets, to_original
from reward.constants import CHEXPERT_LABELS, NEGATIVE, POSITIVE, UNCERTAIN
from reward.text import find_sections, split_sentences

__all__ = ["NO_FINDING", "RULES_PATH", "SUPPORT_DEVICES", "ChexpertF1Scorer", "ChexpertRulesLabeler", "Mention",
           "extract_sections", "label_report", "label_reports", "load_rules", "normalize", "normalize_with_offsets"]


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
        self.rules = compiled_rules(str(Path(rules_path).resolve() if rules_path else RULES_PATH), bool(prefix_index))
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
                se = to_original(offsets, m.start, m.end)
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

    def __init__(self, t: str, rules: Rules, cues: dict[str, list[tuple[int, int]]],
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
_AVERAGES = ("micro", "exact", "hamming")


class ChexpertF1Scorer(Scorer):
    """Per-sample F1 between the CheXpert labels of each hypothesis and its reference.

    ``subset``: "14" (all observations, No Finding included) or "5" (CHEXPERT_5). ``uncertain``:
    "positive" (RRG convention, as F1-CheXbert) or "negative". ``average``: "micro" (F1 of the two
    positive sets; both empty -> 1.0), "exact" (1.0 when every observation of the subset agrees) or
    "hamming" (the share of the subset's observations that agree: every false positive or negative
    costs the same, as in corpus micro-F1, see :func:`reward.f1.per_sample_hamming`).
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
        from reward.f1 import f1_report, per_sample_exact_match, per_sample_f1, per_sample_hamming, to_binary

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
        per_sample = {"micro": per_sample_f1, "exact": per_sample_exact_match, "hamming": per_sample_hamming}
        scores = per_sample[self.average](hyp_labels, ref_labels, self.uncertain, self.subset)
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
