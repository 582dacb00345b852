"""DPO: the length-controlled (R-DPO) loss, a multi-image run, and prior-exam suppression on phantom data."""

from __future__ import annotations

import json
import math
import statistics

import pytest
import torch
import torch.nn.functional as F

from tests.builders.repo import REPO

# The session fixtures align_phantom and sft_adapter; helpers are imported inside the tests, after pytest has
# loaded (and assert-rewritten) the plugin module.
pytest_plugins = ["tests.builders.alignment"]

DPO_CFG = REPO / "recipes" / "configs" / "tiny" / "dpo.yaml"


def test_length_controlled_loss_is_dpo_plus_length_margin():
    from mllm_cxr.train.dpo import length_controlled_sigmoid_loss

    lw, ll = torch.tensor([0.3, -0.2, 1.0]), torch.tensor([0.1, 0.4, -1.0])
    nw, nl = torch.tensor([40.0, 20.0, 30.0]), torch.tensor([20.0, 40.0, 30.0])
    plain = -F.logsigmoid(0.1 * (lw - ll))
    torch.testing.assert_close(length_controlled_sigmoid_loss(lw, ll, nw, nl, 0.1, 0.0), plain)
    lc = length_controlled_sigmoid_loss(lw, ll, nw, nl, 0.1, 0.01)
    torch.testing.assert_close(lc, -F.logsigmoid(0.1 * (lw - ll) + 0.01 * (nw - nl)))
    assert lc[0] < plain[0] and lc[1] > plain[1] and lc[2] == plain[2]
    # a longer chosen answer explains part of the preference: less gradient pushes its log-ratio up
    x = lw.clone().requires_grad_(True)
    length_controlled_sigmoid_loss(x, ll, nw, nl, 0.1, 0.01).sum().backward()
    y = lw.clone().requires_grad_(True)
    length_controlled_sigmoid_loss(y, ll, nw, nl, 0.1, 0.0).sum().backward()
    assert abs(x.grad[0]) < abs(y.grad[0]) and abs(x.grad[1]) > abs(y.grad[1])


def test_length_alpha_config_is_checked():
    from mllm_cxr.train.dpo import ClinicalDPOConfig

    kw = dict(output_dir="/tmp/unused", use_cpu=True, bf16=False, report_to="none")
    assert ClinicalDPOConfig(length_alpha=0.01, loss_type=["sigmoid", "sft"], **kw).length_alpha == 0.01
    with pytest.raises(ValueError, match="length_alpha"):
        ClinicalDPOConfig(length_alpha=0.01, loss_type=["ipo"], **kw)
    with pytest.raises(ValueError, match="length_alpha"):
        ClinicalDPOConfig(length_alpha=-1.0, **kw)


def test_length_controlled_dpo_trains_on_two_image_pairs(one_thread, tmp_path, phantom_dir, tiny_model_dir):
    """R-DPO steps on prompts with frontal + lateral (+ prior) images; the length metrics are logged."""
    from data_prep.schema import read_records
    from mllm_cxr.data import dpo_dataset
    from mllm_cxr.modeling import ModelArguments, load_model, load_processor
    from mllm_cxr.prompts import PromptConfig
    from mllm_cxr.train.dpo import ClinicalDPOConfig, ClinicalDPOTrainer
    from mllm_cxr.train.pairs import prior_suppression_pairs

    records = read_records(phantom_dir / "studies.jsonl")
    cfg = PromptConfig(max_images=3, include_prior_images=True, context=["indication"])
    pairs, _ = prior_suppression_pairs([r for r in records if r.split == "train"], cfg)
    # two more pairs on follow-up studies: their prompts also carry the prior study's frontal image
    follow = [r for r in records if r.prior is not None and r.prior.images][:2]
    pairs = pairs[:2] + [{"study_id": r.study_id, "chosen": r.findings, "rejected": r.findings + " No interval "
                          "change. Large right pleural effusion."} for r in follow]
    ds = dpo_dataset(pairs, {r.study_id: r for r in records}, phantom_dir, cfg)
    assert sorted(len(row["images"]) for row in ds) == [2, 2, 3, 3]
    margs = ModelArguments(model_name_or_path=str(tiny_model_dir), dtype="float32", max_pixels=12544, min_pixels=3136)
    model, peft_config = load_model(margs)
    args = ClinicalDPOConfig(output_dir=str(tmp_path), length_alpha=0.01, per_device_train_batch_size=2, max_steps=2,
                             learning_rate=1e-3, logging_steps=1, report_to="none", use_cpu=True, bf16=False,
                             save_strategy="no", loss_type=["sigmoid", "sft"], loss_weights=[1.0, 0.5])
    trainer = ClinicalDPOTrainer(model=model, args=args, train_dataset=ds, processing_class=load_processor(margs),
                                 peft_config=peft_config)
    trainer.train()
    logs = [h for h in trainer.state.log_history if "length/penalty" in h]
    assert len(logs) == 2
    for h in logs:
        assert math.isfinite(h["loss"]) and h["length/chosen"] < h["length/rejected"]  # chosen = shorter here
        assert h["length/penalty"] == pytest.approx(0.01 * (h["length/chosen"] - h["length/rejected"]), rel=1e-4)


# R-DPO runs TRL's own DPO loss: with length_alpha ~ 0 its loss and rewards/* equal TRL's on the same batch.
def _trl_and_rdpo_on_one_batch(tmp_path, phantom_dir, tiny_model_dir, alpha: float, **extra):
    from trl import DPOTrainer

    from data_prep.schema import read_records
    from mllm_cxr.data import dpo_dataset
    from mllm_cxr.modeling import ModelArguments, load_model, load_processor
    from mllm_cxr.prompts import PromptConfig
    from mllm_cxr.train.dpo import ClinicalDPOConfig, ClinicalDPOTrainer

    records = [r for r in read_records(phantom_dir / "studies.jsonl") if r.split == "train"][:2]
    pairs = [{"study_id": r.study_id, "chosen": r.findings,
              "rejected": r.findings + " No interval change. Large right pleural effusion."} for r in records]
    ds = dpo_dataset(pairs, {r.study_id: r for r in records}, phantom_dir, PromptConfig())
    margs = ModelArguments(model_name_or_path=str(tiny_model_dir), dtype="float32", max_pixels=12544,
                           min_pixels=3136)
    processor = load_processor(margs)
    kw = dict(per_device_train_batch_size=1, report_to="none", use_cpu=True, bf16=False, save_strategy="no",
              **extra)
    model, peft_config = load_model(margs)
    trl_trainer = DPOTrainer(model=model, args=ClinicalDPOConfig(output_dir=str(tmp_path / "a"), **kw),
                             train_dataset=ds, processing_class=processor, peft_config=peft_config)
    model2, _ = load_model(margs)
    ours = ClinicalDPOTrainer(model=model2, args=ClinicalDPOConfig(output_dir=str(tmp_path / "b"), length_alpha=alpha,
                                                                    **kw),
                              train_dataset=ds, processing_class=processor, peft_config=peft_config)
    # the same non-zero adapter in both policies (a fresh LoRA B is 0: policy = reference, all rewards 0)
    g = torch.Generator().manual_seed(0)
    params = dict(ours.model.named_parameters())
    for name, p in trl_trainer.model.named_parameters():
        if "lora_B" in name and p.requires_grad:
            noise = 0.05 * torch.randn(p.shape, generator=g)
            with torch.no_grad():
                p.copy_(noise)
                params[name].copy_(noise)
    batch = trl_trainer.data_collator([trl_trainer.train_dataset[0]])
    out = []
    for t in (trl_trainer, ours):
        t.model.eval()
        with torch.no_grad():
            loss = t.compute_loss(t.model, t._prepare_inputs(dict(batch)))
        out.append((float(loss), {k: v[-1] for k, v in t._metrics["eval"].items()}))
    return out, batch


@pytest.mark.parametrize("extra", [{}, {"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, 0.5]},
                                   {"use_weighting": True}])
def test_rdpo_with_tiny_alpha_equals_trl(one_thread, tmp_path, phantom_dir, tiny_model_dir, extra):
    (trl_loss, trl_m), (our_loss, our_m) = _trl_and_rdpo_on_one_batch(tmp_path, phantom_dir, tiny_model_dir, 1e-12, **extra)[0]
    assert our_loss == pytest.approx(trl_loss, rel=1e-5, abs=1e-7)
    keys = [k for k in trl_m if k.startswith("rewards/")]
    assert sorted(keys) == ["rewards/accuracies", "rewards/chosen", "rewards/margins", "rewards/rejected"]
    assert abs(trl_m["rewards/margins"]) > 1e-4          # a real margin, not 0 == 0
    for k in trl_m:   # every TRL metric (entropy, logits, token accuracy...) is there, rewards/* equal
        assert k in our_m, k
    for k in keys:
        assert our_m[k] == pytest.approx(trl_m[k], rel=1e-5, abs=1e-7), k


def test_rdpo_margin_adds_alpha_times_length_difference(one_thread, tmp_path, phantom_dir, tiny_model_dir):
    alpha = 0.02
    ((trl_loss, trl_m), (our_loss, our_m)), batch = _trl_and_rdpo_on_one_batch(tmp_path, phantom_dir, tiny_model_dir, alpha)
    lengths = batch["completion_mask"][..., 1:].sum(dim=1).float()
    d_len = float(lengths[0] - lengths[1])
    assert d_len < 0 and our_m["length/penalty"] == pytest.approx(alpha * d_len)
    # one pair: TRL's loss is -log sigmoid(margin); ours -log sigmoid(margin + alpha * (|y_w| - |y_l|))
    assert trl_loss == pytest.approx(float(-F.logsigmoid(torch.tensor(trl_m["rewards/margins"]))), rel=1e-5)
    assert our_loss == pytest.approx(float(-F.logsigmoid(torch.tensor(trl_m["rewards/margins"] + alpha * d_len))),
                                     rel=1e-5)
    assert our_m["rewards/margins"] == pytest.approx(trl_m["rewards/margins"] + alpha * d_len, rel=1e-5)
    assert math.isfinite(our_m["entropy"]) and our_m["logps/chosen"] == pytest.approx(trl_m["logps/chosen"], rel=1e-5)


def _prior_rate(samples: list[list[str]]) -> float:
    from reward.prior import find_prior_references

    flat = [p for ps in samples for p in ps]
    return sum(bool(find_prior_references(p)) for p in flat) / len(flat)


@pytest.mark.slow
def test_dpo_on_prior_pairs_suppresses_prior_references(tmp_path, align_phantom, tiny_model_dir, sft_adapter):
    """Banerjee et al. on phantom data: after DPO the held-out no-prior studies get fewer prior references.

    Measured on 4 sampled reports (temperature 1) for each validate/test study without a prior,
    with the same seeds before and after. Required: the rate falls by at least 0.10 absolute and to at
    most half of what it was, while the reports stay reports (phantom finding F1 within 0.15 of the
    SFT model's, mean length at least half).
    """
    from data_prep.phantom import finding_scores
    from data_prep.schema import read_records
    from mllm_cxr.cli import main
    from tests.builders.alignment import adapter_settings, derived_config, run_recipe, sample_reports

    studies = read_records(align_phantom / "studies.jsonl")
    held_out = [s for s in studies if s.split != "train" and not s.has_prior]
    assert len(held_out) >= 40
    settings = adapter_settings(sft_adapter)  # DPO must use the SFT prompt (2 images, findings + impression)
    assert settings["max_images"] == 2 and settings["sections"] == ["findings", "impression"]
    pairs_path = tmp_path / "prior_pairs.jsonl"
    assert main(["pairs", "prior", "--studies", str(align_phantom / "studies.jsonl"), "--out", str(pairs_path),
                 "--sections", ",".join(settings["sections"])]) == 0
    n_pairs = sum(1 for _ in open(pairs_path))
    assert n_pairs >= 20

    before = sample_reports(tiny_model_dir, sft_adapter, align_phantom, held_out, k=4, max_new_tokens=96)
    out = tmp_path / "dpo"
    # lr 5e-4: twice the demo's rate, for a clear effect within the 2 epochs on these 240 studies
    cfg = derived_config(DPO_CFG, tmp_path / "dpo.yaml", learning_rate=0.0005, **settings)
    proc = run_recipe("dpo.py", "--config", str(cfg), "--studies", str(align_phantom / "studies.jsonl"),
                      "--pairs", str(pairs_path), "--model_name_or_path", str(tiny_model_dir),
                      "--adapter_path", str(sft_adapter), "--output_dir", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((out / "mllm_cxr_config.json").read_text())["PromptConfig"]["max_images"] == 2
    after = sample_reports(tiny_model_dir, out, align_phantom, held_out, k=4, max_new_tokens=96)

    r0, r1 = _prior_rate(before), _prior_rate(after)
    truth = [s for s in held_out for _ in range(4)]
    f0 = finding_scores([p for ps in before for p in ps], truth)["micro_f1"]
    f1 = finding_scores([p for ps in after for p in ps], truth)["micro_f1"]
    len0 = statistics.mean(len(p) for ps in before for p in ps)
    len1 = statistics.mean(len(p) for ps in after for p in ps)
    print(f"prior-reference rate {r0:.3f} -> {r1:.3f}; finding F1 {f0:.3f} -> {f1:.3f}; "
          f"mean length {len0:.0f} -> {len1:.0f} chars ({n_pairs} pairs, {len(held_out)} held-out studies x 4)")
    assert r0 >= 0.10, "the SFT model should reproduce the data's hallucinated prior references"
    assert r1 <= r0 - 0.10 and r1 <= 0.5 * r0
    assert f1 >= f0 - 0.15 and len1 >= 0.5 * len0
