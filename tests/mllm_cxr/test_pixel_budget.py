"""The pixel budget <-> image-processor ``size`` mapping (transformers 5 keeps min/max pixels in ``size``)."""

from __future__ import annotations

from types import SimpleNamespace

from mllm_cxr.modeling import pixel_budget, size_with_budget


def test_size_with_budget_sets_the_given_bounds_only_and_copies():
    ip = SimpleNamespace(size={"shortest_edge": 3136, "longest_edge": 1003520})
    size = size_with_budget(ip, max_pixels=12544)
    assert size == {"shortest_edge": 3136, "longest_edge": 12544}
    assert ip.size == {"shortest_edge": 3136, "longest_edge": 1003520}  # not changed in place
    assert size_with_budget(ip, min_pixels=100, max_pixels=200) == {"shortest_edge": 100, "longest_edge": 200}


def test_pixel_budget_reads_size_then_the_older_attributes():
    ip = SimpleNamespace(size={"shortest_edge": 3136, "longest_edge": 12544})
    assert pixel_budget(SimpleNamespace(image_processor=ip)) == {"min_pixels": 3136, "max_pixels": 12544}
    old = SimpleNamespace(size={"height": 224, "width": 224}, min_pixels=None, max_pixels=50176)
    assert pixel_budget(old) == {"max_pixels": 50176}
    assert pixel_budget(SimpleNamespace()) == {}


def test_the_real_processor_gets_the_configured_budget(tiny_model_dir):
    from mllm_cxr.modeling import ModelArguments, load_processor

    proc = load_processor(ModelArguments(model_name_or_path=str(tiny_model_dir), min_pixels=3136, max_pixels=12544))
    assert pixel_budget(proc) == {"min_pixels": 3136, "max_pixels": 12544}
    ip = proc.image_processor  # the budget is folded into size, not kept as attributes
    assert getattr(ip, "min_pixels", None) is None and getattr(ip, "max_pixels", None) is None
