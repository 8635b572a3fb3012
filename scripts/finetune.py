#!/usr/bin/env python
"""CTC fine-tuning (Hydra). See ``configs/finetune.yaml`` and docs/training.md.

python scripts/finetune.py --config-name finetune_tiny finetune.pretrained=RUN data.manifest_dir=/tmp/toy
python scripts/finetune.py recipe=base_10h finetune.pretrained=RUN data.manifest_dir=/data/ls10h
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from wav2vec2_lite.cli import finetune  # noqa: E402

if __name__ == "__main__":
    finetune()
