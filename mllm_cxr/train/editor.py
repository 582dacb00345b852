"""EditGRPO's text editor (Zhang et al. 2025, arXiv 2509.22812): sentence-level edits of a report toward its reference.

Pure on-policy GRPO on report generation tends to collapse to generic reports: when every rollout
of a group misses the same finding, the group has no reward variance and no signal. EditGRPO mixes
in off-policy guidance that stays close to the policy: after the rollouts of a group are sampled, up
to half of the group's slots are replaced by *edited copies of other rollouts*, each edited by one
sentence-level operation toward the reference report. The edits are minimal, so the edited
completions remain likely under the policy and the clipped objective can learn from them.

One operation per rollout, in priority order (:class:`SentenceEditor`):

1. **presence conflict** -- an observation the rollout and the reference both mention, with opposite
   presence ("The heart is enlarged." vs "Normal heart size."): the rollout's sentence is replaced by
   the reference's sentence about that observation;
2. **false positive** -- an observation the rollout asserts and the reference does not mention: the
   sentence is replaced by the most similar reference sentence when the similarity reaches
   ``similarity_threshold``, else deleted;
3. **false negative** -- an observation the reference asserts and the rollout does not mention: the
   reference sentence is appended (to the same report section when the rollout has it).

With ``measurement_edits`` (config ``edit_measurements``) one more kind, tried right after presence
conflicts: **measurement** -- a sentence with a hallucinated device, tip position, tip distance or
lesion size (:mod:`reward.measurements`: "ETT 4.5 cm above the carina" when the reference says 1 cm)
is replaced by the reference sentence that states the disagreeing fact, or deleted when the reference
has no such sentence (a device it never mentions). With ``verify`` it is kept only when it lowers the
report's number of hallucinated measurement facts without lowering its CheXpert label F1.

An edit is kept only when the text changes and, by default (``verify``), only when it raises the
report's CheXpert label F1 against the reference, else the next candidate is tried. Observations and their presence come from our CheXpert
rule labeler (:mod:`reward.chexpert`) run sentence by sentence; uncertain mentions count as present
(``uncertain="positive"``, the RRG convention) unless told otherwise. Sentence similarity is
pluggable: token overlap (Dice over content words) by default, or cosine similarity of a sentence
embedding model (:class:`EmbeddingSimilarity`, any encoder by hub id or local path, e.g. BioLORD).
The paper matches RaTE-NER entities with BioLORD embeddings; this implementation uses CheXpert
observations for matching and whole-sentence similarity for the replacement choice.

All edit settings, with their one set of defaults, are :class:`EditSettings`: the editor reads them, and
the trainer's config (:class:`mllm_cxr.train.grpo_config.EditGRPOConfig`) has one ``edit_<name>`` key per
field, generated from this class. This module is plain text processing: importing it imports neither torch
nor TRL (``tests/mllm_cxr/train/test_editgrpo.py`` checks it); the trainer is :mod:`mllm_cxr.train.editgrpo`.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from reward.chexpert import label_reports
from reward.constants import CHEXPERT_LABELS
from reward.f1 import per_sample_f1
from reward.measurements import compare, extract
from reward.text import find_sections, sentences

#: Edit kinds, in priority order.
EDIT_KINDS = ("conflict", "fp_replace", "fp_delete", "fn_add", "measurement")


@dataclass
class EditSettings:
    """The post-rollout edit settings and their defaults (EditGRPO's published values).

    The one place they are written: :class:`SentenceEditor` reads the editing ones, the trainer reads
    ``fraction``, ``reference_column`` and ``seed``, and the recipe's config has them as ``edit_<name>``.
    """

    fraction: float = field(default=0.5, metadata={
        "help": "share of each group's slots replaced by edited rollouts (at most half; EditGRPO: G/2)"})
    similarity: str = field(default="token_overlap", metadata={
        "help": "token_overlap, or a sentence-embedding model (hub id / local path) for false-positive replacement"})
    similarity_threshold: float = field(default=0.6, metadata={
        "help": "replace a false positive only above this similarity, else delete it (EditGRPO: 0.6)"})
    reference_column: str | None = field(default=None, metadata={
        "help": "dataset column with the reference report (default: reference, then findings, impression; "
                "reward/references.py)"})
    ops_per_rollout: int = field(default=1, metadata={"help": "operations per edited rollout (EditGRPO: 1)"})
    uncertain: str = field(default="positive", metadata={"help": "an uncertain mention counts as: positive | negative"})
    verify: bool = field(default=True, metadata={
        "help": "keep an edit only when it raises the CheXpert label F1 vs the reference (false = the paper's "
                "unchecked edits)"})
    max_candidates: int = field(default=8, metadata={"help": "candidate operations tried per edited rollout"})
    measurements: bool = field(default=False, metadata={
        "help": "also correct hallucinated devices, tip positions, tip distances and sizes toward the reference "
                "sentence (edit kind 'measurement', reward/measurements.py)"})
    seed: int | None = field(default=None, metadata={"help": "seed of the source/target choice (default: seed)"})

    #: The prefix of these settings' keys in a recipe config (``edit_fraction``, ...).
    PREFIX = "edit_"

    def __post_init__(self) -> None:
        if not 0.0 <= self.fraction <= 0.5:
            raise ValueError(f"edit_fraction must be within [0, 0.5] (sources and targets are disjoint), "
                             f"got {self.fraction}")
        if self.uncertain not in ("positive", "negative"):
            raise ValueError(f"edit_uncertain must be 'positive' or 'negative', got {self.uncertain!r}")
        if self.ops_per_rollout < 1:
            raise ValueError(f"edit_ops_per_rollout must be >= 1, got {self.ops_per_rollout}")

    @classmethod
    def config_keys(cls) -> list[str]:
        """The recipe-config keys of the settings: ``edit_<name>`` per field."""
        return [cls.PREFIX + f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_config(cls, config: Any) -> EditSettings:
        """The settings held by a config object's ``edit_<name>`` attributes."""
        return cls(**{f.name: getattr(config, cls.PREFIX + f.name) for f in dataclasses.fields(cls)})


# ----------------------------------------------------------------------------------------------------
# Reports as sections of sentences
# ----------------------------------------------------------------------------------------------------

@dataclass
class ReportSentences:
    """A report as ``[(header or None, [sentence, ...]), ...]``; :meth:`text` writes it back."""

    sections: list[tuple[str | None, list[str]]]

    @classmethod
    def parse(cls, text: str) -> ReportSentences:
        text = text or ""
        heads = find_sections(text, ("findings", "impression"), other_headers_end=False)
        parts: list[tuple[str | None, str]] = []
        if not heads:
            parts.append((None, text))
        else:
            preamble = text[:text.rfind("\n", 0, heads[0][1]) + 1]  # up to the first header's line
            if preamble.strip():
                parts.append((None, preamble))
            parts += [(name.upper(), text[start:end]) for name, start, end in heads]
        return cls([(head, sentences(body)) for head, body in parts])

    def text(self) -> str:
        lines = []
        for head, sents in self.sections:
            body = " ".join(sents)
            if head is None:
                if body:
                    lines.append(body)
            elif body:
                lines.append(f"{head}: {body}")
        return "\n".join(lines)

    def flat(self) -> list[tuple[int, int, str]]:
        """``(section index, sentence index, sentence)`` in reading order."""
        return [(i, j, s) for i, (_, sents) in enumerate(self.sections) for j, s in enumerate(sents)]

    def copy(self) -> ReportSentences:
        return ReportSentences([(h, list(s)) for h, s in self.sections])


# ----------------------------------------------------------------------------------------------------
# Similarity
# ----------------------------------------------------------------------------------------------------

_WORD = re.compile(r"[a-z0-9]+")
_STOP = frozenset("a an the of in on at to is are was were be been there this that with and or for as by from "
                  "it its seen noted".split())

#: ``similarity(sentence, candidates) -> one score in [0, 1] per candidate``.
Similarity = Callable[[str, Sequence[str]], list[float]]


def _content_words(s: str) -> set[str]:
    return {w for w in _WORD.findall(s.lower()) if w not in _STOP}


def token_overlap_similarity(sentence: str, candidates: Sequence[str]) -> list[float]:
    """Dice coefficient of the content-word sets (stop words dropped); 0.0 when either is empty."""
    a = _content_words(sentence)
    out = []
    for c in candidates:
        b = _content_words(c)
        out.append(2.0 * len(a & b) / (len(a) + len(b)) if a and b else 0.0)
    return out


class EmbeddingSimilarity:
    """Cosine similarity of mean-pooled sentence embeddings from a transformers encoder.

    ``model``: hub id or local path of any encoder (``AutoModel``), e.g. a biomedical sentence
    encoder such as BioLORD; embeddings are cached per sentence.
    """

    def __init__(self, model: str, device: str | None = None, batch_size: int = 32, max_length: int = 128):
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.name = model
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer = AutoTokenizer.from_pretrained(model)
        self.model = AutoModel.from_pretrained(model).to(self.device).eval()
        self.batch_size, self.max_length = batch_size, max_length
        self._cache: dict[str, Any] = {}

    def embed(self, texts: Sequence[str]):
        import torch

        todo = [t for t in dict.fromkeys(texts) if t not in self._cache]
        for i in range(0, len(todo), self.batch_size):
            chunk = todo[i:i + self.batch_size]
            enc = self.tokenizer(chunk, padding=True, truncation=True, max_length=self.max_length,
                                 return_tensors="pt").to(self.device)
            with torch.no_grad():
                hidden = self.model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            vecs = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0), dim=-1)
            for t, v in zip(chunk, vecs.float().cpu()):
                self._cache[t] = v
        if len(self._cache) > 100_000:
            keep = {t: self._cache[t] for t in texts if t in self._cache}
            self._cache = keep
        return torch.stack([self._cache[t] for t in texts]) if texts else torch.empty(0)

    def __call__(self, sentence: str, candidates: Sequence[str]) -> list[float]:
        if not candidates:
            return []
        vecs = self.embed([sentence, *candidates])
        return [max(0.0, float(x)) for x in (vecs[1:] @ vecs[0])]


def make_similarity(spec: str | Similarity | None) -> Similarity:
    """``None``/``"token_overlap"`` -> :func:`token_overlap_similarity`; a callable as is; else an embedding model id/path."""
    if spec is None or spec == "token_overlap":
        return token_overlap_similarity
    if callable(spec):
        return spec
    return EmbeddingSimilarity(str(spec))


# ----------------------------------------------------------------------------------------------------
# The editor
# ----------------------------------------------------------------------------------------------------


@dataclass
class EditOp:
    """One sentence-level operation: its kind, the observation behind it, and the sentences involved."""

    kind: str
    observation: str
    old_sentence: str | None = None
    new_sentence: str | None = None
    similarity: float | None = None


@dataclass
class EditResult:
    """The edited text, whether it differs from the input, and the operations applied."""

    text: str
    changed: bool
    ops: list[EditOp] = field(default_factory=list)

    @property
    def kind(self) -> str | None:
        return self.ops[0].kind if self.ops else None


class SentenceEditor:
    """Edits a report toward a reference, one sentence-level operation at a time (see the module docstring).

    ``settings``: :class:`EditSettings` (default: its defaults); keyword ``overrides`` replace single fields
    (``SentenceEditor(similarity_threshold=0.3)``; ``similarity`` may also be a callable, see
    :func:`make_similarity`). ``labeler``: ``list[str] -> list[dict]`` of CheXpert labels (default: our
    rule labeler). The settings used: ``uncertain`` (what an uncertain mention counts as),
    ``ops_per_rollout`` (operations per edit; EditGRPO: 1), ``similarity``/``similarity_threshold``,
    ``measurements`` (the measurement edit kind), ``verify``: keep an operation only when it raises the
    report's CheXpert label F1 against the reference (:meth:`label_f1`). A sentence-level swap can remove
    a correct finding that shared the sentence ("No effusion or pneumothorax" replaced for the
    pneumothorax conflict loses the effusion); the check skips such an edit and tries the next candidate
    (at most ``max_candidates``). ``verify=False`` applies the first candidate unchecked, as the paper does.
    """

    def __init__(self, settings: EditSettings | None = None, *, labeler: Callable[[list[str]], list[dict]] | None = None,
                 cache_size: int = 50_000, **overrides: Any):
        settings = settings or EditSettings()
        if overrides:
            settings = dataclasses.replace(settings, **overrides)
        self.settings = settings
        self._labeler = labeler
        self.similarity = make_similarity(settings.similarity)
        self.threshold = float(settings.similarity_threshold)
        self.uncertain = settings.uncertain
        self.ops_per_rollout = int(settings.ops_per_rollout)
        self.verify, self.max_candidates = bool(settings.verify), max(1, int(settings.max_candidates))
        self.measurement_edits = bool(settings.measurements)
        self._report_cache: dict[tuple[str, str], dict] = {}
        self.observations = [o for o in CHEXPERT_LABELS if o != "No Finding"]
        self._cache: dict[str, dict[str, str]] = {}
        self._cache_size = cache_size

    # -- labels ------------------------------------------------------------------------------------
    def _states(self, sentences: Sequence[str]) -> list[dict[str, str]]:
        """Per sentence: observation -> "pos" | "neg" for the observations it mentions."""
        todo = [s for s in dict.fromkeys(sentences) if s not in self._cache]
        if todo:
            if self._labeler is None:
                self._labeler = label_reports
            if len(self._cache) > self._cache_size:
                self._cache.clear()
            for s, labels in zip(todo, self._labeler(list(todo))):
                self._cache[s] = self._presence(labels)
        return [self._cache[s] for s in sentences]

    def _presence(self, labels: dict[str, Any]) -> dict[str, str]:
        out = {}
        for o in self.observations:
            v = labels.get(o)
            if v is None or (isinstance(v, float) and math.isnan(v)):
                continue
            if v == 1.0 or (v == -1.0 and self.uncertain == "positive"):
                out[o] = "pos"
            else:
                out[o] = "neg"
        return out

    @staticmethod
    def _report_state(states: list[dict[str, str]]) -> dict[str, str]:
        """Report level: "pos" when any sentence asserts the observation, else "neg" when one negates it."""
        out: dict[str, str] = {}
        for st in states:
            for o, v in st.items():
                if out.get(o) != "pos":
                    out[o] = v
        return out

    # -- editing -----------------------------------------------------------------------------------
    def label_f1(self, text: str, reference: str) -> float:
        """Per-sample F1 of the report-level CheXpert labels (14, uncertain as configured) vs the reference."""
        if self._labeler is None:
            self._labeler = label_reports
        key = ("\x00report", reference)
        ref_labels = self._report_cache.get(key)
        if ref_labels is None:
            if len(self._report_cache) > self._cache_size:
                self._report_cache.clear()
            ref_labels = self._report_cache[key] = self._labeler([reference])[0]
        hyp_labels = self._labeler([text])[0]
        return float(per_sample_f1([hyp_labels], [ref_labels], self.uncertain, "14")[0])

    def edit(self, text: str, reference: str) -> EditResult:
        """Apply up to ``ops_per_rollout`` operations (conflict > false positive > false negative).

        With ``verify`` an operation is kept only when it raises :meth:`label_f1`; otherwise the next
        candidate (same kind on another observation, then the next kind) is tried, at most
        ``max_candidates`` per operation.
        """
        if not isinstance(text, str) or not text.strip() or not isinstance(reference, str) or not reference.strip():
            return EditResult(text if isinstance(text, str) else "", False)
        rep, ref = ReportSentences.parse(text), ReportSentences.parse(reference)
        ref_flat = ref.flat()
        if not ref_flat or not rep.flat():
            return EditResult(text, False)
        ref_states = self._states([s for _, _, s in ref_flat])
        ref_state = self._report_state(ref_states)
        original = rep.text()
        score = self.label_f1(text, reference) if self.verify else 0.0
        ops: list[EditOp] = []
        touched: set[str] = set()
        for _ in range(self.ops_per_rollout):
            accepted = None
            for k, (cand, op) in enumerate(self._candidates(rep, ref, ref_flat, ref_states, ref_state, touched,
                                                            reference)):
                if k >= self.max_candidates:
                    break
                new_text = cand.text()
                if not new_text.strip() or new_text == rep.text():
                    continue
                if self.verify:
                    new_score = self.label_f1(new_text, reference)
                    if op.kind == "measurement":
                        if new_score < score or not (self.measurement_count(new_text, reference)
                                                     < self.measurement_count(rep.text(), reference)):
                            continue
                    elif not new_score > score:
                        continue
                    score = new_score
                accepted = (cand, op)
                break
            if accepted is None:
                break
            rep = accepted[0]
            ops.append(accepted[1])
            touched.update(x for x in (accepted[1].new_sentence,) if x)
        new = rep.text()
        if not ops or not new.strip() or new == original or new == text:
            return EditResult(text, False)
        return EditResult(new, True, ops)

    @staticmethod
    def measurement_count(text: str, reference: str) -> int:
        """Number of hallucinated device/position/measurement/size facts of ``text`` (:mod:`reward.measurements`)."""

        return compare(text, reference).count

    def _measurement_candidates(self, rep: ReportSentences, ref_flat, reference: str, movable, present: set[str]
                                ) -> Iterator[tuple[ReportSentences, EditOp]]:
        """A sentence with a hallucinated measurement fact -> the reference sentence stating that fact, else deleted."""

        ref_ex = extract(reference)
        n_sentences = len(rep.flat())
        for (i, j, old), _ in movable:
            found = compare(extract(old), ref_ex).hallucinations
            if not found:
                continue
            h = found[0]
            what = f"{h['kind']}:{h.get('device') or h.get('lesion') or 'lesion'}"
            new = None
            if h["reference"] is not None:
                a, b = h["reference"]["sentence"]
                stated = reference[a:b]
                new = next((s for _, _, s in ref_flat if s in stated or stated in s), None)
            cand = rep.copy()
            if new is not None and new != old and new not in present:
                cand.sections[i][1][j] = new
                yield cand, EditOp("measurement", what, old, new)
            elif n_sentences > 1:
                del cand.sections[i][1][j]
                yield cand, EditOp("measurement", what, old, None)

    def _candidates(self, rep: ReportSentences, ref: ReportSentences, ref_flat, ref_states, ref_state,
                    touched: set[str], reference: str | None = None) -> Iterator[tuple[ReportSentences, EditOp]]:
        """Candidate edits of ``rep`` in priority order, each applied to a copy."""
        all_flat = rep.flat()
        all_states = self._states([s for _, _, s in all_flat])
        gen_state = self._report_state(all_states)
        present = {s for _, _, s in all_flat}
        movable = [(pos, st) for pos, st in zip(all_flat, all_states) if pos[2] not in touched]
        # 1. presence conflict: the rollout's sentence about o -> the reference's sentence about o
        for o in self.observations:
            g, r = gen_state.get(o), ref_state.get(o)
            if g is None or r is None or g == r:
                continue
            new = next((s for (_, _, s), st in zip(ref_flat, ref_states) if st.get(o) == r), None)
            if new is None:
                continue
            for (i, j, old), st in movable:
                if st.get(o) != g or old == new:
                    continue
                cand = rep.copy()
                if new in present:  # the reference sentence is already there: drop the contradicting one
                    del cand.sections[i][1][j]
                else:
                    cand.sections[i][1][j] = new
                yield cand, EditOp("conflict", o, old, new)
        # 1b. a hallucinated device, tip position, tip distance or size (opt-in)
        if self.measurement_edits and reference:
            yield from self._measurement_candidates(rep, ref_flat, reference, movable, present)
        # 2. false positive: the closest reference sentence above the threshold, else delete
        for o in self.observations:
            if gen_state.get(o) != "pos" or o in ref_state:
                continue
            cands = [s for s in dict.fromkeys(s for _, _, s in ref_flat) if s not in present]
            for (i, j, old), st in movable:
                if st.get(o) != "pos":
                    continue
                sims = self.similarity(old, cands) if cands else []
                best = max(range(len(cands)), key=lambda k: (sims[k], -k)) if cands else None
                cand = rep.copy()
                if best is not None and sims[best] >= self.threshold:
                    cand.sections[i][1][j] = cands[best]
                    yield cand, EditOp("fp_replace", o, old, cands[best], float(sims[best]))
                elif len(all_flat) > 1:  # never delete the only sentence
                    del cand.sections[i][1][j]
                    yield cand, EditOp("fp_delete", o, old, None, float(sims[best]) if best is not None else None)
        # 3. false negative: append the reference sentence (to the same section when there is one)
        for o in self.observations:
            if ref_state.get(o) != "pos" or o in gen_state:
                continue
            for (i, _, new), st in zip(ref_flat, ref_states):
                if st.get(o) != "pos" or new in present:
                    continue
                head = ref.sections[i][0]
                cand = rep.copy()
                idx = next((k for k, (h, _) in enumerate(cand.sections) if h == head), len(cand.sections) - 1)
                cand.sections[idx][1].append(new)
                yield cand, EditOp("fn_add", o, None, new)
                break
