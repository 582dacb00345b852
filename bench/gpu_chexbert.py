"""Throughput of the CheXbert labeler on a GPU.

    python bench/gpu_chexbert.py            # a CUDA GPU (bench/gpu_run.sh)
    python bench/gpu_chexbert.py --smoke    # the same code path on CPU with a toy BERT, in seconds

Same setup as ``bench_chexbert.py`` (random BERT-base checkpoint in the published layout, IU X-ray
reports, WordPiece vocabulary trained on them), more reports. Baseline, in the same run: batches in
input order padded to their longest report, float32 (RadEval's ``get_labels``). Measured: our
length-sorted batching in float32, bfloat16 and float16, at two batch sizes, and the share of
reports whose 14 labels in half precision equal the float32 labels (random weights: a rough check
of numerical stability, not of clinical accuracy).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import gpu_common as G
from bench_chexbert import build_random_chexbert, iu_reports, naive_batches, timed

N_REPORTS, BATCHES = 2048, (64, 256)
SMOKE = dict(n=32, batches=(8, 16), bert=dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                                                intermediate_size=128))


def run(smoke: bool = False, results: dict | None = None) -> str:
    import torch

    from reward.chexbert import ChexbertLabeler

    m = G.mode(smoke)
    G.require_device(m, "gpu_chexbert")
    results = {} if results is None else results
    n_reports, batch_sizes = (SMOKE["n"], SMOKE["batches"]) if smoke else (N_REPORTS, BATCHES)
    sync = torch.cuda.synchronize if m.device == "cuda" else None
    texts = iu_reports(4000)
    sample = (texts * (n_reports // max(len(texts), 1) + 1))[:n_reports]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = build_random_chexbert(Path(tmp), texts, **(SMOKE["bert"] if smoke else {}))
        ref = ChexbertLabeler(ckpt, tokenizer=tmp, device=m.device, batch_size=batch_sizes[0], cache_size=0)
        ref.predict_classes(sample[:64])  # warm-up (CUDA context, kernels)
        base_t = timed(naive_batches, ref, sample, batch_sizes[0], sync=sync, repeat=2)
        rows.append(dict(method=f"input-order padded batches, float32, batch {batch_sizes[0]} (baseline)",
                         seconds=base_t, agree=None))
        f32 = ref.predict_classes(sample)
        for dtype in (None, "bfloat16", "float16"):
            for bs in batch_sizes:
                lab = ChexbertLabeler(ckpt, tokenizer=tmp, device=m.device, batch_size=bs, dtype=dtype, cache_size=0)
                lab.predict_classes(sample[:64])
                t = timed(lab.predict_classes, sample, sync=sync, repeat=2)
                agree = sum(a == b for a, b in zip(lab.predict_classes(sample), f32)) / len(sample)
                rows.append(dict(method=f"`ChexbertLabeler`, {dtype or 'float32'}, batch {bs}", seconds=t,
                                 agree=agree))
                del lab
                G.free()
    name = G.device_name(m)
    for r in rows:
        r["reports_s"] = n_reports / r["seconds"]
    results.update(rows=rows, device=name, reports=n_reports, real_iu_reports=len(texts) > 100)
    lines = [f"## CheXbert labeler ({name})", "",
             f"Random {'toy' if smoke else 'BERT-base'} CheXbert checkpoint, {n_reports} "
             f"{'IU X-ray reports (FINDINGS + IMPRESSION)' if len(texts) > 100 else 'synthetic reports'}, "
             f"torch {torch.__version__}; best of 2 runs.", "",
             "| method | reports/s | vs baseline | labels equal to float32 |", "|---|---:|---:|---:|"]
    for r in rows:
        agree = "-" if r["agree"] is None else f"{100 * r['agree']:.1f} %"
        lines.append(f"| {r['method']} | {r['reports_s']:.0f} | {base_t / r['seconds']:.2f}x | {agree} |")
    return "\n".join(lines)


if __name__ == "__main__":
    G.cli(run)
