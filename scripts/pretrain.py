#!/usr/bin/env python
"""Pretrain wav2vec 2.0 (Hydra). See ``configs/pretrain.yaml`` and docs/training.md.

python scripts/pretrain.py --config-name pretrain_tiny data.manifest_dir=/tmp/toy trainer.max_updates=50
torchrun --nproc_per_node=2 scripts/pretrain.py data.manifest_dir=/data/ls960
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from wav2vec2_lite.cli import pretrain  # noqa: E402

if __name__ == "__main__":
    pretrain()
