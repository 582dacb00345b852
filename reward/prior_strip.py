"""Rewriting a report without its references to a previous examination (:func:`strip_prior_references`):
comparison phrases and adjectives removed, presupposing predicates turned into statements of presence, clauses
that only compare dropped; every output passes the detector (:mod:`reward.prior_detect`).
"""

from __future__ import annotations

import re
from typing import Any

from reward.prior_detect import EXAM, EXAM_MOD, PRIOR_ADJ, as_text, prior_cues
from reward.text import split_sentences

_F = re.IGNORECASE
_DATE = r"(?:xxxx|_{2,}|\d[\w/.-]*)"
#: An earlier examination as the object of a comparison: "the prior PA and lateral chest radiograph
#: dated XXXX", "previous", "comparison exam", "XXXX", "the XXXX study".
_REF_TAIL = (rf"(?:the\s+|a\s+|an\s+|patient'?s\s+)?"
             rf"(?:{PRIOR_ADJ}(?:\s+{EXAM_MOD}){{0,4}}(?:\s+{EXAM})?"
             rf"|(?:{EXAM_MOD}\s+){{0,3}}{EXAM}\s+(?:dated|from|of|on)\s+{_DATE}"
             rf"|xxxx(?:\s+{EXAM_MOD}){{0,3}}(?:\s+{EXAM})?|{_DATE})(?!\w)"
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
    (rf"{_LEAD}(?:the\s+)?{PRIOR_ADJ}(?:\s+{EXAM_MOD}){{0,4}}\s+(?:{EXAM}|xxxx)\b", None),
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
    text = as_text(text)
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
