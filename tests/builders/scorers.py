"""Scorers for the tests: test scorers registered for a block, a tiny random CheXbert in the published
layout and a tiny random GREEN judge (a Llama over the GREEN prompt's words)."""

from __future__ import annotations

import contextlib


@contextlib.contextmanager
def local_scorers(entries):
    """Register ``(name, description, factory)`` test scorers for a block; unregister and uncache them after."""
    from reward import base
    from reward.base import register_scorer

    names = {n for n, _, _ in entries}
    saved_reg = {n: base._REGISTRY[n] for n in names if n in base._REGISTRY}  # a built-in scorer of that name
    saved_cache = {k: v for k, v in base._CACHE.items() if k[0] in names}
    for key in saved_cache:
        del base._CACHE[key]
    for name, desc, factory in entries:
        register_scorer(name, desc)(factory)
    try:
        yield
    finally:
        for n in names:
            base._REGISTRY.pop(n, None)
        for key in [k for k in base._CACHE if k[0] in names]:
            del base._CACHE[key]
        base._REGISTRY.update(saved_reg)
        base._CACHE.update(saved_cache)


# ----------------------------------------------------------------------------------------------------
# CheXbert: a tiny random BERT (2 layers of width 32) and random heads, saved as chexbert.pth is
# ----------------------------------------------------------------------------------------------------
WORDS = ("no pleural effusion normal heart size mild moderate severe cardiomegaly edema pulmonary left right "
         "lung lobe opacity consolidation pneumonia atelectasis pneumothorax fracture tube line is are the "
         "of and with small large stable new . , : ; ##s ##ed").split()
HIDDEN = 32


def save_tiny_bert(folder):
    from transformers import BertConfig, BertTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizer.from_pretrained(str(folder)).save_pretrained(str(folder))
    config = BertConfig(vocab_size=len(vocab), hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=37, max_position_embeddings=512, initializer_range=1.0)
    config.save_pretrained(str(folder))
    return config


def published_layout(config, seed=0, heads=None):
    """State dict keyed like chexbert.pth (DataParallel prefix), random BERT, given or random heads."""
    import torch
    from transformers import BertModel

    torch.manual_seed(seed)
    bert = BertModel(config)  # with pooler, as transformers 2.x saved it
    state = {f"module.bert.{k}": v.clone() for k, v in bert.state_dict().items()}
    for i in range(14):
        n = 2 if i == 13 else 4
        w, b = heads[i] if heads else (torch.randn(n, HIDDEN) * 3, torch.zeros(n))
        state[f"module.linear_heads.{i}.weight"] = w
        state[f"module.linear_heads.{i}.bias"] = b
    return state


def save_tiny_chexbert(root):
    """A tiny random CheXbert in the published layout: ``root/bert`` (tokenizer) and ``root/chexbert.pth``."""
    import torch

    config = save_tiny_bert(root / "bert")
    ckpt = root / "chexbert.pth"
    torch.save({"epoch": 3, "model_state_dict": published_layout(config)}, ckpt)
    return root, config, ckpt


# ----------------------------------------------------------------------------------------------------
# GREEN: a local HF judge, a tiny random Llama that answers garbage
# ----------------------------------------------------------------------------------------------------
def save_tiny_green_judge(folder):
    """A tiny random Llama with a word-level tokenizer over the GREEN prompt's words, saved to ``folder``."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from reward.green import make_green_prompt

    words = sorted(set(make_green_prompt("no effusion", "small effusion").split()))
    vocab = {w: i for i, w in enumerate(["<unk>", "<s>", "</s>", "<|user|>", "<|assistant|>", *words])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    fast.chat_template = "{% for m in messages %}<|user|> {{ m['content'] }} {% endfor %}<|assistant|>"
    fast.save_pretrained(folder)
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=2048,
                         bos_token_id=1, eos_token_id=2, pad_token_id=2)
    import torch

    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder
