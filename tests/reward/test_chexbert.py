"""CheXbert backend: loading the published checkpoint layout, head order, batching, errors.

A tiny random BERT (4 layers of width 32) and random heads are saved exactly as chexbert.pth is
(``{"model_state_dict": {"module.bert.*", "module.linear_heads.<i>.*"}}``), next to a tiny WordPiece
vocabulary, and loaded through our class. No hub access.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from reward.base import MissingBackendError, RewardError, get_scorer  # noqa: E402
from reward.chexbert import (  # noqa: E402
    CHEXBERT_CONDITIONS,
    ChexbertLabeler,
    load_chexbert_state_dict,
    resolve_checkpoint,
)
from reward.constants import CHEXPERT_LABELS  # noqa: E402
from tests.builders.scorers import HIDDEN, WORDS, published_layout, save_tiny_chexbert  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return save_tiny_chexbert(tmp_path_factory.mktemp("chexbert"))


def test_labels_have_our_keys_and_values(tiny):
    root, _, ckpt = tiny
    lab = ChexbertLabeler(ckpt, tokenizer=root / "bert", device="cpu", batch_size=3)
    texts = ["No pleural effusion.", "Mild cardiomegaly with pulmonary edema.", "", "stable\n\n  left   lung", "x" * 50]
    out = lab.label(texts)
    assert len(out) == len(texts)
    for labels in out:
        assert tuple(labels) == CHEXPERT_LABELS
        assert all(v in (None, 1.0, 0.0, -1.0) for v in labels.values())
        assert labels["No Finding"] in (None, 1.0)  # the two-class head
    # white space is normalised as CheXbert did: same label for the same words
    assert lab.label(["stable left lung"]) == [out[3]]


def test_head_order_and_class_mapping(tmp_path, tiny):
    """Heads answer fixed classes (zero weights, one-hot bias): our dict must read them by CheXbert name."""
    root, config, _ = tiny
    wanted = {name: (i % 4 if name != "No Finding" else 1) for i, name in enumerate(CHEXBERT_CONDITIONS)}
    heads = []
    for name in CHEXBERT_CONDITIONS:
        n = 2 if name == "No Finding" else 4
        b = torch.full((n,), -5.0)
        b[wanted[name]] = 5.0
        heads.append((torch.zeros(n, HIDDEN), b))
    ckpt = tmp_path / "fixed.pth"
    torch.save({"model_state_dict": published_layout(config, heads=heads)}, ckpt)
    lab = ChexbertLabeler(ckpt, tokenizer=root / "bert", device="cpu")
    value = {0: None, 1: 1.0, 2: 0.0, 3: -1.0}
    expected = {name: value[wanted[name]] for name in CHEXPERT_LABELS}
    assert lab.label(["no pleural effusion", "severe edema"]) == [expected, expected]
    assert expected["Enlarged Cardiomediastinum"] is None and expected["Cardiomegaly"] == 1.0
    assert expected["Lung Opacity"] == 0.0 and expected["Lung Lesion"] == -1.0  # CheXbert order != ours
    raw = lab.predict_classes(["heart"])[0]
    assert raw == tuple(wanted[name] for name in CHEXBERT_CONDITIONS)


def test_batching_and_padding_do_not_change_labels(tiny):
    root, _, ckpt = tiny
    texts = [" ".join(WORDS[i: i + 3 + (7 * i) % 40]) for i in range(20)]
    batched = ChexbertLabeler(ckpt, tokenizer=root / "bert", device="cpu", batch_size=8, cache_size=0)
    single = ChexbertLabeler(ckpt, tokenizer=root / "bert", device="cpu", batch_size=1, cache_size=0)
    a = batched.predict_classes(texts)
    b = [single.predict_classes([t])[0] for t in texts]
    assert a == b
    assert len(set(a)) > 1  # random heads: not all reports get the same labels


def test_long_report_is_truncated_to_512_tokens(tiny):
    root, _, ckpt = tiny
    lab = ChexbertLabeler(ckpt, tokenizer=root / "bert", device="cpu")
    long_text = "mild pulmonary edema . " * 400  # ~1600 tokens
    cut = lab.tokenizer(long_text, truncation=True, max_length=512)["input_ids"]
    assert len(cut) == 512 and cut[-1] == lab.tokenizer.sep_token_id
    (labels,) = lab.label([long_text])
    assert tuple(labels) == CHEXPERT_LABELS


def test_duplicates_and_cache_skip_the_model(tiny, monkeypatch):
    root, _, ckpt = tiny
    lab = ChexbertLabeler(ckpt, tokenizer=root / "bert", device="cpu")
    seen = []
    real = lab._run
    monkeypatch.setattr(lab, "_run", lambda texts: seen.append(list(texts)) or real(texts))
    first = lab.label(["small left effusion", "small left effusion", "new tube"])
    assert seen == [["small left effusion", "new tube"]]
    assert first[0] == first[1]
    again = lab.label(["new tube", "large right pneumothorax"])
    assert seen[-1] == ["large right pneumothorax"] and again[0] == first[2]


def test_missing_keys_are_rejected_with_a_clear_error(tmp_path, tiny):
    root, config, _ = tiny
    state = published_layout(config)
    del state["module.linear_heads.13.weight"], state["module.linear_heads.13.bias"]
    del state["module.bert.encoder.layer.1.output.dense.weight"]
    bad = tmp_path / "bad.pth"
    torch.save({"model_state_dict": state}, bad)
    with pytest.raises(RewardError, match=r"missing keys: .*linear_heads\.13\.bias.*") as e:
        ChexbertLabeler(bad, tokenizer=root / "bert", device="cpu")
    assert "bert.encoder.layer.1.output.dense.weight" in str(e.value) and str(bad) in str(e.value)


def test_wrong_head_shape_and_non_checkpoint_files(tmp_path, tiny):
    root, config, _ = tiny
    state = published_layout(config)
    state["module.linear_heads.13.weight"] = torch.zeros(4, HIDDEN)  # No Finding has two classes
    state["module.linear_heads.13.bias"] = torch.zeros(4)
    torch.save({"model_state_dict": state}, tmp_path / "shape.pth")
    with pytest.raises(RewardError, match=r"linear_heads\.13\.weight has shape \(4, 32\), expected \(2, 32\)"):
        ChexbertLabeler(tmp_path / "shape.pth", tokenizer=root / "bert", device="cpu")
    (tmp_path / "text.pth").write_text("not a checkpoint")
    with pytest.raises(RewardError, match="cannot read a CheXbert checkpoint"):
        load_chexbert_state_dict(tmp_path / "text.pth")
    torch.save({"model_state_dict": {"module.x": 3}}, tmp_path / "notensors.pth")
    with pytest.raises(RewardError, match="not a CheXbert checkpoint"):
        load_chexbert_state_dict(tmp_path / "notensors.pth")


def test_state_dict_prefix_and_old_buffers(tmp_path, tiny):
    _, config, _ = tiny
    state = published_layout(config)
    state["module.bert.embeddings.position_ids"] = torch.arange(512)[None]  # saved by transformers 3.x
    torch.save({"model_state_dict": state}, tmp_path / "old.pth")
    loaded = load_chexbert_state_dict(tmp_path / "old.pth")
    assert "bert.embeddings.position_ids" not in loaded
    assert not any(k.startswith("module.") for k in loaded)
    assert loaded["linear_heads.0.weight"].shape == (4, HIDDEN)


def test_checkpoint_resolution_uses_the_hub_only_for_hub_ids(tmp_path, tiny, monkeypatch):
    _, _, ckpt = tiny
    import huggingface_hub

    calls = []
    monkeypatch.setattr(huggingface_hub, "hf_hub_download",
                        lambda repo_id, filename: calls.append((repo_id, filename)) or str(ckpt))
    assert resolve_checkpoint(ckpt) == ckpt and resolve_checkpoint(ckpt.parent) == ckpt
    assert calls == []
    assert str(resolve_checkpoint("StanfordAIMI/RRG_scorers")) == str(ckpt)
    assert calls == [("StanfordAIMI/RRG_scorers", "chexbert.pth")]
    with pytest.raises(FileNotFoundError, match="no such file"):
        resolve_checkpoint(tmp_path / "nowhere" / "chexbert.pth")
    with pytest.raises(FileNotFoundError, match="has no chexbert.pth"):
        resolve_checkpoint(tmp_path)


def test_scorer_without_checkpoint_raises_missing_backend(monkeypatch):
    monkeypatch.delenv("MLLM_CXR_CHEXBERT", raising=False)
    with pytest.raises(MissingBackendError, match="checkpoint"):
        get_scorer("chexbert_f1")


def test_scorer_f1_against_label_based_f1(tiny, monkeypatch):
    f1 = pytest.importorskip("reward.f1")
    root, _, ckpt = tiny
    monkeypatch.setenv("MLLM_CXR_CHEXBERT", str(ckpt))
    scorer = get_scorer("chexbert_f1", tokenizer=str(root / "bert"), device="cpu", uncertain="positive")
    hyps = ["No pleural effusion.", "mild cardiomegaly", "", "<b>edema</b> \u00e9\u00e8"]
    refs = ["No pleural effusion.", "severe pulmonary edema", "normal heart size", "small left effusion"]
    res = scorer(hyps, refs)
    assert len(res.scores) == 4 and all(0.0 <= s <= 1.0 for s in res.scores)
    assert res.scores[0] == 1.0  # identical reports, identical labels
    assert res.details[0]["hyp_labels"] == res.details[0]["ref_labels"]
    labels = scorer.labeler.label(hyps + refs)
    want = f1.per_sample_f1(labels[:4], labels[4:], uncertain="positive", subset="14")
    assert res.scores == pytest.approx([float(x) for x in want])
    assert res.corpus["uncertain"] == "positive" and res.corpus["labeler"] == "chexbert"


def test_head_order_is_chexberts():
    assert CHEXBERT_CONDITIONS == (
        "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema", "Consolidation",
        "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other", "Fracture",
        "Support Devices", "No Finding")
