#!/usr/bin/env python
"""A Hydra multirun sweep as a markdown table (and a plot): ``w2v2-sweep-summary``.

python scripts/pretrain.py --config-name pretrain_tiny -m model.contrastive.num_negatives=10,50,100 ...
python scripts/summarize_sweep.py multirun/pretrain/2026-11-25_12-00-00 --plot accuracy
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from wav2vec2_lite.cli import sweep_summary  # noqa: E402

if __name__ == "__main__":
    sweep_summary()
