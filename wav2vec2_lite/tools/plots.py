"""Training-curve plots from a run's ``metrics.jsonl`` (matplotlib, the ``plot`` extra)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

__all__ = [
    "read_records",
    "series",
    "plot_curves",
    "plot_codebook_usage",
    "PRETRAIN_PANELS",
    "FINETUNE_PANELS",
]

# (title, kind, metric) per panel
PRETRAIN_PANELS: list[tuple[str, str, str]] = [
    ("loss (per masked frame)", "train", "loss"),
    ("contrastive loss (nats/frame)", "train", "contrastive_loss"),
    ("contrastive accuracy (valid)", "valid", "accuracy"),
    ("code perplexity (hard, train)", "train", "code_perplexity"),
    ("Gumbel temperature", "train", "gumbel_temp"),
    ("learning rate", "train", "lr"),
    ("gradient norm", "train", "grad_norm"),
    ("throughput (audio s / s)", "train", "audio_s_per_s"),
]
FINETUNE_PANELS: list[tuple[str, str, str]] = [
    ("CTC loss (train)", "train", "loss"),
    ("CTC loss (valid)", "valid", "loss"),
    ("WER (valid)", "valid", "wer"),
    ("CER (valid)", "valid", "cer"),
    ("learning rate", "train", "lr"),
    ("gradient norm", "train", "grad_norm"),
]


def read_records(run_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no metrics (is {run_dir} a run folder?)")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def series(records: list[dict[str, Any]], kind: str, metric: str) -> tuple[list[int], list[float]]:
    """(updates, values) of one metric of one record kind."""
    pts = [
        (r["update"], r[metric])
        for r in records
        if r.get("kind") == kind and isinstance(r.get(metric), (int, float))
    ]
    return [p[0] for p in pts], [float(p[1]) for p in pts]


def _plt():
    import matplotlib  # optional: matplotlib (plot extra)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # optional: matplotlib (plot extra)

    return plt


def plot_curves(
    runs: dict[str, list[dict[str, Any]]],
    panels: Sequence[tuple[str, str, str]],
    out_png: Any,
    *,
    hlines: dict[str, float] | None = None,
    title: str | None = None,
) -> Path:
    """One panel per metric, one line per run (label -> records). ``hlines``: metric -> reference level.
    ``out_png``: a path or a binary file object."""
    plt = _plt()
    panels = [p for p in panels if any(series(recs, p[1], p[2])[0] for recs in runs.values())]
    cols = 2 if len(panels) > 1 else 1
    rows = max(1, (len(panels) + cols - 1) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.5 * cols, 2.8 * rows), squeeze=False)
    for ax, (name, kind, metric) in zip(axes.flat, panels):
        for label, recs in runs.items():
            x, y = series(recs, kind, metric)
            if x:
                ax.plot(x, y, marker="." if len(x) < 30 else None, label=label)
        if hlines and metric in hlines:
            ax.axhline(hlines[metric], color="grey", linestyle="--", linewidth=1, label="chance")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("update", fontsize=8)
        ax.tick_params(labelsize=8)
        if len(runs) > 1 or (hlines and metric in hlines):
            ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png if not isinstance(out_png, (str, Path)) else Path(out_png)


def plot_codebook_usage(counts, out_png: Any) -> Any:
    """How often each codebook entry is chosen: counts (G, V), one bar chart per group (sorted)."""
    plt = _plt()
    groups = counts.shape[0]
    fig, axes = plt.subplots(1, groups, figsize=(5 * groups, 2.6), squeeze=False)
    for g, ax in enumerate(axes[0]):
        c = sorted((float(v) for v in counts[g]), reverse=True)
        used = sum(v > 0 for v in c)
        ax.bar(range(len(c)), c, width=1.0)
        ax.set_title(f"group {g}: {used}/{len(c)} entries used", fontsize=9)
        ax.set_xlabel("entry (sorted by use)", fontsize=8)
        ax.tick_params(labelsize=8)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png if not isinstance(out_png, (str, Path)) else Path(out_png)
