"""Sentences that refer to a previous examination: find them, strip them, penalise them.

A report written for a study that has no prior examination should not compare with one. Models
trained on MIMIC-CXR or IU X-ray learn to write "stable cardiomegaly" or "no interval change"
anyway, because many training reports were written with a prior at hand. This module

* finds the sentences of a report that refer to a previous examination
  (:func:`find_prior_references`),
* rewrites a report without them, keeping the findings (:func:`strip_prior_references`),
* decides whether a study had no prior (:func:`has_no_prior`), and
* registers the ``prior_penalty`` scorer: a negative reward for such sentences when the study had
  no prior.

What counts as a reference to a previous examination (the labelling rules of
``tests/fixtures/PRIOR_LABELING.md``, which the detector is measured against):

* an earlier imaging study of the patient is named ("compared to the prior study", "seen on prior
  CT", "not visualized on prior", "since XXXX");
* a finding is described as changed or not changed over time ("stable", "unchanged", "no interval
  change", "again seen", "redemonstrated", "persistent", "remains", "still", "improved", "worsening",
  "increased in size", "resolved", "new", "has been removed", "now");

and what does not:

* patient history and chronicity judged on the current image ("prior granulomatous disease",
  "previous CABG", "status post sternotomy", "history of", "known", "old healed rib fracture",
  "chronic changes", "residual of prior infection", "degenerative changes");
* "increased"/"decreased" meaning more or less than normal ("increased interstitial markings",
  "decreased lung volumes"), and side-to-side comparisons ("left worse than right");
* recommendations and conditionals about priors that do not claim one was seen ("recommend
  comparison with prior films", "if prior images are available", "no prior studies for comparison",
  "follow-up to ensure resolution").

The rules are regular expressions in this file (no model). Measured on 3,955 IU X-ray reports, one CPU
core: detection ~2,600 reports/s (~15,000 sentences/s), stripping ~1,100 reports/s. On 530
hand-labelled IU sentences (``tests/fixtures/prior_sentences.tsv``) the detector reaches precision
1.000 / recall 1.000; on the 150 of them labelled blind after the rules were written, it measured
precision 1.000 / recall 0.986 before its one miss was added. Of the 2,309 IU reports whose COMPARISON
is empty or "None", 287 contain such a sentence.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from reward.base import RewardError, Scorer, ScoreResult, to_scorable_text
from reward.cues import alternation, cue
from reward.text import sentences, split_sentences  # noqa: F401 (sentences: part of this module's API)

# ----------------------------------------------------------------------------------------------------
# Vocabulary
# ----------------------------------------------------------------------------------------------------

#: Nouns that name an imaging examination ("prior study", "previous CT", "old films").
_EXAM = (r"(?:exam|exams|examination|examinations|study|studies|film|films|radiograph|radiographs|radiography"
         r"|x-?rays?|x-xxxx|cxr|cxrs|ct|cts|mri|scan|scans|images?|imaging|views?|comparison|one|ones"
         r"|chest\s+(?:x-?rays?|x-xxxx|ct|radiographs?|films?|exams?|examinations?))")
#: Words allowed between "prior" and the exam noun ("prior PA and lateral chest radiograph").
_EXAM_MOD = (r"(?:chest|outside|portable|two-view|2-view|single-view|pa|ap|lateral|frontal|ct|cxr|"
             r"and(?=\s+(?:lateral|pa|ap|frontal|oblique)\b)|"
             r"radiographic|plain|upright|supine|abdominal|abdomen|xxxx|x-xxxx|thoracic|spine|computed|"
             r"tomography|tomographic|cardiac|contrast|enhanced|similar|the|available|recent|comparison)")
_PRIOR_ADJ = r"(?:prior|previous|preceding|earlier|last|most\s+recent|recent|old|outside|remote|comparison|older)"
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
    ("prior_exam", rf"\b{_PRIOR_ADJ}\s+(?:{_EXAM_MOD}\s+){{0,4}}?{_EXAM}\b|"
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


def _as_text(text: Any) -> str:
    """Any input as a string, like ``to_scorable_text`` but never cut (stripping must not lose text)."""
    if isinstance(text, str):
        return text
    if isinstance(text, list | tuple):  # chat messages
        return " ".join(_as_text(m.get("content", "")) if isinstance(m, dict) else _as_text(m) for m in text)
    if isinstance(text, dict):
        return _as_text(text.get("content", ""))
    return to_scorable_text(text)


def find_prior_spans(text: Any) -> list[PriorReference]:
    """The sentences of ``text`` that refer to a previous examination, with spans and cues."""
    text = _as_text(text)
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


# ----------------------------------------------------------------------------------------------------
# Stripping
# ----------------------------------------------------------------------------------------------------

_F = re.IGNORECASE
_DATE = r"(?:xxxx|_{2,}|\d[\w/.-]*)"
#: An earlier examination as the object of a comparison: "the prior PA and lateral chest radiograph
#: dated XXXX", "previous", "comparison exam", "XXXX", "the XXXX study".
_REF_TAIL = (rf"(?:the\s+|a\s+|an\s+|patient'?s\s+)?"
             rf"(?:{_PRIOR_ADJ}(?:\s+{_EXAM_MOD}){{0,4}}(?:\s+{_EXAM})?"
             rf"|(?:{_EXAM_MOD}\s+){{0,3}}{_EXAM}\s+(?:dated|from|of|on)\s+{_DATE}"
             rf"|xxxx(?:\s+{_EXAM_MOD}){{0,3}}(?:\s+{_EXAM})?|{_DATE})(?!\w)"
             rf"(?:\s+(?:dated|from|of|on|in)\s+{_DATE}(?:,?\s+xxxx)*)?(?:\s+(?:study|exam))*")
_PREPS = (r"(?:(?:as\s+|when\s+)?(?:compared|in\s+comparison)\s+(?:to|with)|from|since|relative\s+to|versus|"
          r"vs\.?|than|to|in|on)")
_CMP_WORDS = (r"(?:stable|unchanged|similar|improved|improving|worse|worsened|worsening|increased|decreased|"
              r"smaller|larger|not\s+significantly\s+(?:changed|xxxx)|changed|more\s+\w+|less\s+\w+|"
              r"redemonstrated|re-demonstrated|(?:small|slight|minimal|mild|some|little|no)\s+(?:interval\s+)?"
              r"changes?)")
_DEG = (r"(?:grossly|relatively|overall|slightly|mildly|markedly|significantly|considerably|somewhat|largely|"
        r"essentially)")
_COPULA = r"(?:is|are|was|were|appears?|appear|remains?|seems?)"
_LEAD = r"^(\s*(?:\d{1,2}[.)]\s+)?)"
_CHANGE_NOUN = (r"(?:development|appearance|placement|insertion|increase|enlargement|progression|worsening|"
                r"decrease)")

#: Ordered rewrites that remove a comparison and keep the finding. ``None`` as replacement means "drop
#: the clause" (its current state cannot be told without the comparison, e.g. "resolved").
_REWRITES: list[tuple[re.Pattern, str | None]] = [(re.compile(a, _F), b) for a, b in [
    # Clauses that only report a resolution or removal, or whose subject is the prior exam itself.
    (r"\b(?:resol(?:ved|ution)|cleared|no\s+longer|has\s+been\s+removed|have\s+been\s+removed|removal)\b", None),
    (rf"{_LEAD}(?:the\s+)?{_PRIOR_ADJ}(?:\s+{_EXAM_MOD}){{0,4}}\s+(?:{_EXAM}|xxxx)\b", None),
    # Leading comparison adverbials: "Compared to the prior study, there is ...".
    (rf"{_LEAD}(?:as\s+|when\s+)?(?:compared\s+(?:to|with)|in\s+comparison\s+(?:to|with)|comparison\s+(?:to|with)|"
     rf"since)\s+{_REF_TAIL},?\s*", r"\1"),
    # Predicates of change: "X has increased in size" -> "X is present".
    (rf"\b(has|have)\s+(?:(?:also|slightly|mildly|markedly|significantly|further|considerably)\s+)*(?:increased|"
     rf"decreased|enlarged|progressed|improved|worsened|developed|grown|been\s+placed|been\s+inserted)"
     rf"(?:\s+(?:slightly|mildly|markedly|considerably|somewhat))?(?:\s+in\s+(?:size|number|extent))?"
     rf"(?:\s+(?:{_PREPS}\s+)?{_REF_TAIL})?", r"\1 PRESENT"),
    # "X, stable from prior exam." / "X unchanged since previous exam" / "that is similar to prior".
    (rf"\s+(which|that)\s+(is|are)\s+(?:{_DEG}\s+)*{_CMP_WORDS}(?:\s+in\s+(?:size|appearance|position))?\s+"
     rf"{_PREPS}\s+(?:on\s+|in\s+)?{_REF_TAIL}\s+and\b", r" \1 \2"),
    (rf"(?:,\s*|\s+)(?:and\s+)?(?:which|that)\s+{_COPULA}\s+(?:{_DEG}\s+)*{_CMP_WORDS}"
     rf"(?:\s+in\s+(?:size|appearance|position))?\s+{_PREPS}\s+(?:on\s+|in\s+)?{_REF_TAIL}", ""),
    (rf"\s+({_COPULA})\s+(?:{_DEG}\s+)*{_CMP_WORDS}(?:\s+in\s+(?:size|appearance|position))?\s+"
     rf"{_PREPS}\s+(?:on\s+|in\s+)?{_REF_TAIL}", r" \1 PRESENT"),
    (rf"(?:,\s*|\s+)(?:and\s+)?(?:{_DEG}\s+)*{_CMP_WORDS}(?:\s+in\s+(?:size|appearance|position))?\s+"
     rf"{_PREPS}\s+(?:on\s+|in\s+)?{_REF_TAIL}", ""),
    # "not visualized on prior" / "also present on the previous exam" / "as better seen on prior CT".
    (rf"\s*\((?:not\s+|also\s+)?(?:seen|noted|present|visualized|appreciated|identified|demonstrated|evident|"
     rf"visible)\s+(?:on|in)\s+{_REF_TAIL}\s*\)", ""),
    (rf"(?:,\s*|\s*-\s*|\s+)(?:(?:which|that)\s+)?(?:(?:is|are|was|were)\s+)?(?:as\s+)?(?:not\s+|also\s+)?"
     rf"(?:(?:more|better|well|most)\s+)?(?:(?:readily|clearly)\s+)?(?:seen|noted|present|visualized|appreciated|"
     rf"identified|demonstrated|described|evident|visible|apparent|imaged)\s+(?:on|in)\s+{_REF_TAIL}", ""),
    # Remaining comparison adverbials anywhere: "compared to prior", "since XXXX", "from the prior study".
    (rf"(?:,\s*|\s+)(?:as\s+|when\s+)?(?:compared|comparison)\s+(?:to|with)\s+{_REF_TAIL}", ""),
    (rf"(?:,\s*|\s+)since\s+(?:at\s+)?{_REF_TAIL}", ""),
    (rf"(?:,\s*|\s+)(?:from|versus|vs\.?|relative\s+to)\s+{_REF_TAIL}", ""),
    (r"(?:,\s*|\s+)(?:in|over)\s+the\s+(?:interval|interim)\b", ""),
    # Whole no-change clauses: "No significant interval change." / ", no change".
    (r"(?:^|,\s*)\s*(?:\d{1,2}[.)]\s+)?(?:there\s+(?:is|has\s+been)\s+)?(?:no|without)\s+(?:\w+\s+){0,3}?"
     r"chang(?:e|es)\b(?:\s+(?:in|of)\s+(?:the\s+)?(?:appearance|position|size)\s+of\b)?", " "),
    (r"\s+without\s+(?:\w+\s+){0,3}?chang(?:e|es)\b", ""),
    (r"\bnot\s+significantly\s+(?:changed|xxxx)\b", ""),
    (r",?\s*(?:and\s+)?(?:without|no)\s+(?:evidence\s+of\s+)?(?:interval\s+)?progression"
     r"(?:\s+of\s+(?:the\s+)?disease)?", ""),
    (r"\s+or\s+(?:progressive|new|worsening|increasing|enlarging)\b", ""),
    # "Again noted is X" -> "There is X"; "X is again seen" -> "X is seen".
    (rf"{_LEAD}again\s+(?:seen|noted|identified|demonstrated|visualized|evident|present|shown)\s+(is|are)\b",
     r"\1There \2"),
    (r"\s*\bagain\b,?", ""),
    (r"\bre-?demonstration\s+of\s+(?:the\s+)?", ""),
    (r"\b(is|are|was|were)\s+re-?demonstrated\b", r"\1 seen"),
    (r"\bre-?demonstrates\b", "shows"),
    # "There has been interval increase in size of X" -> "There is X".
    (rf"\bthere\s+(?:has|have)\s+been\s+(?:an?\s+|some\s+)?(?:(?:significant|mild|slight|marked|further|"
     rf"continued|interval|minimal)\s+)*{_CHANGE_NOUN}\s+(?:in|of)\s+(?:the\s+)?(?:(?:size|number|extent)\s+of\s+)?"
     rf"(?:the\s+)?", "there is "),
    (rf"\bthere\s+is\s+(?:an?\s+)?(?:(?:significant|mild|slight|marked|further|continued|minimal)\s+)*interval\s+"
     rf"{_CHANGE_NOUN}\s+(?:in|of)\s+(?:the\s+)?(?:(?:size|number|extent)\s+of\s+)?", "there is "),
    (rf"{_LEAD}(?:(?:slight|mild|marked|significant|further|minimal|some)\s+)*(?:interval\s+)?{_CHANGE_NOUN}\s+"
     rf"(?:in|of)\s+(?:the\s+)?(?:(?:size|number|extent)\s+of\s+)?", r"\1"),
    # "with stable appearance", "in unchanged position", "Stable appearance of X" -> X.
    (r"\s+with\s+(?:an?\s+)?(?:grossly\s+)?(?:stable|unchanged|similar)\s+(?:appearance|position|configuration)"
     r"(?=\s*(?:[.;,]|$))", ""),
    (r"\b(in|with)\s+(?:an?\s+)?(?:stable|unchanged|similar)\s+(position|configuration|alignment)\b", r"\1 \2"),
    (rf"\b(?:{_DEG}\s+)*(?:stable|unchanged|similar)(?:-appearing)?\s+(?:appearance|position|size|configuration)"
     rf"\s+(?:of|to)\s+", ""),
    # "X is stable and within normal limits" -> "X is within normal limits".
    (rf"\s+(?:{_DEG}\s+)*(?:stable|unchanged)\s+and\s+", " "),
    # Attributive comparison adjectives: "Stable mild cardiomegaly" -> "Mild cardiomegaly".
    (rf"\b(?:{_DEG}\s+)*(?:stable|unchanged|persistent|persisting|continued|redemonstrated|re-demonstrated|"
     rf"similar(?:-appearing)?|improved|improving|worsening|worsened|increasing|decreasing|enlarging|"
     rf"progressive|progressing|new|newly|stably|persistently)(?:\s+appearing)?\s*,?\s+"
     rf"(?!(?:with|and|or|but|from|since|compared|in|on|of|to|as|versus|when|than|without|at|for|by|over|"
     rf"overall|which|that|is|are|position|appearance|size)\b)(?=[\w(])", ""),
    (rf"{_LEAD}(?:appearance|position|size|configuration)\s+of\s+(?:the\s+)?", r"\1"),
    # Predicative comparison adjectives: "Cardiomegaly is unchanged." -> "Cardiomegaly is present."
    (rf"\b({_COPULA})\s+(?:{_DEG}\s+)*(?:stable|unchanged|similar|persistent)"
     rf"(?:\s+in\s+(?:size|appearance|position|configuration))?\b", r"\1 PRESENT"),
    (rf"(?:,\s*|\s+)(?:and\s+|but\s+)?(?:{_DEG}\s+)*(?:stable|unchanged|similar|persistent|persists|"
     rf"re-?demonstrated|again\s+(?:seen|noted|identified|demonstrated))"
     rf"(?:\s+in\s+(?:size|appearance|position|configuration))?(?=\s*(?:[.;,]|$))", ""),
    (r"\b(persists)\b", "is PRESENT"),
    (r"\b(persist)\b", "are PRESENT"),
    # "X remains Y" -> "X is Y"; "continues to be" -> "is".
    (r"\b(?:remains|continues\s+to\s+be)\b", "is"),
    (r"\b(?:remain|continue\s+to\s+be)\b", "are"),
    (r"\bremained\b", "was"),
    (r"\s*\b(?:still|now|persistently|stably)\b", ""),
    (r"(?:,\s*|\s+)(?:as\s+(?:before|previously)|previously(?:\s+(?:seen|noted|described|identified|"
     r"demonstrated|visualized|mentioned|reported))?)(?=\s*(?:[.;,]|$))", ""),
    (r"\b(?:the\s+)?previously\s+(?:seen|noted|described|identified|demonstrated|visualized|mentioned|"
     r"reported|evident|present)\s+", "the "),
    (r"\binterval\s+(?!chang)", ""),
    (r",?\s+(?:which|that)\s+(?:is|are)\s+PRESENT\b", ""),
    (r",?\s+and\s+(?:is|are|appears?|appear)\s+PRESENT\b", ""),
]]

#: Words that carry no finding: a clause made of them only is dropped.
_EMPTY_WORDS = frozenset("""
a an the this these that those it its they there here is are was were be been being has have had do does
of in on to from with and or but as at by for overall otherwise grossly relatively slightly mildly exam
examination study studies film films radiograph radiographs chest appearance appear appears appearing
findings finding present seen noted identified visualized demonstrated similar position size interval
change changes changed significant significantly radiographic radiographically xxxx x-xxxx compared
comparison prior previous also again other all both one remain remains image images imaging view views
today current patient's patient which essentially largely however increased decreased improved worse
worsened smaller larger aeration markedly considerably somewhat
""".split())
#: Normal anatomy or a pronoun as the whole subject: "The cardiac silhouette is present." says nothing.
_ANATOMY = (r"(?:\d{1,2}[.)]\s+)?(?:the\s+)?(?:(?:cardiac|cardiomediastinal|mediastinal|cardio\s+mediastinal|heart|"
            r"hilar|paramediastinal)\s+(?:silhouettes?|contours?|size)|cardiomediastinal|mediastinum|heart(?:\s+size)?|"
            r"lungs?|hila|pulmonary\s+(?:vasculature|vascularity|xxxx)|osseous\s+structures|bony\s+structures|"
            r"xxxx|these|this|it|they|that|findings?|exam|examination|appearance|chest)"
            r"(?:\s+(?:and|or)\s+(?:the\s+)?(?:mediastin\w+|hil\w+|heart|cardiac|pulmonary|lungs?|contours?|"
            r"silhouettes?|size|vasculature|vascularity|structures|xxxx)(?:\s+(?:contours?|silhouettes?|size|"
            r"vasculature|vascularity|structures))?)?")
_TRAILING_WITH_ANATOMY = re.compile(rf"\s+with\s+{_ANATOMY}(?=\s*[.;!?]*$)", re.IGNORECASE)
_ANATOMY_ONLY = re.compile(rf"^{_ANATOMY}(?:\s+(?:is|are|appears?|appear)\s+PRESENT)?\s*[.;!?]*$", re.IGNORECASE)
_WORD = re.compile(r"[A-Za-z][A-Za-z'-]*")
_ARTICLE = re.compile(r"\b([Aa])n?\s+(?=([A-Za-z]))")


def _fix_articles(s: str) -> str:
    def repl(m: re.Match) -> str:
        nxt = s[m.end():m.end() + 8].lower()
        vowel = nxt[:1] in "aeiou" and not nxt.startswith(("uni", "use", "usu", "one"))
        return f"{m.group(1)}{'n' if vowel else ''} "

    return _ARTICLE.sub(repl, s)


def _tidy(s: str) -> str:
    s = re.sub(r"\s+", " ", s)
    s = re.sub(r"\s+([,.;:!?)])", r"\1", s)
    s = re.sub(r"\(\s*\)", "", s)
    s = re.sub(r",(\s*,)+", ",", s)
    s = re.sub(r"[,;:]\s*([.!?])", r"\1", s)
    s = re.sub(r"^(\s*(?:\d{1,2}[.)]\s+)?)[,;:]\s*", r"\1", s)
    s = re.sub(r"^(\s*(?:\d{1,2}[.)]\s+)?)(?:and|or|but)\s+", r"\1", s, flags=re.IGNORECASE)
    s = re.sub(r"\s+(?:and|or|but|with|which|that)\s*([.;!?]|$)", r"\1", s, flags=re.IGNORECASE)
    s = s.strip()
    m = re.match(r"^((?:\d{1,2}[.)]\s+)?)([a-z])", s)
    if m:
        s = m.group(1) + m.group(2).upper() + s[m.end():]
    return _fix_articles(s)


def _content_words(s: str) -> list[str]:
    return [w for w in _WORD.findall(s.lower()) if w not in _EMPTY_WORDS]


def _rewrite_clause(clause: str) -> str | None:
    """A clause without its comparison, or None when nothing of the finding can be kept."""
    s = clause
    for rx, repl in _REWRITES:
        if repl is None:
            if rx.search(s):
                return None
            continue
        s = rx.sub(repl, s)
    # Drop comma-separated parts that only name normal anatomy ("..., mediastinal contours.").
    parts = [p for p in re.split(r",\s+", _tidy(s)) if not _ANATOMY_ONLY.match(p.strip())]
    s = _tidy(_TRAILING_WITH_ANATOMY.sub("", ", ".join(parts)))
    s = re.sub(r"\b(is|are|was|were)\s+PRESENT\b", r"\1 present", s)
    s = re.sub(r"\b(appears|seems|has)\s+PRESENT\b", "is present", s)
    s = re.sub(r"\b(appear|seem|have)\s+PRESENT\b", "are present", s)
    s = s.replace("PRESENT", "present")
    if not _content_words(s.replace("present", "")) or prior_cues(s):
        return None
    return s


def _rewrite_sentence(sentence: str) -> str | None:
    """The sentence without its prior references, or None when the whole sentence goes."""
    parts = re.split(r"(;\s*)", sentence)
    kept: list[str] = []
    for i in range(0, len(parts), 2):
        clause = parts[i]
        if not clause.strip():
            continue
        new = _rewrite_clause(clause) if prior_cues(clause) else clause.strip()
        if new:
            kept.append(new)
    if not kept:
        return None
    out = "; ".join(k.rstrip(";") for k in kept)
    end = sentence.rstrip()[-1:]
    if end in ".!?" and not out.endswith(end):
        out = out.rstrip(".!?;,") + end
    return _tidy(out)


def strip_prior_references(text: Any) -> str:
    """The report without its references to a previous examination, findings kept.

    Sentences without a reference are kept byte for byte, and so is the white space between kept
    sentences. A sentence with a reference is rewritten clause by clause (clauses split at ``;``):

    * comparison phrases are removed: "compared to the prior study", "since XXXX", "from prior",
      "in the interval", "seen on prior CT", ", stable." ("Calcified granuloma, unchanged from prior."
      -> "Calcified granuloma.");
    * comparison adjectives in front of a finding are removed: "Stable mild cardiomegaly." -> "Mild
      cardiomegaly."; "Persistent/new/worsening/improved X" -> "X"; "again", "still", "now" go;
    * predicates that presuppose the finding keep it: "Cardiomegaly is unchanged." -> "Cardiomegaly is
      present."; "The nodule has increased in size." -> "The nodule is present."; "The lungs remain
      hyperexpanded." -> "The lungs are hyperexpanded."; "There has been interval development of X" ->
      "There is X";
    * a clause is dropped when it says nothing but the comparison ("No interval change.", "Stable
      appearance of the chest.", "The cardiac silhouette is unchanged.", "This is unchanged.") or when
      its current state cannot be told without the prior ("Interval resolution of the effusion.",
      "The PICC line has been removed.").

    Every output passes the detector: ``find_prior_references(strip_prior_references(t)) == []``; a
    clause the rewrites cannot clean is dropped rather than kept. "No new X" becomes "No X" (a stronger
    statement than the original: documented approximation).
    """
    text = _as_text(text)
    spans = split_sentences(text)
    if not spans:
        return text
    kept: list[tuple[str, str]] = []  # (white space before, sentence)
    pending: str | None = None  # white space in front of dropped sentences, kept for the next one
    prev_end = 0
    for a, b in spans:
        sep, sentence = text[prev_end:a], text[a:b]
        prev_end = b
        if pending is not None and pending.count("\n") > sep.count("\n"):
            sep = pending
        new = _rewrite_sentence(sentence) if prior_cues(sentence) else sentence
        if new:
            kept.append((sep, new))
            pending = None
        else:
            pending = sep if pending is None or sep.count("\n") >= pending.count("\n") else pending
    if not kept:
        return ""
    lead, trail = text[:spans[0][0]], text[spans[-1][1]:]
    body = kept[0][1] + "".join(sep + s for sep, s in kept[1:])
    return lead + body + trail


# ----------------------------------------------------------------------------------------------------
# Has the study a prior?
# ----------------------------------------------------------------------------------------------------

_NONE_LIKE = re.compile(
    r"^(?:comparison\s*:?\s*)?(?:none(?:\s+available)?|n/?a|nil|-+|no(?:ne)?\s+(?:prior|previous|old|comparison|"
    r"comparisons)\b.*|not\s+available|unavailable|no\s+(?:\w+\s+)?(?:studies|study|exams?|examinations?|films?)"
    r"\s+(?:available|for\s+comparison)\b.*|none\.?\s+\w.*)?$",
    re.IGNORECASE,
)


def comparison_says_none(comparison: Any) -> bool:
    """True when a COMPARISON section is empty or says there is nothing to compare with.

    Mirrors ``data_prep.schema.comparison_is_empty`` (reimplemented: ``reward`` does not import
    ``data_prep``) and also accepts variants such as "None available.", "No prior studies.",
    "No comparison chest x-XXXX." and "N/A". A de-identified date ("XXXX, XXXX") means there was one.
    """
    if comparison is None:
        return True
    if isinstance(comparison, float) and comparison != comparison:  # NaN from pandas
        return True
    c = " ".join(str(comparison).split()).strip().strip(".;:").strip()
    return not c or bool(_NONE_LIKE.match(c))


def _prior_is_empty(prior: Any) -> bool:
    if prior is None:
        return True
    if isinstance(prior, float) and prior != prior:
        return True
    if isinstance(prior, dict):
        return not any(prior.get(k) for k in ("study_id", "findings", "impression", "images"))
    if isinstance(prior, str):
        return not prior.strip() or prior.strip().lower() in {"none", "null", "nan", "{}"}
    if isinstance(prior, Sequence):
        return len(prior) == 0
    return not bool(prior)


def has_no_prior(comparison: Any = None, prior: Any = None) -> bool:
    """True when the study had no prior: no prior study record and an empty/"None"-like COMPARISON.

    ``prior`` is the study record's ``prior`` field (a dict such as ``{"study_id": ...}``, or None).
    """
    return _prior_is_empty(prior) and comparison_says_none(comparison)


# ----------------------------------------------------------------------------------------------------
# The scorer
# ----------------------------------------------------------------------------------------------------


def _as_bool(v: Any, column: str, i: int) -> bool:
    if isinstance(v, bool):
        return v
    if v is None or (isinstance(v, float) and v != v):
        raise RewardError(f"prior_penalty: column '{column}' row {i} is empty (expected true/false)")
    if isinstance(v, int | float):
        return bool(v)
    s = str(v).strip().lower()
    if s in {"true", "1", "yes", "y", "t"}:
        return True
    if s in {"false", "0", "no", "n", "f"}:
        return False
    raise RewardError(f"prior_penalty: column '{column}' row {i} has value {v!r} (expected true/false)")


class PriorPenalty(Scorer):
    """Penalty for referring to a previous examination when the study had none.

    Per sample: ``-penalty`` (default -1.0) when the completion has at least one sentence that refers
    to a previous examination and the study had no prior, else 0.0. With ``per_sentence=True`` the
    penalty is ``-penalty * number_of_such_sentences`` (capped at ``max_count``).

    Context columns (one value per sample), checked in this order:

    * ``has_prior``: bool (or "true"/"false"/0/1);
    * ``comparison`` and/or ``prior``: the study record's fields; no prior means no prior study and a
      COMPARISON that is empty or "None"-like (:func:`has_no_prior`).

    With none of these columns the scorer raises :class:`RewardError`, unless ``assume_no_prior=True``
    (every study is treated as having no prior). No reference is needed.
    """

    name = "prior_penalty"
    needs_reference = False
    higher_is_better = True

    def __init__(self, penalty: float = 1.0, per_sentence: bool = False, max_count: int = 10,
                 assume_no_prior: bool = False) -> None:
        if penalty < 0:
            raise RewardError(f"prior_penalty: penalty must be >= 0 (the score is -penalty), got {penalty}")
        self.penalty = float(penalty)
        self.per_sentence = bool(per_sentence)
        self.max_count = int(max_count)
        self.assume_no_prior = bool(assume_no_prior)

    def _no_prior(self, n: int, has_prior=None, comparison=None, prior=None) -> list[bool]:
        for col, vals in (("has_prior", has_prior), ("comparison", comparison), ("prior", prior)):
            if vals is not None and len(vals) != n:
                raise RewardError(f"prior_penalty: {n} completions but {len(vals)} values in column '{col}'")
        if has_prior is not None:
            return [not _as_bool(v, "has_prior", i) for i, v in enumerate(has_prior)]
        if comparison is not None or prior is not None:
            comps = comparison if comparison is not None else [None] * n
            priors = prior if prior is not None else [None] * n
            return [has_no_prior(c, p) for c, p in zip(comps, priors)]
        if self.assume_no_prior:
            return [True] * n
        raise RewardError("prior_penalty needs a context column 'has_prior' or 'comparison'/'prior' "
                          "(or construct it with assume_no_prior=True)")

    def score(self, hyps: Sequence[str], refs: Sequence[str] | None = None, *, has_prior=None,
              comparison=None, prior=None, **_: Any) -> ScoreResult:
        no_prior = self._no_prior(len(hyps), has_prior, comparison, prior)
        scores, details = [], []
        for h, np_ in zip(hyps, no_prior):
            found = find_prior_spans(h)
            count = min(len(found), self.max_count)
            if np_ and count:
                s = -self.penalty * (count if self.per_sentence else 1)
            else:
                s = 0.0
            scores.append(s)
            details.append({"n_prior_sentences": len(found), "no_prior": np_,
                            "cues": sorted({c for r in found for c in r.cues})})
        n_flag = sum(1 for d in details if d["n_prior_sentences"] and d["no_prior"])
        corpus = {"mean": sum(scores) / len(scores) if scores else 0.0,
                  "rate_prior_reference_without_prior": n_flag / max(1, sum(no_prior)),
                  "n_no_prior": sum(no_prior)}
        return ScoreResult(scores, details, corpus)
