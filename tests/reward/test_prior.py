"""reward.prior: sentence splitting, prior-exam detection (measured on hand-labelled IU sentences),
stripping, has_no_prior and the prior_penalty scorer."""

from __future__ import annotations

import csv
import json
import re

import pytest

from reward.base import RewardError, get_scorer
from reward.prior import (
    PriorPenalty,
    comparison_says_none,
    find_prior_references,
    find_prior_spans,
    has_no_prior,
    prior_cues,
    sentences,
    split_sentences,
    strip_prior_references,
)
from tests.builders.repo import FIXTURES, require_shared

FIXTURE = FIXTURES / "prior_sentences.tsv"


def _labelled() -> list[dict[str, str]]:
    with FIXTURE.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def _precision_recall(rows, predict) -> tuple[float, float, int, int, int]:
    tp = fp = fn = 0
    for r in rows:
        y, p = r["label"] == "1", bool(predict(r["sentence"]))
        tp += p and y
        fp += p and not y
        fn += y and not p
    return tp / max(1, tp + fp), tp / max(1, tp + fn), tp, fp, fn


# -- sentences -------------------------------------------------------------------------------------


def test_split_keeps_list_numbers_abbreviations_and_decimals():
    assert sentences("1. Stable cardiomegaly. 2. No effusion vs. atelectasis.") == [
        "1. Stable cardiomegaly.", "2. No effusion vs. atelectasis."]
    assert sentences("Limited study with widened mediastinum 3. No effusion.") == [
        "Limited study with widened mediastinum", "3. No effusion."]
    assert sentences("Mass measures 3.3 x 6.1 cm. Dr. XXXX was notified.") == [
        "Mass measures 3.3 x 6.1 cm.", "Dr. XXXX was notified."]
    assert sentences("FINDINGS:\nLungs are clear.\n\nIMPRESSION:\n1. Normal\n2. No change") == [
        "FINDINGS:\nLungs are clear.", "IMPRESSION:", "1. Normal", "2. No change"]
    assert sentences("") == [] and sentences("   \n ") == []


def test_split_spans_cover_the_text_but_white_space():
    text = "  Stable cardiomegaly.  No effusion!\n\nImpression: normal?  "
    spans = split_sentences(text)
    assert [text[a:b] for a, b in spans] == ["Stable cardiomegaly.", "No effusion!", "Impression: normal?"]
    bounds = [0] + [x for ab in spans for x in ab] + [len(text)]
    gaps = [text[bounds[i]:bounds[i + 1]] for i in range(0, len(bounds), 2)]
    assert all(g.strip() == "" for g in gaps)


# -- detection -------------------------------------------------------------------------------------


@pytest.mark.parametrize("sentence", [
    "Stable cardiomegaly.",
    "No interval change.",
    "Compared to the prior study, there is a new left effusion.",
    "Calcified granuloma, unchanged from prior.",
    "Left base opacities again noted.",
    "Redemonstrated severe L1 compression fracture.",
    "The lungs remain hyperexpanded.",
    "The PICC line has been removed.",
    "Interval resolution of left effusion.",
    "There are bilateral opacities, increased since the previous exam.",
    "Previously noted nodule is no longer seen.",
    "No new consolidation.",
    "Since ___, the effusion is larger.",
    "Persistent small right pleural effusion.",
    "Worsening bibasilar opacities.",
    "Mediastinal contours appear similar to prior.",
    "This is not seen on the comparison.",
])
def test_prior_references_are_found(sentence):
    assert find_prior_references(sentence) == [sentence], prior_cues(sentence)


@pytest.mark.parametrize("sentence", [
    "Evidence of prior granulomatous disease.",
    "Dense nodule suggests a previous granulomatous process.",
    "History of prior pneumonia.",
    "Mediastinal clips from prior CABG.",
    "Status post median sternotomy.",
    "Old healed left rib fractures.",
    "Chronic changes of emphysema.",
    "Small residual left pneumothorax.",
    "Increased interstitial markings.",
    "Decreased lung volumes with crowding.",
    "Bibasilar airspace disease, left worse than right.",
    "Recommend comparison with prior films to confirm stability.",
    "If prior images are not available, CT is recommended.",
    "No prior images are available for comparison.",
    "New onset chest pain.",
    "Degenerative changes of the thoracic spine.",
    "Deep inspiration would improve visualization.",
    "Known metastatic disease.",
    "There is a nodule compared to the left side.",
])
def test_history_and_recommendations_are_not_prior_references(sentence):
    assert find_prior_references(sentence) == [], prior_cues(sentence)


def test_find_returns_sentences_in_order_with_spans():
    text = "Heart size normal. Stable cardiomegaly. No effusion. Unchanged granuloma."
    assert find_prior_references(text) == ["Stable cardiomegaly.", "Unchanged granuloma."]
    spans = find_prior_spans(text)
    assert [text[s.start:s.end] for s in spans] == ["Stable cardiomegaly.", "Unchanged granuloma."]
    assert spans[0].cues == ("stable",) and spans[1].cues == ("unchanged",)


def test_precision_and_recall_on_labelled_iu_sentences():
    rows = _labelled()
    assert len(rows) >= 300
    assert {r["label"] for r in rows} == {"0", "1"} and {r["split"] for r in rows} == {"dev", "test"}
    for split in ("dev", "test"):
        part = [r for r in rows if r["split"] == split]
        p, r, tp, fp, fn = _precision_recall(part, find_prior_references)
        print(f"prior detector on {split} ({len(part)} sentences): precision {p:.3f} recall {r:.3f} "
              f"(tp {tp}, fp {fp}, fn {fn})")
        assert p >= 0.95 and r >= 0.95, (split, p, r)
    p, r, *_ = _precision_recall(rows, find_prior_references)
    print(f"prior detector on all {len(rows)}: precision {p:.3f} recall {r:.3f}")
    assert p >= 0.97 and r >= 0.97


def test_detector_beats_the_context_historical_lexicon():
    """The naive baseline (any pyConTextNLP HISTORICAL term) fires on history; ours must be better."""
    kb = json.loads(require_shared("prior_refs", "pyConTextNLP_HISTORICAL_terms.json").read_text())
    pats = [re.compile(i["regex"] or rf"\b{re.escape(i['lex'])}\b", re.IGNORECASE) for i in kb["items"]]
    rows = _labelled()
    bp, br, *_ = _precision_recall(rows, lambda s: any(p.search(s) for p in pats))
    p, r, *_ = _precision_recall(rows, find_prior_references)
    print(f"ConText HISTORICAL lexicon: precision {bp:.3f} recall {br:.3f}; ours {p:.3f} / {r:.3f}")
    assert p > bp + 0.2 and r >= br


# -- stripping -------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("Stable cardiomegaly.", "Cardiomegaly."),
    ("Stable cardiomegaly compared to prior.", "Cardiomegaly."),
    ("Cardiomegaly is unchanged.", "Cardiomegaly is present."),
    ("No interval change.", ""),
    ("The cardiac silhouette is unchanged.", ""),
    ("Calcified granuloma, unchanged from prior.", "Calcified granuloma."),
    ("The lungs remain hyperexpanded.", "The lungs are hyperexpanded."),
    ("Left base opacities again noted, stable.", "Left base opacities noted."),
    ("Again seen is a left basilar opacity.", "There is a left basilar opacity."),
    ("Interval development of left lower lobe airspace disease.", "Left lower lobe airspace disease."),
    ("The nodule has increased in size since the prior study.", "The nodule is present."),
    ("Interval resolution of left effusion.", ""),
    ("Compared to the prior radiograph from ___, there is a new small left pleural effusion.",
     "There is a small left pleural effusion."),
    ("Mild cardiomegaly; no change from prior exam.", "Mild cardiomegaly."),
    ("There is persistent mild to moderate cardiomegaly.", "There is mild to moderate cardiomegaly."),
])
def test_strip_rewrites_and_drops(text, expected):
    assert strip_prior_references(text) == expected


def test_strip_keeps_other_sentences_and_white_space():
    text = "FINDINGS: Heart size normal.  Stable cardiomegaly.\n\nNo interval change.\nIMPRESSION: No acute disease."
    out = strip_prior_references(text)
    assert out == "FINDINGS: Heart size normal.  Cardiomegaly.\n\nIMPRESSION: No acute disease."
    assert strip_prior_references("No acute disease.  Lungs clear.") == "No acute disease.  Lungs clear."
    assert strip_prior_references("") == "" and strip_prior_references(None) == ""


def test_strip_on_labelled_sentences():
    rows = _labelled()
    dropped = 0
    for r in rows:
        out = strip_prior_references(r["sentence"])
        assert find_prior_references(out) == [], (r["sentence"], out)
        if r["label"] == "0":
            assert out == r["sentence"]  # nothing else removed
        elif not out:
            dropped += 1
    n_pos = sum(r["label"] == "1" for r in rows)
    print(f"strip: {n_pos - dropped} of {n_pos} referring sentences rewritten, {dropped} dropped")
    assert dropped < 0.3 * n_pos  # most findings are kept


def _iu_texts(limit: int) -> list[str]:
    from data_prep.iu_xray import iter_reports

    out = []
    for r in iter_reports(require_shared("iu_xray", "NLMCXR_reports.tgz")):
        out.append(f"{r['findings']} {r['impression']}".strip())
        if len(out) >= limit:
            break
    return out


def test_strip_on_iu_reports_leaves_no_reference_and_keeps_the_rest():
    texts = _iu_texts(400)
    n_flagged = 0
    for t in texts:
        out = strip_prior_references(t)
        assert find_prior_references(out) == []
        flagged = set(find_prior_references(t))
        n_flagged += bool(flagged)
        kept = [s for s in sentences(t) if s not in flagged]
        pos = 0
        for s in kept:  # every sentence without a reference is still there, in order, unchanged
            i = out.find(s, pos)
            assert i >= 0, (s, out)
            pos = i + len(s)
    assert n_flagged > 50


# -- has_no_prior ----------------------------------------------------------------------------------


@pytest.mark.parametrize("comparison", [None, "", "None.", "none", "NONE AVAILABLE.", "N/A", "No prior studies.",
                                        "No comparison chest x-XXXX.", "  none  ", float("nan")])
def test_comparison_says_none(comparison):
    assert comparison_says_none(comparison)
    assert has_no_prior(comparison, None)


@pytest.mark.parametrize("comparison", ["XXXX", "XXXX, XXXX.", "Two views of the chest dated XXXX.",
                                        "Chest radiograph ___", "CT chest XXXX"])
def test_comparison_with_a_study(comparison):
    assert not comparison_says_none(comparison)
    assert not has_no_prior(comparison, None)


def test_prior_record_means_a_prior():
    assert not has_no_prior("None.", {"study_id": "s1", "findings": "Clear."})
    assert has_no_prior("None.", {}) and has_no_prior(None, {"study_id": None, "findings": ""})


# -- the scorer ------------------------------------------------------------------------------------


def test_prior_penalty_scores():
    sc = get_scorer("prior_penalty")
    assert isinstance(sc, PriorPenalty) and not sc.needs_reference
    hyps = ["Stable cardiomegaly. Unchanged granuloma.", "No acute disease.", "Stable cardiomegaly."]
    res = sc(hyps, has_prior=[False, False, True])
    assert res.scores == [-1.0, 0.0, 0.0]
    assert res.details[0]["n_prior_sentences"] == 2 and res.details[0]["no_prior"]
    assert res.corpus["rate_prior_reference_without_prior"] == pytest.approx(0.5)
    res = sc(hyps, comparison=["None.", "", "XXXX"], prior=[None, None, None])
    assert res.scores == [-1.0, 0.0, 0.0]
    res = sc(hyps, comparison=["None.", "", "None."], prior=[None, None, {"study_id": "p"}])
    assert res.scores == [-1.0, 0.0, 0.0]
    per = get_scorer("prior_penalty", per_sentence=True, penalty=0.5)
    assert per(hyps, has_prior=["false", 0, "no"]).scores == [-1.0, 0.0, -0.5]


def test_prior_penalty_needs_its_columns():
    sc = get_scorer("prior_penalty")
    with pytest.raises(RewardError, match="has_prior"):
        sc(["Stable."])
    with pytest.raises(RewardError, match="has_prior"):
        sc(["Stable."], has_prior=["maybe"])
    with pytest.raises(RewardError, match="2 values"):
        sc(["Stable."], comparison=["None", "None"])
    assert get_scorer("prior_penalty", assume_no_prior=True)(["Stable.", "Clear."]).scores == [-1.0, 0.0]
    with pytest.raises(RewardError):
        PriorPenalty(penalty=-1)


def test_prior_penalty_on_strange_completions():
    sc = get_scorer("prior_penalty", assume_no_prior=True)
    weird = ["", None, "\x00\x07 stable \u202e", "<b>Stable</b> cardiomegaly", "Stable. " * 20_000,
             [{"role": "assistant", "content": "Unchanged."}], 12345, "ünchanged ☃ 稳定"]
    res = sc(weird)
    assert len(res.scores) == len(weird) and all(s in (0.0, -1.0) for s in res.scores)
    assert res.scores[3] == -1.0 and res.scores[4] == -1.0 and res.scores[5] == -1.0


def test_one_sentence_splitter_for_the_labeler_and_the_prior_detector():
    """reward.text.split_sentences is the splitter of the labeler, the prior detector and the measurement
    checker; the labeler's sentence scope follows it ("vs." and a list number do not end a sentence; before,
    the labeler cut at every '. '), and an initial does not end one (the measurement checker's old rule)."""
    import reward.chexpert as chexpert
    import reward.measurement_extract as measurements
    import reward.prior as prior
    from reward import text

    assert prior.split_sentences is text.split_sentences and chexpert.split_sentences is text.split_sentences
    assert measurements.split_sentences is text.split_sentences
    assert text.sentences("Discussed with Dr. J. R. Smith at 10 am. ETT 4.5 cm above the carina.") == [
        "Discussed with Dr. J. R. Smith at 10 am.", "ETT 4.5 cm above the carina."]
    assert text.sentences("Stable a. Unchanged B. Zone A. New effusion.") == [
        "Stable a.", "Unchanged B.", "Zone A.", "New effusion."]
    # a period glued to the next sentence ends it for the splitter as for the labeler's normalize
    glued = "No acute process.Enlarged heart. Heart size 4.5 cm."
    assert text.sentences(glued) == ["No acute process.", "Enlarged heart.", "Heart size 4.5 cm."]
    n = chexpert.normalize(glued)
    assert [n[a:b] for a, b in text.split_sentences(n)] == [s.lower() for s in text.sentences(glued)]
    t = chexpert.normalize("Atelectasis vs. pneumonia in the left base. No effusion.\n2. Stable heart size?")
    ctx = chexpert._Context(t, chexpert.compiled_rules(str(chexpert.RULES_PATH)), {}, [])
    spans = text.split_sentences(t)
    assert [t[a:b] for a, b in spans] == ["atelectasis vs. pneumonia in the left base.", "no effusion.", ".",
                                          "2. stable heart size?"]
    s, e = ctx._sentence(t.index("pneumonia"))
    assert t[s:e].strip() == "atelectasis vs. pneumonia in the left base"
    assert len(t) - 1 in ctx.question
    assert text.find_sections("FINDINGS: a.\nNote: b\nIMPRESSION: c", ["findings", "impression"]) == [
        ("findings", 9, 13), ("impression", 32, 34)]
