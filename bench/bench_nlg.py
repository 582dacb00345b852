"""Throughput of the lexical and graph metrics: BLEU, ROUGE, Temporal F1, RadGraph F1 (annotations given).

Report pairs are IU X-ray FINDINGS + IMPRESSION texts from ``../shared/data/iu_xray`` (each report
scored against the next one), or synthetic sentences when the shared data is absent. RadGraph F1 is
timed on annotations built deterministically from the same texts (the model is not timed here).

Baselines, measured in the same run on the same pairs:

* BLEU: NLTK ``sentence_bleu`` (4-gram, smoothing method 1), one call per pair;
* ROUGE: ``rouge_score.RougeScorer`` called directly (our scorer's overhead);
* Temporal F1: the upstream algorithm (RadEval): one regular expression ``\\b(kw1|kw2|...)\\b`` over the
  cleaned text, per report;
* RadGraph F1: ``radgraph_f1(level="simple")``, the cheapest level (the cost of the other levels and of
  the scorer wrapper relative to it).

    python bench/bench_nlg.py            # prints the Markdown section
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

N_PAIRS = 1000


def _synthetic(limit: int) -> list[str]:
    import random

    rng = random.Random(0)
    sents = ["The lungs are clear.", "No pleural effusion or pneumothorax.", "Heart size is normal.",
             "Stable mild cardiomegaly.", "New right lower lobe opacity.", "Unchanged left basilar atelectasis.",
             "No acute cardiopulmonary process.", "Degenerative changes of the thoracic spine."]
    return [" ".join(rng.choice(sents) for _ in range(rng.randint(2, 6))) for _ in range(limit)]


def _annotation(text: str) -> dict:
    """A deterministic RadGraph-like annotation: content words become entities, with relations."""
    words = text.split()
    ents: dict[str, dict] = {}
    last_anat = None
    for i, w in enumerate(words):
        if len(w) < 4 or len(ents) >= 40:
            continue
        eid = str(len(ents) + 1)
        anat = sum(map(ord, w)) % 3 == 0
        label = "Anatomy::definitely present" if anat else (
            "Observation::definitely absent" if "no" in words[max(0, i - 3):i] else "Observation::definitely present")
        rels = []
        if not anat and last_anat is not None:
            rels.append(["located_at", last_anat])
        if not anat and len(ents) and sum(map(ord, w)) % 5 == 0:
            rels.append(["modify", str(len(ents))])
        ents[eid] = {"tokens": w.lower().strip(".,"), "label": label, "start_ix": i, "end_ix": i, "relations": rels}
        if anat:
            last_anat = eid
    return {"text": text, "entities": ents}


def _best(fn, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def run() -> str:
    from _iu import iu_report_texts

    from reward.base import get_scorer
    from reward.nlg import corpus_bleu
    from reward.radgraph import RadGraphF1Scorer, radgraph_f1
    from reward.temporal import TEMPORAL_KEYWORDS, temporal_f1

    texts = iu_report_texts(N_PAIRS + 1)
    source = "IU X-ray FINDINGS+IMPRESSION"
    if len(texts) < N_PAIRS + 1:
        texts, source = _synthetic(N_PAIRS + 1), "synthetic sentences (shared data absent)"
    hyps, refs = texts[:N_PAIRS], texts[1:N_PAIRS + 1]
    n = len(hyps)
    mean_words = sum(len(t.split()) for t in texts) / len(texts)
    rows: list[tuple[str, str, float, str]] = []  # metric, implementation, seconds, baseline key

    # BLEU ---------------------------------------------------------------------------------------
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    smooth = SmoothingFunction().method1
    t_nltk = _best(lambda: [sentence_bleu([r.split()], h.split(), smoothing_function=smooth)
                            for h, r in zip(hyps, refs)])
    t_bleu = _best(lambda: corpus_bleu(hyps, refs))
    t_bleu_scorer = _best(lambda: get_scorer("bleu")(hyps, refs))
    rows += [("BLEU-4", "NLTK sentence_bleu (baseline)", t_nltk, "bleu"),
             ("BLEU-4", "corpus_bleu: corpus + per-sample BLEU-1..4", t_bleu, "bleu"),
             ("BLEU-4", "scorer `bleu`", t_bleu_scorer, "bleu")]

    # ROUGE --------------------------------------------------------------------------------------
    from rouge_score import rouge_scorer

    raw = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    get_scorer("rouge_l")(hyps[:2], refs[:2])  # warm the stemmer import
    t_raw = _best(lambda: [raw.score(r, h) for h, r in zip(hyps, refs)], repeat=2)
    t_rl = _best(lambda: get_scorer("rouge_l")(hyps, refs), repeat=2)
    t_r = _best(lambda: get_scorer("rouge")(hyps, refs), repeat=2)
    rows += [("ROUGE-L", "rouge_score RougeScorer direct (baseline)", t_raw, "rouge"),
             ("ROUGE-L", "scorer `rouge_l`", t_rl, "rouge"),
             ("ROUGE-1/2/L", "scorer `rouge`", t_r, "rouge")]

    # Temporal F1 --------------------------------------------------------------------------------
    pattern = re.compile(r"\b(" + "|".join(re.escape(k) for k in TEMPORAL_KEYWORDS) + r")\b")

    def _upstream_entities(text: str) -> set[str]:
        text = re.sub(r"[_-]+", " ", text)
        text = re.sub(r"[^\w\s.,:;()-]", "", text)
        return {m.group().lower() for m in pattern.finditer(text.lower())}

    t_regex = _best(lambda: [(_upstream_entities(h), _upstream_entities(r)) for h, r in zip(hyps, refs)])
    t_temp = _best(lambda: [temporal_f1(h, r) for h, r in zip(hyps, refs)])
    rows += [("Temporal F1", "keyword regex alternation, RadEval's algorithm (baseline)", t_regex, "temporal"),
             ("Temporal F1", "temporal_f1 (word-set lookup)", t_temp, "temporal")]

    # RadGraph F1 from annotations ----------------------------------------------------------------
    anns = {t: _annotation(t) for t in texts}
    pairs = [(anns[h], anns[r]) for h, r in zip(hyps, refs)]
    mean_ents = sum(len(a["entities"]) for a in anns.values()) / len(anns)
    t_simple = _best(lambda: [radgraph_f1(a, b, "simple") for a, b in pairs])
    t_all = _best(lambda: [radgraph_f1(a, b, "all") for a, b in pairs])
    scorer = RadGraphF1Scorer(annotator=lambda ts: [anns[t] for t in ts], cache_size=0)
    t_scorer = _best(lambda: scorer(hyps, refs))
    rows += [("RadGraph F1", "radgraph_f1 level=simple (baseline)", t_simple, "radgraph"),
             ("RadGraph F1", "radgraph_f1 level=all (3 levels)", t_all, "radgraph"),
             ("RadGraph F1", "scorer `radgraph_f1` (annotator returns stored graphs)", t_scorer, "radgraph")]

    base = {key: sec for metric, impl, sec, key in rows if "baseline" in impl}
    lines = [
        "## NLG, Temporal F1 and RadGraph F1 metrics (CPU, one process)",
        "",
        f"{n} report pairs ({source}; {mean_words:.0f} words per report on average), each report scored "
        f"against the next. RadGraph annotations are built from the texts ({mean_ents:.1f} entities per "
        "report on average); the RadGraph model itself is not timed. Best of 2-3 runs. "
        "Ratio = baseline time / this time (>1: faster than the baseline).",
        "",
        "| metric | implementation | pairs/s | ratio vs baseline |",
        "|---|---|---:|---:|",
    ]
    for metric, impl, sec, key in rows:
        lines.append(f"| {metric} | {impl} | {n / sec:,.0f} | {base[key] / sec:.2f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(run())
