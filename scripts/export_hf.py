#!/usr/bin/env python
"""Thin wrapper of ``wav2vec2_lite.cli.export_hf`` (also installed as a console script); see --help."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from wav2vec2_lite.cli import export_hf  # noqa: E402

if __name__ == "__main__":
    export_hf()
