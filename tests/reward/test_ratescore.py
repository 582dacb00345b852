"""RaTEScore: missing optional package, affinity matrices (the model-free part of the oracle), and, when
the RaTEScore package is installed, an end-to-end run with tiny random local models."""

from __future__ import annotations

import json
import sys

import pytest

from reward.base import MissingBackendError, RewardError, get_scorer
from reward.ratescore import AFFINITY_KEYS, EMPTY_SCORE, RaTEScoreScorer, load_affinity_matrix


def _oracle_matrices(shared_data):
    parts = json.loads((shared_data / "metric_oracles" / "ratescore.json").read_text())["model_free_parts"]
    return {"long": parts["affinity_matrix/long_weight.json"], "short": parts["affinity_matrix/short_weight.json"]}


def test_missing_package_raises_with_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "RaTEScore", None)  # as if not installed
    with pytest.raises(MissingBackendError, match=r"pip install RaTEScore==0\.6\.0 medspacy") as e:
        get_scorer("ratescore", bert_model="/models/ner", eval_model="/models/emb")
    assert "RaTEScore" in str(e.value) and "spacy>=3.8" in str(e.value)
    with pytest.raises(MissingBackendError):
        load_affinity_matrix("long")  # the built-in matrices live in the package


def test_affinity_matrix_files_are_checked(tmp_path, shared_data):
    for name, matrix in _oracle_matrices(shared_data).items():
        assert set(matrix) == AFFINITY_KEYS
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(matrix))
        assert load_affinity_matrix(path) == matrix
    long = _oracle_matrices(shared_data)["long"]
    assert long["neg_weight"] == pytest.approx(0.8716553966489615)
    bad = dict(long)
    del bad["disease_non-disease"]
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(RewardError, match=r"bad\.json: affinity matrix lacks key\(s\) disease_non-disease"):
        load_affinity_matrix(tmp_path / "bad.json")
    (tmp_path / "nan.json").write_text(json.dumps({**long, "anatomy_anatomy": "high"}))
    with pytest.raises(RewardError, match="'anatomy_anatomy' has value 'high'"):
        load_affinity_matrix(tmp_path / "nan.json")
    (tmp_path / "extra.json").write_text(json.dumps({**long, "organ_organ": 1.0}))
    with pytest.raises(RewardError, match="unknown key.*organ_organ"):
        load_affinity_matrix(tmp_path / "extra.json")
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_affinity_matrix(tmp_path / "none.json")
    # a bad file is reported before anything is loaded, installed or not
    with pytest.raises(RewardError, match="lacks key"):
        RaTEScoreScorer(affinity=tmp_path / "bad.json")


# ----------------------------------------------------------------------------------------------------
# With the optional package installed
# ----------------------------------------------------------------------------------------------------

def test_package_matrices_equal_the_oracle(shared_data):
    pytest.importorskip("RaTEScore", reason="optional RaTEScore package not installed")
    for name, matrix in _oracle_matrices(shared_data).items():
        assert load_affinity_matrix(name) == pytest.approx(matrix, abs=0)


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    pytest.importorskip("RaTEScore", reason="optional RaTEScore package not installed")
    import torch
    from transformers import BertConfig, BertForTokenClassification, BertModel, BertTokenizer

    root = tmp_path_factory.mktemp("rate")
    words = ("no pleural effusion mild cardiomegaly edema left lung right lobe opacity pneumothorax "
             "heart size normal is are the of with small large . ,").split()
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]
    labels = ["O"] + [f"{p}-{t.upper()}" for t in ("abnormality", "non-abnormality", "disease",
                                                  "non-disease", "anatomy") for p in ("B", "I")]
    torch.manual_seed(0)
    for name, cls, extra in (("ner", BertForTokenClassification,
                              {"id2label": dict(enumerate(labels)), "label2id": {v: i for i, v in enumerate(labels)}}),
                             ("emb", BertModel, {})):
        folder = root / name
        folder.mkdir()
        (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
        BertTokenizer.from_pretrained(str(folder)).save_pretrained(str(folder))
        config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                            intermediate_size=37, initializer_range=0.5, **extra)
        model = cls(config)
        if name == "ner":  # every token a one-token DISEASE entity, so that entities exist
            with torch.no_grad():
                model.classifier.bias[labels.index("B-DISEASE")] = 100.0
        model.save_pretrained(str(folder))
    return root


def test_end_to_end_with_tiny_local_models(tiny_models):
    scorer = RaTEScoreScorer(bert_model=str(tiny_models / "ner"), eval_model=str(tiny_models / "emb"),
                             device="cpu", chunk_size=2)
    same = "Mild cardiomegaly. Small left pleural effusion. No pneumothorax."
    hyps = [same, "", " . ", "Large right lung opacity with edema.", same]
    refs = [same, same, same, "Normal heart size. No effusion.", ""]
    res = scorer(hyps, refs)
    assert len(res.scores) == 5 and all(0.0 <= s <= 1.0 for s in res.scores)
    assert [d["empty"] for d in res.details] == [False, True, True, False, True]
    assert res.scores[1] == res.scores[2] == res.scores[4] == EMPTY_SCORE
    # identical reports: every entity finds itself (cosine 1, same type) -> precision = recall = 1
    assert res.scores[0] == pytest.approx(1.0)
    assert res.scores[3] < 1.0
    # alone or in a batch with empty partners: the same number (no shifted pairs)
    assert scorer([hyps[3]], [refs[3]]).scores[0] == pytest.approx(res.scores[3])
