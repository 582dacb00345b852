"""Throughput of the CheXbert labeler (``reward.chexbert``) on CPU, with a random BERT-base checkpoint.

The published ``chexbert.pth`` cannot be downloaded here, so a random checkpoint of the same shape
(BERT-base: 12 layers, hidden 768, + 14 heads) is written in the published layout. Speed does not
depend on the weights. The tokenizer is a WordPiece vocabulary trained on the reports themselves
(bert-base-uncased cannot be downloaded either); its tokens per report are printed, so numbers can
be scaled to the real vocabulary.

Reports: IU X-ray FINDINGS + IMPRESSION from ``../shared/data/iu_xray`` (synthetic sentences when
absent). Baselines, measured in the same run on the same reports:

* one report per forward pass (how ``f1chexbert`` 0.0.2 labels);
* batches in input order padded to their longest report (RadEval's ``get_labels``).

Ours sorts distinct reports by length before batching, and in a GRPO-shaped call (each reference
repeated once per generation) runs every distinct text once.

    python bench/bench_chexbert.py          # prints the Markdown section
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))



def iu_reports(limit: int) -> list[str]:
    """FINDINGS + IMPRESSION texts of the IU X-ray archive (synthetic when the shared data is absent)."""
    from _iu import iu_report_texts

    out = iu_report_texts(limit)
    if not out:
        import random

        rng = random.Random(0)
        sents = ["The lungs are clear.", "No pleural effusion or pneumothorax.", "Heart size is normal.",
                 "Stable mild cardiomegaly.", "New right lower lobe opacity.", "Unchanged left basilar atelectasis."]
        out = [" ".join(rng.choice(sents) for _ in range(rng.randint(2, 8))) for _ in range(limit)]
    return out


def build_random_chexbert(folder: Path, texts: list[str], vocab_size: int = 8000, seed: int = 0,
                          **config_kw) -> Path:
    """Write a BERT-base tokenizer/config and a random ``chexbert.pth`` (published layout) into ``folder``.

    ``config_kw`` overrides BERT-base dimensions (the GPU benchmark's CPU smoke mode uses a toy size)."""
    import torch
    from tokenizers.implementations import BertWordPieceTokenizer
    from transformers import BertConfig, BertModel, BertTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    wp = BertWordPieceTokenizer(lowercase=True)
    wp.train_from_iterator(texts, vocab_size=vocab_size, min_frequency=1)
    wp.save_model(str(folder))
    BertTokenizer.from_pretrained(str(folder)).save_pretrained(str(folder))
    config = BertConfig(vocab_size=wp.get_vocab_size(), **config_kw)  # BERT-base dimensions unless overridden
    config.save_pretrained(str(folder))
    torch.manual_seed(seed)
    bert = BertModel(config)
    state = {f"module.bert.{k}": v for k, v in bert.state_dict().items()}
    for i in range(14):
        head = torch.nn.Linear(config.hidden_size, 2 if i == 13 else 4)
        state[f"module.linear_heads.{i}.weight"] = head.weight.detach()
        state[f"module.linear_heads.{i}.bias"] = head.bias.detach()
    path = folder / "chexbert.pth"
    torch.save({"epoch": 0, "model_state_dict": state}, path)
    return path


def naive_batches(labeler, texts: list[str], batch_size: int) -> list[tuple[int, ...]]:
    """Baseline: batches in input order, padded to the longest report, no de-duplication."""
    import torch

    out = []
    with torch.inference_mode():
        for i in range(0, len(texts), batch_size):
            enc = labeler.tokenizer(texts[i:i + batch_size], padding=True, truncation=True, max_length=512,
                                    return_tensors="pt").to(labeler.device)
            cls = labeler.model.bert(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]
                                     ).last_hidden_state[:, 0]
            pred = torch.stack([h(cls).argmax(-1) for h in labeler.model.linear_heads], 1)
            out.extend(tuple(r) for r in pred.cpu().tolist())
    return out


def timed(fn, *args, sync=None, repeat: int = 1) -> float:
    """Best wall time of ``repeat`` runs."""
    best = float("inf")
    for _ in range(repeat):
        if sync:
            sync()
        t0 = time.perf_counter()
        fn(*args)
        if sync:
            sync()
        best = min(best, time.perf_counter() - t0)
    return best


def grpo_call(texts: list[str], n_prompts: int, n_generations: int) -> tuple[list[str], list[str]]:
    """A GRPO reward call: each of ``n_prompts`` references repeated for ``n_generations`` completions."""
    refs = [texts[i] for i in range(n_prompts) for _ in range(n_generations)]
    hyps = texts[n_prompts:n_prompts + n_prompts * n_generations]
    return hyps, refs


def run(n_reports: int = 64, n_single: int = 16, batch_size: int = 32) -> str:
    import torch

    from reward.chexbert import ChexbertLabeler

    texts = iu_reports(4000)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = build_random_chexbert(Path(tmp), texts)
        lab = ChexbertLabeler(ckpt, tokenizer=tmp, device="cpu", batch_size=batch_size, cache_size=0)
        sample = texts[:n_reports]
        n_tok = [len(x) for x in lab.tokenizer(sample, truncation=True, max_length=512)["input_ids"]]
        words = sum(len(t.split()) for t in sample)
        lab.predict_classes(sample[:4])  # warm-up

        t_single = timed(lambda: [lab.predict_classes([t]) for t in sample[:n_single]])
        t_naive = timed(naive_batches, lab, sample, batch_size)
        t_ours = timed(lab.predict_classes, sample)
        same = naive_batches(lab, sample, batch_size) == lab.predict_classes(sample)

        hyps, refs = grpo_call(texts, 2, 8)  # 16 pairs, 2 distinct references
        t_grpo_naive = timed(naive_batches, lab, hyps + refs, batch_size)
        t_grpo_ours = timed(lab.predict_classes, hyps + refs)

    rate = lambda n, t: n / t  # noqa: E731
    r_single, r_naive, r_ours = rate(n_single, t_single), rate(n_reports, t_naive), rate(n_reports, t_ours)
    g_naive, g_ours = rate(len(hyps), t_grpo_naive), rate(len(hyps), t_grpo_ours)
    lines = [
        "## CheXbert labeler (CPU)",
        "",
        f"Random BERT-base CheXbert checkpoint in the published layout; {n_reports} IU X-ray reports "
        f"(FINDINGS + IMPRESSION, {sum(n_tok) / len(n_tok):.0f} tokens on average, max {max(n_tok)}, "
        f"{sum(n_tok) / words:.2f} tokens/word with a WordPiece vocabulary trained on the reports); "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32, batch size {batch_size}. "
        f"Labels of sorted and unsorted batching identical: {same}.",
        "",
        "| method | reports/s | vs one-at-a-time |",
        "|---|---:|---:|",
        f"| one report per forward (baseline, f1chexbert 0.0.2 style; {n_single} reports) | {r_single:.1f} | 1.00x |",
        f"| input-order padded batches (RadEval style) | {r_naive:.1f} | {r_naive / r_single:.2f}x |",
        f"| `ChexbertLabeler` (length-sorted batches) | {r_ours:.1f} | {r_ours / r_single:.2f}x |",
        "",
        "GRPO-shaped reward call (2 prompts x 8 generations: 16 completions + 16 references of which 2 distinct), "
        "pairs scored per second:",
        "",
        "| method | pairs/s | ratio |",
        "|---|---:|---:|",
        f"| input-order padded batches, every text (baseline) | {g_naive:.1f} | 1.00x |",
        f"| `ChexbertLabeler` (distinct texts once, sorted) | {g_ours:.1f} | {g_ours / g_naive:.2f}x |",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(run())
