#!/usr/bin/env bash
# The test command of the README (and of CI): install, then the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec ${PYTHON:-python3} -m pytest -q "$@"
