#!/usr/bin/env python
"""Manifests (+ labels and dict.ltr.txt from transcripts) for a folder of audio: ``w2v2-manifest``.

python scripts/make_manifest.py AUDIO_DIR --dest OUT_DIR --valid-percent 0.01 --seed 0
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from wav2vec2_lite.cli import manifest  # noqa: E402

if __name__ == "__main__":
    manifest()
