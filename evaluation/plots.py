"""The PNG plots of ``mllm-cxr eval`` (matplotlib, Agg): per-finding F1 bars, length distributions, the main
metrics with their CIs; each written atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cxr_io import atomic_write


def write_plots(result: dict[str, Any], extras: dict[str, Any], out_dir: Path) -> list[str]:
    """PNG plots (matplotlib, Agg): per-finding F1 bars, length distributions, main metrics with CIs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written: list[str] = []

    def save(fig: Any, fname: str) -> None:  # atomically, like every other output
        fig.tight_layout()
        with atomic_write(out_dir / fname, "wb") as fh:
            fig.savefig(fh, format="png", dpi=110)
        plt.close(fig)
        written.append(fname)

    name = result["name"]
    other = result.get("compare")
    series = [(name, result["metrics"])]
    if other:
        series.append((other["name"], other["other_metrics"]))
    for g, title in (("chexpert", "F1-CheXpert per observation"), ("chexbert", "F1-CheXbert per observation")):
        keys = [k for k in result["metrics"] if k.startswith(f"{g}_f1::")]
        if not keys:
            continue
        fig, ax = plt.subplots(figsize=(8, 6))
        y = np.arange(len(keys))
        h = 0.8 / len(series)
        for s, (label, mets) in enumerate(series):
            vals = [mets.get(k, {}).get("value") or 0.0 for k in keys]
            err = np.array([[max(0.0, v - (mets.get(k, {}).get("ci") or [v, v])[0]),
                             max(0.0, (mets.get(k, {}).get("ci") or [v, v])[1] - v)] for k, v in zip(keys, vals)]).T
            ax.barh(y + s * h, vals, height=h, xerr=err, capsize=2, label=label)
        ax.set_yticks(y + h * (len(series) - 1) / 2, [k.split("::", 1)[1] for k in keys])
        ax.invert_yaxis()
        ax.set_xlim(0, 1)
        ax.set_xlabel("F1 (95% bootstrap CI)")
        ax.set_title(f"{title}\n{result['details'][g]['convention']}", fontsize=9)
        ax.legend(loc="lower right", fontsize=8)
        save(fig, "per_finding_f1.png" if g == "chexpert" else "per_finding_f1_chexbert.png")
    p = extras["pred"]
    fig, ax = plt.subplots(figsize=(7, 4))
    data = [(f"{name} predictions", [len(h.split()) for h in p.hyps]), ("references", [len(r.split()) for r in p.refs])]
    if "other" in extras:
        data.insert(1, (f"{other['name']} predictions", [len(h.split()) for h in extras["other"].hyps]))
    top = max(max(d) for _, d in data)
    bins = np.linspace(0, max(top, 1) + 1, 30)
    for label, d in data:
        ax.hist(d, bins=bins, histtype="step", linewidth=1.8, label=label)
    ax.set_xlabel("report length (words)")
    ax.set_ylabel("studies")
    ax.legend(fontsize=8)
    save(fig, "length_distribution.png")
    keys = [k for k, m in result["metrics"].items() if m.get("main") and not k.startswith("length_pred")
            and not k.startswith("length_ref") and k != "length_ratio" and m["value"] is not None]
    if keys:
        fig, ax = plt.subplots(figsize=(7, 0.35 * len(keys) * len(series) + 1.2))
        y = np.arange(len(keys))
        h = 0.8 / len(series)
        for s, (label, mets) in enumerate(series):
            vals = [mets.get(k, {}).get("value") for k in keys]
            cis = [mets.get(k, {}).get("ci") for k in keys]
            xs = [v if v is not None else np.nan for v in vals]
            err = np.array([[v - c[0], c[1] - v] if (c and v is not None) else [0, 0] for v, c in zip(vals, cis)]).T
            ax.errorbar(xs, y + s * h, xerr=np.clip(err, 0, None), fmt="o", capsize=3, label=label)
        ax.set_yticks(y + h * (len(series) - 1) / 2, [result["metrics"][k]["label"] for k in keys], fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("value (95% bootstrap CI)")
        ax.legend(fontsize=8)
        save(fig, "metrics.png")
    return written


