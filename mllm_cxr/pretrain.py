"""A "pretrained base" for the demo: the local stand-in for downloading Qwen2.5-VL.

A real vision-language model reaches LoRA fine-tuning with a vision encoder that already sees (CLIP /
SigLIP-style pretraining on hundreds of millions of images) and a projector that already hands what it
sees to the language model (the alignment stage of LLaVA-style training). A random model has neither,
and a few CPU minutes of report SFT cannot teach a random vision transformer to see a thin pneumothorax
line: the demo's SFT then collapses to the majority report (two attempts measured phantom finding F1 0.00-0.02 for a
4M-parameter random model after about 4 minutes of full fine-tuning). So the demo starts, as real work does,
from a base pretrained on *other* data:

1. **Vision pretraining.** The vision tower and the patch merger are trained in full on multi-label
   finding classification (binary cross-entropy on the mean of the merged visual tokens; the linear
   head is thrown away afterwards), as supervised ViT pretraining does.
2. **Alignment.** With the vision tower frozen, the merger and the language model are trained in full
   to write the corpus's IMPRESSION after the image (bare, no chat template): a short summary that names
   effusion, consolidation, pneumothorax and cardiomegaly but leaves out the negatives and, when
   anything else is abnormal, the devices. The base can say what it sees in radiology words; it has
   never seen the chat template, a FINDINGS section, its negations or its device descriptions. Writing
   the FINDINGS section the demo scores is what SFT teaches. (Finding-name captions alone, "Findings:
   cardiomegaly.", left a language model that SFT could not teach to write reports in 2 epochs:
   measured phantom F1 0.04.)

Both stages read a phantom data set drawn with its own seed (:data:`PRETRAIN_SEED`), disjoint from the
demo's studies: different patients, different images. The tokenizer is trained on that corpus's report
text. The base is built once and cached like a downloaded checkpoint (``make demo-base``); its build time
and held-out vision F1 are recorded in ``mllm_cxr_base.json`` beside the weights, apart from the demo's.

    python -m mllm_cxr.pretrain OUT_DIR            (about 5-9 minutes on 2 CPU cores)
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cxr_io import honour_umask
from cxr_io.cli_args import opt, parse

#: The phantom seed of the pretraining corpus; the demo draws its studies with another (1).
PRETRAIN_SEED = 1000
#: The model size of the demo base (see :data:`mllm_cxr.tiny.SIZES`).
BASE_SIZE = "small"
#: Pixel budget of the base's processor: 112x112 -> 16 visual tokens per image (the demo's budget).
BASE_MIN_PIXELS, BASE_MAX_PIXELS = 56 * 56, 112 * 112


def _batches(n: int, size: int, generator) -> list:
    import torch

    perm = torch.randperm(n, generator=generator)
    return [perm[i:i + size] for i in range(0, n - size + 1, size)]


def _one_cycle(opt, lr: float, steps: int):
    import torch

    return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(1, steps), pct_start=0.1)


def _f1(pred, truth) -> list[float]:
    tp = (pred & truth).sum(0).float()
    denom = (pred.sum(0) + truth.sum(0)).float()
    return [round(float(2 * t / d), 4) if d > 0 else float("nan") for t, d in zip(tp, denom)]


def pretrain_vision(model, processor, images: list, labels: list[list[bool]], *, heldout: int = 400,
                    epochs: int = 6, lr: float = 1e-3, batch_size: int = 32, seed: int = 0,
                    log=print) -> dict[str, Any]:
    """Train ``model``'s vision tower and merger in full on multi-label classification of ``images``.

    The last ``heldout`` images are kept out of training and scored after each epoch (per-label F1 at
    logit 0). Returns the per-epoch losses and held-out F1s.
    """
    import torch

    visual = model.model.visual
    n_labels = len(labels[0])
    head = torch.nn.Linear(model.config.text_config.hidden_size, n_labels)
    batch = processor.image_processor(images, return_tensors="pt")
    pv, grid = batch["pixel_values"], batch["image_grid_thw"]
    per = int(grid[0].prod())
    if not bool((grid.prod(-1) == per).all()):
        raise ValueError("vision pretraining expects images of one size (the phantom's)")
    pv = pv.view(len(images), per, -1)
    y = torch.tensor(labels, dtype=torch.float32)
    n_train = len(images) - heldout
    gen = torch.Generator().manual_seed(seed)

    def logits(idx):
        out = visual(pv[idx].reshape(-1, pv.shape[-1]), grid_thw=grid[idx]).pooler_output
        return head(out.view(len(idx), -1, out.shape[-1]).mean(1))

    params = list(visual.parameters()) + list(head.parameters())
    for p in visual.parameters():
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    sched = _one_cycle(opt, lr, epochs * (n_train // batch_size))
    history = []
    visual.train()
    for ep in range(epochs):
        losses = []
        for idx in _batches(n_train, batch_size, gen):
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits(idx), y[idx])
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            losses.append(loss.item())
        with torch.no_grad():
            visual.eval()
            test = torch.arange(n_train, len(images))
            pred = torch.cat([logits(test[i:i + 100]) for i in range(0, len(test), 100)]) > 0
            visual.train()
        f1 = _f1(pred, y[n_train:].bool())
        history.append({"epoch": ep + 1, "loss": round(sum(losses) / len(losses), 4), "heldout_f1": f1})
        log(f"vision pretraining epoch {ep + 1}/{epochs}: loss {history[-1]['loss']:.3f}, held-out F1 {f1}")
    visual.eval()
    return {"epochs": history, "train_images": n_train, "heldout_images": heldout}


def pretrain_alignment(model, processor, images: list, captions: list[str], *, epochs: int = 2, lr: float = 1e-3,
                       batch_size: int = 32, seed: int = 0, log=print) -> dict[str, Any]:
    """Image-text alignment (LLaVA's first stage): the merger and the language model are trained in full to
    write ``captions`` (the demo base: IMPRESSION texts) after the image's visual tokens; the vision tower
    stays frozen. The loss is on the caption tokens only."""
    import torch

    tok = processor.tokenizer
    prefix = "<|vision_start|><|image_pad|><|vision_end|>"
    batch = processor(text=[prefix + c + tok.eos_token for c in captions], images=images, return_tensors="pt",
                      padding=True)
    ids, mask, pv, grid = batch["input_ids"], batch["attention_mask"], batch["pixel_values"], batch["image_grid_thw"]
    per = int(grid[0].prod())
    pv = pv.view(len(images), per, -1)
    end_id = tok.convert_tokens_to_ids("<|vision_end|>")
    labels = ids.clone()
    after = (ids == end_id).long().cumsum(1) > 0
    labels[~after | (ids == end_id) | (mask == 0)] = -100
    visual = model.model.visual
    for p in model.parameters():
        p.requires_grad_(False)
    params = list(visual.merger.parameters()) + list(model.model.language_model.parameters()) + \
        list(model.lm_head.parameters())
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    sched = _one_cycle(opt, lr, epochs * (len(images) // batch_size))
    gen = torch.Generator().manual_seed(seed)
    history = []
    model.train()
    for ep in range(epochs):
        losses = []
        for idx in _batches(len(images), batch_size, gen):
            width = int(mask[idx].sum(1).max())
            out = model(input_ids=ids[idx, :width], attention_mask=mask[idx, :width], labels=labels[idx, :width],
                        pixel_values=pv[idx].reshape(-1, pv.shape[-1]), image_grid_thw=grid[idx])
            opt.zero_grad()
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            losses.append(out.loss.item())
        history.append({"epoch": ep + 1, "loss": round(sum(losses) / len(losses), 4)})
        log(f"alignment epoch {ep + 1}/{epochs}: caption loss {history[-1]['loss']:.3f}")
    model.eval()
    for p in model.parameters():
        p.requires_grad_(True)
    return {"epochs": history, "captions": len(captions)}


def build_demo_base(out_dir: str | Path, *, n: int = 3000, seed: int = PRETRAIN_SEED, size: str = BASE_SIZE,
                    vision_epochs: int = 6, align_epochs: int = 2, log=print) -> dict[str, Any]:
    """Build the demo's pretrained base in ``out_dir`` (written whole into a temporary folder, then
    renamed). Returns the record written to ``out_dir/mllm_cxr_base.json``."""
    import torch
    from PIL import Image

    from data_prep.phantom import PHANTOM_FINDINGS, make_phantom
    from data_prep.schema import read_records
    from mllm_cxr.tiny import SIZES, build_tiny_model

    if size not in SIZES:
        raise ValueError(f"size {size!r} not in {sorted(SIZES)}")
    out = Path(out_dir)
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory(prefix="mllm-cxr-base-") as tmp:
        corpus = Path(tmp) / "phantom"
        make_phantom(corpus, n=n, seed=seed, lateral=False, split_fractions=(1.0, 0.0, 0.0))
        records = read_records(corpus / "studies.jsonl")
        texts = [r.findings for r in records] + [r.impression for r in records]  # the tokenizer's corpus
        staging = out.parent / f".{out.name}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        build_tiny_model(staging, seed=seed, min_pixels=BASE_MIN_PIXELS, max_pixels=BASE_MAX_PIXELS,
                         extra_text=texts, **SIZES[size])
        from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

        model = Qwen2_5_VLForConditionalGeneration.from_pretrained(staging, dtype=torch.float32)
        processor = AutoProcessor.from_pretrained(staging)
        images = []
        for r in records:
            with Image.open(corpus / r.images[0].path) as im:
                images.append(im.convert("RGB"))
        labels = [[f in r.meta["findings"] for f in PHANTOM_FINDINGS] for r in records]
        t_data = time.perf_counter() - t0
        vision = pretrain_vision(model, processor, images, labels, epochs=vision_epochs, seed=seed, log=log)
        t_vision = time.perf_counter() - t0 - t_data
        captions = [r.impression for r in records]
        align = pretrain_alignment(model, processor, images, captions, epochs=align_epochs, seed=seed, log=log)
        t_align = time.perf_counter() - t0 - t_data - t_vision
        model.save_pretrained(staging, safe_serialization=True)
    record = {
        "what": "mllm-cxr demo base: vision tower + merger pretrained on finding classification, then merger + "
                "language model aligned on IMPRESSION texts; phantom corpus disjoint from the demo's studies",
        "size": size, "params": model.num_parameters(), "pretrain_seed": seed, "pretrain_studies": n,
        "findings": list(PHANTOM_FINDINGS), "vision": vision, "alignment": align,
        "seconds": {"data": round(t_data, 1), "vision": round(t_vision, 1), "alignment": round(t_align, 1),
                    "total": round(time.perf_counter() - t0, 1)},
        "torch": torch.__version__,
    }
    (staging / "mllm_cxr_base.json").write_text(json.dumps(record, indent=2))
    honour_umask(staging)  # safetensors writes the weights 0600 whatever the umask
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)
    return record


@dataclass(kw_only=True)
class PretrainArgs:
    """``python -m mllm_cxr.pretrain OUT_DIR``."""

    out_dir: str = opt("folder to write the demo base to", positional=True)
    n: int = opt("phantom studies in the pretraining corpus", default=3000)
    seed: int = opt("random seed of the corpus and the training", default=PRETRAIN_SEED)
    vision_epochs: int = opt("epochs of vision pretraining", default=6)
    align_epochs: int = opt("epochs of caption alignment", default=2)


def main(argv=None) -> int:
    args = parse(PretrainArgs, argv, description="Build the demo's pretrained base (vision pretraining + caption "
                                                 "alignment on a phantom corpus disjoint from the demo's studies).")
    rec = build_demo_base(args.out_dir, n=args.n, seed=args.seed, vision_epochs=args.vision_epochs,
                          align_epochs=args.align_epochs)
    print(f"demo base written to {args.out_dir}: {rec['params']:,} parameters, held-out vision F1 "
          f"{rec['vision']['epochs'][-1]['heldout_f1']}, built in {rec['seconds']['total']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
