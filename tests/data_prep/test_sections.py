"""The MIMIC-CXR style report section parser."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from data_prep.sections import HEADERS, canonical, last_paragraph_impression, parse_sections, split_paragraphs

MIMIC_REPORT = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 INDICATION:  ___F with new onset ascites  // eval for infection

 TECHNIQUE:  Chest PA and lateral

 COMPARISON:  None.

 FINDINGS:

 There is no focal consolidation, pleural effusion or pneumothorax.  Bilateral
 nodular opacities that most likely represent nipple shadows.

 IMPRESSION:

 No acute cardiopulmonary process.

 NOTIFICATION:  Dr. ___ was paged at 10:30 AM.
"""


def test_standard_mimic_report():
    s = parse_sections(MIMIC_REPORT)
    assert list(s) == ["examination", "indication", "technique", "comparison", "findings", "impression",
                       "notification"]
    assert s["examination"] == "CHEST (PA AND LAT)"
    assert s["comparison"] == "None."
    assert s["findings"].startswith("There is no focal consolidation") and "\n" not in s["findings"]
    assert s["findings"].endswith("nipple shadows.")
    assert s["impression"] == "No acute cardiopulmonary process."
    assert "10:30 AM" in s["notification"]  # "10:30" is not mistaken for a header


def test_case_colon_and_dash_variants():
    text = "Indication: cough\nFindings - Lungs are clear.\nImpression\nNormal chest.\n"
    s = parse_sections(text)
    assert s == {"indication": "cough", "findings": "Lungs are clear.", "impression": "Normal chest."}
    s2 = parse_sections("HISTORY : fever\nCOMPARISONS: 2/2/2020\nFINDINGS: heart normal. IMPRESSION: no acute process")
    assert s2["history"] == "fever" and s2["comparison"] == "2/2/2020"
    assert s2["findings"] == "heart normal." and s2["impression"] == "no acute process"


def test_wrapped_prose_is_not_a_header():
    text = "FINDINGS: Comparison is made to prior\nstudy.\nThe appearance is consistent with the clinical\nhistory\nIMPRESSION: stable."
    s = parse_sections(text)
    assert "comparison" not in s and "history" not in s
    assert "clinical history" in s["findings"] and s["impression"] == "stable."


def test_addenda_wet_read_and_unknown_headers():
    text = ("WET READ: ___ ___ 11:13 AM\n  no pneumothorax\n\nFINAL REPORT\nFINDINGS: clear lungs.\n"
            "IMPRESSION: normal.\nADDENDUM: prior study reviewed.\nADDENDUM: second note.\n"
            "PORTABLE AP CHEST: extra header text")
    s = parse_sections(text)
    assert s["wet_read"] == "___ ___ 11:13 AM no pneumothorax"
    assert s["addendum"] == "prior study reviewed. second note."
    assert s["portable_ap_chest"] == "extra header text"
    assert s["impression"] == "normal."


def test_missing_sections_and_empty_input():
    assert parse_sections("") == {}
    assert parse_sections(None) == {}
    s = parse_sections("Heart size normal. No effusion.")
    assert s == {"preamble": "Heart size normal. No effusion."}
    s = parse_sections("FINDINGS:\nIMPRESSION: ok")
    assert s["findings"] == "" and s["impression"] == "ok"


def test_findings_and_impression_combined_header():
    s = parse_sections("FINDINGS AND IMPRESSION: no acute disease")
    assert s == {"findings_impression": "no acute disease"}


def test_last_paragraph_fallback():
    text = "FINAL REPORT\nCHEST RADIOGRAPH\n lungs are clear, heart normal\n\n No change from before.\n"
    assert last_paragraph_impression(text) == "No change from before."
    assert split_paragraphs("a\n b\n\n  \n c") == ["a b", "c"]


def test_every_alias_maps_to_its_section():
    for name, aliases in HEADERS.items():
        for a in aliases:
            assert canonical(a.lower()) == name
            assert parse_sections(f"{a}: some text")[name] == "some text"


words = st.sampled_from(["lungs", "clear", "heart", "size", "normal", "no", "effusion", "stable", "the", "and"])


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(words, min_size=1, max_size=12).map(" ".join), min_size=4, max_size=4),
       st.sampled_from(["upper", "title"]), st.sampled_from([":", " :", " -"]))
def test_roundtrip_generated_reports(bodies, case, sep):
    names = ["indication", "comparison", "findings", "impression"]
    lines = []
    for n, body in zip(names, bodies):
        header = n.upper() if case == "upper" else n.title()
        lines.append(f"{header}{sep} {body}")
    s = parse_sections("\n\n".join(lines))
    assert s == dict(zip(names, bodies))
