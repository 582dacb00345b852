"""The CheXpert rule labeler: the Stanford oracle, clinical rules, the IU gold evaluation, the CLI."""

from __future__ import annotations

import csv
import json
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.iu_gold import evaluate_iu_gold, read_iu_reports
from reward.base import RewardError, get_scorer
from reward.chexpert import ChexpertRulesLabeler, label_report, label_reports, load_rules
from reward.constants import CHEXPERT_LABELS
from tests.builders.repo import FIXTURES, require_shared

P, N, U = 1.0, 0.0, -1.0


def _read_labeled(path) -> list[tuple[str, dict]]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    head = rows[0]
    return [(r[0], {k: (float(v) if v else None) for k, v in zip(head[1:], r[1:])}) for r in rows[1:]]


# ------------------------------------------------------------------------------------------------
# The Stanford labeler's own 4-report oracle
# ------------------------------------------------------------------------------------------------
def test_reproduces_stanford_sample_exactly():
    d = require_shared("chexpert_labeler")
    with open(d / "sample_reports.csv", newline="", encoding="utf-8") as f:
        texts = [r[0] for r in csv.reader(f)]
    expected = _read_labeled(d / "labeled_reports.csv")
    assert [t for t, _ in expected] == texts
    got = label_reports(texts)
    for (text, exp), lab in zip(expected, got):
        assert list(lab) == list(CHEXPERT_LABELS)
        assert lab == exp, text


def test_cli_writes_the_chexpert_layout(tmp_path):
    from reward.cli_label import label_file

    d = require_shared("chexpert_labeler")
    with open(d / "sample_reports.csv", newline="", encoding="utf-8") as f:
        texts = [r[0] for r in csv.reader(f)]
    src = tmp_path / "in.csv"
    with open(src, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["report"])
        w.writerows([t] for t in texts)
    out = tmp_path / "labels.csv"
    summary = label_file(src, "report", out, progress=False)
    assert summary["reports"] == 4
    with open(out, newline="", encoding="utf-8") as f:
        got = list(csv.reader(f))
    with open(d / "labeled_reports.csv", newline="", encoding="utf-8") as f:
        want = list(csv.reader(f))
    assert got == want  # same header, same cells ("1.0", "-1.0", blank)


def test_cli_jsonl_with_ids_and_errors(tmp_path):
    import argparse

    from reward.cli_label import label_file, register

    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"id": "a", "text": "Small left pleural effusion."}) + "\n"
                   + json.dumps({"id": "b", "text": None}) + "\n")
    out = tmp_path / "o.csv"
    label_file(src, "text", out, id_column="id", progress=False)
    rows = list(csv.DictReader(open(out, newline="")))
    assert [r["id"] for r in rows] == ["a", "b"]
    assert rows[0]["Pleural Effusion"] == "1.0" and rows[1]["No Finding"] == ""
    with pytest.raises(RewardError, match=r"in\.jsonl:1: column 'report' not found"):
        label_file(src, "report", out, progress=False)
    bad = tmp_path / "bad.csv"
    bad.write_text("x,y\n1,2\n")
    with pytest.raises(RewardError, match=r"bad\.csv:1: column\(s\) 'report' not found"):
        label_file(bad, "report", out, progress=False)
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"text": "ok"}\n{oops\n')
    with pytest.raises(RewardError, match=r"broken\.jsonl:2: not valid JSON"):
        label_file(broken, "text", out, progress=False)
    # the verb is wired with argparse
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="verb"))
    args = parser.parse_args(["label", "--input", str(src), "--text-column", "text", "--out",
                              str(tmp_path / "c.csv"), "--quiet"])
    assert args.func(args) == 0 and (tmp_path / "c.csv").exists()


# ------------------------------------------------------------------------------------------------
# Clinical rules, one behaviour per case
# ------------------------------------------------------------------------------------------------
CASES = [
    # pre-negation and lists
    ("No pleural effusion.", {"Pleural Effusion": N, "No Finding": P}),
    ("No focal consolidation, suspicious pulmonary opacity, pleural effusion, or pneumothorax.",
     {"Consolidation": N, "Lung Opacity": N, "Pleural Effusion": N, "Pneumothorax": N}),
    ("Lungs are free of focal airspace disease.", {"Lung Opacity": N}),
    ("Negative for pneumothorax.", {"Pneumothorax": N}),
    ("Cardiomegaly without overt edema.", {"Cardiomegaly": P, "Edema": N}),
    # post-negation
    ("The left pleural effusion has resolved.", {"Pleural Effusion": N}),
    ("Pneumothorax is not seen.", {"Pneumothorax": N}),
    ("The right chest tube has been removed.", {"Support Devices": N}),
    ("Interval resolution of the left lower lobe consolidation.", {"Consolidation": N}),
    # scope ends
    ("No pneumothorax, but there is a small left effusion.", {"Pneumothorax": N, "Pleural Effusion": P}),
    ("No focal consolidation and the heart is enlarged.", {"Consolidation": N, "Cardiomegaly": P}),
    ("No definite pleural effusion seen, dense nodule in the left lung.", {"Pleural Effusion": N, "Lung Lesion": P}),
    ("No acute disease. Small right pneumothorax.", {"Pneumothorax": P}),
    ("No acute disease.Small right pneumothorax.", {"Pneumothorax": P}),
    # uncertainty
    ("Possible small right pleural effusion.", {"Pleural Effusion": U}),
    ("Pneumonia cannot be excluded.", {"Pneumonia": U}),
    ("Cannot exclude early pneumonia.", {"Pneumonia": U}),
    ("Patchy opacity, atelectasis versus pneumonia.", {"Lung Opacity": P, "Atelectasis": U, "Pneumonia": U}),
    ("Left lower lobe airspace disease concerning for pneumonia.", {"Lung Opacity": P, "Pneumonia": U}),
    ("Small bilateral pleural effusions suspected.", {"Pleural Effusion": U}),
    ("Pneumonia?", {"Pneumonia": U}),
    ("No pneumothorax; possible small left effusion.", {"Pneumothorax": N, "Pleural Effusion": U}),
    ("Pulmonary edema is difficult to entirely exclude.", {"Edema": U}),
    # negations that contain uncertainty words, pseudo-negations
    ("No findings to suggest pneumonia.", {"Pneumonia": N}),
    ("There is no focal consolidation to suggest pneumonia.", {"Consolidation": N, "Pneumonia": N}),
    ("No significant change in the left pleural effusion.", {"Pleural Effusion": P}),
    ("Stable mild cardiomegaly.", {"Cardiomegaly": P}),
    # structures take their label from a qualifier
    ("The heart is normal in size.", {"Cardiomegaly": N}),
    ("The cardiac silhouette is mildly enlarged.", {"Cardiomegaly": P}),
    ("Enlargement of the cardiac silhouette.", {"Cardiomegaly": P}),
    ("No enlargement of the cardiac silhouette.", {"Cardiomegaly": N}),
    ("The heart is not enlarged.", {"Cardiomegaly": N}),
    ("Heart size is at the upper limits of normal.", {"Cardiomegaly": N}),
    ("Borderline heart size.", {"Cardiomegaly": U}),
    ("Normal heart size and mediastinal contours.", {"Cardiomegaly": N, "Enlarged Cardiomediastinum": N}),
    ("The heart is enlarged and the mediastinum is normal.", {"Cardiomegaly": P, "Enlarged Cardiomediastinum": N}),
    ("The mediastinum is widened.", {"Enlarged Cardiomediastinum": P}),
    ("The heart may be enlarged.", {"Cardiomegaly": U}),
    ("Heart size is stable.", {"Cardiomegaly": None}),
    ("The heart and lungs have not changed in the interval.", {"Cardiomegaly": None}),
    # exclusions and other vocabulary
    ("Small pericardial effusion.", {"Pleural Effusion": None}),
    ("Stable calcified granuloma in the right upper lobe.", {"Lung Lesion": None, "No Finding": None}),
    ("Prior granulomatous infection.", {"Pneumonia": None}),
    ("Apical pleural scarring.", {"Pleural Other": P, "Lung Opacity": None}),
    ("Kerley B lines.", {"Edema": P, "Support Devices": None}),
    ("Mild pulmonary vascular congestion.", {"Edema": None, "No Finding": None}),
    ("Healed left rib fracture.", {"Fracture": P}),
    ("Endotracheal tube and right IJ central line in place. Lungs are clear.",
     {"Support Devices": P, "No Finding": P}),
    # CheXpert aggregation
    ("Left pleural effusion. No right pleural effusion.", {"Pleural Effusion": P}),
    ("No pulmonary edema. Possible mild interstitial edema.", {"Edema": U}),
    ("Findings consistent with congestive heart failure.", {"Edema": P, "Cardiomegaly": U}),
    ("Normal chest.", {"No Finding": P}),
]


@pytest.mark.parametrize("text,expected", CASES, ids=[c[0][:48] for c in CASES])
def test_rules(text, expected):
    lab = label_report(text)
    for name, value in expected.items():
        assert lab[name] == value, f"{name}: got {lab[name]}, expected {value}; mentions: " \
            f"{[(m.observation, m.text, m.label) for m in ChexpertRulesLabeler().mentions(text)]}"


def test_empty_report_has_no_labels():
    for text in ("", "   \n", None):
        lab = label_report(text)
        assert list(lab) == list(CHEXPERT_LABELS) and all(v is None for v in lab.values())


def test_probe_sentences_are_positive():
    cases = json.loads(require_shared("metric_oracles", "radeval.json").read_text())["cases"]
    probes = next(c for c in cases if c["id"] == "f1chexbert_probe_sentences")["probes"]
    assert len(probes) >= 10
    for p in probes:
        assert label_report(p["sentence"])[p["label_expected_present"]] == P, p["sentence"]


def test_sections_and_records():
    text = "FINDINGS: Small left pleural effusion.\nIMPRESSION: Cardiomegaly."
    only_imp = ChexpertRulesLabeler(sections=("impression",)).label(text)
    assert only_imp["Cardiomegaly"] == P and only_imp["Pleural Effusion"] is None
    both = ChexpertRulesLabeler(sections=("findings", "impression")).label(text)
    assert both["Cardiomegaly"] == P and both["Pleural Effusion"] == P
    # no header present: the whole text is labelled
    assert ChexpertRulesLabeler(sections=("impression",)).label("Small pneumothorax.")["Pneumothorax"] == P
    rec = ChexpertRulesLabeler().label_record({"findings": "No effusion.", "impression": "Mild cardiomegaly."})
    assert rec["Cardiomegaly"] == P and rec["Pleural Effusion"] == N


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=400))
def test_any_text_gives_valid_labels(text):
    lab = label_report(text)
    assert list(lab) == list(CHEXPERT_LABELS)
    assert all(v in (None, P, N, U) for v in lab.values())
    assert lab["No Finding"] in (None, P)


def test_strange_inputs():
    for text in ("<b>Cardiomegaly</b>", "心脏扩大. Cardiomégalie? ", "no " * 5000 + "effusion", "?" * 300,
                 "pleural effusion " * 2000):
        lab = label_report(text)
        assert all(v in (None, P, N, U) for v in lab.values())
    assert label_report("<b>Cardiomegaly</b>")["Cardiomegaly"] == P


def test_rules_file_errors(tmp_path):
    assert "observations" in load_rules()
    with pytest.raises(FileNotFoundError):
        ChexpertRulesLabeler(rules_path=tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("observations:\n  Cardiomegaly:\n    findings:\n      - cardio(megaly\n")
    with pytest.raises(RewardError, match=r"Cardiomegaly\.findings.*cardio\(megaly"):
        ChexpertRulesLabeler(rules_path=bad)
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("observations:\n  Cardiomegally:\n    findings: [cardiomegaly]\n")
    with pytest.raises(RewardError, match="Cardiomegally"):
        ChexpertRulesLabeler(rules_path=unknown)
    minimal = tmp_path / "minimal.yaml"
    minimal.write_text("observations:\n  Pneumothorax:\n    findings: [pneumothorax]\n"
                       "cues:\n  pre_negation: ['no']\n")
    lab = ChexpertRulesLabeler(rules_path=minimal)
    assert lab.label("No pneumothorax.")["Pneumothorax"] == N
    assert lab.label("Pneumothorax.")["Pneumothorax"] == P
    assert lab.label("Cardiomegaly.")["Cardiomegaly"] is None


def test_speed_single_core():
    texts = [t for t, _ in CASES] * 40
    label_reports(texts[:50])  # warm the prefix cache
    t0 = time.perf_counter()
    label_reports(texts)
    rate = len(texts) / (time.perf_counter() - t0)
    assert rate > 500, f"{rate:.0f} reports/s"  # bench/bench_labeler.py measures ~3,000/s on IU reports


# ------------------------------------------------------------------------------------------------
# IU X-ray (Open-i) gold labels
# ------------------------------------------------------------------------------------------------
def test_iu_gold_micro_f1():
    tgz = require_shared("iu_xray", "NLMCXR_reports.tgz")
    gold = require_shared("iu_xray", "openi_gold_labels_dev.csv")
    reports = read_iu_reports(tgz)
    res = evaluate_iu_gold(tgz, gold, uncertain="positive", reports=reports)
    assert res["n_reports"] == 3080 and res["gold_rows_without_report"] == 0
    print("\nIU gold (FINDINGS + IMPRESSION, uncertain counted as present)")
    for name, v in res["classes"].items():
        print(f"  {name:18s} P={v['precision']:.3f} R={v['recall']:.3f} F1={v['f1']:.3f} n={v['support']}")
    m = res["micro"]
    print(f"  micro (8 finding classes) P={m['precision']:.3f} R={m['recall']:.3f} F1={m['f1']:.4f}")
    # Honest bar, not the 0.90 goal: with uncertain counted as present we measure micro-F1 0.849.
    # The gold (Open-i MeSH major terms) rarely codes hedged findings ("may represent atelectasis",
    # "concerning for pneumonia"); about two thirds of our false positives are such uncertain
    # mentions, which the rules read correctly. Recall is 0.98.
    assert m["f1"] >= 0.84
    assert m["recall"] >= 0.95
    assert res["classes"]["Cardiomegaly"]["f1"] >= 0.93
    assert res["classes"]["No Finding"]["f1"] >= 0.90
    # Counting uncertain as absent the same rules reach 0.887.
    neg = evaluate_iu_gold(tgz, gold, uncertain="negative", reports=reports)
    print(f"  micro with uncertain counted as absent: F1={neg['micro']['f1']:.4f}")
    assert neg["micro"]["f1"] >= 0.88


# ------------------------------------------------------------------------------------------------
# The chexpert_f1 scorer
# ------------------------------------------------------------------------------------------------
def test_chexpert_f1_scorer():
    s = get_scorer("chexpert_f1")
    hyps = ["No pleural effusion.", "Pleural effusion.", "", "The cardiac silhouette is mildly enlarged.",
            None, "Small right pneumothorax. Small left effusion."]
    refs = ["No pleural effusion.", "No pleural effusion.", "Normal chest.", "Mild cardiomegaly.",
            "Small right pneumothorax.", "Small right pneumothorax."]
    r = s(hyps, refs)
    assert r.scores == pytest.approx([1.0, 0.0, 0.0, 1.0, 0.0, 2 / 3])
    assert r.details[1] == {"hyp_positive": ["Pleural Effusion"], "ref_positive": ["No Finding"]}
    assert r.corpus["uncertain"] == "positive" and "uncertain->1" in r.corpus["convention"]
    assert set(r.corpus["f1_14"]) == {"micro", "macro", "weighted"} and "f1_5" in r.corpus
    # the 5-label subset ignores No Finding; both sets empty -> 1.0
    s5 = get_scorer("chexpert_f1", subset="5")
    assert s5(["No pleural effusion."], ["Normal chest."]).scores == [1.0]
    # uncertain convention changes the score
    unc = ["Possible small left effusion."], ["Small left pleural effusion."]
    assert get_scorer("chexpert_f1", uncertain="positive")(*unc).scores == [1.0]
    assert get_scorer("chexpert_f1", uncertain="negative")(*unc).scores == [0.0]
    ex = get_scorer("chexpert_f1", subset="5", average="exact")
    assert ex(["Mild pulmonary edema.", "Edema and effusion."], ["Severe pulmonary edema.", "Edema."]).scores == [1.0, 0.0]
    ham = get_scorer("chexpert_f1", average="hamming")
    assert ham(["Small left pleural effusion.", "Normal chest."], ["Normal chest.", "Normal chest."]).scores == \
        pytest.approx([12 / 14, 1.0])
    with pytest.raises(RewardError, match="average must be one of"):
        get_scorer("chexpert_f1", average="macro")
    # precomputed reference labels are used instead of labelling the references
    r2 = s(["Cardiomegaly."], ["anything"], ref_labels=[{"Cardiomegaly": 1.0}])
    assert r2.scores == [1.0]
    with pytest.raises(RewardError):
        get_scorer("chexpert_f1", subset="13")
    with pytest.raises(RewardError):
        get_scorer("chexpert_f1", uncertain="maybe")


def test_prefix_index_is_sound_without_the_private_regex_parser():
    """Every match of every rules entry at a word start begins with one of the prefixes the index files it under,
    and the analysis reads the regex itself (no ``re._parser``, a private module that may change)."""
    import inspect
    import re

    import reward.chexpert as chexpert
    import reward.chexpert_matcher as matcher

    src = inspect.getsource(matcher)
    assert "import _parser" not in src and "re._parser." not in src and "sre_parse" not in src
    entries: list[str] = []

    def collect(x):
        if isinstance(x, str):
            entries.append(x)
        elif isinstance(x, dict):
            for v in x.values():
                collect(v)
        elif isinstance(x, list):
            for v in x:
                collect(v)

    collect(chexpert.load_rules())  # the shared cue lexicon's lists expanded in place of "$name"
    texts = [chexpert.normalize(t) for t in (
        "Mild cardiomegaly. Small bilateral pleural effusions, unchanged. No pneumothorax. Right lower lobe "
        "opacity may represent atelectasis or pneumonia. ET tube 4 cm above the carina. Pulmonary edema is "
        "seen. There is no evidence of consolidation. Enlarged cardiac silhouette. Fracture of the left 5th rib. "
        "Interval removal of the right PICC line. Heart size is top normal. Lungs are clear, without effusion.")]
    analysed = 0
    for e in entries:
        rx = matcher.entry_regex(e)
        pre = matcher.prefixes(rx)
        if pre is None:
            continue
        analysed += 1
        pat = re.compile(rx)
        for t in texts:
            for ws in re.finditer(r"\b\w", t):
                if pat.match(t, ws.start()):
                    assert any(t.startswith(p, ws.start()) for p in pre), (e, t[ws.start():ws.start() + 20], pre)
    assert analysed > 300
    assert matcher.prefixes(r"(?:ab|cd)+e") == {"ab", "cd"} and matcher.prefixes(r"[a-c]d") == {"ad", "bd", "cd"}
    assert matcher.parse_regex("(?P<x>a)") is None and matcher.prefixes("a(b") is None
    assert matcher.entry_regex("no (?=effusion)").endswith(")") and matcher.entry_regex("effusion").endswith(r"(?!\w)")


# ------------------------------------------------------------------------------------------------
# The matching rule does not depend on the prefix index (issue 18)
# ------------------------------------------------------------------------------------------------
def _same_with_and_without_index(texts) -> int:
    """Asserts equal mentions (spans, labels) and labels with the prefix index and without; returns the count."""
    fast, slow = ChexpertRulesLabeler(), ChexpertRulesLabeler(prefix_index=False)
    assert fast.rules.matcher.use_index and not slow.rules.matcher.use_index
    n = 0
    for i, text in enumerate(texts):
        assert fast.mentions(text) == slow.mentions(text), f"text #{i}: mentions differ"
        assert fast.label(text) == slow.label(text), f"text #{i}: labels differ"
        n += 1
    return n


def test_prefix_index_is_only_a_speed_up_on_all_iu_reports():
    """All 3,955 Open-i reports: FINDINGS + IMPRESSION (what the project labels) and every section together."""
    from data_prep.iu_xray import iter_reports

    reports = list(iter_reports(require_shared("iu_xray", "NLMCXR_reports.tgz")))
    assert len(reports) == 3955
    texts = []
    for r in reports:
        texts.append("\n\n".join(r[s] for s in ("findings", "impression") if r[s]))
        texts.append("\n\n".join(r[s] for s in ("indication", "comparison", "findings", "impression") if r[s]))
    assert _same_with_and_without_index(texts) == 2 * 3955


def test_prefix_index_is_only_a_speed_up_on_the_fixtures(phantom_dir):

    from cxr_io import read_jsonl

    texts = [t for t, _ in CASES]
    texts += ["", "   ", "asdf", "<b>Cardiomegaly</b>", "心脏扩大. Cardiomégalie? ", "no " * 300 + "effusion",
              "Heart size normal; no effusion: none. (Stable) lungs, clear.", "NO PNEUMOTHORAX.Small effusion."]
    with open(FIXTURES / "prior_sentences.tsv", encoding="utf-8") as f:
        texts += [row["sentence"] for row in csv.DictReader(f, delimiter="\t")]
    for _, rec in read_jsonl(phantom_dir / "studies.jsonl"):
        texts += [rec.get("findings") or "", rec.get("impression") or ""]
        if rec.get("prior"):
            texts += [rec["prior"].get("findings") or "", rec["prior"].get("impression") or ""]
    stanford = require_shared("chexpert_labeler", "sample_reports.csv")
    with open(stanford, newline="", encoding="utf-8") as f:
        texts += [r[0] for r in csv.reader(f)]
    assert _same_with_and_without_index(texts) > 300


def _rules_file(tmp_path, name: str, body: str):
    p = tmp_path / name
    p.write_text("observations:\n  Pneumothorax:\n    findings: [pneumothorax]\n"
                 "  Pleural Effusion:\n    findings: [effusion]\n" + body)
    return p


def test_the_first_yaml_entry_that_matches_wins_wherever_the_index_files_it(tmp_path):
    """"no" (indexed under a 2-letter prefix) and "no evidence of" (3 letters) both match at "no": the one listed
    first gives the cue. With a one-word reach only the longer cue reaches the finding."""
    for order, want in ((["no evidence of", "no"], N), (["no", "no evidence of"], P)):
        rules = _rules_file(tmp_path, f"r{want}.yaml", f"pre_window: 1\ncues:\n  pre_negation: {order}\n")
        for index in (True, False):
            lab = ChexpertRulesLabeler(rules_path=rules, prefix_index=index)
            assert lab.label("No evidence of pneumothorax.")["Pneumothorax"] == want, (order, index)


def test_an_entry_the_prefix_analysis_cannot_read_is_tried_at_punctuation_too(tmp_path):
    """A scope break the analysis cannot read ("(?i:;)") still cuts the clause at ";" (it used to be tried at word
    starts only, so it never matched and "no" reached across the semicolon)."""
    from reward.chexpert_matcher import prefixes

    assert prefixes("(?i:;)") is None
    rules = _rules_file(tmp_path, "unread.yaml", "cues:\n  pre_negation: ['no']\n  scope_breaks: ['(?i:;)']\n")
    for index in (True, False):
        lab = ChexpertRulesLabeler(rules_path=rules, prefix_index=index).label("No pneumothorax; effusion.")
        assert (lab["Pneumothorax"], lab["Pleural Effusion"]) == (N, P), index
    named = _rules_file(tmp_path, "named.yaml", "cues:\n  scope_breaks: ['(?P<semi>;)']\n")
    with pytest.raises(RewardError, match="named groups"):
        ChexpertRulesLabeler(rules_path=named)


def test_fast_paths_of_the_splitter_and_normalize_match_the_general_rules():
    """split_sentences' one-line fast path and normalize's skipped scans give what the full rules give."""
    import random
    import re

    from reward import text as rt
    from reward.chexpert_text import _PARA_RE, normalize
    from reward.text import GLUED_SENTENCE

    def normalize_reference(s: str) -> str:
        s = s.replace("\r\n", "\n").replace("\r", "\n")
        s = GLUED_SENTENCE.sub(r"\1. \2", _PARA_RE.sub(" . ", s))
        return re.sub(r"\s+", " ", s).strip().lower()

    rng = random.Random(0)
    alphabet = list("ab Zx.!?\n\r\t)('\"]0123:;-*\u2022\u0663eEgGvsDrJ  ..") + ["vs.", "Dr. ", "e.g. ", "approx. ", "1. "]
    texts = [t for t, _ in CASES] + ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
                                     for _ in range(20000)]
    plain = 0
    for s in texts:
        assert normalize(s) == normalize_reference(s), repr(s)
        for t in (s, normalize(s)):
            assert rt.split_sentences(t) == rt._split_general(t), repr(t)
            plain += "\n" not in t and not rt._MAYBE_NOT_AN_END.search(t) and not rt._DOT_CAPITAL.search(t)
    assert plain > 1000  # the fast path was taken often


def test_label_with_spans_is_label_plus_where_the_mentions_are():
    """One labelling pass gives label()'s labels and original-text spans (sections, implications included)."""
    from reward.chexpert import label_report

    lab = ChexpertRulesLabeler()
    for text in [t for t, _ in CASES] + ["", "   ", "Mild CHF.\r\n\r\nNo effusion.", "No edema.Possible pneumonia."]:
        labels, spans = lab.label_with_spans(text)
        assert labels == label_report(text), text
        for obs, a, b, value in spans:
            assert obs in CHEXPERT_LABELS and 0 <= a < b <= len(text) and value in (P, N, U)
    text = "Mild CHF."
    assert sorted((o, text[a:b]) for o, a, b, _ in lab.label_with_spans(text)[1]) == [("Cardiomegaly", "CHF"),
                                                                                        ("Edema", "CHF")]
    sec = ChexpertRulesLabeler(sections=("findings", "impression"))
    text = "INDICATION: rule out pneumonia.\nFINDINGS:  Small left effusion.\nIMPRESSION:\n  No pneumothorax."
    labels, spans = sec.label_with_spans(text)
    assert labels == sec.label(text)
    assert sorted((o, text[a:b], v) for o, a, b, v in spans) == [("Pleural Effusion", "effusion", P),
                                                                   ("Pneumothorax", "pneumothorax", N)]


def test_chexpert_f1_scorer_spans_details():
    s = get_scorer("chexpert_f1", spans=True)
    hyps, refs = ["Small left effusion.", "No edema."], ["No effusion.", "No edema."]
    r = s(hyps, refs)
    assert r.scores == get_scorer("chexpert_f1")(hyps, refs).scores
    d = r.details[0]
    assert d["hyp_labels"]["Pleural Effusion"] == P and d["ref_labels"]["Pleural Effusion"] == N
    assert [(o, hyps[0][a:b]) for o, a, b, _ in d["hyp_spans"]] == [("Pleural Effusion", "effusion")]
    assert [(o, refs[0][a:b], v) for o, a, b, v in d["ref_spans"]] == [("Pleural Effusion", "effusion", N)]
    assert "hyp_spans" not in get_scorer("chexpert_f1")(hyps, refs).details[0]
