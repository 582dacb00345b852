"""The Markdown of ``mllm-cxr eval``: ``metrics.md`` (the main table, per-observation F1, lengths, the paired
comparison) from the result dict of :func:`evaluation.evaluate.evaluate_predictions`."""

from __future__ import annotations

from typing import Any


def _fmt(v: float | None, digits: int = 3) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def _fmt_ci(ci: list[float] | None, digits: int = 3) -> str:
    return "–" if not ci else f"[{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"


def _digits(key: str) -> int:
    return 1 if key.startswith(("length_pred", "length_ref")) else 3


#: Short reasons for the skipped-metric lines of tables (the full text is in metrics.json).
def _short(reason: str, limit: int = 160) -> str:
    r = " ".join(reason.split())
    return r if len(r) <= limit else r[:limit - 1] + "…"


def metrics_table(result: dict[str, Any]) -> str:
    """The main table (metric, value, 95% CI), skipped metrics named below it."""
    lines = [f"Predictions: `{result.get('name')}`, {result.get('n')} studies; 95% CIs from "
             f"{result.get('bootstrap', {}).get('n_boot')} bootstrap resamples of studies.", "",
             "| Metric | Value | 95% CI |", "|---|---|---|"]
    for k, m in result.get("metrics", {}).items():
        if m.get("main", True):
            lines.append(f"| {m['label']} | {_fmt(m['value'], _digits(k))} | {_fmt_ci(m['ci'], _digits(k))} |")
    det = result.get("details", {})
    for g in ("chexpert", "chexbert"):
        if g in det:
            lines.append(f"\nF1-{'CheXpert' if g == 'chexpert' else 'CheXbert'} labels from the "
                         f"{det[g].get('labeler')} labeler; {det[g].get('convention')}. Macro F1 averages all "
                         "14 (or 5) observations; one absent from both references and predictions counts as "
                         "0 (scikit-learn's zero_division=0, as F1-CheXbert).")
    skipped = result.get("skipped_metrics") or {}
    if skipped:
        lines.append("\nSkipped (not installed or not configured):")
        lines += [f"- {k}: {' '.join(str(v).split())}" for k, v in skipped.items()]  # the full reason
    return "\n".join(lines)


def markdown_report(result: dict[str, Any]) -> str:
    out = [f"# Evaluation: {result['name']}", "", metrics_table(result), ""]
    per = [(k.split("::", 1)[1], m) for k, m in result["metrics"].items() if "::" in k and k.startswith("chexpert")]
    if per:
        sup = result["details"]["chexpert"]["support"]
        prd = result["details"]["chexpert"]["predicted"]
        out += ["## F1-CheXpert per observation", "", "| Observation | F1 | 95% CI | reference positives | "
                "predicted positives |", "|---|---|---|---|---|"]
        out += [f"| {o} | {_fmt(m['value'])} | {_fmt_ci(m['ci'])} | {sup[o]} | {prd[o]} |" for o, m in per]
        out.append("")
    if "length" in result["details"]:
        d = result["details"]["length"]
        out += ["## Report length (words)", "", "| | mean | std | median | p5 | p95 | min | max |",
                "|---|---|---|---|---|---|---|---|"]
        for who in ("prediction", "reference"):
            s = d[who]
            out.append(f"| {who} | " + " | ".join(f"{s[k]:.1f}" for k in ("mean", "std", "median", "p5", "p95",
                                                                           "min", "max")) + " |")
        out.append("")
    if "prior" in result["details"]:
        d = result["details"]["prior"]
        out += [f"Prior-hallucination rate: over {d['n_no_prior']} studies without a prior "
                f"({d['n_unknown_prior_status']} with unknown prior status not counted); detector: {d['detector']}.",
                ""]
    if "measurement" in result["details"]:
        d = result["details"]["measurement"]
        out += [f"Device/measurement hallucinations (reward.measurements): by kind {d['by_kind']}; tube-to-carina "
                f"MAE over {d['n_carina_pairs']} studies where both reports state it; tolerances {d['tolerances']}.",
                ""]
    if any(result.get("skipped_rows", {}).values()):
        out += [f"Rows not evaluated: {result['skipped_rows']} (of {result['n_rows']}).", ""]
    c = result.get("compare")
    if c:
        out += [f"## Paired comparison: `{result['name']}` vs `{c['name']}`", "",
                f"{c['n_common']} studies in both files ({c['only_in_pred']} only in this one, "
                f"{c['only_in_other']} only in the other; {c['reference_mismatch']} with different reference "
                "text). Delta = this - other; 95% CI of the delta from the paired bootstrap; p from a two-sided "
                "paired permutation (randomisation) test: each study's outputs swapped between the two systems "
                f"at random ({c.get('permutation_resamples', result['bootstrap']['n_boot'])} swaps, exact when "
                "2^n is fewer), corpus metrics recomputed from per-study counts.", "",
                f"| Metric | {result['name']} | {c['name']} | Delta | 95% CI of delta | p |", "|---|---|---|---|---|---|"]
        for k, m in c["metrics"].items():
            if m.get("main", True):
                dg = _digits(k)
                p = "–" if m["p_value"] is None else f"{m['p_value']:.3f}"
                out.append(f"| {m['label']} | {_fmt(m['value'], dg)} | {_fmt(m['other'], dg)} | "
                           f"{_fmt(m['delta'], dg)} | {_fmt_ci(m['ci'], dg)} | {p} |")
        if c.get("skipped_metrics"):
            out += ["", "Skipped for the other file: " + ", ".join(c["skipped_metrics"])]
        out.append("")
    out.append(f"Bootstrap: {result['bootstrap']['n_boot']} resamples, seed {result['bootstrap']['seed']}, "
               f"{result['bootstrap']['method']}.")
    return "\n".join(out) + "\n"


