"""Summarise a Hydra multirun sweep: a markdown table of each run's final metrics, and a plot.

    python scripts/pretrain.py --config-name pretrain_tiny -m model.num_negatives=10,50,100 ...
    python scripts/summarize_sweep.py multirun/pretrain/2026-11-25_12-00-00 --plot accuracy
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wav2vec2_lite.tools.sweep import collect_sweep, plot_sweep, sweep_table  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sweep_dir", type=Path)
    p.add_argument("--metrics", nargs="*", help="validation metrics to show (default: all)")
    p.add_argument("--plot", metavar="METRIC", help="also write sweep_METRIC.png in the sweep folder")
    p.add_argument("--out", type=Path, help="write the table here (default: SWEEP/summary.md)")
    args = p.parse_args(argv)
    runs = collect_sweep(args.sweep_dir)
    table = sweep_table(runs, args.metrics)
    out = args.out or args.sweep_dir / "summary.md"
    out.write_text(table)
    print(table)
    print(f"wrote {out}")
    if args.plot:
        print(f"wrote {plot_sweep(runs, args.plot, args.sweep_dir / f'sweep_{args.plot}.png')}")


if __name__ == "__main__":
    main()
