"""Detection of the sentences that refer to a previous examination (:func:`find_prior_spans`,
:func:`find_prior_references`, :func:`prior_cues`): the vocabulary and the cue patterns. What counts as such a
reference is described in :mod:`reward.prior`, the public face of these modules.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from reward.base import to_scorable_text
from reward.cues import alternation, cue
from reward.text import split_sentences

# ----------------------------------------------------------------------------------------------------
# Vocabulary
# ----------------------------------------------------------------------------------------------------

#: Nouns that name an imaging examination ("prior study", "previous CT", "old films").
EXAM = (r"(?:exam|exams|examination|examinations|study|studies|film|films|radiograph|radiographs|radiography"
         r"|x-?rays?|x-xxxx|cxr|cxrs|ct|cts|mri|scan|scans|images?|imaging|views?|comparison|one|ones"
         r"|chest\s+(?:x-?rays?|x-xxxx|ct|radiographs?|films?|exams?|examinations?))")
#: Words allowed between "prior" and the exam noun ("prior PA and lateral chest radiograph").
EXAM_MOD = (r"(?:chest|outside|portable|two-view|2-view|single-view|pa|ap|lateral|frontal|ct|cxr|"
             r"and(?=\s+(?:lateral|pa|ap|frontal|oblique)\b)|"
             r"radiographic|plain|upright|supine|abdominal|abdomen|xxxx|x-xxxx|thoracic|spine|computed|"
             r"tomography|tomographic|cardiac|contrast|enhanced|similar|the|available|recent|comparison)")
PRIOR_ADJ = r"(?:prior|previous|preceding|earlier|last|most\s+recent|recent|old|outside|remote|comparison|older)"
#: Words that may follow a bare "prior"/"previous" that ends a comparison ("unchanged from prior and ...").
_AFTER_BARE_PRIOR = (r"(?:and|or|but|which|that|dated|from|of|on|in|at|with|without|when|where|as|is|are|was|"
                     r"were|exam\w*|stud\w+|film\w*|radiograph\w*|images?|imaging|ct|cxr|x-?ray\w*|x-xxxx|xxxx)")
_PREP = r"(?:from|than|to|on|in|with|since|versus|vs\.?|relative\s+to|compared\s+(?:to|with)|over|at)"


def _lex(name: str, key: str) -> str:
    """One named entry of the shared cue lexicon (reward/resources/cues.yaml) as a regex."""
    return alternation([cue(name, key)])


#: Cue patterns: (name, regex). Each is searched in a clause of a sentence. The words of "stable", "again",
#: "redemonstrated", "persistent", "remains" and "still" come from the shared cue lexicon.
_CUE_SOURCES: list[tuple[str, str]] = [
    # An earlier examination named outright.
    ("prior_exam", rf"\b{PRIOR_ADJ}\s+(?:{EXAM_MOD}\s+){{0,4}}?{EXAM}\b|"
                   rf"\b(?:prior|previous|earlier)\s+xxxx\s+(?:from|dated|on|of)\s+xxxx\b"),
    ("prep_prior", rf"\b{_PREP}\s+(?:the\s+|a\s+|an\s+|patient'?s\s+)?(?:prior|previous|preceding|earlier|last)\b"
                   rf"(?=\s*(?:$|[.,;:)]|{_AFTER_BARE_PRIOR}\b))"),
    ("on_comparison", r"\b(?:on|in|from|to|with)\s+the\s+comparison\b(?!\s+(?:of|between)\b)"),
    ("exam_dated", r"\b(?:exam|examination|study|film|radiographs?|x-?ray|x-xxxx|ct|scan|mri)\s+"
                   r"(?:dated|from|of|on)\s+(?:xxxx|_{2,}|\d)"),
    ("compared", r"\b(?:compared\s+(?:to|with)|comparison\s+(?:to|with|is)|in\s+comparison|when\s+compared)\b"
                 r"(?!\s+(?:the\s+)?(?:left|right|contralateral|other|opposite|normal|expected)\b)"),
    ("previously", r"\bpreviously\b(?!\s+(?:treated|diagnosed|resected|operated|repaired|placed|inserted|"
                   r"performed|undergone|had|known|healthy)\b)"),
    ("since", r"\bsince\b"),
    # No change.
    ("unchanged", r"\bun-?chang(?:ed|ing)\b|\bunaltered\b"),
    ("stable", rf"\b{_lex('unchanged', 'stable')}\b|\bstability\b|\bstabiliz\w+"),
    ("no_change", r"\b(?:no|not|without)\s+(?:(?:significant|significantly|appreciable|appreciably|interval|"
                  r"definite|definitely|substantial|substantially|marked|major|gross|grossly|radiographic|"
                  r"visible|apparent|real|much|further|other|measurable|xxxx|been|has|have|had|otherwise|relevant|notable|"
                  r"any|a)\s+){0,3}chang(?:e|es|ed)\b"),
    ("changed", r"\b(?:has|have|had)\s+(?:\w+\s+)?changed\b|\bchanged?\s+(?:since|in\s+(?:position|"
                r"size|appearance|alignment|configuration)|compared)\b|"
                r"\bchanged?\s+from\s+(?:the\s+)?(?:prior|previous|xxxx|last|earlier)\b"),
    ("similar", r"\bsimilar(?:ly)?(?:-appearing|\s+(?:to|in|from|compared|appearance|appearing|exam\w*|"
                r"mild|moderate|severe|position|configuration|size|findings?|changes?))\b|"
                r"\b(?:appears?|is|are|remains?)\s+similar\b|\bappearance\s+is\s+similar\b"),
    ("as_before", r"\bas\s+(?:before|previously)\b"),
    # Seen before.
    *((name, rf"\b(?:{_lex('seen_before', name)})\b") for name in ("again", "redemonstrated", "persistent", "remains",
                                                                   "still")),
    ("continued", r"\bcontinu(?:e|es|ed|ing)\b"),
    # Change over time.
    ("interval", r"\bintervals?\b(?!\s+(?:film|follow|followup|follow-up|imaging|chest|radiograph|evaluation|"
                 r"re-?evaluation|outside))|\bin\s+the\s+interim\b"),
    ("new", r"\bnew(?:ly)?\b(?!\s+(?:onset|diagnos\w*|york|zealand|england|patient))"),
    ("now", r"\bnow\b"),
    ("no_longer", r"\bno\s+longer\b"),
    ("improved", r"\bimprov(?:ed|ing|ement|es)\b"),
    ("worsened", r"\bwors(?:ened|ening|ens|en)\b|\bworse\b(?!\s+(?:than\s+)?(?:on\s+the\s+)?(?:left|right|"
                 r"upper|lower|bilateral\w*|inferior|superior|medial|lateral)\b)(?<!\bleft\sworse)"
                 r"(?<!\bright\sworse)"),
    ("resolved", r"\bresol(?:ved|ving|ution|ve|ves)\b(?<!\bhigh[\s-]resolution)|\bcleared\b|\bclearing\b"),
    ("developing", r"\bdeveloping\b"),
    ("progressed", r"\bprogress(?:ed|ion|ing|ive|ively)?\b"),
    ("developed", r"\b(?:has|have|had)\s+(?:\w+\s+)?developed\b|\bdeveloped\s+(?:in|since)\b|\bevolv\w+"),
    ("size_change", r"\b(?:increas|decreas)(?:ed|e|es)\s+(?:(?:slightly|mildly|markedly|significantly|"
                    r"considerably|somewhat)\s+)?in\s+(?:size|number|extent|conspicuity|prominence|volume|amount)\b|"
                    r"\b(?:increased|decreased)\s+size\s+of\b|\b(?:increas|decreas)ing\b|\benlarging\b|\bdiminish\w*|"
                    r"\b(?:has|have|had)\s+(?:\w+\s+){0,2}(?:increased|decreased|enlarged|grown|shrunk|moved)\b|"
                    r"\b(?:increased|decreased)\s+(?:\w+\s+)?(?:from|since|compared|relative|versus)\b|"
                    r"\b(?:increase|decrease)\s+in\s+(?:the\s+)?(?:size|number|extent|heart\s+size)\b|"
                    r"\b(?:smaller|larger|bigger)\s+than\s+(?:on\s+|in\s+)?(?:the\s+)?(?:prior|previous)\b|"
                    r"\b(?:is|are|appears?|appear)\s+(?:(?:slightly|somewhat|much|mildly|now)\s+)?"
                    r"(?:smaller|larger|bigger)\b(?!\s+than\s+(?:the\s+|on\s+the\s+)?(?:left|right|expected|normal|usual|"
                    r"contralateral|other|opposite)\b)"),
    ("device_change", r"\b(?:has|have|had)\s+(?:also\s+)?been\s+(?:removed|placed|inserted|repositioned|advanced|"
                      r"withdrawn|retracted|exchanged|pulled\s+back)\b|\b(?<!post\s)(?<!s/p\s)removal\b"),
]
_CUES = [(name, re.compile(rx, re.IGNORECASE)) for name, rx in _CUE_SOURCES]
#: Cue matches to ignore when the text right before them matches (checked on the 16 characters before).
_CUE_GUARDS = {"improved": re.compile(r"\b(?:to|would|could|may|might)\s+$", re.IGNORECASE)}
#: Every cue needs one of these words (or a word starting with one of the stems): a sentence without
#: any is dismissed without running the patterns (most sentences of a report). A word added to the cue
#: lexicon's "unchanged"/"seen_before" entries used above must be added here too.
_TRIGGER_WORDS = frozenset("""
prior previous preceding earlier last recent old outside remote comparison older compared previously since
unchanged unchanging unaltered un-changed un-changing stable stably stability change changes changed similar similarly
similar-appearing before again remain remains remained still interval intervals interim new newly now longer
worse cleared clearing developing developed enlarging enlarged grown shrunk moved smaller larger bigger removed placed
inserted repositioned advanced withdrawn retracted exchanged pulled removal exam examination study film
radiograph radiographs x-ray xray x-rays x-xxxx ct scan mri
""".split())
_TRIGGER_STEMS = ("redemonstrat", "re-demonstrat", "persist", "improv", "worsen", "resol", "progress", "evolv",
                  "increas", "decreas", "diminish", "stabiliz", "continu")
_TOKEN = re.compile(r"[a-z]+(?:-[a-z]+)*")


def _may_have_cue(sentence: str) -> bool:
    for tok in _TOKEN.findall(sentence.lower()):
        if tok in _TRIGGER_WORDS or tok.startswith(_TRIGGER_STEMS):
            return True
    return False


#: A clause that only recommends or supposes, and does not claim that a prior was seen.
_NON_ASSERTIVE = re.compile(
    r"\b(?:if|unless|recommend\w*|consider|correlat\w+|suggest\s+comparison|would\s+be\s+(?:helpful|useful)|"
    r"(?:is|are)\s+(?:not\s+available|unavailable)|not\s+available|unavailable|to\s+(?:confirm|document|ensure|"
    r"assess|evaluate|establish|determine|exclude|allow)|follow-?\s?up|followup|absence\s+of\s+(?:prior|previous|"
    r"old|comparison)|(?:no|without)\s+(?:an?\s+)?(?:prior|previous|old|comparison)\s+(?:\w+\s+){0,2}?"
    r"(?:exam|stud|film|radiograph|image|ct|x-)\w*|further\s+evaluation|could\s+be\s+obtained|"
    r"would\s+(?:also\s+)?be\s+(?:helpful|useful|reasonable)|may\s+be\s+(?:warranted|helpful))\b",
    re.IGNORECASE,
)
_CLAUSE_SPLIT = re.compile(r"[;,]|\s+(?:however|but)\s+", re.IGNORECASE)


# ----------------------------------------------------------------------------------------------------
# Detection
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PriorReference:
    """A sentence that refers to a previous examination: its span in the text and the cues that fired."""

    start: int
    end: int
    sentence: str
    cues: tuple[str, ...]


def prior_cues(sentence: str) -> list[str]:
    """Names of the cues that mark ``sentence`` as referring to a previous examination ([] if none).

    The sentence is cut into clauses at commas and semicolons; a clause that recommends or supposes
    ("recommend comparison with prior films", "if this does not resolve") contributes no cue.
    """
    if not _may_have_cue(sentence):
        return []
    found: list[str] = []
    pos = 0
    for m in [*_CLAUSE_SPLIT.finditer(sentence), None]:
        end = m.start() if m is not None else len(sentence)
        clause = sentence[pos:end]
        pos = m.end() if m is not None else len(sentence)
        if not clause.strip() or _NON_ASSERTIVE.search(clause):
            continue
        for name, rx in _CUES:
            if name in found:
                continue
            guard = _CUE_GUARDS.get(name)
            for m in rx.finditer(clause):
                if guard is None or not guard.search(clause[max(0, m.start() - 16):m.start()]):
                    found.append(name)
                    break
    return found


def as_text(text: Any) -> str:
    """Any input as a string, like ``to_scorable_text`` but never cut (stripping must not lose text)."""
    if isinstance(text, str):
        return text
    if isinstance(text, list | tuple):  # chat messages
        return " ".join(as_text(m.get("content", "")) if isinstance(m, dict) else as_text(m) for m in text)
    if isinstance(text, dict):
        return as_text(text.get("content", ""))
    return to_scorable_text(text)


def find_prior_spans(text: Any) -> list[PriorReference]:
    """The sentences of ``text`` that refer to a previous examination, with spans and cues."""
    text = as_text(text)
    out = []
    for a, b in split_sentences(text):
        cues = prior_cues(text[a:b])
        if cues:
            out.append(PriorReference(a, b, text[a:b], tuple(cues)))
    return out


def find_prior_references(text: Any) -> list[str]:
    """The sentences of ``text`` that refer to a previous examination (in order; [] if none).

    ``"Stable cardiomegaly. No acute disease."`` -> ``["Stable cardiomegaly."]``; history such as
    ``"Evidence of prior granulomatous disease."`` is not returned. Never raises on strange input.
    """
    return [r.sentence for r in find_prior_spans(text)]
