#!/usr/bin/env bash
# Create ./.venv (Python 3.10+) with the CPU build of PyTorch and flowmo installed in editable mode.
# Usage: bash scripts/setup.sh [extra ...]   (extras: test, photos, hub, shards, docs)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
python -m pip install --quiet --upgrade pip >/dev/null
# the CPU build of torch 2.13.0 (any other torch spec may pull a multi-GB CUDA build)
python -c "import torch" 2>/dev/null || python -m pip install --quiet "torch==2.13.0"
extras=$(IFS=,; echo "${*:-}")
if [ -n "$extras" ]; then
  python -m pip install --quiet -e ".[${extras}]"
else
  python -m pip install --quiet -e .
fi
