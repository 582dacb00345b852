"""Devices, tip positions, distances and sizes (reward/measurements.py) and the measurement scorers.

The extraction cases are report sentences: IU X-ray phrasing taken from ``../shared/data`` (the Open-i
archive; ``XXXX`` is its de-identification) and sentences in the published style of MIMIC-CXR reports.
Gold notation, one item per device mention, ``;`` between items::

    device[(status)][>landmark[?]][@cm]

status: present (default), absent, removed, uncertain; ``?`` marks a hedged landmark; ``@cm`` the tip
distance in cm (0 for "at the level of the carina").
"""

from __future__ import annotations

import math

import pytest

from reward.measurements import ADJACENT, DEVICES, LANDMARKS, compare, extract, landmarks_agree
from tests.builders.repo import REPO

CASES: list[tuple[str, str]] = [
    # --- IU X-ray (Open-i) phrasing -------------------------------------------------------------
    ("Endotracheal tube noted with tip approximately 4.5 cm above the carina.", "ett>carina@4.5"),
    ("There is an endotracheal tube at the level of the carina, recommend retraction.", "ett>carina@0"),
    ("Endotracheal tube and NG tube have been removed.", "ett(removed); enteric_tube(removed)"),
    ("Compared to prior examination from XXXX, there has been extubation and removal of central line and "
     "enteric tube.", "ett(removed); cvc(removed); enteric_tube(removed)"),
    ("Device compatible tracheostomy is in XXXX, with tip approximately 5-6 centimeters above carina.",
     "tracheostomy>carina@5.5"),
    ("Tracheostomy tube tip 6.4 cm above the carina.", "tracheostomy>carina@6.4"),
    ("Tracheostomy tube terminates at the level of the clavicles.", "tracheostomy>clavicles"),
    ("Tracheostomy tube in satisfactory position with tip in the mid intrathoracic trachea.", "tracheostomy>trachea"),
    ("The tracheostomy tube is in unchanged position.", "tracheostomy"),
    ("Heart size borderline enlarged for technique, tracheostomy tube tip approximately 4.7 cm above the carina.",
     "tracheostomy>carina@4.7"),
    ("There is interval removal of the tracheostomy tube and right subclavian central venous catheter.",
     "tracheostomy(removed); cvc(removed)"),
    ("Enteric tube is again noted, coursing below the diaphragm the tip of which is seen projecting over the "
     "expected location of the body of the stomach.", "enteric_tube>below_diaphragm"),
    ("Enteric tube tip in the stomach.", "enteric_tube>stomach"),
    ("Feeding tube passes below the left hemidiaphragm.", "enteric_tube>below_diaphragm"),
    ("Feeding tube tip XXXX distal to the gastroesophageal junction.", "enteric_tube>ge_junction"),
    ("Interval removal of nasogastric tube.", "enteric_tube(removed)"),
    ("There is interval removal of gastric suction tube.", "enteric_tube(removed)"),
    ("Enteric suction catheter courses below diaphragm and XXXX film.", "enteric_tube>below_diaphragm"),
    ("Catheter tip may be within the proximal SVC or azygos vein.", "cvc>svc?"),
    ("Catheter tip mid SVC.", "cvc>svc"),
    ("Central venous catheter tip in the right atrium.", "cvc>right_atrium"),
    ("Left IJ catheter tip at cavoatrial junction.", "cvc>cavoatrial_junction"),
    ("There is a dual-lumen right internal jugular central venous catheter, the distal tip projects over the "
     "right atrium.", "cvc>right_atrium"),
    ("There is a right PICC with tip overlying the right brachiocephalic vein.", "cvc>brachiocephalic_vein"),
    ("A right upper extremity PICC is seen with the tip in the right brachiocephalic vein, representing an "
     "interval retraction of approximately 6 cm.", "cvc>brachiocephalic_vein"),
    ("Left PICC tip at cavoatrial junction.", "cvc>cavoatrial_junction"),
    ("Left upper extremity PICC terminates in the lower SVC.", "cvc>svc"),
    ("There is a left-sided PICC with tip at the caval atrial junction.", "cvc>cavoatrial_junction"),
    ("Left-sided tunneled catheter terminates at the caval atrial junction.", "cvc>cavoatrial_junction"),
    ("A left-sided hemodialysis catheter is in XXXX with its distal tip at the right atrium.", "cvc>right_atrium"),
    ("Left subclavian central catheter tip in distal SVC.", "cvc>svc"),
    ("Left central venous catheter in unchanged position.", "cvc"),
    ("There has been interval removal of right-sided central venous catheter.", "cvc(removed)"),
    ("The previously seen right-sided PICC has been removed.", "cvc(removed)"),
    ("Interval XXXX removal of left PICC line, no pneumothorax.", "cvc(removed)"),
    ("The right internal jugular catheter has been removed.", "cvc(removed)"),
    ("Left PICC line and NG tube remain in XXXX.", "cvc; enteric_tube"),
    ("There is a stable left PICC with tip overlying the mid SVC and large XXXX feeding tube courses below the "
     "diaphragm.", "cvc>svc; enteric_tube>below_diaphragm"),
    ("Left chest AICD leads in the right atrium and right ventricle unchanged.", "pacemaker>right_atrium"),
    ("Cardiac pacemaker leads are within right atrium and ventricle.", "pacemaker>right_atrium"),
    ("Dual-XXXX cardiac pacemaker in stable, XXXX position.", "pacemaker"),
    ("ICD XXXX tip overlying the right ventricle.", "pacemaker>right_ventricle"),
    ("Left subclavian ICD is unchanged in position.", "pacemaker"),
    ("Frontal and lateral views of the chest with overlying external cardiac monitor leads show normal size and "
     "configuration of the cardiac silhouette.", ""),
    ("Interval removal of right chest tube, no pneumothorax.", "chest_tube(removed)"),
    ("Two left-sided chest tubes again noted.", "chest_tube"),
    ("XXXX-year-old female, status post chest tube removal.", "chest_tube(removed)"),
    ("There is a XXXX right upper extremity PICC line, the tip is partially obscured by the pacemaker XXXX.",
     "cvc; pacemaker"),
    ("Left pleural catheter is again seen overlying the left upper lung at the level of the left 5th and 6th ribs.",
     "chest_tube"),
    # --- MIMIC-CXR published style ------------------------------------------------------------------
    ("Endotracheal tube tip terminates approximately 4.6 cm from the carina.", "ett>carina@4.6"),
    ("ET tube is 5 cm above the carina.", "ett>carina@5"),
    ("ETT tip 5.2cm above carina.", "ett>carina@5.2"),
    ("E.T. tube approximately 6 cm above the carina.", "ett>carina@6"),
    ("Tip of the endotracheal tube is 15 mm above the carina.", "ett>carina@1.5"),
    ("The endotracheal tube terminates in the right main stem bronchus, recommend retraction by 2 cm.",
     "ett>right_bronchus"),
    ("ETT terminates at the thoracic inlet.", "ett>thoracic_inlet"),
    ("The patient has been extubated.", "ett(removed)"),
    ("No endotracheal tube, nasogastric tube or central line.", "ett(absent); enteric_tube(absent); cvc(absent)"),
    ("The endotracheal tube has been removed.", "ett(removed)"),
    ("Enteric tube courses below the diaphragm with the tip out of the field of view.",
     "enteric_tube>below_diaphragm"),
    ("Nasogastric tube tip is in the stomach, side port near the GE junction.", "enteric_tube>stomach"),
    ("OG tube tip in the stomach.", "enteric_tube>stomach"),
    ("Dobhoff tube tip is in the duodenum.", "enteric_tube>duodenum"),
    ("The tip of the nasogastric tube projects over the gastric fundus.", "enteric_tube>stomach"),
    ("Nasogastric tube in unchanged position.", "enteric_tube"),
    ("Right internal jugular central venous catheter tip terminates in the mid SVC.", "cvc>svc"),
    ("Left-sided Port-A-Cath tip terminates in the low SVC.", "cvc>svc"),
    ("Right PICC line tip is at the cavoatrial junction.", "cvc>cavoatrial_junction"),
    ("Right IJ sheath terminates in the brachiocephalic vein.", "cvc>brachiocephalic_vein"),
    ("Interval placement of a left subclavian central venous catheter with tip in the right atrium.",
     "cvc>right_atrium"),
    ("Possible left IJ catheter.", "cvc(uncertain)"),
    ("Swan-Ganz catheter tip is in the right pulmonary artery.", "swan_ganz>pulmonary_artery"),
    ("Swan-Ganz catheter has been removed.", "swan_ganz(removed)"),
    ("Left chest wall dual-lead pacemaker with leads terminating in the right atrium and right ventricle.",
     "pacemaker>right_atrium"),
    ("Right-sided chest tube is in place with tip at the right apex.", "chest_tube>lung_apex"),
    ("Bilateral chest tubes remain in place.", "chest_tube"),
    ("No pneumothorax status post right chest tube placement.", "chest_tube"),
    ("No pneumothorax after chest tube removal.", "chest_tube(removed)"),
    ("Possible small left chest tube.", "chest_tube(uncertain)"),
    ("Intra-aortic balloon pump tip is 2 cm below the superior aspect of the aortic knob.", "iabp>aortic_knob@2"),
    ("IABP terminates at the level of the aortic arch.", "iabp>aortic_knob"),
    ("Impella device is in expected position.", "impella"),
    ("Impella catheter tip projects over the left ventricle.", "impella>left_ventricle"),
    ("1. Endotracheal tube 4 cm above the carina.\n2. Nasogastric tube in the stomach.",
     "ett>carina@4; enteric_tube>stomach"),
    ("1. ET tube 3cm above the carina. 2. Right IJ line tip in the SVC.", "ett>carina@3; cvc>svc"),
    ("- Right PICC tip in the SVC.\n- No pneumothorax.", "cvc>svc"),
    ("Lines and tubes are unchanged in position. No pneumothorax.", ""),
    ("Heart size is normal. Lungs are clear. 2 views.", ""),
]

SIZE_CASES: list[tuple[str, list[tuple[str | None, tuple[float, ...]]]]] = [
    ("There is a 22 x 14 mm calcified nodule in the left lower lobe.", [("nodule", (2.2, 1.4))]),
    ("Lobulated right middle lobe mass measuring 4.5 x 6.8 cm, increased in size compared to prior study.",
     [("nodule", (4.5, 6.8))]),
    ("Ill-defined 2.5 cm x 1.9 cm irregular density in the left lower lung.", [("nodule", (2.5, 1.9))]),
    ("13 - 14 mm ring-shaped opacity with central lucency.", [("nodule", (1.35,))]),
    ("8mm calcified granuloma in the right base.", [("nodule", (0.8,))]),
    ("Two nodules are noted in the right XXXX XXXX measuring 13 mm and one measuring 16 mm in diameter.",
     [("nodule", (1.3,)), ("nodule", (1.6,))]),
    ("There is a small to moderate sized right apical pneumothorax which measures approximately 2.0 cm.",
     [("pneumothorax", (2.0,))]),
    ("There is a 3 mm x 1 mm density identified on the lateral exam only.", [("nodule", (0.3, 0.1))]),
    ("Heart size is normal. 7 and 8.", []),
    ("Endotracheal tube 4 cm above the carina.", []),
]


def _parse_gold(spec: str) -> set[tuple]:
    out = set()
    for item in filter(None, (x.strip() for x in spec.split(";"))):
        dist = None
        if "@" in item:
            item, d = item.split("@")
            dist = float(d)
        landmark, hedged = None, False
        if ">" in item:
            item, landmark = item.split(">")
            hedged = landmark.endswith("?")
            landmark = landmark.rstrip("?")
        status = "present"
        if "(" in item:
            item, status = item.rstrip(")").split("(")
        out.add((item, status, landmark, hedged, dist))
    return out


def _predicted(text: str) -> set[tuple]:
    return {(d.device, d.status, d.landmark, d.landmark_uncertain if d.landmark else False,
             None if d.distance is None else round(d.distance.value, 2)) for d in extract(text).devices}


def test_cases_cover_every_device_and_landmark_family():
    gold = [g for _, spec in CASES for g in _parse_gold(spec)]
    assert {g[0] for g in gold} == set(DEVICES)
    assert {g[1] for g in gold} == {"present", "absent", "removed", "uncertain"}
    want = {"carina", "svc", "cavoatrial_junction", "right_atrium", "stomach", "below_diaphragm", "right_bronchus",
            "brachiocephalic_vein", "pulmonary_artery", "right_ventricle", "duodenum", "ge_junction", "trachea",
            "thoracic_inlet", "clavicles", "aortic_knob", "left_ventricle", "lung_apex"}
    assert want <= {g[2] for g in gold} - {None} <= set(LANDMARKS)


def test_device_position_extraction_f1_on_report_sentences():
    tp = fp = fn = 0
    wrong = []
    for text, spec in CASES:
        gold, pred = _parse_gold(spec), _predicted(text)
        tp += len(gold & pred)
        fp += len(pred - gold)
        fn += len(gold - pred)
        if gold != pred:
            wrong.append((text, sorted(gold - pred, key=str), sorted(pred - gold, key=str)))
    p, r = tp / (tp + fp), tp / (tp + fn)
    f1 = 2 * p * r / (p + r)
    print(f"device+position extraction on {len(CASES)} sentences: P {p:.3f} R {r:.3f} F1 {f1:.3f}; "
          f"{len(wrong)} sentence(s) not exact")
    for w in wrong:
        print("  ", w)
    assert f1 >= 0.95, wrong


#: 40 IU X-ray sentences drawn at random (seed 7) from those with a device word that are not in CASES, labelled
#: before the extractor was run on them (blind): P 1.000, R 0.964, F1 0.982 at that point. The one miss is
#: de-identified ("catheter tip terminating in the superior XXXX XXXX": no landmark word is left).
HELDOUT_CASES: list[tuple[str, str]] = [
    ("All lines and tubes in stable , XXXX position.", ""),
    ("The distal tip of a right IJ dual-lumen central venous catheter is at the XXXX which junction.", "cvc"),
    ("Femur The femoral images do not XXXX the area of the hip fracture.", ""),
    ("Pacemaker leads are within the right atrium and ventricle.", "pacemaker>right_atrium"),
    ("There is interval placement of a XXXX on the left chest with the catheter tip in the cavoatrial junction.",
     "cvc>cavoatrial_junction"),
    ("Defibrillator XXXX is in stable position.", "pacemaker"),
    ("Distal catheter tip may be within the azygos vein.", "cvc>azygos?"),
    ("Mild stable cardiomegaly and central vascular congestion.", ""),
    ("Stable chest with stable position right chest pacemaker and leads overlie the right atrium and right ventricle.",
     "pacemaker>right_atrium"),
    ("Stable position of the left-sided hemodialysis catheter otherwise no acute cardiopulmonary disease.", "cvc"),
    ("Cardiomegaly with central pulmonary vascular congestion.", ""),
    ("AP view of the femur shows no femoral XXXX destructive process or other significant abnormality.", ""),
    ("Pacemaker is noted.", "pacemaker"),
    ("Left-sided pacemaker again noted with 1-XXXX in right atrium, another right ventricle and third in the left "
     "ventricle.", "pacemaker>right_atrium"),
    ("Tracheostomy tube.", "tracheostomy"),
    ("Left-sided PICC line has been placed in the interval with tip XXXX in the innominate vein.",
     "cvc>brachiocephalic_vein"),
    ("Left anterior chest wall pacemaker/defibrillator.", "pacemaker"),
    ("Stable position of 2 pacemaker electrodes, with a XXXX tip in the expected region of the right atrium and "
     "another XXXX tip in the expected region of the right ventricle.", "pacemaker>right_atrium"),
    ("XXXX XXXX right-sided chest tube tip projects outside the thoracic cavity.", "chest_tube"),
    ("Left-sided dual-XXXX pacemaker as expected.", "pacemaker"),
    ("A right central line has its tip at the superior XXXX XXXX.", "cvc"),
    ("Central airways are XXXX.", ""),
    ("There is mild central pulmonary vascular congestion without XXXX pulmonary edema.", ""),
    ("Endotracheal tube at the level of the carina, recommend retraction.", "ett>carina@0"),
    ("Stable left chest cardiac XXXX generator with 2 distal leads in right atrium and right ventricle.",
     "pacemaker>right_atrium"),
    ("Please Stable left chest, XXXX-XXXX, cardiac pacemaker seen, sternotomy XXXX.", "pacemaker"),
    ("Distal tip of the dual-lumen right internal jugular central venous catheter projects over the right atrium.",
     "cvc>right_atrium"),
    ("Central vascular markings are symmetric and within normal limits.", ""),
    ("Cardiomegaly with central vascular congestion and increased interstitial opacities suggesting mild "
     "interstitial pulmonary edema.", ""),
    ("Compared to XXXX, there is a stable appearing defibrillator and cardiomegaly.", "pacemaker"),
    ("Stable left chest dual XXXX ICD/pacemaker.", "pacemaker"),
    ("There is a cardiac pacemaker.", "pacemaker"),
    ("Central pulmonary vasculature is not engorged.", ""),
    ("Cardiac pacemaker is present the leads are unchanged.", "pacemaker"),
    ("There is a XXXX in the left chest with catheter tip terminating in the superior XXXX XXXX.", "cvc"),
    ("Mild central vascular prominence, XXXX congestion.", ""),
    ("The patient has a tracheostomy.", "tracheostomy"),
    ("Gastrostomy tube is noted.", ""),
    ("A single XXXX cardiac defibrillator XXXX projects over the right ventricle, in stable position.",
     "pacemaker>right_ventricle"),
    ("Right subclavian catheter, distal tip posterior to the head of the clavicle, the level of the subclavian vein.",
     "cvc>subclavian_vein"),
]


def test_blind_heldout_iu_sentences():
    tp = fp = fn = 0
    for text, spec in HELDOUT_CASES:
        gold, pred = _parse_gold(spec), _predicted(text)
        tp, fp, fn = tp + len(gold & pred), fp + len(pred - gold), fn + len(gold - pred)
    p, r = tp / (tp + fp), tp / (tp + fn)
    print(f"blind held-out IU sentences ({len(HELDOUT_CASES)}): P {p:.3f} R {r:.3f} F1 {2 * p * r / (p + r):.3f}")
    assert len(HELDOUT_CASES) == 40 and 2 * p * r / (p + r) >= 0.95


@pytest.mark.parametrize("text,want", SIZE_CASES)
def test_lesion_sizes_in_cm_with_dimensions(text, want):
    got = [(s.lesion, tuple(round(d, 3) for d in s.dims_cm)) for s in extract(text).sizes]
    assert got == want


def test_spans_point_at_the_words():
    text = "FINDINGS: Lungs clear.\nEndotracheal tube tip approximately 4.5 cm above the carina. 8 mm nodule."
    ex = extract(text)
    (d,), (s,) = ex.devices, ex.sizes
    assert text[d.start:d.end] == "Endotracheal tube"
    assert text[d.distance.start:d.distance.end] == "approximately 4.5 cm"
    assert text[d.landmark_span[0]:d.landmark_span[1]] == "carina"
    assert text[d.sentence[0]:d.sentence[1]] == "Endotracheal tube tip approximately 4.5 cm above the carina."
    assert text[s.start:s.end] == "8 mm" and s.dims_cm == (0.8,) and s.unit == "mm"
    assert (d.distance.low, d.distance.high) == (4.5, 4.5)
    import json

    from reward.measurements import as_dict

    assert json.loads(json.dumps(as_dict(ex)))["devices"][0]["distance"]["value"] == 4.5
    r = extract("Tracheostomy tip approximately 5-6 cm above carina.").devices[0].distance
    assert (r.low, r.high, r.value) == (5.0, 6.0, 5.5)


def test_comparison_language_is_recognised_not_read_as_position():
    d, = extract("Left subclavian ICD is unchanged in position.").devices
    assert d.comparison and d.landmark is None and d.status == "present"
    d, = extract("Endotracheal tube in standard position.").devices
    assert d.generic_position and not d.comparison and d.landmark is None
    assert not extract("Endotracheal tube terminates 4 cm above the carina.").devices[0].comparison


def test_adjacent_landmarks_are_known_landmarks():
    assert all(p <= set(LANDMARKS) for p in ADJACENT)
    assert landmarks_agree("svc", "cavoatrial_junction") and landmarks_agree("stomach", "below_diaphragm")
    assert not landmarks_agree("svc", "right_ventricle") and not landmarks_agree("carina", "right_bronchus")


# ----------------------------------------------------------------------------------------------------
# The scorers
# ----------------------------------------------------------------------------------------------------
REF = ("FINDINGS: Endotracheal tube tip 1 cm above the carina. Enteric tube courses below the diaphragm. "
       "8 mm right upper lobe nodule. No central venous catheter.")


@pytest.fixture
def halluc():
    from reward.base import get_scorer

    return get_scorer("measurement_hallucination")


def test_measurement_distance_beyond_tolerance_is_a_hallucination(halluc):
    hyp = "FINDINGS: Endotracheal tube tip approximately 4.5 cm above the carina. Enteric tube in the stomach."
    res = halluc([hyp], [REF])
    assert res.scores == [1.0]
    (h,) = res.details[0]["hallucinations"]
    assert h["kind"] == "measurement" and h["device"] == "ett" and h["distance_cm"] == 4.5
    assert hyp[h["span"][0]:h["span"][1]] == "approximately 4.5 cm above the carina"
    assert h["reference"]["distance_cm"] == 1.0 and REF[slice(*h["reference"]["span"])] == "Endotracheal tube"
    assert res.details[0]["carina_error_cm"] == pytest.approx(3.5)
    # within the default 1.0 cm tube-to-carina tolerance: nothing; a tighter tolerance: a hallucination
    near = "Endotracheal tube tip 1.8 cm above the carina."
    assert halluc([near], [REF]).scores == [0.0]
    from reward.base import get_scorer

    assert get_scorer("measurement_hallucination", carina_tolerance_cm=0.5)([near], [REF]).scores == [1.0]


def test_device_absent_from_reference_is_a_device_hallucination(halluc):
    hyp = "Right IJ central venous catheter with tip in the SVC. 8 mm nodule in the right upper lobe."
    res = halluc([hyp, "Swan-Ganz catheter tip in the right pulmonary artery."], [REF, REF])
    assert res.scores == [1.0, 1.0]
    h = res.details[0]["hallucinations"][0]
    assert h["kind"] == "device" and h["device"] == "cvc" and hyp[slice(*h["span"])] == "IJ central venous catheter"
    assert h["reference"]["status"] == "absent"  # the reference says "No central venous catheter"
    assert res.details[1]["hallucinations"][0]["reference"] is None


def test_position_and_size_disagreements(halluc):
    res = halluc(["The endotracheal tube is in the right mainstem bronchus.",
                  "15 mm right upper lobe nodule.", "9 mm right upper lobe nodule."], [REF] * 3)
    assert res.scores == [1.0, 1.0, 0.0]
    pos = res.details[0]["hallucinations"][0]
    assert pos["kind"] == "position" and pos["landmark"] == "right_bronchus" and pos["reference"]["landmark"] == "carina"
    size = res.details[1]["hallucinations"][0]
    assert size["kind"] == "size" and size["dims_cm"] == [1.5] and size["reference"]["dims_cm"] == [0.8]


def test_omissions_negations_hedges_and_comparisons_do_not_count(halluc):
    hyps = ["", "No acute cardiopulmonary process.", "No endotracheal tube.", "Possible left chest tube.",
            "Interval removal of the right PICC.", "The endotracheal tube tip may be in the right mainstem bronchus.",
            "Endotracheal tube unchanged in position. Enteric tube in unchanged position.",
            "Heart size normal. Lungs clear, 4 views."]
    res = halluc(hyps, [REF] * len(hyps))
    assert res.scores == [0.0] * len(hyps), [d["hallucinations"] for d in res.details]


def test_unsupported_numbers_count_only_when_asked():
    from reward.base import get_scorer

    ref = "Endotracheal tube in standard position. Right upper lobe nodule."
    hyp = "Endotracheal tube 4 cm above the carina. 8 mm right upper lobe nodule."
    assert get_scorer("measurement_hallucination")([hyp], [ref]).scores == [0.0]
    res = get_scorer("measurement_hallucination", count_unsupported=True)([hyp], [ref])
    assert res.scores == [2.0] and {h["kind"] for h in res.details[0]["hallucinations"]} == {"unsupported"}


def test_f1_corpus_numbers_and_mae():
    from reward.base import get_scorer

    f1 = get_scorer("measurement_f1")
    refs = [REF, REF, "No acute process.", "ETT tip 3 cm above the carina. NG tube in the stomach."]
    hyps = [REF, "Endotracheal tube tip 2.5 cm above the carina. Right IJ line tip in the SVC.", "Clear lungs.",
            "ET tube 5 cm above the carina."]
    res = f1(hyps, refs)
    assert res.scores[0] == 1.0 and res.scores[2] == 1.0  # identical facts; neither states any
    # hyp 1: ett (ok), ett>carina 2.5 vs 1 (out), cvc (hallucinated), cvc>svc -> P 1/4; ref ett, ett>carina, enteric,
    # enteric>below_diaphragm -> R 1/4
    assert res.scores[1] == pytest.approx(0.25)
    assert 0.0 <= min(res.scores) and max(res.scores) <= 1.0
    c = res.corpus
    assert c["n_carina_pairs"] == 3 and c["carina_mae_cm"] == pytest.approx((0 + 1.5 + 2.0) / 3)
    assert c["hallucination_rate"] == pytest.approx(0.5) and c["hallucinations_per_report"] == pytest.approx(3 / 4)
    assert 0 < c["precision"] < 1 and 0 < c["recall"] < 1
    assert c["f1"] == pytest.approx(2 * c["precision"] * c["recall"] / (c["precision"] + c["recall"]))


def test_penalty_and_its_options():
    from reward.base import RewardError, get_scorer

    hyp = "ETT 6 cm above the carina. Right chest tube. Swan-Ganz catheter in the right pulmonary artery."
    assert get_scorer("measurement_hallucination")([hyp], [REF]).scores == [3.0]
    assert get_scorer("measurement_penalty")([hyp], [REF]).scores == [-3.0]
    assert get_scorer("measurement_penalty", max_count=2, penalty=0.5)([hyp], [REF]).scores == [-1.0]
    assert get_scorer("measurement_penalty", per_fact=False)([hyp, REF], [REF, REF]).scores == [-1.0, 0.0]
    for bad in ({"penalty": -1}, {"max_count": 0}, {"carina_tolerance_cm": float("nan")}, {"size_rel_tolerance": "x"}):
        with pytest.raises(RewardError):
            get_scorer("measurement_penalty", **bad)


def test_penalty_as_trl_reward_and_in_the_composite_spec():
    from reward.base import available_scorers
    from reward.trl import load_reward_spec, make_composite_reward, reward_function

    fn = reward_function("measurement_penalty")
    out = fn(prompts=None, completions=[[{"role": "assistant", "content": "ETT 6 cm above the carina."}], REF],
             reference=[REF, REF])
    assert out == [-1.0, 0.0]
    spec = REPO / "recipes" / "rewards" / "clinical_measurements.yaml"
    entries = load_reward_spec(spec)
    assert {e["name"] for e in entries} <= set(available_scorers())
    assert [e["name"] for e in entries if e["name"] == "measurement_penalty"] == ["measurement_penalty"]
    comp = make_composite_reward(spec)
    cols = {"reference": [REF, REF], "has_prior": [False, False]}
    good, bad = comp(prompts=None, completions=[REF, REF.replace("1 cm above", "5 cm above")], **cols)
    assert good - bad == pytest.approx(next(e["weight"] for e in entries if e["name"] == "measurement_penalty") * 1.0,
                                       abs=0.25)
    assert comp.last_parts["measurement_penalty"] == [0.0, -1.0]


# ----------------------------------------------------------------------------------------------------
# Properties
# ----------------------------------------------------------------------------------------------------
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_PIECES = ["Endotracheal tube", "4.5 cm above the carina", "NG tube", "in the stomach", "no", "removed", "12",
           "3.", "x", "mm", "cm", "Swan-Ganz", "PICC", "SVC", "may be", "unchanged", "1.2 x 0.8 cm", ".", ",", "\n",
           "- ", "1. ", "nodule", "leads", "☃", "稳定", "\u200b", "XXXX", "99999999999999999999999 cm", "1e308 cm",
           "0.0000001 mm", "∞", "NaN cm"]
_texts = st.one_of(st.text(max_size=400), st.lists(st.sampled_from(_PIECES), max_size=60).map(" ".join),
                   st.lists(st.integers(-10**6, 10**6).map(str), max_size=40).map(" ".join))


def _finite(res) -> bool:
    return all(isinstance(s, float) and math.isfinite(s) for s in res.scores)


@settings(max_examples=150, deadline=None)
@given(hyp=_texts, ref=_texts)
def test_scorers_never_raise_and_stay_finite(hyp, ref):
    from reward.base import get_scorer

    for name in ("measurement_hallucination", "measurement_f1", "measurement_penalty"):
        res = get_scorer(name)([hyp], [ref])
        assert _finite(res) and len(res.scores) == 1
        if name == "measurement_f1":
            assert 0.0 <= res.scores[0] <= 1.0
        else:
            assert (res.scores[0] >= 0) == (name == "measurement_hallucination") or res.scores[0] == 0.0
    compare(hyp, ref)


def test_edge_inputs_empty_huge_unicode_unitless():
    from reward.base import get_scorer

    huge = ("Endotracheal tube 4 cm above the carina. 8 mm nodule. " * 2000)[:100_000]
    ex = extract(huge)
    assert len(ex.devices) > 100 and len(ex.sizes) > 100  # extract() itself reads all 100k characters
    for text in ("", huge, "ET tube 😀 ５ cm above the carina ☃", "12 34 5.6 7,8 100", "nodule 7 and 8", None, 42):
        for name in ("measurement_hallucination", "measurement_f1", "measurement_penalty"):
            res = get_scorer(name)([text], [huge])
            assert _finite(res)
    assert extract("nodule 7 and 8. tube 3 above the carina").sizes == []
    assert extract("Endotracheal tube 3 above the carina.").devices[0].distance is None
