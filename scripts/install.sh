#!/usr/bin/env bash
# Install wav2vec2_lite and what its demo and tests need, without ever pulling a CUDA build:
# torch is pinned first (2.13.0 is the CPU wheel on this project's machines).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! $PY -c "import torch" 2>/dev/null; then
  $PY -m pip install -q "torch==2.13.0"
fi
$PY -m pip install -q -e ".[dev,synth,plot,experiments]"
