"""RadGraph F1: agreement of the entity-relation graphs of a hypothesis and a reference report.

RadGraph (Jain et al., 2021; RadGraph-XL, Delbrouck et al., 2024) annotates a report with entities
(``Observation::definitely present``, ``Anatomy::definitely present``, ... or, for the original
model, ``OBS-DP``/``ANAT-DP``/...) and relations between them (``modify``, ``located_at``,
``suggestive_of``). One report's annotation is a dict

    {"text": "...", "entities": {"1": {"tokens": "pleural", "label": "...", "start_ix": 19,
                                       "end_ix": 19, "relations": [["located_at", "2"], ...]}, ...}}

(the ``radgraph`` package returns ``{"0": <that>, "1": ..., ...}``; both forms are accepted here).

F1 between two annotations, as ``radgraph.F1RadGraph`` / RadEval compute it (exact same numbers):

* ``simple``: the sets of ``(tokens, label)`` of all entities;
* ``partial``: ``(tokens, label)`` for an entity without relations, ``(tokens, label, True)`` for one
  with at least one relation;
* ``complete``: ``(tokens, label)`` for an entity without relations, and for each relation of an
  entity ``(tokens.lower(), label, relation, target tokens.lower())``;

then precision = |H & R| / |H|, recall = |H & R| / |R| and F1 = 2PR / (P + R) (0 when undefined). A
pair where either side has no entity, or either text is empty, scores 0 at every level. The corpus
value is the mean over pairs (RadEval's ``radgraph_simple``/``_partial``/``_complete``).

The annotator (text -> annotation) is a DyGIE++ model. :class:`RadGraphExtractor` runs it through
the RadGraph inference code that ``radeval`` (PyPI, 2.2.x) vendors with the fixes for transformers
5, from a local model folder (``config.json``, ``vocabulary/``, ``weights.th``: an extracted
``radgraph-xl.tar.gz`` of the Hugging Face repo ``StanfordAIMI/RRG_scorers``). The standalone
``radgraph`` package (0.1.18) does not run on transformers 5 (it calls the removed
``tokenizer.encode_plus``).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.abc
import importlib.util
import io
import json
import logging
import os
import shutil
import sys
import tempfile
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from reward.base import MissingBackendError, RewardError, Scorer, ScoreResult

log = logging.getLogger(__name__)

LEVELS = ("simple", "partial", "complete")
MODEL_TYPES = ("radgraph", "radgraph-xl", "modern-radgraph-xl", "echograph")

#: How to install the extractor backend without letting pip replace torch/numpy (radeval's full
#: dependency list pulls CUDA torch, torchvision, medspacy and an older numpy).
INSTALL_HINT = ('pip install --no-deps "radeval==2.2.1" && '
                'pip install dotmap appdirs jsonpickle h5py nltk rich')

#: Environment variable read by the ``radgraph_f1`` scorer when no ``model_dir`` is given.
MODEL_DIR_ENV = "MLLM_CXR_RADGRAPH_DIR"

Annotation = Mapping[str, Any]


# ----------------------------------------------------------------------------------------------------
# Annotations and F1
# ----------------------------------------------------------------------------------------------------

def report_annotation(annotation: Annotation, where: str = "annotation") -> Mapping[str, Any]:
    """The single-report dict (``{"text", "entities", ...}``) of an annotation.

    Accepts the report dict itself or the ``radgraph`` output for one report (``{"0": {...}}``).
    Raises :class:`RewardError` naming ``where`` when neither form fits.
    """
    if not isinstance(annotation, Mapping):
        raise RewardError(f"{where}: expected a RadGraph annotation dict, got {type(annotation).__name__}")
    if "entities" in annotation:
        report = annotation
    elif len(annotation) == 1 and isinstance(next(iter(annotation.values())), Mapping) \
            and "entities" in next(iter(annotation.values())):
        report = next(iter(annotation.values()))
    else:
        raise RewardError(f"{where}: no 'entities' field (keys: {sorted(annotation)[:5]})")
    entities = report["entities"]
    if not isinstance(entities, Mapping):
        raise RewardError(f"{where}: field 'entities' must be a dict, got {type(entities).__name__}")
    for eid, ent in entities.items():
        if not isinstance(ent, Mapping):
            raise RewardError(f"{where}: entity {eid!r} must be a dict, got {type(ent).__name__}")
        for key in ("tokens", "label", "relations"):
            if key not in ent:
                raise RewardError(f"{where}: entity {eid!r} has no field '{key}'")
        for rel in ent["relations"]:
            if not isinstance(rel, Sequence) or isinstance(rel, str) or len(rel) != 2:
                raise RewardError(f"{where}: entity {eid!r} field 'relations' has value {rel!r} "
                                  "(expected [type, target_id])")
            if str(rel[1]) not in entities:
                raise RewardError(f"{where}: entity {eid!r} field 'relations' points to unknown entity "
                                  f"{rel[1]!r}")
    return report


def _entity_sets(report: Mapping[str, Any]) -> tuple[set, set, set]:
    entities = report["entities"]
    simple: set = set()
    partial: set = set()
    complete: set = set()
    for ent in entities.values():
        tokens, label, rels = ent["tokens"], ent["label"], ent["relations"]
        simple.add((tokens, label))
        if rels:
            partial.add((tokens, label, True))
            for rel_type, target in rels:
                complete.add((tokens.lower(), label, rel_type, entities[str(target)]["tokens"].lower()))
        else:
            partial.add((tokens, label))
            complete.add((tokens, label))
    return simple, partial, complete


def _set_f1(hyp: set, ref: set) -> float:
    both = len(hyp & ref)
    precision = both / len(hyp) if hyp else 0.0
    recall = both / len(ref) if ref else 0.0
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


def radgraph_f1(hyp_annotation: Annotation, ref_annotation: Annotation,
                level: str = "partial") -> float | tuple[float, float, float]:
    """RadGraph F1 of two annotations at ``level`` (``simple``/``partial``/``complete``), or the
    tuple ``(simple, partial, complete)`` for ``level="all"``. Pure Python, no model."""
    if level not in (*LEVELS, "all"):
        raise RewardError(f"radgraph_f1: level must be one of {[*LEVELS, 'all']}, got {level!r}")
    hyp = report_annotation(hyp_annotation, "hypothesis annotation")
    ref = report_annotation(ref_annotation, "reference annotation")
    if not hyp["entities"] or not ref["entities"]:
        return (0.0, 0.0, 0.0) if level == "all" else 0.0
    scores = tuple(_set_f1(h, r) for h, r in zip(_entity_sets(hyp), _entity_sets(ref)))
    return scores if level == "all" else scores[LEVELS.index(level)]


# ----------------------------------------------------------------------------------------------------
# The extractor backend (radeval's vendored RadGraph inference)
# ----------------------------------------------------------------------------------------------------

class _RadEvalAlias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolve ``RadEval.*`` to the installed ``radeval.*`` modules (the same module objects).

    radeval 2.2.1's vendored RadGraph code imports ``RadEval.metrics.radgraph...`` while the package
    installs as ``radeval`` (a packaging bug: ``ModuleNotFoundError: No module named 'RadEval'``).
    Installed only when no ``RadEval`` package exists, first in ``sys.meta_path`` so that submodules
    too resolve to the ``radeval`` objects (else the path finder would load second copies of them,
    and their registries would clash). It answers for ``RadEval`` names only.
    """

    def find_spec(self, fullname, path=None, target=None):
        if fullname == "RadEval" or fullname.startswith("RadEval."):
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        return importlib.import_module("radeval" + spec.name[len("RadEval"):])

    def exec_module(self, module):  # the aliased module is already executed
        pass


def _import_backend():
    """radeval's ``RadGraph`` class, or :class:`MissingBackendError` saying how to install it."""
    if importlib.util.find_spec("radeval") is None:
        raise MissingBackendError(f"the RadGraph extractor needs the radeval package: {INSTALL_HINT}")
    if importlib.util.find_spec("RadEval") is None and not any(isinstance(f, _RadEvalAlias) for f in sys.meta_path):
        sys.meta_path.insert(0, _RadEvalAlias())
    try:
        import nltk
    except ModuleNotFoundError as e:
        raise MissingBackendError(f"the RadGraph extractor (radeval) needs nltk: {INSTALL_HINT}") from e
    download = nltk.download
    nltk.download = lambda *a, **k: False  # radeval fetches punkt_tab at import; RadGraph does not use it
    try:
        return importlib.import_module("radeval.metrics.radgraph")
    except ModuleNotFoundError as e:
        raise MissingBackendError(f"the RadGraph extractor (radeval) misses the module '{e.name}': "
                                  f"{INSTALL_HINT}") from e
    finally:
        nltk.download = download


def _backend_module(name: str):
    _import_backend()
    return importlib.import_module("radeval.metrics.radgraph._vendor." + name)


def _model_folder(model_dir: str | os.PathLike, model_type: str) -> Path:
    """The folder with ``config.json``: ``model_dir`` itself or ``model_dir/<model_type>``."""
    p = Path(model_dir).expanduser()
    if p.is_file():
        raise RewardError(f"radgraph: model_dir {str(p)!r} is a file; extract the archive first "
                          f"(mkdir {model_type} && tar xzf {p.name} -C {model_type})")
    for cand in (p, p / model_type):
        if (cand / "config.json").is_file():
            missing = [n for n in ("vocabulary", "weights.th") if not (cand / n).exists()]
            if missing:
                raise RewardError(f"radgraph: model folder {str(cand)!r} lacks {', '.join(missing)}")
            return cand
    if not p.exists():
        raise FileNotFoundError(f"radgraph: model_dir {str(p)!r} does not exist")
    raise RewardError(f"radgraph: no config.json in {str(p)!r} or {str(p / model_type)!r} (expected an "
                      f"extracted {model_type}.tar.gz: config.json, vocabulary/, weights.th)")


def _stage(folder: Path, model_type: str, encoder: str | os.PathLike | None) -> tuple[Path, str]:
    """A temporary ``<tmp>/<model_type>/`` view of ``folder`` for the backend's loader.

    The config's encoder names are rewritten: to ``encoder`` when given, else a name that is a path
    relative to the model folder becomes absolute (so a folder can carry its own BERT).
    """
    config = json.loads((folder / "config.json").read_text())
    try:
        tok = config["dataset_reader"]["token_indexers"]["bert"]
        emb = config["model"]["embedder"]["token_embedders"]["bert"]
    except (KeyError, TypeError) as e:
        raise RewardError(f"radgraph: {folder / 'config.json'} is not a RadGraph (DyGIE) config: no {e}") from e
    if encoder is not None:
        enc = Path(encoder).expanduser()
        if enc.exists():
            encoder = str(enc.resolve())
        elif enc.is_absolute() or str(encoder).startswith((".", "~")):
            raise FileNotFoundError(f"radgraph: encoder folder {str(encoder)!r} does not exist")
    for section in (tok, emb):
        name = section.get("model_name")
        if encoder is not None:
            section["model_name"] = str(encoder)
        elif isinstance(name, str) and (folder / name).exists():
            section["model_name"] = str((folder / name).resolve())
    tmp = Path(tempfile.mkdtemp(prefix="mllm_cxr_radgraph_"))
    staged = tmp / model_type
    staged.mkdir()
    (staged / "config.json").write_text(json.dumps(config))
    for n in ("vocabulary", "weights.th"):
        (staged / n).symlink_to((folder / n).resolve())
    return tmp, emb["model_name"]


class RadGraphExtractor:
    """Text -> RadGraph annotation, with a DyGIE++ RadGraph model from a local folder.

    ``model_dir``: the extracted model archive (``config.json``, ``vocabulary/``, ``weights.th``) or a
    folder holding it as ``<model_type>/``. ``encoder``: a local folder (or hub id) of the BERT the
    config names, for offline use; an encoder name that is a path relative to the model folder is
    also found. ``model_type`` selects the tokenisation (``radgraph`` or the XL family).
    ``device``: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``None`` (GPU when there is one).

    Calling it on a list of texts returns one report annotation (``{"text", "entities", ...}``) per
    text; an empty text gives no entities. The backend is imported on construction;
    :class:`MissingBackendError` gives the install command when it is absent.
    """

    def __init__(self, model_dir: str | os.PathLike, model_type: str = "radgraph-xl",
                 encoder: str | os.PathLike | None = None, device: str | None = None,
                 chunk_size: int = 32, progress: bool = True) -> None:
        if model_type not in MODEL_TYPES:
            raise RewardError(f"radgraph: model_type must be one of {MODEL_TYPES}, got {model_type!r}")
        folder = _model_folder(model_dir, model_type)
        backend = _import_backend()
        cuda = _cuda_index(device)
        tmp, encoder_name = _stage(folder, model_type, encoder)
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # the backend prints "Using device: ..."
                self._model = backend.RadGraph(model_type=model_type, model_cache_dir=str(tmp), cuda=cuda)
        except (OSError, ValueError) as e:  # a missing encoder, an unreachable hub, a bad checkpoint
            raise RewardError(f"radgraph: could not load the model in {str(folder)!r} (encoder "
                              f"{encoder_name!r}; for offline use pass encoder=<local BERT folder>): {e}") from e
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        self.model_dir = str(folder)
        self.model_type = model_type
        self.chunk_size = max(1, int(chunk_size))
        self.progress = progress

    def __repr__(self) -> str:
        return f"RadGraphExtractor({self.model_dir!r}, model_type={self.model_type!r})"

    def __call__(self, texts: Sequence[str]) -> list[dict[str, Any]]:
        texts = [t if isinstance(t, str) else str(t) for t in texts]
        out: list[dict[str, Any]] = [_empty_annotation(t) for t in texts]
        todo = [i for i, t in enumerate(texts) if t.strip()]
        chunks = [todo[i:i + self.chunk_size] for i in range(0, len(todo), self.chunk_size)]
        bar = None
        if self.progress and len(chunks) > 1:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(todo), desc="radgraph", unit="report")
        try:
            for chunk in chunks:
                result = self._model([texts[i] for i in chunk])
                for k, i in enumerate(chunk):
                    ann = result.get(str(k))
                    if ann is None:  # the backend skipped a report it could not decode
                        raise RewardError(f"radgraph: the model returned no annotation for text {i}")
                    out[i] = dict(ann)
                if bar is not None:
                    bar.update(len(chunk))
        finally:
            if bar is not None:
                bar.close()
        return out


def _cuda_index(device: str | None) -> int | None:
    if device is None:
        return None
    d = str(device).lower()
    if d == "cpu":
        return -1
    if d == "cuda":
        return 0
    if d.startswith("cuda:") and d[5:].isdigit():
        return int(d[5:])
    raise RewardError(f"radgraph: device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")


def _empty_annotation(text: str) -> dict[str, Any]:
    return {"text": text, "entities": {}, "data_source": None, "data_split": "inference"}


#: Labels of a RadGraph-XL model (entities) and its relations, for the random test model.
_XL_ENTITY_LABELS = ("Observation::definitely present", "Observation::definitely absent", "Observation::uncertain",
                     "Anatomy::definitely present", "Anatomy::measurement::definitely present",
                     "Observation::measurement::definitely present")
_XL_RELATION_LABELS = ("modify", "located_at", "suggestive_of")
_TINY_WORDS = ("no acute cardiopulmonary process abnormality the lungs are clear there is pleural effusion "
               "pneumothorax mild moderate small large left right lower lobe heart size normal stable "
               "unchanged new cardiomegaly edema atelectasis opacity consolidation of and with or in . , : ;")


def make_tiny_radgraph_model(out_dir: str | os.PathLike, model_type: str = "radgraph-xl", seed: int = 0) -> Path:
    """Write a RadGraph model folder with random weights and a tiny BERT (for tests and demos).

    Layout: ``out_dir/config.json``, ``vocabulary/``, ``weights.th`` and the encoder in
    ``out_dir/encoder`` (named relatively in the config). Needs the extractor backend. Its
    annotations are random; it exercises loading, tokenisation and decoding, nothing clinical.
    """
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    out = Path(out_dir)
    enc = out / "encoder"
    enc.mkdir(parents=True, exist_ok=True)
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *_TINY_WORDS.split(), *"abcdefghij0123456789"]
    words = list(dict.fromkeys(words))
    BertTokenizerFast(vocab={w: i for i, w in enumerate(words)}).save_pretrained(enc)
    torch.manual_seed(seed)
    bert_cfg = BertConfig(vocab_size=len(words), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                          intermediate_size=64, max_position_embeddings=256)
    BertModel(bert_cfg).save_pretrained(enc)

    bert = {"type": "pretrained_transformer_mismatched", "model_name": "encoder", "max_length": 256}
    config = {
        "dataset_reader": {"type": "dygie", "max_span_width": 4, "token_indexers": {"bert": dict(bert)}},
        "model": {
            "type": "dygie", "embedder": {"token_embedders": {"bert": dict(bert)}},
            "feature_size": 8, "max_span_width": 4, "target_task": "relation",
            "feedforward_params": {"num_layers": 1, "hidden_dims": 16, "dropout": 0.0},
            "loss_weights": {"ner": 1.0, "relation": 1.0, "coref": 0.0, "events": 0.0},
            "initializer": {}, "module_initializer": {},
            "modules": {"coref": {"spans_per_word": 0.3, "max_antecedents": 10, "coref_prop": 0},
                        "ner": {}, "relation": {"spans_per_word": 0.5},
                        "events": {"trigger_spans_per_word": 0.3, "argument_spans_per_word": 0.8,
                                   "loss_weights": {"trigger": 1.0, "arguments": 1.0}}},
        },
    }
    (out / "config.json").write_text(json.dumps(config, indent=1))

    vocab_mod = _backend_module("allennlp.data")
    vocab = vocab_mod.Vocabulary(non_padded_namespaces=["*labels", "*tags"])
    vocab.add_tokens_to_namespace(["", *_XL_ENTITY_LABELS], f"{model_type}__ner_labels")
    vocab.add_tokens_to_namespace(list(_XL_RELATION_LABELS), f"{model_type}__relation_labels")
    vocab.save_to_files(str(out / "vocabulary"))

    embedders = _backend_module("allennlp.modules.token_embedders")
    field_embedders = _backend_module("allennlp.modules.text_field_embedders")
    dygie = _backend_module("dygie.models.dygie")
    token_embedder = embedders.PretrainedTransformerMismatchedEmbedder(model_name=str(enc.resolve()), max_length=256)
    embedder = field_embedders.BasicTextFieldEmbedder({"bert": token_embedder})
    kwargs = {k: v for k, v in config["model"].items()
              if k not in ("type", "embedder", "initializer", "module_initializer")}
    model = dygie.DyGIE(vocab=vocab, embedder=embedder, **kwargs)
    torch.save(model.state_dict(), out / "weights.th")
    return out


# ----------------------------------------------------------------------------------------------------
# Scorer
# ----------------------------------------------------------------------------------------------------

Annotator = Callable[[list[str]], Sequence[Annotation]]


class RadGraphF1Scorer(Scorer):
    """RadGraph F1 per sample at ``level`` (default ``partial``); all three levels in details/corpus.

    The annotations come from ``annotator`` (any callable ``list[str] -> list[annotation]``; tests
    pass a fake) or else a :class:`RadGraphExtractor` on ``model_dir`` (or the folder named by the
    environment variable ``MLLM_CXR_RADGRAPH_DIR``). Each distinct text is annotated once per call,
    and the last ``cache_size`` annotations are kept (references recur across GRPO steps). An empty
    text (or one of white space only) scores 0 without running the model (as ``F1RadGraph`` does for
    an empty one). Should the annotator fail on a
    batch, texts are retried one at a time; a text that still fails scores 0 and is counted in
    ``corpus["annotation_errors"]`` (the text itself is never logged).
    """

    name = "radgraph_f1"

    def __init__(self, model_dir: str | os.PathLike | None = None, level: str = "partial",
                 model_type: str = "radgraph-xl", encoder: str | os.PathLike | None = None,
                 device: str | None = None, annotator: Annotator | None = None, cache_size: int = 4096) -> None:
        if level not in LEVELS:
            raise RewardError(f"radgraph_f1: level must be one of {LEVELS}, got {level!r}")
        self.level = level
        self.cache_size = max(0, int(cache_size))
        self._cache: OrderedDict[str, dict[str, Any]] = OrderedDict()
        if annotator is None:
            model_dir = model_dir or os.environ.get(MODEL_DIR_ENV)
            if not model_dir:
                raise RewardError("radgraph_f1 needs model_dir=<folder of an extracted radgraph-xl.tar.gz "
                                  f"(config.json, vocabulary/, weights.th)> or the environment variable "
                                  f"{MODEL_DIR_ENV} (or annotator=<callable>)")
            annotator = RadGraphExtractor(model_dir, model_type=model_type, encoder=encoder, device=device)
        self.annotator = annotator

    def _annotate(self, texts: list[str]) -> tuple[dict[str, dict[str, Any]], int]:
        found = {t: self._cache[t] for t in texts if t in self._cache}
        todo = [t for t in texts if t not in found]
        errors = 0
        if todo:
            try:
                anns = list(self.annotator(todo))
                if len(anns) != len(todo):
                    raise RewardError(f"radgraph_f1: the annotator returned {len(anns)} annotations for "
                                      f"{len(todo)} texts")
            except MissingBackendError:
                raise
            except Exception as e:  # retry one by one so that one bad text does not sink the batch
                log.warning("radgraph_f1: annotating %d texts failed (%s); retrying one at a time",
                            len(todo), type(e).__name__)
                anns = []
                for t in todo:
                    try:
                        anns.append(list(self.annotator([t]))[0])
                    except MissingBackendError:
                        raise
                    except Exception:
                        errors += 1
                        anns.append(_empty_annotation(t))
            for t, a in zip(todo, anns):
                try:
                    report = dict(report_annotation(a, "annotator output"))
                except RewardError:
                    errors += 1
                    report = _empty_annotation(t)
                found[t] = report
                if self.cache_size:
                    self._cache[t] = report
        for t in found:
            if t in self._cache:
                self._cache.move_to_end(t)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return found, errors

    def score(self, hyps: Sequence[str], refs: Sequence[str] | None = None, **_: Any) -> ScoreResult:
        texts = list(dict.fromkeys(t for t in [*hyps, *refs] if t.strip()))
        anns, errors = self._annotate(texts)
        per_level: dict[str, list[float]] = {lv: [] for lv in LEVELS}
        details = []
        for h, r in zip(hyps, refs):
            if h.strip() and r.strip():
                ha, ra = anns[h], anns[r]
                triple = radgraph_f1(ha, ra, "all")
                n_h, n_r = len(ha["entities"]), len(ra["entities"])
            else:
                triple, n_h, n_r = (0.0, 0.0, 0.0), 0, 0
            for lv, v in zip(LEVELS, triple):
                per_level[lv].append(v)
            details.append({**dict(zip(LEVELS, triple)), "hyp_entities": n_h, "ref_entities": n_r})
        import numpy as np  # the mean as F1RadGraph takes it (same floating-point result)

        corpus: dict[str, Any] = {f"radgraph_{lv}": (float(np.mean(v)) if v else 0.0) for lv, v in per_level.items()}
        corpus.update({"level": self.level, "annotation_errors": errors})
        return ScoreResult(per_level[self.level], details, corpus)
