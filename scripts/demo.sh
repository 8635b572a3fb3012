#!/usr/bin/env bash
# The README's main job: install, build the offline corpus, a pipeline-check pretraining, fine-tune the
# shipped pretrained checkpoint and scratch on 1 and 10 min of labels, score, transcribe.
#   bash scripts/demo.sh            (docs/quickstart.md gives its measured time on 2 CPU cores)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec ${PYTHON:-python3} scripts/demo.py "$@"
