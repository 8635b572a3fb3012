#!/usr/bin/env python
"""The label-curve experiment: pretrained vs from scratch at several label sizes, by protocol.

    python scripts/label_curve.py plan --spec SPEC.yaml --out PLAN.json   # commit PLAN before the first run
    python scripts/label_curve.py run --plan PLAN.json [--only PATTERN] [--jobs N]
    python scripts/label_curve.py status --plan PLAN.json
    python scripts/label_curve.py score-test --plan PLAN.json            # once
    python scripts/label_curve.py report --plan PLAN.json

The protocol, the spec's keys and what gets committed where: docs/results/label_curve.md.
User errors print one line and exit with status 2.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from wav2vec2_lite.tools.label_curve_cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
