#!/usr/bin/env bash
# Set up ./.venv with the test dependencies and run the whole test suite on 2 processes.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
. .venv/bin/activate
python -m pytest -n 2 -q "$@"
