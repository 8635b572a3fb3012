#!/usr/bin/env bash
# The README's main job: install, build the offline corpus, pretrain -> fine-tune -> transcribe.
#   bash scripts/demo.sh            (~20 min on 2 CPU cores)
#   FULL=1 bash scripts/demo.sh     (the long "does pretraining help?" run, resumable)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec ${PYTHON:-python3} scripts/demo.py "$@"
