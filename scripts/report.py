"""Write one self-contained HTML page for a training run.

    python scripts/report.py runs/demo/pretrain --manifest-dir data/demo     # + codebook usage on valid
    python scripts/report.py runs/demo/finetune_pretrained/seed1_lr0.001
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wav2vec2_lite.tools.report import write_report  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", type=Path)
    p.add_argument("--out", type=Path, help="default: RUN_DIR/report.html")
    p.add_argument("--manifest-dir", type=Path, help="pretraining runs: corpus folder for the codebook-usage plot")
    p.add_argument("--split", default="valid")
    args = p.parse_args(argv)
    print(f"wrote {write_report(args.run_dir, args.out, manifest_dir=args.manifest_dir, split=args.split)}")


if __name__ == "__main__":
    main()
