"""EditGRPO: sentence-level edits toward the reference, group bookkeeping, and a short training run."""

from __future__ import annotations

import math

import pytest

from tests.builders.repo import REPO

# The session fixtures align_phantom and sft_adapter; helpers are imported inside the tests, after pytest has
# loaded (and assert-rewritten) the plugin module.
pytest_plugins = ["tests.builders.alignment"]

REF = ("FINDINGS: Endotracheal tube in standard position. The heart is mildly enlarged. Consolidation in the right "
       "lower lobe. No pneumothorax. No pleural effusion.\nIMPRESSION: Right lower lobe consolidation. Cardiomegaly.")


@pytest.fixture(scope="module")
def chexpert_f1():
    from reward.trl import reward_function

    fn = reward_function("chexpert_f1")
    return lambda hyps, refs: fn(prompts=None, completions=list(hyps), reference=list(refs))


def test_each_operation_kind(chexpert_f1):
    from mllm_cxr.train.editor import SentenceEditor

    ed = SentenceEditor()
    # presence conflict: the heart sentence is swapped for the reference's
    r = ed.edit("FINDINGS: Heart size is normal. Consolidation in the right lower lobe.", REF)
    assert r.changed and r.kind == "conflict" and r.ops[0].observation == "Cardiomegaly"
    assert r.text == "FINDINGS: The heart is mildly enlarged. Consolidation in the right lower lobe."
    # false negative: the missing finding's sentence is appended to its section
    r = ed.edit("FINDINGS: The heart is mildly enlarged. Consolidation in the right lower lobe. No pneumothorax.\n"
                "IMPRESSION: Cardiomegaly.", REF)
    assert r.kind == "fn_add" and r.ops[0].observation == "Support Devices"
    assert r.text.splitlines()[0].endswith("Endotracheal tube in standard position.")
    # false positive without a similar reference sentence: deleted
    r = ed.edit("FINDINGS: The heart is mildly enlarged. Mild pulmonary edema. Consolidation in the right lower lobe.",
                REF)
    assert r.kind == "fp_delete" and r.ops[0].observation == "Edema" and "edema" not in r.text.lower()
    # false positive with a similar one: replaced by the closest reference sentence
    ref2 = "FINDINGS: Left lower lobe atelectasis. The heart is not enlarged."
    r = SentenceEditor(similarity_threshold=0.3).edit("FINDINGS: Left lower lobe consolidation. The heart is not "
                                                      "enlarged.", ref2)
    assert r.kind == "fp_replace" and r.ops[0].new_sentence == "Left lower lobe atelectasis." and r.ops[0].similarity >= 0.3
    # kept only when the text changes
    for same in (REF, "", "   "):
        r = ed.edit(same, REF)
        assert not r.changed and r.text == same and r.ops == []
    for text in ("FINDINGS: Heart size is normal.", "FINDINGS: The heart is mildly enlarged. Mild pulmonary edema."):
        r = ed.edit(text, REF)
        assert chexpert_f1([r.text], [REF])[0] > chexpert_f1([text], [REF])[0]


def test_similarity_is_pluggable():
    from mllm_cxr.train.editor import SentenceEditor, token_overlap_similarity

    assert token_overlap_similarity("Small left pleural effusion.", ["Left pleural effusion is small.", "Cardiomegaly."]) \
        == [1.0, 0.0]
    calls = []

    def always_first(sentence, candidates):
        calls.append(sentence)
        return [1.0] + [0.0] * (len(candidates) - 1)

    r = SentenceEditor(similarity=always_first).edit("FINDINGS: Mild pulmonary edema. Cardiomegaly.", REF)
    assert calls == ["Mild pulmonary edema."] and r.kind == "fp_replace"
    assert r.ops[0].new_sentence == "Endotracheal tube in standard position."


def test_embedding_similarity_from_a_local_encoder(tmp_path):
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    from mllm_cxr.train.editor import EmbeddingSimilarity, make_similarity

    torch.manual_seed(0)

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "small", "left", "pleural", "effusion", "heart", "is",
             "enlarged", "no", "pneumothorax", "."]
    (tmp_path / "vocab.txt").write_text("\n".join(words) + "\n")
    BertTokenizerFast(vocab_file=str(tmp_path / "vocab.txt")).save_pretrained(tmp_path)
    BertModel(BertConfig(vocab_size=len(words), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64)).save_pretrained(tmp_path)
    sim = make_similarity(str(tmp_path))
    assert isinstance(sim, EmbeddingSimilarity)
    s = sim("small left pleural effusion.", ["small left pleural effusion.", "the heart is enlarged.", "no pneumothorax."])
    assert len(s) == 3 and all(0.0 <= x <= 1.0 + 1e-6 for x in s) and s[0] == pytest.approx(1.0, abs=1e-4)
    # a random encoder ranks nothing reliably; what must hold is unit-norm, cached embeddings
    vecs = sim.embed(["no pneumothorax.", "the heart is enlarged."])
    assert vecs.shape == (2, 32) and torch.allclose(vecs.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert set(sim._cache) == {"small left pleural effusion.", "the heart is enlarged.", "no pneumothorax."}


def _degrade(study, others) -> list[str]:
    """Rollouts that get the study partly wrong: another study's report, one sentence dropped, a negation flipped."""
    from mllm_cxr.prompts import PromptConfig, target_text

    ref = target_text(study, PromptConfig())
    sentences = ref.replace("\n", " ").split(". ")
    out = [target_text(o, PromptConfig()) for o in others]
    if len(sentences) > 2:
        out.append(". ".join(sentences[1:]))
    out.append(ref.replace("No pleural effusion", "Small right pleural effusion").replace("Normal heart size",
                                                                                          "Cardiomegaly"))
    return out


def test_edits_of_phantom_rollouts_score_higher_than_their_sources(phantom_dir, chexpert_f1):
    from collections import Counter

    from data_prep.schema import read_records
    from mllm_cxr.prompts import PromptConfig, target_text
    from mllm_cxr.train.editor import SentenceEditor

    studies = read_records(phantom_dir / "studies.jsonl")
    ed = SentenceEditor()
    kinds: Counter[str] = Counter()
    n_sources = 0
    for i, s in enumerate(studies):
        ref = target_text(s, PromptConfig())
        sources = [t for t in _degrade(s, [studies[(i + 1) % len(studies)], studies[(i + 7) % len(studies)]]) if t != ref]
        results = [ed.edit(t, ref) for t in sources]
        n_sources += len(sources)
        changed = [(t, r) for t, r in zip(sources, results) if r.changed]
        if not changed:
            continue
        before = chexpert_f1([t for t, _ in changed], [ref] * len(changed))
        after = chexpert_f1([r.text for _, r in changed], [ref] * len(changed))
        for (t, r), b, a in zip(changed, before, after):
            assert a > b, (t, r.text, r.kind)
            assert len(r.ops) == 1  # one operation per rollout
            kinds[r.kind] += 1
    assert sum(kinds.values()) >= 0.5 * n_sources
    assert kinds["conflict"] and kinds["fn_add"], kinds


@pytest.fixture(scope="module")
def edit_trainer(tmp_path_factory, phantom_dir, tiny_model_dir):
    """An EditGRPOTrainer on the tiny model (not trained here) for the batch bookkeeping tests."""
    from data_prep.schema import read_records
    from mllm_cxr.data import grpo_dataset
    from mllm_cxr.modeling import ModelArguments, load_model, load_processor
    from mllm_cxr.prompts import PromptConfig
    from mllm_cxr.train.editgrpo import EditGRPOTrainer
    from mllm_cxr.train.grpo_config import EditGRPOConfig

    ds = grpo_dataset(read_records(phantom_dir / "studies.jsonl", split="train")[:4], phantom_dir,
                      PromptConfig(max_images=2, context=["indication"]))
    margs = ModelArguments(model_name_or_path=str(tiny_model_dir), dtype="float32", max_pixels=12544, min_pixels=3136)
    model, peft_config = load_model(margs)
    args = EditGRPOConfig(output_dir=str(tmp_path_factory.mktemp("editgrpo")), num_generations=4,
                          per_device_train_batch_size=8, max_completion_length=128, max_steps=1, use_cpu=True,
                          bf16=False, report_to="none", save_strategy="no", beta=0.0, seed=0, edit_max_candidates=9)
    from reward.trl import reward_funcs_and_weights

    funcs, _ = reward_funcs_and_weights("chexpert_f1")
    return EditGRPOTrainer(model=model, reward_funcs=funcs, args=args, train_dataset=ds,
                           processing_class=load_processor(margs), peft_config=peft_config)


def test_trainer_edits_with_the_configs_settings(edit_trainer):
    """The config's edit_* keys reach the editor (one EditSettings, no fallbacks of its own)."""
    tr = edit_trainer
    assert tr.editor.settings == tr.args.edit_settings() and tr.editor.max_candidates == 9


def test_apply_edits_keeps_groups_whole(one_thread, edit_trainer, phantom_dir, chexpert_f1):
    """Two groups of 4 rollouts: at most 2 slots per group replaced, each by an edit of a rollout of its group."""
    from data_prep.schema import read_records
    from mllm_cxr.prompts import PromptConfig, target_text

    tr = edit_trainer
    studies = read_records(phantom_dir / "studies.jsonl", split="train")[:2]
    others = read_records(phantom_dir / "studies.jsonl", split="test")
    inputs, texts = [], []
    for k, s in enumerate(studies):
        ref = target_text(s, PromptConfig())
        rollouts = (_degrade(s, others[4 * k:4 * k + 2]) + [ref] * 4)[:4]
        for t in rollouts:
            inputs.append({"study_id": s.study_id, "reference": ref, "prompt": [{"role": "user", "content": "x"}]})
            texts.append(t)
    ids = [tr._tokenizer(t, add_special_tokens=False)["input_ids"] + [tr.eos_token_ids[0]] for t in texts]
    completions = [[{"role": "assistant", "content": t}] for t in texts]
    new_ids, new_completions, new_logprobs = tr.apply_edits(inputs, ids, completions, [[-1.0] * len(x) for x in ids])
    assert len(new_ids) == len(new_completions) == len(new_logprobs) == len(ids) == 8
    edits = tr._pending_edits
    assert edits and len({e["target"] for e in edits}) == len(edits)
    for g in (range(0, 4), range(4, 8)):
        in_group = [e for e in edits if e["target"] in g]
        assert len(in_group) <= 2 and all(e["source"] in g and e["source"] != e["target"] for e in in_group)
        assert not {e["source"] for e in in_group} & {e["target"] for e in in_group}  # sources are kept
    for i in range(8):
        edited = next((e for e in edits if e["target"] == i), None)
        if edited is None:
            assert new_ids[i] == ids[i] and new_completions[i] == completions[i] and new_logprobs[i] == [-1.0] * len(ids[i])
            continue
        text = new_completions[i][0]["content"]
        assert new_ids[i][-1] == tr.eos_token_ids[0] and tr._tokenizer.decode(new_ids[i], skip_special_tokens=True) == text
        assert new_logprobs[i] == [None] * len(new_ids[i])  # sampling log-probs unknown for an edit
        ref = inputs[i]["reference"]
        assert chexpert_f1([text], [ref])[0] > chexpert_f1([texts[edited["source"]]], [ref])[0]


@pytest.mark.slow
def test_editgrpo_run_logs_edits_with_two_images(one_thread, tmp_path, align_phantom, tiny_model_dir, sft_adapter):
    """A few EditGRPO steps from the SFT adapter (frontal + lateral per prompt): edit counts and gains are logged."""
    from data_prep.schema import read_records
    from mllm_cxr.data import grpo_dataset
    from mllm_cxr.modeling import ModelArguments, load_model, load_processor
    from mllm_cxr.prompts import PromptConfig
    from mllm_cxr.train.editgrpo import EditGRPOTrainer
    from mllm_cxr.train.editor import EDIT_KINDS
    from mllm_cxr.train.grpo_config import EditGRPOConfig
    from reward.trl import reward_funcs_and_weights
    from tests.builders.alignment import adapter_settings

    settings = adapter_settings(sft_adapter)
    cfg = PromptConfig(**{k: v for k, v in settings.items() if not k.endswith("_pixels")})
    ds = grpo_dataset(read_records(align_phantom / "studies.jsonl", split="train")[:8], align_phantom, cfg)
    assert all(len(row["images"]) == 2 for row in ds)
    margs = ModelArguments(model_name_or_path=str(tiny_model_dir), adapter_path=str(sft_adapter), dtype="float32",
                           max_pixels=settings.get("max_pixels"), min_pixels=settings.get("min_pixels"))
    model, _ = load_model(margs)
    funcs, weights = reward_funcs_and_weights("chexpert_f1")
    args = EditGRPOConfig(output_dir=str(tmp_path), num_generations=4, per_device_train_batch_size=8,
                          max_completion_length=96, max_steps=3, logging_steps=1, learning_rate=1e-3,
                          reward_weights=weights, use_cpu=True, bf16=False, report_to="none", save_strategy="no",
                          seed=0)
    trainer = EditGRPOTrainer(model=model, reward_funcs=funcs, args=args, train_dataset=ds,
                              processing_class=load_processor(margs))
    trainer.train()
    assert len(trainer.edit_log) == 3
    for step in trainer.edit_log:
        assert step["slots"] == 8 and step["tried"] == 4 and step["injected"] <= 4
        assert sum(step["counts"].values()) == step["injected"]
        for e in step["edits"]:
            assert e["kind"] in EDIT_KINDS and e["gain"] > 0  # verified edits raise the CheXpert-F1 reward
    assert sum(s["injected"] for s in trainer.edit_log) >= 3
    logged = [h for h in trainer.state.log_history if "edit/injected" in h]
    assert len(logged) == 3 and all(f"edit/n_{k}" in logged[0] for k in EDIT_KINDS)
    assert [h["edit/injected"] for h in logged] == [float(s["injected"]) for s in trainer.edit_log]
    assert all(math.isfinite(h["reward"]) and "collapse/normal_share" in h and "timing/edit_s" in h for h in logged)


def test_editgrpo_steps_with_prior_images(one_thread, tmp_path, phantom_dir, tiny_model_dir):
    """Follow-up studies with frontal + lateral + the prior's frontal image: two EditGRPO steps train."""
    from data_prep.schema import read_records
    from mllm_cxr.data import grpo_dataset
    from mllm_cxr.modeling import ModelArguments, load_model, load_processor
    from mllm_cxr.prompts import PromptConfig
    from mllm_cxr.train.editgrpo import EditGRPOTrainer
    from mllm_cxr.train.grpo_config import EditGRPOConfig
    from reward.trl import reward_funcs_and_weights

    follow = [r for r in read_records(phantom_dir / "studies.jsonl") if r.prior is not None and r.prior.images][:2]
    ds = grpo_dataset(follow, phantom_dir, PromptConfig(max_images=3, include_prior_images=True,
                                                        context=["indication", "comparison"]))
    assert [len(row["images"]) for row in ds] == [3, 3]
    assert all("The last image is from the prior study." in row["prompt"][-1]["content"][-1]["text"] for row in ds)
    margs = ModelArguments(model_name_or_path=str(tiny_model_dir), dtype="float32", max_pixels=12544, min_pixels=3136)
    model, peft_config = load_model(margs)
    funcs, weights = reward_funcs_and_weights("chexpert_f1")
    args = EditGRPOConfig(output_dir=str(tmp_path), num_generations=2, per_device_train_batch_size=4,
                          max_completion_length=24, max_steps=2, logging_steps=1, learning_rate=1e-3,
                          reward_weights=weights, use_cpu=True, bf16=False, report_to="none", save_strategy="no")
    trainer = EditGRPOTrainer(model=model, reward_funcs=funcs, args=args, train_dataset=ds,
                              processing_class=load_processor(margs), peft_config=peft_config)
    trainer.train()
    logs = [h for h in trainer.state.log_history if "reward" in h]
    assert len(logs) == 2 and all(math.isfinite(h["loss"]) for h in logs)
    assert len(trainer.edit_log) == 2 and all(s["tried"] == 2 for s in trainer.edit_log)


def test_report_sections_follow_the_shared_section_parser():
    """EditGRPO's sections come from reward.text.find_sections: FINDINGS/IMPRESSION in any case start a
    section; other "Name:" lines are report text; the text before the first header is kept."""
    from mllm_cxr.train.editor import ReportSentences

    text = "Portable view.\nFindings: Heart size normal.\nHeart: enlarged? No. Lungs clear.\nimpression : No acute disease."
    rep = ReportSentences.parse(text)
    assert [h for h, _ in rep.sections] == [None, "FINDINGS", "IMPRESSION"]
    assert rep.sections[0][1] == ["Portable view."]
    assert "Heart: enlarged? No." in " ".join(rep.sections[1][1])  # not a section of its own
    assert rep.sections[2][1] == ["No acute disease."]
    assert ReportSentences.parse("No header. Two sentences.").sections == [(None, ["No header.", "Two sentences."])]
    assert ReportSentences.parse(rep.text()).sections == rep.sections  # text() writes it back


def test_the_editor_imports_neither_torch_nor_trl():
    """The text editor is plain text processing: importing it (a fresh interpreter) loads no torch, TRL or
    transformers, and editing a report still loads none."""
    import subprocess
    import sys

    code = ("import sys; from mllm_cxr.train.editor import SentenceEditor; "
            "r = SentenceEditor().edit('FINDINGS: Cardiomegaly.', 'FINDINGS: Normal heart size. Small left effusion.'); "
            "print(r.changed, sorted(m for m in ('torch', 'trl', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.split() == ["True", "[]"], out.stdout + out.stderr


def test_edit_settings_are_written_once():
    """EditGRPOConfig's edit_* keys are EditSettings' fields with its defaults; the editor's defaults are the same."""
    import dataclasses

    from mllm_cxr.train.editor import EditSettings, SentenceEditor
    from mllm_cxr.train.grpo_config import EditGRPOConfig

    cfg = {f.name: f.default for f in dataclasses.fields(EditGRPOConfig) if f.name.startswith("edit_")}
    assert cfg == {"edit_" + f.name: f.default for f in dataclasses.fields(EditSettings)}
    assert SentenceEditor().settings == EditSettings()
    assert SentenceEditor(similarity_threshold=0.3).settings == dataclasses.replace(EditSettings(), similarity_threshold=0.3)
    with pytest.raises(ValueError, match="edit_uncertain"):
        SentenceEditor(uncertain="maybe")
