"""Build the tiny random Qwen2.5-VL used by the tests and the demo.

Everything is made here, offline: a Qwen2.5-VL config scaled down to a few hundred thousand
parameters, a byte-level BPE tokenizer trained on radiology text with the Qwen special tokens, the
official Qwen2.5-VL chat template (taken from the installed TRL package, so TRL recognises it and
swaps in its training template for assistant-only loss), and the stock processor classes. It is
saved with ``save_pretrained`` and loads back with ``AutoProcessor`` /
``AutoModelForImageTextToText.from_pretrained(path)``, exactly as a real checkpoint does.

    python -m mllm_cxr.tiny OUT_DIR
"""

from __future__ import annotations

import importlib.resources
import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from cxr_io.cli_args import Verb, build_parser, from_namespace, opt, part

#: Qwen2.5-VL's special tokens, in its order (ids follow the trained vocabulary).
SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
]

#: Text the tokenizer is trained on: radiology report language, chat roles and the prompt wording.
_CORPUS = """
system user assistant You are a radiologist. Write the findings and impression of this chest radiograph.
FINDINGS: IMPRESSION: INDICATION: COMPARISON: TECHNIQUE: PRIOR REPORT: Prior images follow.
PA and lateral views of the chest. AP portable view of the chest. Frontal and lateral views.
The lungs are clear. No focal consolidation, pleural effusion or pneumothorax. Heart size is normal.
The cardiomediastinal silhouette is within normal limits. No acute cardiopulmonary process.
The heart is enlarged. Cardiomegaly. Moderate cardiomegaly. Mild enlargement of the cardiac silhouette.
Small left pleural effusion. Large right pleural effusion. Bilateral pleural effusions. Blunting of the
costophrenic angle. Consolidation in the right lower lobe. Focal airspace opacity in the left upper lobe,
concerning for pneumonia. Right apical pneumothorax. Small left pneumothorax with visible pleural line.
Endotracheal tube terminates above the carina. Right internal jugular central venous catheter with tip in
the superior vena cava. Nasogastric tube courses below the diaphragm. Pacemaker leads in the right atrium
and ventricle. Pulmonary edema. Mild interstitial edema. Vascular congestion. Atelectasis at the lung bases.
Bibasilar atelectasis. Lung nodule. Mass. Fracture of the left sixth rib. Degenerative changes of the spine.
Compared to the prior study, unchanged. Stable. Improved. Worsened. New. Resolved. No interval change.
Again seen. Previously noted. Since the prior radiograph of. There has been interval removal of the tube.
History of cough, fever, shortness of breath, chest pain, trauma, follow-up. Evaluate for pneumonia.
No evidence of. Without. Negative for. May represent. Possible. Cannot be excluded. Likely. Suggestive of.
mild moderate severe small large left right bilateral upper middle lower lobe base apex zone hilar perihilar
0 1 2 3 4 5 6 7 8 9 10 . , : ; ( ) - / XXXX
"""


def chat_template() -> str:
    """The official Qwen2.5-VL chat template as shipped inside TRL (identical to the hub model's)."""
    return (importlib.resources.files("trl") / "chat_templates" / "qwen2_5_vl.jinja").read_text()


def build_tokenizer(vocab_size: int = 1024, extra_text: list[str] | None = None):
    """Train a byte-level BPE tokenizer with the Qwen special tokens; returns a Qwen2TokenizerFast."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, min_frequency=1,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    corpus = [line for line in _CORPUS.strip().splitlines()] + list(extra_text or [])
    tok.train_from_iterator(corpus * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token=None,
        additional_special_tokens=SPECIAL_TOKENS[1:], model_max_length=4096, padding_side="right",
    )
    fast.chat_template = chat_template()
    return fast


#: Model sizes: ``tiny`` (about 0.8M parameters) for the fast tests, ``small`` (about 2M: a deeper language model and a
#: wider, deeper vision tower) for the demo's
#: pretrained base (:mod:`mllm_cxr.pretrain`).
SIZES: dict[str, dict[str, int]] = {
    "tiny": {"text_hidden": 128, "text_layers": 2, "vision_hidden": 64, "vision_depth": 2},
    "small": {"text_hidden": 128, "text_layers": 4, "vision_hidden": 128, "vision_depth": 4},
}


def tiny_config(tokenizer, *, text_hidden: int = 128, text_layers: int = 2, vision_hidden: int = 64,
                vision_depth: int = 2):
    """A Qwen2.5-VL config scaled down (about 0.5M parameters); head dims kept at 32/16."""
    from transformers import Qwen2_5_VLConfig

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    heads = max(1, text_hidden // 32)
    text = dict(
        vocab_size=len(tokenizer), hidden_size=text_hidden, intermediate_size=text_hidden * 2,
        num_hidden_layers=text_layers, num_attention_heads=heads, num_key_value_heads=max(1, heads // 2),
        max_position_embeddings=4096, rms_norm_eps=1e-6, tie_word_embeddings=False,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 6, 6]},
        bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
    )
    vision = dict(
        depth=vision_depth, hidden_size=vision_hidden, intermediate_size=vision_hidden * 2,
        num_heads=max(1, vision_hidden // 16), out_hidden_size=text_hidden, patch_size=14, spatial_merge_size=2,
        temporal_patch_size=2, window_size=112, fullatt_block_indexes=[vision_depth - 1],
    )
    return Qwen2_5_VLConfig(
        text_config=text, vision_config=vision, image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"], tie_word_embeddings=False,
    )


def build_tiny_model(out_dir: str | Path, *, seed: int = 0, min_pixels: int = 56 * 56,
                     max_pixels: int = 112 * 112, extra_text: list[str] | None = None, head_std: float = 0.2,
                     **config_kw) -> Path:
    """Build, save and return the path of a tiny random Qwen2.5-VL (model + processor + generation config)."""
    import torch
    from transformers import (
        AutoTokenizer,
        GenerationConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
    )

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(extra_text=extra_text)
    tokenizer.save_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)  # reload: the saved files are what users get
    torch.manual_seed(seed)
    config = tiny_config(tokenizer, **config_kw)
    model = Qwen2_5_VLForConditionalGeneration(config)
    # A trained LM head has logits of tens of units; a random one at std 0.02 gives near-uniform
    # outputs (max logit ~2.5 at hidden 128) that LoRA, which leaves the head frozen, cannot sharpen.
    # A wider head keeps the tiny model learnable with LoRA alone, as a real checkpoint is.
    with torch.no_grad():
        model.lm_head.weight.normal_(0.0, head_std)
    model.generation_config = GenerationConfig(
        eos_token_id=[config.text_config.eos_token_id, tokenizer.convert_tokens_to_ids("<|endoftext|>")],
        pad_token_id=config.text_config.pad_token_id, do_sample=False, max_new_tokens=64,
    )
    model.save_pretrained(out, safe_serialization=True)
    image_processor = Qwen2VLImageProcessor(min_pixels=min_pixels, max_pixels=max_pixels)
    processor = Qwen2_5_VLProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                    video_processor=Qwen2VLVideoProcessor(), chat_template=chat_template())
    processor.save_pretrained(out)
    (out / "mllm_cxr_tiny.json").write_text(json.dumps({"seed": seed, "params": model.num_parameters()}))
    return out


@dataclass(kw_only=True)
class TinyArgs:
    """Where and from which seed the tiny model is built (``mllm-cxr tiny`` and ``python -m mllm_cxr.tiny``)."""

    _argument_group_name: ClassVar[str | None] = None
    out_dir: str = opt("folder to write the model to", positional=True)
    seed: int = opt("random seed of the weights", default=0)


@dataclass(kw_only=True)
class TinyMainArgs(Verb):
    build: TinyArgs = part(flat=True)
    size: str = opt("tiny (about 0.8M parameters, the tests') or small (about 4M)", default="tiny",
                    choices=sorted(SIZES))


def main(argv=None) -> int:
    args = from_namespace(TinyMainArgs, build_parser(TinyMainArgs, description=__doc__.split("\n")[0])
                          .parse_args(argv))
    path = build_tiny_model(args.out_dir, seed=args.seed, **SIZES[args.size])
    print(f"tiny Qwen2.5-VL written to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
