"""The box codecs (mllm_cxr.boxes, implemented in cxr_io.boxes): exact inverses up to quantisation,
each family's textual convention, and decoding that never raises on a model's text."""

from __future__ import annotations

import ast
import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mllm_cxr.boxes import (
    FAMILIES,
    DecodedBoxes,
    box_problem,
    decode_boxes,
    encode_boxes,
    iou,
    quantum,
    smart_resize,
)
from tests.builders.repo import REPO


@st.composite
def fraction_boxes(draw, min_side: float = 0.05):
    x1 = draw(st.floats(0.0, 1.0 - min_side))
    y1 = draw(st.floats(0.0, 1.0 - min_side))
    x2 = draw(st.floats(x1 + min_side, 1.0))
    y2 = draw(st.floats(y1 + min_side, 1.0))
    label = draw(st.sampled_from(["", "heart", "left pleural effusion", "tube tip", "Ödem"]))
    b = {"x_min": x1, "y_min": y1, "x_max": x2, "y_max": y2}
    if label:
        b["label"] = label
    return b


sizes = st.tuples(st.integers(64, 4096), st.integers(64, 4096)).filter(lambda s: max(s) / min(s) < 4)


@settings(max_examples=300, deadline=None)
@given(boxes=st.lists(fraction_boxes(), max_size=5), family=st.sampled_from(FAMILIES), size=sizes)
def test_decode_inverts_encode_up_to_quantisation(boxes, family, size):
    w, h = size
    if family == "maira2":  # MAIRA-2 sees the centre square only: keep the boxes inside it
        side = min(w, h)
        ox, oy = (w - side) // 2 / w, (h - side) // 2 / h
        sx, sy = side / w, side / h
        boxes = [{**b, "x_min": ox + b["x_min"] * sx, "x_max": ox + b["x_max"] * sx,
                  "y_min": oy + b["y_min"] * sy, "y_max": oy + b["y_max"] * sy} for b in boxes]
    text = encode_boxes(boxes, family, size, min_pixels=3136, max_pixels=1_003_520)
    got = decode_boxes(text, family, size, min_pixels=3136, max_pixels=1_003_520)
    assert isinstance(got, DecodedBoxes) and got.ok and len(got) == len(boxes)
    qx, qy = quantum(family, size, min_pixels=3136, max_pixels=1_003_520)
    for b, g in zip(boxes, got):
        for k, q in (("x_min", qx), ("x_max", qx), ("y_min", qy), ("y_max", qy)):
            assert abs(g[k] - b[k]) <= q + 1e-9, (family, k, b, g)
        assert g.get("label", "") == b.get("label", "")
    # and encoding the decoded boxes gives the same text: the codec is a fixed point after one trip
    if all(box_problem(g) is None for g in got):
        assert encode_boxes(got, family, size, min_pixels=3136, max_pixels=1_003_520) == text


def test_qwen2_5_vl_uses_pixels_of_the_resized_image():
    # 1024 x 1024 with 512 tokens at most -> 616 x 616 (smart_resize), so x = 0.5 -> pixel 308
    assert smart_resize(1024, 1024, min_pixels=3136, max_pixels=512 * 28 * 28) == (616, 616)
    text = encode_boxes([{"x_min": 0.5, "y_min": 0.25, "x_max": 1.0, "y_max": 0.75, "label": "heart"}],
                        "qwen2_5_vl", (1024, 1024), min_pixels=3136, max_pixels=512 * 28 * 28)
    assert text.startswith("```json") and text.endswith("```")
    items = json.loads(text.strip("`").removeprefix("json"))
    assert items == [{"bbox_2d": [308, 154, 616, 462], "label": "heart"}]
    # a bigger budget gives bigger pixel numbers for the same box
    bigger = encode_boxes([{"x_min": 0.5, "y_min": 0.25, "x_max": 1.0, "y_max": 0.75}], "qwen2_5_vl",
                          (1024, 1024), min_pixels=3136, max_pixels=1024 * 28 * 28)
    assert json.loads(bigger.strip("`").removeprefix("json"))[0]["bbox_2d"][2] > 616


def test_each_family_writes_its_own_convention():
    box = [{"x_min": 0.1, "y_min": 0.2, "x_max": 0.5, "y_max": 0.6, "label": "opacity"}]
    assert encode_boxes(box, "qwen2_vl", (800, 800)) == \
        "<|object_ref_start|>opacity<|object_ref_end|><|box_start|>(100,200),(500,600)<|box_end|>"
    q3 = encode_boxes(box, "qwen3_vl", (800, 600))
    assert json.loads(q3.strip("`").removeprefix("json")) == [{"bbox_2d": [100, 200, 500, 600], "label": "opacity"}]
    assert encode_boxes(box, "maira2", (512, 512)) == "<obj>opacity<box><x10><y20><x50><y60></box></obj>"
    # MAIRA-2's processor decodes a bin at its centre: <x55> -> 0.555
    got = decode_boxes("<obj>grounded phrase <box><x55><y45><x70><y56></box></obj><obj>ungrounded</obj>",
                       "maira2", (512, 512))
    assert got.ok and [round(got[0][k], 4) for k in ("x_min", "y_min", "x_max", "y_max")] == [0.555, 0.455, 0.705, 0.565]
    assert got[0]["label"] == "grounded phrase"
    norm = encode_boxes(box, "normalized", (10, 10))
    assert json.loads(norm) == [{"box": [0.1, 0.2, 0.5, 0.6], "label": "opacity"}]


def test_maira2_crops_the_centre_square():
    # a 1000 x 800 image: MAIRA-2 sees x in [100, 900]; the crop's left edge is x = 0.1 of the original
    got = decode_boxes("<obj>x<box><x0><y0><x99><y99></box></obj>", "maira2", (1000, 800))
    assert math.isclose(got[0]["x_min"], (0.5 * 8 + 100) / 1000) and math.isclose(got[0]["y_min"], 0.5 / 100)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("text,n_failed,empty", [
    ("", 1, False),
    ("The heart is enlarged.", 1, False),
    ("No boxes found.", 0, True),
    ("not found", 0, True),
])
def test_plain_answers(family, text, n_failed, empty):
    got = decode_boxes(text, family, (512, 512))
    assert list(got) == [] and got.n_failed == n_failed and got.empty_answer == empty


@pytest.mark.parametrize("family,text,n_boxes,n_failed", [
    ("qwen2_5_vl", '```json\n[{"bbox_2d": [1, 2, 3]}, {"bbox_2d": [10, 20, 30, 40], "label": "a"}]\n```', 1, 1),
    ("qwen2_5_vl", '[{"bbox_2d": [10, 20, 30, 40]', 0, 1),  # cut short
    ("qwen2_5_vl", '[{"bbox_2d": ["a", 20, 30, 40]}, "x", 5]', 0, 3),
    ("qwen2_5_vl", '{"bbox_2d": [10, 20, 30, 40], "label": "only one"}', 1, 0),
    ("qwen3_vl", '```json\n[]\n```', 0, 0),
    ("qwen2_vl", "<|box_start|>(1,2),(3<|box_end|><|box_start|>(1,2),(3,4)<|box_end|>", 1, 1),
    ("maira2", "<obj>a<box><x1><y2><x3></box><box><x1><y2><x300><y4></box><box><x1><y2><x3><y4></box></obj>", 1, 2),
    ("normalized", '[{"box": [0.1, 0.2, 0.3, NaN]}]', 0, 1),
])
def test_malformed_fragments_are_counted(family, text, n_boxes, n_failed):
    got = decode_boxes(text, family, (512, 512))
    assert (len(got), got.n_failed) == (n_boxes, n_failed)


@settings(max_examples=400, deadline=None)
@given(text=st.one_of(st.text(max_size=300), st.binary(max_size=100).map(lambda b: b.decode("latin-1")),
                      st.lists(st.sampled_from(["<obj>", "</obj>", "<box>", "</box>", "<x1>", "<y99>", "<x100>",
                                                "[", "]", "{", "}", '"bbox_2d"', ":", ",", "1e999", "-3", "NaN",
                                                "```json", "<|box_start|>", "<|box_end|>", "(1,2)", "(3,4)",
                                                "<|object_ref_start|>", "<|object_ref_end|>", '"box"'])
                               ).map("".join)),
       family=st.sampled_from(FAMILIES))
def test_decoding_never_raises(text, family):
    got = decode_boxes(text, family, (640, 480))
    assert isinstance(got, DecodedBoxes) and got.n_failed >= 0
    assert all(all(math.isfinite(b[k]) for k in ("x_min", "y_min", "x_max", "y_max")) for b in got)


def test_non_text_and_huge_answers():
    assert decode_boxes(None, "qwen2_5_vl", (10, 10)).n_failed == 1
    assert decode_boxes(12345, "qwen2_vl", (10, 10)).n_failed == 1
    huge = "[" + ", ".join(['{"bbox_2d": [1, 2, 3, 4]}'] * 20000) + "]"
    got = decode_boxes(huge, "qwen3_vl", (10, 10))
    assert isinstance(got, DecodedBoxes) and got.n_failed >= 0


def test_caller_errors_raise():
    with pytest.raises(ValueError, match="unknown box family"):
        decode_boxes("[]", "llava", (10, 10))
    with pytest.raises(ValueError, match="image_size"):
        encode_boxes([], "qwen2_vl", (0, 10))
    with pytest.raises(ValueError, match="x_min must be smaller"):
        encode_boxes([{"x_min": 0.5, "y_min": 0.1, "x_max": 0.5, "y_max": 0.2}], "qwen2_vl", (10, 10))


def test_iou_and_box_problem():
    a = {"x_min": 0.0, "y_min": 0.0, "x_max": 0.5, "y_max": 0.5}
    b = {"x_min": 0.25, "y_min": 0.0, "x_max": 0.75, "y_max": 0.5}
    assert math.isclose(iou(a, b), 1 / 3) and iou(a, a) == 1.0
    assert iou(a, {"x_min": 0.6, "y_min": 0.6, "x_max": 0.9, "y_max": 0.9}) == 0.0
    assert iou(a, {"x_min": 0.5, "y_min": 0.5, "x_max": 0.0, "y_max": 0.0}) == 0.0  # reversed corners
    assert box_problem(a) is None
    assert "[0, 1]" in box_problem({**a, "x_max": 1.2})
    assert "x_min must be smaller" in box_problem({**a, "x_min": 0.5})
    assert "finite" in box_problem({**a, "y_min": float("nan")})


def test_the_codec_module_never_imports_torch_or_the_project():
    tree = ast.parse((REPO / "cxr_io" / "boxes.py").read_text(encoding="utf-8"))
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert imported <= {"__future__", "json", "math", "re", "collections", "typing"}, imported
