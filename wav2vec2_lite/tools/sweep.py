"""Collect the final metrics of a Hydra multirun sweep into one table (and a plot).

A sweep folder holds one sub-folder per run (``multirun/pretrain/DATE/0``, ``1``, ...),
each with ``metrics.jsonl`` and Hydra's ``.hydra/overrides.yaml``. A run's row is its
overrides plus the last validation record (and the last training record). Runs that differ
only in their seed are also grouped: mean ± sd over seeds per setting (:func:`seed_table`).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wav2vec2_lite.serialization import atomic_write_bytes

__all__ = [
    "SweepRun",
    "collect_sweep",
    "sweep_table",
    "seed_table",
    "plot_sweep",
    "TABLE_START",
    "PLOT_SOFTWARE",
]

TABLE_START = "| run |"
"""How every table of :func:`sweep_table` starts (how ``w2v2-sweep-summary`` recognises its own)."""
PLOT_SOFTWARE = "w2v2-sweep-summary"
"""The PNG ``Software`` text of :func:`plot_sweep` (how ``w2v2-sweep-summary`` recognises its own plot)."""


@dataclass
class SweepRun:
    path: Path
    overrides: dict[str, str]
    valid: dict[str, float] = field(default_factory=dict)
    train: dict[str, float] = field(default_factory=dict)
    updates: int = 0


def _overrides(run: Path) -> dict[str, str]:
    path = run / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return {}
    out = {}
    for line in path.read_text().splitlines():
        item = line.strip().lstrip("-").strip().strip("'\"")
        if "=" in item:
            key, value = item.split("=", 1)
            out[key.lstrip("+~")] = value
    return out


def _last(records: list[dict[str, Any]]) -> dict[str, float]:
    if not records:
        return {}
    return {
        k: v for k, v in records[-1].items() if isinstance(v, (int, float)) and k not in ("time", "epoch")
    }


def collect_sweep(sweep_dir: str | Path, notes: list[str] | None = None) -> list[SweepRun]:
    """Every run below ``sweep_dir`` that wrote ``metrics.jsonl``, in path order. A last line cut
    short (a killed run) is left out and described in ``notes`` when a list is given; any other
    unreadable record is an error naming ``file:line``."""
    from wav2vec2_lite.train.logging import read_metrics  # start-up: torch, only once a sweep is read

    runs = []
    for metrics in sorted(Path(sweep_dir).rglob("metrics.jsonl")):
        rows = read_metrics(metrics, torn=notes)
        valid = [r for r in rows if r.get("kind") == "valid"]
        train = [r for r in rows if r.get("kind") == "train"]
        updates = max((int(r.get("update", 0)) for r in rows), default=0)
        runs.append(SweepRun(metrics.parent, _overrides(metrics.parent), _last(valid), _last(train), updates))
    if not runs:
        raise FileNotFoundError(
            f"{sweep_dir}: no run with metrics.jsonl below it (is this a multirun folder?)"
        )
    return runs


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _markdown(head: list[str], rows: list[list[str]]) -> str:
    lines = [head, ["---"] * len(head), *rows]
    return "".join("| " + " | ".join(cells) + " |\n" for cells in lines)


def sweep_table(runs: list[SweepRun], metrics: list[str] | None = None) -> str:
    """A markdown table: one row per run, the swept keys, then validation metrics."""
    keys = sorted({k for r in runs for k in r.overrides})
    swept = [k for k in keys if len({r.overrides.get(k) for r in runs}) > 1] or keys
    if metrics is None:
        metrics = sorted({k for r in runs for k in r.valid if k != "update"})
    head = ["run", *swept, "updates", *[f"valid {m}" for m in metrics]]
    rows = [
        [r.path.name, *[r.overrides.get(k, "") for k in swept], str(r.updates)]
        + [_fmt(r.valid.get(m, "")) for m in metrics]
        for r in runs
    ]
    return _markdown(head, rows)


def seed_table(runs: list[SweepRun], metrics: list[str] | None = None, seed_key: str = "trainer.seed") -> str:
    """A markdown table of the runs grouped by every swept key but ``seed_key``: the seeds of each
    setting and, per validation metric, mean ± sample sd (n − 1) over them; "" when no setting
    has two runs (nothing to group)."""
    keys = sorted({k for r in runs for k in r.overrides} - {seed_key})
    swept = [k for k in keys if len({r.overrides.get(k) for r in runs}) > 1]
    groups: dict[tuple[str, ...], list[SweepRun]] = {}
    for r in runs:
        groups.setdefault(tuple(r.overrides.get(k, "") for k in swept), []).append(r)
    if all(len(g) < 2 for g in groups.values()):
        return ""
    if metrics is None:
        metrics = sorted({k for r in runs for k in r.valid if k != "update"})
    head = [*(swept or ["setting"]), "seeds", *[f"valid {m} (mean ± sd)" for m in metrics]]
    rows = []
    for setting, group in groups.items():
        seeds = ", ".join(r.overrides.get(seed_key, "?") for r in group)
        cells = [*(setting or ("all",)), seeds]
        for m in metrics:
            values = [r.valid[m] for r in group if m in r.valid]
            sd = statistics.stdev(values) if len(values) > 1 else float("nan")
            cells.append(f"{_fmt(statistics.fmean(values))} ± {_fmt(sd)}" if values else "")
        rows.append(cells)
    return _markdown(head, rows)


def plot_sweep(runs: list[SweepRun], metric: str, out_png: str | Path) -> Path:
    """Bar chart of one validation metric per run (needs matplotlib, the ``plot`` extra)."""
    import matplotlib  # optional: matplotlib (plot extra)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # optional: matplotlib (plot extra)

    labels = [
        ", ".join(f"{k.split('.')[-1]}={v}" for k, v in r.overrides.items()) or r.path.name for r in runs
    ]
    values = [r.valid.get(metric, float("nan")) for r in runs]
    fig, ax = plt.subplots(figsize=(max(4, 1.2 * len(runs)), 3.5))
    ax.bar(range(len(runs)), values)
    ax.set_xticks(range(len(runs)), labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(f"valid {metric}")
    fig.tight_layout()
    atomic_write_bytes(
        out_png, lambda f: fig.savefig(f, format="png", dpi=120, metadata={"Software": PLOT_SOFTWARE})
    )
    plt.close(fig)
    return Path(out_png)
