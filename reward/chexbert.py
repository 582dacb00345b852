"""CheXbert: the BERT report labeler of Smit et al. (EMNLP 2020), as a backend for CheXpert labels.

The architecture is the one of the published checkpoint (``chexbert.pth``, e.g. in the hub repository
``StanfordAIMI/RRG_scorers``): a BERT-base encoder, dropout on the ``[CLS]`` vector, 13 linear heads
with four classes (blank, positive, negative, uncertain) for the 13 observations and one linear head
with two classes (blank, positive) for "No Finding". The checkpoint is a dict whose
``"model_state_dict"`` was saved from ``torch.nn.DataParallel``, so its keys read
``module.bert.<BERT weights>`` and ``module.linear_heads.<i>.weight|bias``; heads follow CheXbert's own
condition order (:data:`CHEXBERT_CONDITIONS`), which differs from ours (``reward.constants``).

Our labels map CheXbert's classes 0/1/2/3 to ``None`` / 1.0 / 0.0 / -1.0 and are keyed by
:data:`reward.constants.CHEXPERT_LABELS`.

    labeler = ChexbertLabeler("/models/chexbert.pth", tokenizer="/models/bert-base-uncased")
    labeler.label(["No pleural effusion. Mild cardiomegaly."])

The registered scorer ``chexbert_f1`` labels hypothesis and reference with the model and returns the
per-sample F1 between the two label sets (``reward.f1``). The checkpoint is the only thing it cannot
guess: pass ``checkpoint=`` (local file, folder holding ``chexbert.pth`` or hub repository id) or set
the environment variable ``MLLM_CXR_CHEXBERT``.

Loading never unpickles code: ``torch.load(..., weights_only=True)``. The hub is contacted only when
``checkpoint`` (or ``tokenizer``) is a hub id rather than an existing path.
"""

from __future__ import annotations

import os
import re
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from reward.base import (
    MissingBackendError,
    RewardError,
    Scorer,
    ScoreResult,
    to_scorable_text,
)
from reward.constants import CHEXPERT_LABELS


def _chexbert_head_order() -> tuple[str, ...]:
    names = [n for n in CHEXPERT_LABELS if n != "No Finding"]
    i, j = names.index("Lung Lesion"), names.index("Lung Opacity")
    names[i], names[j] = names[j], names[i]  # CheXbert puts Lung Opacity before Lung Lesion
    return (*names, "No Finding")


#: CheXbert's head order (``src/constants.py`` of stanfordmlgroup/CheXbert): 13 four-class heads, then
#: the two-class "No Finding" head.
CHEXBERT_CONDITIONS: tuple[str, ...] = _chexbert_head_order()

#: CheXbert class index -> our label value (0 blank, 1 positive, 2 negative, 3 uncertain).
CLASS_TO_VALUE: dict[int, float | None] = {0: None, 1: 1.0, 2: 0.0, 3: -1.0}

#: Environment variable read when no checkpoint is passed to the ``chexbert_f1`` scorer.
CHECKPOINT_ENV = "MLLM_CXR_CHEXBERT"
DEFAULT_FILENAME = "chexbert.pth"
MAX_TOKENS = 512

_N_HEADS = len(CHEXBERT_CONDITIONS)
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
#: Buffers that older transformers versions saved in BERT state dicts; harmless to drop.
_IGNORED_KEYS = ("bert.embeddings.position_ids",)
_WS = re.compile(r"\s+")

assert set(CHEXBERT_CONDITIONS) == set(CHEXPERT_LABELS)


def preprocess_report(text: str) -> str:
    """CheXbert's report normalisation: line breaks and runs of white space become one space, stripped."""
    return _WS.sub(" ", text).strip()


def resolve_checkpoint(checkpoint: str | os.PathLike, filename: str = DEFAULT_FILENAME) -> Path:
    """The local path of a CheXbert checkpoint.

    ``checkpoint`` is a file, a folder holding ``filename``, or a hub repository id ("owner/name"),
    which is fetched with ``huggingface_hub.hf_hub_download(repo_id, filename)`` (cached). Anything
    else raises :class:`FileNotFoundError` naming the path.
    """
    p = Path(checkpoint).expanduser()
    if p.is_file():
        return p
    if p.is_dir():
        if (p / filename).is_file():
            return p / filename
        raise FileNotFoundError(f"CheXbert checkpoint: folder {p} has no {filename}")
    s = str(checkpoint)
    if _HUB_ID.match(s) and not s.startswith((".", "~")):
        from huggingface_hub import hf_hub_download

        try:
            return Path(hf_hub_download(repo_id=s, filename=filename))
        except Exception as e:  # offline, unknown repo, missing file: say what was tried
            raise FileNotFoundError(
                f"CheXbert checkpoint: could not fetch {filename} from hub repository {s!r} ({type(e).__name__}: {e})"
            ) from e
    raise FileNotFoundError(f"CheXbert checkpoint: no such file or folder: {s}")


def load_chexbert_state_dict(path: str | os.PathLike) -> dict[str, Any]:
    """The model weights of a CheXbert checkpoint, keys without the DataParallel ``module.`` prefix.

    Accepts the published layout (``{"model_state_dict": {...}, ...}``) and a bare state dict. Uses
    ``torch.load(weights_only=True)``; a file that is not a tensor dict raises :class:`RewardError`.
    """
    import torch

    path = Path(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise RewardError(f"{path}: cannot read a CheXbert checkpoint ({type(e).__name__}: {e})") from e
    state = obj.get("model_state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not state or not all(torch.is_tensor(v) for v in state.values()):
        raise RewardError(f"{path}: not a CheXbert checkpoint (expected a dict with 'model_state_dict' of tensors)")
    out: dict[str, Any] = {}
    for key, value in state.items():
        key = key[len("module."):] if key.startswith("module.") else key
        # checkpoints converted from TensorFlow name LayerNorm parameters gamma/beta
        key = re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", key)
        key = re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", key)
        if key in _IGNORED_KEYS:
            continue
        out[key] = value
    return out


def build_chexbert_model(state: dict[str, Any], bert_config: Any, *, source: str = "checkpoint"):
    """A ``torch.nn.Module`` with ``.bert`` (BertModel) and ``.linear_heads`` loaded from ``state``.

    The key set must match exactly (missing or unexpected keys raise :class:`RewardError` listing
    them), and the head shapes must be 13 x (4, hidden) + 1 x (2, hidden).
    """
    import torch
    from transformers import BertModel

    hidden = bert_config.hidden_size
    for i in range(_N_HEADS):
        w = state.get(f"linear_heads.{i}.weight")
        want = (2 if i == _N_HEADS - 1 else 4, hidden)
        if w is not None and tuple(w.shape) != want:
            raise RewardError(
                f"{source}: linear_heads.{i}.weight has shape {tuple(w.shape)}, expected {want} "
                f"(CheXbert: 13 four-class heads + 1 two-class head on a BERT of hidden size {hidden})"
            )
    with_pooler = any(k.startswith("bert.pooler.") for k in state)
    model = torch.nn.Module()
    model.bert = BertModel(bert_config, add_pooling_layer=with_pooler)
    model.linear_heads = torch.nn.ModuleList(
        [torch.nn.Linear(hidden, 4) for _ in range(_N_HEADS - 1)] + [torch.nn.Linear(hidden, 2)]
    )
    expected = set(model.state_dict())
    missing = sorted(expected - set(state))
    unexpected = sorted(set(state) - expected)
    if missing or unexpected:
        def _fmt(keys: list[str]) -> str:
            return ", ".join(keys[:8]) + (f" (+{len(keys) - 8} more)" if len(keys) > 8 else "")

        parts = []
        if missing:
            parts.append(f"missing keys: {_fmt(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_fmt(unexpected)}")
        raise RewardError(
            f"{source}: not a CheXbert checkpoint matching this BERT config; " + "; ".join(parts)
            + " (expected the chexbert.pth layout: module.bert.* + module.linear_heads.0-13.*)"
        )
    for key, value in model.state_dict().items():
        if tuple(state[key].shape) != tuple(value.shape):
            raise RewardError(
                f"{source}: {key} has shape {tuple(state[key].shape)}, the BERT config expects {tuple(value.shape)}"
            )
    model.load_state_dict(state, strict=True)
    model.eval()
    model.requires_grad_(False)
    return model


class ChexbertLabeler:
    """CheXpert labels for free-text reports with the CheXbert model.

    Args:
        checkpoint: ``chexbert.pth`` file, a folder holding it, or a hub repository id
            (``"StanfordAIMI/RRG_scorers"``).
        tokenizer: BERT tokenizer, local folder or hub id (CheXbert used ``bert-base-uncased``).
        bert_config: BERT config, local folder or hub id; defaults to ``tokenizer``.
        device: ``"cuda"``, ``"cpu"``, ... ; ``None`` picks the GPU when there is one.
        batch_size: reports per forward pass. Reports are sorted by length before batching, so a
            batch holds reports of similar length and little padding.
        dtype: ``None`` (float32, as published) or ``"bfloat16"``/``"float16"`` for faster GPU runs.
        cache_size: labels of this many distinct reports are remembered between calls (references
            come back at every training step); 0 turns the cache off.
        filename: the checkpoint file name inside a folder or hub repository.
        progress: show a tqdm bar (``None``: only for more than 4 batches).

    The model loads at construction. Reports longer than 512 tokens are cut (``[CLS]`` + 510 + ``[SEP]``),
    as CheXbert did.
    """

    def __init__(
        self,
        checkpoint: str | os.PathLike,
        tokenizer: str | os.PathLike = "bert-base-uncased",
        bert_config: str | os.PathLike | None = None,
        device: str | None = None,
        batch_size: int = 32,
        dtype: str | None = None,
        cache_size: int = 4096,
        filename: str = DEFAULT_FILENAME,
        progress: bool | None = None,
    ) -> None:
        import torch
        from transformers import AutoConfig, BertTokenizer

        if batch_size < 1:
            raise RewardError(f"chexbert: batch_size must be >= 1, got {batch_size}")
        path = resolve_checkpoint(checkpoint, filename)
        state = load_chexbert_state_dict(path)
        config = AutoConfig.from_pretrained(str(bert_config or tokenizer))
        if not hasattr(config, "hidden_size"):
            raise RewardError(f"chexbert: {bert_config or tokenizer} is not a BERT config")
        self.tokenizer = BertTokenizer.from_pretrained(str(tokenizer))
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        dtypes = {None: torch.float32, "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
        if dtype not in dtypes:
            raise RewardError(f"chexbert: dtype must be one of float32, bfloat16, float16; got {dtype!r}")
        self.dtype = dtypes[dtype]
        self.model = build_chexbert_model(state, config, source=str(path)).to(self.device, self.dtype)
        self.checkpoint = str(path)
        self.batch_size = batch_size
        self.cache_size = cache_size
        self.progress = progress
        self._cache: OrderedDict[str, tuple[int, ...]] = OrderedDict()
        # our label order -> index into CheXbert's head order
        self._order = [CHEXBERT_CONDITIONS.index(name) for name in CHEXPERT_LABELS]

    # ------------------------------------------------------------------------------------------------
    def predict_classes(self, texts: Sequence[str]) -> list[tuple[int, ...]]:
        """CheXbert class ids (0 blank, 1 pos, 2 neg, 3 unc), one 14-tuple per report in CheXbert order.

        Identical reports are run once; known reports come from the cache.
        """
        norm = [preprocess_report(to_scorable_text(t)) for t in texts]
        todo = [t for t in dict.fromkeys(norm) if t not in self._cache]
        fresh = dict(zip(todo, self._run(todo))) if todo else {}
        for t, cls in fresh.items():
            self._remember(t, cls)
        out = []
        for t in norm:
            if t in fresh:
                out.append(fresh[t])
            else:
                out.append(self._cache[t])
                self._cache.move_to_end(t)
        return out

    def label(self, texts: Sequence[str]) -> list[dict[str, float | None]]:
        """One dict per report: keys :data:`reward.constants.CHEXPERT_LABELS`, values 1.0/0.0/-1.0/None."""
        return [{name: CLASS_TO_VALUE[cls[j]] for name, j in zip(CHEXPERT_LABELS, self._order)}
                for cls in self.predict_classes(texts)]

    def __call__(self, texts: Sequence[str]) -> list[dict[str, float | None]]:
        return self.label(texts)

    # ------------------------------------------------------------------------------------------------
    def _remember(self, text: str, cls: tuple[int, ...]) -> None:
        if self.cache_size <= 0:
            return
        self._cache[text] = cls
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    def _run(self, texts: list[str]) -> list[tuple[int, ...]]:
        """Forward the (distinct) reports in length-sorted batches; results in input order."""
        import torch
        from tqdm.auto import tqdm

        enc = self.tokenizer(texts, truncation=True, max_length=MAX_TOKENS, add_special_tokens=True)
        ids = enc["input_ids"]
        order = sorted(range(len(texts)), key=lambda i: len(ids[i]))
        results: list[tuple[int, ...] | None] = [None] * len(texts)
        n_batches = (len(order) + self.batch_size - 1) // self.batch_size
        show = self.progress if self.progress is not None else n_batches > 4
        pad = self.tokenizer.pad_token_id or 0
        with torch.inference_mode():
            for b in tqdm(range(n_batches), desc="CheXbert", unit="batch", disable=not show, leave=False):
                idx = order[b * self.batch_size:(b + 1) * self.batch_size]
                width = max(len(ids[i]) for i in idx)
                batch = torch.full((len(idx), width), pad, dtype=torch.long)
                mask = torch.zeros((len(idx), width), dtype=torch.long)
                for r, i in enumerate(idx):
                    batch[r, : len(ids[i])] = torch.tensor(ids[i])
                    mask[r, : len(ids[i])] = 1
                hidden = self.model.bert(
                    input_ids=batch.to(self.device), attention_mask=mask.to(self.device)
                ).last_hidden_state[:, 0]
                # dropout is the identity at inference; each head sees the [CLS] vector
                pred = torch.stack([head(hidden).argmax(dim=-1) for head in self.model.linear_heads], dim=1)
                for r, row in zip(idx, pred.cpu().tolist()):
                    results[r] = tuple(int(c) for c in row)
        return results  # type: ignore[return-value]


# ----------------------------------------------------------------------------------------------------
# Scorer
# ----------------------------------------------------------------------------------------------------

_SUBSETS = ("14", "5")
_UNCERTAIN = ("positive", "negative")


class ChexbertF1Scorer(Scorer):
    """Per-sample F1 between CheXbert labels of hypothesis and reference; corpus F1 report.

    Args:
        checkpoint: CheXbert checkpoint (file, folder or hub id); default ``$MLLM_CXR_CHEXBERT``.
        subset: ``"14"`` (all observations) or ``"5"`` (Atelectasis, Cardiomegaly, Consolidation,
            Edema, Pleural Effusion) for the per-sample F1.
        uncertain: ``"positive"`` (the usual F1-CheXbert convention) or ``"negative"``.
        **labeler_kwargs: passed to :class:`ChexbertLabeler` (tokenizer, device, batch_size, dtype...).

    The model loads on the first call. Per-sample details hold both label dicts.
    """

    name = "chexbert_f1"

    def __init__(
        self,
        checkpoint: str | os.PathLike | None = None,
        subset: str = "14",
        uncertain: str = "positive",
        **labeler_kwargs: Any,
    ) -> None:
        checkpoint = checkpoint or os.environ.get(CHECKPOINT_ENV) or None
        if checkpoint is None:
            raise MissingBackendError(
                "scorer 'chexbert_f1' needs the CheXbert checkpoint (chexbert.pth, Smit et al. 2020): pass "
                f"checkpoint=<file, folder or hub id such as StanfordAIMI/RRG_scorers> or set {CHECKPOINT_ENV}; "
                "the rule-based 'chexpert_f1' scorer needs no model"
            )
        subset, uncertain = str(subset), str(uncertain)
        if subset not in _SUBSETS:
            raise RewardError(f"scorer 'chexbert_f1': subset must be one of {_SUBSETS}, got {subset!r}")
        if uncertain not in _UNCERTAIN:
            raise RewardError(f"scorer 'chexbert_f1': uncertain must be one of {_UNCERTAIN}, got {uncertain!r}")
        self.checkpoint = checkpoint
        self.subset = subset
        self.uncertain = uncertain
        self.labeler_kwargs = labeler_kwargs
        self._labeler: ChexbertLabeler | None = None

    @property
    def labeler(self) -> ChexbertLabeler:
        if self._labeler is None:
            self._labeler = ChexbertLabeler(self.checkpoint, **self.labeler_kwargs)
        return self._labeler

    def score(self, hyps: Sequence[str], refs: Sequence[str] | None = None, **context: Sequence[Any]) -> ScoreResult:
        from reward.f1 import f1_report, per_sample_f1

        assert refs is not None
        labels = self.labeler.label(list(hyps) + list(refs))
        hyp_labels, ref_labels = labels[: len(hyps)], labels[len(hyps):]
        if not hyps:
            return ScoreResult(scores=[], details=[], corpus={"uncertain": self.uncertain, "subset": self.subset})
        scores = [float(s) for s in per_sample_f1(hyp_labels, ref_labels, uncertain=self.uncertain, subset=self.subset)]
        corpus = dict(f1_report(hyp_labels, ref_labels, uncertain=self.uncertain))
        corpus.setdefault("uncertain", self.uncertain)
        corpus["subset"] = self.subset
        corpus["labeler"] = "chexbert"
        details = [{"hyp_labels": h, "ref_labels": r} for h, r in zip(hyp_labels, ref_labels)]
        return ScoreResult(scores=scores, details=details, corpus=corpus)
