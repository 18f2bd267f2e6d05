#!/usr/bin/env bash
# Set up (.venv, pinned CPU torch) and run the whole test suite, slow end-to-end tests included.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m pytest -m "slow or not slow" "$@"
