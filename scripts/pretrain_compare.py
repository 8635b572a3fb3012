#!/usr/bin/env python
"""Pretraining variants (the recipe, the objective) compared by frozen probes on valid.

    python scripts/pretrain_compare.py run --spec SPEC.yaml [--only PATTERN] [--jobs N]
    python scripts/pretrain_compare.py status --spec SPEC.yaml
    python scripts/pretrain_compare.py report --spec SPEC.yaml

The spec of issue 20's comparison: docs/results/pretrain_compare/spec.yaml.
User errors print one line and exit with status 2.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from wav2vec2_lite.tools.pretrain_compare import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
