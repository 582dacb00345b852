"""Throughput of the CheXbert labeler on a GPU (run on a lent GPU: ``python bench/run_all.py --gpu``).

Same setup as ``bench_chexbert.py`` (random BERT-base checkpoint in the published layout, IU X-ray
reports, WordPiece vocabulary trained on them), more reports. Baseline, in the same run: batches in
input order padded to their longest report, float32 (RadEval's ``get_labels``). Measured: our
length-sorted batching in float32, bfloat16 and float16, at two batch sizes, and the share of
reports whose 14 labels in half precision equal the float32 labels (random weights: a rough check
of numerical stability, not of clinical accuracy).

    python bench/gpu_chexbert.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
for p in (HERE, HERE.parent):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from bench_chexbert import build_random_chexbert, iu_reports, naive_batches, timed  # noqa: E402


def run(n_reports: int = 2048, device: str = "cuda", batch_sizes: tuple[int, ...] = (64, 256)) -> str:
    import torch

    from reward.chexbert import ChexbertLabeler

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("gpu_chexbert needs a CUDA GPU (run it on a GPU machine)")
    sync = torch.cuda.synchronize if device.startswith("cuda") else None
    texts = iu_reports(4000)
    sample = (texts * (n_reports // max(len(texts), 1) + 1))[:n_reports]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = build_random_chexbert(Path(tmp), texts)
        ref = ChexbertLabeler(ckpt, tokenizer=tmp, device=device, batch_size=batch_sizes[0], cache_size=0)
        ref.predict_classes(sample[:64])  # warm-up (CUDA context, kernels)
        base_t = timed(naive_batches, ref, sample, batch_sizes[0], sync=sync, repeat=2)
        rows.append((f"input-order padded batches, float32, batch {batch_sizes[0]} (baseline)", base_t, None))
        f32 = ref.predict_classes(sample)
        for dtype in (None, "bfloat16", "float16"):
            for bs in batch_sizes:
                lab = ChexbertLabeler(ckpt, tokenizer=tmp, device=device, batch_size=bs, dtype=dtype, cache_size=0)
                lab.predict_classes(sample[:64])
                t = timed(lab.predict_classes, sample, sync=sync, repeat=2)
                agree = sum(a == b for a, b in zip(lab.predict_classes(sample), f32)) / len(sample)
                rows.append((f"`ChexbertLabeler`, {dtype or 'float32'}, batch {bs}", t, agree))
                del lab
                if sync:
                    torch.cuda.empty_cache()
    name = torch.cuda.get_device_name() if device.startswith("cuda") else "CPU"
    lines = [
        f"## CheXbert labeler (GPU: {name})",
        "",
        f"Random BERT-base CheXbert checkpoint, {n_reports} IU X-ray reports (FINDINGS + IMPRESSION), "
        f"torch {torch.__version__}; best of 2 runs.",
        "",
        "| method | reports/s | vs baseline | labels equal to float32 |",
        "|---|---:|---:|---:|",
    ]
    for label, t, agree in rows:
        lines.append(f"| {label} | {n_reports / t:.0f} | {base_t / t:.2f}x | "
                     f"{'-' if agree is None else f'{100 * agree:.1f} %'} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(run())
