#!/usr/bin/env bash
# The CUDA path in one command (docs/training.md, "On a GPU"): `pytest -m cuda tests/test_cuda.py`
# fail-fast, then a short BASE benchmark of ours against transformers (pretraining and fine-tuning,
# float32 / bf16 / fp16, eager and, while the budget lasts, compiled; peak GPU memory), in about
# 4.5 minutes on one H100, the JSON report (and a .md table) written after each measurement.
# Without CUDA: one line, exit 0, nothing written.
#
#   bash scripts/gpu_check.sh [--out PATH] [--budget SECONDS] [--no-compile] [--keep-going]
#
# --out defaults to $OUT/gpu_check.json when OUT is set, else ./gpu_check.json.
set -euo pipefail
# cuBLAS is deterministic only with a fixed workspace, read when it is first used (the resume test)
export CUBLAS_WORKSPACE_CONFIG="${CUBLAS_WORKSPACE_CONFIG:-:4096:8}"
exec "${PYTHON:-python3}" "$(dirname "$0")/gpu_check.py" "$@"
