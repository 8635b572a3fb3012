#!/usr/bin/env python
"""One self-contained HTML page for a training run: ``w2v2-report``.

python scripts/report.py runs/demo/pretrain --manifest-dir data/demo     # + codebook usage on valid
python scripts/report.py runs/demo/finetune_pretrained/seed1_lr0.001
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from wav2vec2_lite.cli import report  # noqa: E402

if __name__ == "__main__":
    report()
