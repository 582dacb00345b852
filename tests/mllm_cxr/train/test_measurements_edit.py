"""EditGRPO's measurement edit: a hallucinated device/position/distance sentence -> the reference sentence."""

from __future__ import annotations

pytest_plugins = ["tests.builders.alignment"]

REF = ("FINDINGS: Endotracheal tube tip 1 cm above the carina. The heart is mildly enlarged. No pneumothorax.\n"
       "IMPRESSION: Cardiomegaly.")


def test_measurement_edit_replaces_or_deletes_the_hallucinated_sentence():
    from mllm_cxr.train.editor import EDIT_KINDS, SentenceEditor
    from reward.measurements import compare

    assert "measurement" in EDIT_KINDS
    ed = SentenceEditor(measurements=True)
    hyp = "FINDINGS: Endotracheal tube tip approximately 4.5 cm above the carina. The heart is mildly enlarged."
    r = ed.edit(hyp, REF)
    assert r.changed and r.kind == "measurement" and r.ops[0].observation == "measurement:ett"
    assert r.ops[0].old_sentence == "Endotracheal tube tip approximately 4.5 cm above the carina."
    assert r.text == "FINDINGS: Endotracheal tube tip 1 cm above the carina. The heart is mildly enlarged."
    assert compare(hyp, REF).count == 1 and compare(r.text, REF).count == 0
    # a device the reference never mentions: its sentence goes
    hyp2 = "FINDINGS: Endotracheal tube tip 1 cm above the carina. Right chest tube in place. The heart is mildly enlarged."
    r2 = ed.edit(hyp2, REF)
    assert r2.kind == "measurement" and r2.ops[0].new_sentence is None and "chest tube" not in r2.text
    assert ed.label_f1(r2.text, REF) >= ed.label_f1(hyp2, REF)
    # the position in a bronchus -> the reference's carina sentence
    r3 = ed.edit("FINDINGS: The endotracheal tube is in the right mainstem bronchus. The heart is mildly enlarged.", REF)
    assert r3.ops[0].observation == "position:ett" and "1 cm above the carina" in r3.text
    # opt-in: the default editor leaves measurements alone
    assert SentenceEditor().edit(hyp, REF).changed is False
    # nothing to correct
    assert not ed.edit(REF, REF).changed


def test_trainer_injects_measurement_edits(one_thread, tmp_path, phantom_dir, tiny_model_dir):
    from data_prep.schema import read_records
    from mllm_cxr.data import grpo_dataset
    from mllm_cxr.modeling import ModelArguments, load_model, load_processor
    from mllm_cxr.prompts import PromptConfig
    from mllm_cxr.train.editgrpo import EditGRPOTrainer
    from mllm_cxr.train.grpo_config import EditGRPOConfig
    from reward.trl import reward_funcs_and_weights

    ds = grpo_dataset(read_records(phantom_dir / "studies.jsonl", split="train")[:2], phantom_dir,
                      PromptConfig(max_images=1))
    margs = ModelArguments(model_name_or_path=str(tiny_model_dir), dtype="float32", max_pixels=12544, min_pixels=3136)
    model, peft_config = load_model(margs)
    args = EditGRPOConfig(output_dir=str(tmp_path), num_generations=4, per_device_train_batch_size=4,
                          max_completion_length=128, max_steps=1, use_cpu=True, bf16=False, report_to="none",
                          save_strategy="no", beta=0.0, seed=0, edit_measurements=True)
    funcs, _ = reward_funcs_and_weights("measurement_penalty")
    tr = EditGRPOTrainer(model=model, reward_funcs=funcs, args=args, train_dataset=ds,
                         processing_class=load_processor(margs), peft_config=peft_config)
    assert tr.editor.measurement_edits
    bad = "FINDINGS: Endotracheal tube tip 6 cm above the carina. The heart is mildly enlarged."
    texts = [bad, bad, REF, REF]
    inputs = [{"study_id": "s", "reference": REF, "prompt": [{"role": "user", "content": "x"}]} for _ in texts]
    ids = [tr._tokenizer(t, add_special_tokens=False)["input_ids"] + [tr.eos_token_ids[0]] for t in texts]
    _, completions, _ = tr.apply_edits(inputs, ids, [[{"role": "assistant", "content": t}] for t in texts], None)
    edits = tr._pending_edits
    assert edits and all(e["kind"] == "measurement" and e["observation"] == "measurement:ett" for e in edits)
    for e in edits:
        assert "1 cm above the carina" in completions[e["target"]][0]["content"]
