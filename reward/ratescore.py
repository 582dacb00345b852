"""RaTEScore (Zhao et al., EMNLP 2024) through its PyPI package ``RaTEScore``.

RaTEScore splits both reports into sentences (medspacy), tags medical entities with a NER model
(``Angelakeke/RaTE-NER-Deberta``: ABNORMALITY, NON-ABNORMALITY, DISEASE, NON-DISEASE, ANATOMY),
embeds every entity (``FremyCompany/BioLORD-2023-C``), matches each entity to its most similar one
in the other report, and averages the cosine similarities weighted by an affinity matrix over the
entity-type pair (a negated/non-negated pair is further multiplied by ``neg_weight``). Precision and
recall combine into an F1; a pair in which either report has no entity scores 0.5.

The package is an optional extra; both models load from hub ids or local folders
(``bert_model=``, ``eval_model=``). The registered scorer ``ratescore`` raises
:class:`MissingBackendError` with the install command when the package cannot be imported.

What this wrapper adds: texts that medspacy turns into no sentence at all (empty, or only pieces
shorter than 3 characters) are scored 0.5 here, because inside the package they would silently
shift every later pair against the wrong partner; batches with a progress bar; a checked
affinity-matrix file.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from reward.base import MissingBackendError, RewardError, Scorer, ScoreResult

DEFAULT_NER_MODEL = "Angelakeke/RaTE-NER-Deberta"
DEFAULT_EMBED_MODEL = "FremyCompany/BioLORD-2023-C"
#: The NER model's entity types (labels B-/I-<type>).
ENTITY_TYPES: tuple[str, ...] = ("abnormality", "non-abnormality", "disease", "non-disease", "anatomy")
#: Keys of an affinity-matrix file: ``"<type>_<type>"`` for the 25 type pairs, plus ``"neg_weight"``.
AFFINITY_KEYS: frozenset[str] = frozenset({f"{a}_{b}" for a in ENTITY_TYPES for b in ENTITY_TYPES} | {"neg_weight"})
#: The score the package gives a pair in which either report has no entity.
EMPTY_SCORE = 0.5

INSTALL_HINT = (
    "pip install RaTEScore==0.6.0 medspacy   (Python >= 3.12). On Python 3.11 medspacy pins spacy<3.8, "
    "which downgrades numpy below what pandas needs; there install: "
    'pip install "spacy>=3.8" "numpy>=2" pysbd==0.3.4 jsonschema loguru PyFastNER quicksectx unidecode '
    "pysimstring medspacy_unqlite six nltk && pip install --no-deps RaTEScore==0.6.0 medspacy==1.3.1 "
    "PyRuSH medspacy_quickumls==3.2"
)


def import_ratescore():
    """The ``RaTEScore`` package, or :class:`MissingBackendError` saying how to install it."""
    try:
        return importlib.import_module("RaTEScore")
    except ImportError as e:  # the package itself, medspacy or one of medspacy's own dependencies
        missing = getattr(e, "name", None) or str(e)
        raise MissingBackendError(f"scorer 'ratescore' needs the RaTEScore package ({missing} is missing): "
                                  f"{INSTALL_HINT}") from e


def load_affinity_matrix(spec: str | os.PathLike = "long") -> dict[str, float]:
    """An affinity matrix: ``"long"``/``"short"`` (the package's built-in ones, tuned on long and
    short reports) or a JSON file with the keys :data:`AFFINITY_KEYS` and finite numbers.

    A file with a missing or unknown key, or a value that is not a finite number, raises
    :class:`RewardError` naming the file and the key.
    """
    if str(spec).lower() in ("long", "short"):
        scorer_mod = importlib.import_module(import_ratescore().__name__ + ".scorer")
        return dict(getattr(scorer_mod, "DEFAULT_MATRIX_" + str(spec).upper()))
    path = Path(spec)
    if not path.is_file():
        raise FileNotFoundError(f"RaTEScore affinity matrix: no such file: {path} (or use 'long' / 'short')")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise RewardError(f"{path}: not a JSON affinity matrix ({e})") from e
    if not isinstance(data, dict):
        raise RewardError(f"{path}: an affinity matrix is a JSON object, got {type(data).__name__}")
    missing, unknown = sorted(AFFINITY_KEYS - set(data)), sorted(set(data) - AFFINITY_KEYS)
    if missing:
        raise RewardError(f"{path}: affinity matrix lacks key(s) {', '.join(missing)}")
    if unknown:
        raise RewardError(f"{path}: affinity matrix has unknown key(s) {', '.join(unknown)}")
    for key, value in data.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise RewardError(f"{path}: affinity matrix key {key!r} has value {value!r}, expected a finite number")
    return {k: float(v) for k, v in data.items()}


class RaTEScoreScorer(Scorer):
    """RaTEScore per sample through the ``RaTEScore`` package.

    Args:
        bert_model: the NER model, hub id or local folder.
        eval_model: the entity embedding model, hub id or local folder.
        affinity: ``"long"`` (package default), ``"short"`` or a JSON file (checked, see
            :func:`load_affinity_matrix`).
        device: ``"cuda"`` or ``"cpu"``; ``None`` picks the GPU when there is one.
        batch_size: sentences per NER forward pass.
        chunk_size: report pairs handed to the package per call (progress bar steps).

    The package is imported, and the models loaded, on the first call.
    """

    name = "ratescore"

    def __init__(
        self,
        bert_model: str = DEFAULT_NER_MODEL,
        eval_model: str = DEFAULT_EMBED_MODEL,
        affinity: str | os.PathLike = "long",
        device: str | None = None,
        batch_size: int = 16,
        chunk_size: int = 256,
    ) -> None:
        if str(affinity).lower() not in ("long", "short"):
            load_affinity_matrix(affinity)  # check the file now, not after loading two models
        if importlib.util.find_spec("RaTEScore") is None:
            import_ratescore()  # raises MissingBackendError with the install command
        if batch_size < 1 or chunk_size < 1:
            raise RewardError(f"scorer 'ratescore': batch_size and chunk_size must be >= 1 "
                              f"(got {batch_size}, {chunk_size})")
        self.bert_model = str(bert_model)
        self.eval_model = str(eval_model)
        self.affinity = str(affinity)
        self.device = device
        self.batch_size = batch_size
        self.chunk_size = chunk_size
        self._rate = None
        self._split = None

    def _load(self):
        if self._rate is None:
            pkg = import_ratescore()
            import torch

            try:  # PyRuSH logs every sentence it splits at DEBUG level: patient text must not reach logs
                from loguru import logger

                logger.disable("PyRuSH")
            except ImportError:
                pass
            use_gpu = (self.device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda")
            self._split = importlib.import_module(pkg.__name__ + ".utils").sentence_split
            self._rate = pkg.RaTEScore(bert_model=self.bert_model, eval_model=self.eval_model,
                                       batch_size=self.batch_size, use_gpu=use_gpu,
                                       affinity_matrix=self.affinity)
        return self._rate

    def has_sentences(self, text: str) -> bool:
        """Whether the package's sentence splitter keeps at least one sentence of ``text``."""
        self._load()
        return bool(text.strip()) and bool(self._split([text])[0])

    def score(self, hyps: Sequence[str], refs: Sequence[str] | None = None, **context: Sequence[Any]) -> ScoreResult:
        from tqdm.auto import tqdm

        assert refs is not None
        rate = self._load()
        scores = [EMPTY_SCORE] * len(hyps)
        empty = [not (self.has_sentences(h) and self.has_sentences(r)) for h, r in zip(hyps, refs)]
        todo = [i for i, e in enumerate(empty) if not e]
        chunks = [todo[k:k + self.chunk_size] for k in range(0, len(todo), self.chunk_size)]
        for chunk in tqdm(chunks, desc="RaTEScore", unit="chunk", disable=len(chunks) < 2, leave=False):
            out = rate.compute_score([hyps[i] for i in chunk], [refs[i] for i in chunk])
            if isinstance(out, tuple):  # some versions return (scores, pred_pairs, gt_pairs)
                out = out[0]
            if len(out) != len(chunk):
                raise RewardError(f"scorer 'ratescore': the package returned {len(out)} scores for {len(chunk)} pairs")
            for i, value in zip(chunk, out):
                scores[i] = float(value)
        details = [{"empty": e} for e in empty]
        corpus = {"mean": sum(scores) / len(scores) if scores else 0.0, "n_empty": sum(empty),
                  "affinity": self.affinity, "bert_model": self.bert_model, "eval_model": self.eval_model}
        return ScoreResult(scores=scores, details=details, corpus=corpus)
