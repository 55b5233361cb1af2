#!/usr/bin/env bash
# The CPU demo: set up ./.venv, train the demo model (configs/demo.yaml) on random crops of
# the photos that ship inside scikit-image / scikit-learn / matplotlib, then print held-out
# PSNR and SSIM at step 0 and at the end and write originals-over-reconstructions PNGs.
# About 10 minutes on 2 CPU cores. Extra arguments go to `flowmo train` (e.g. --set train.steps=200).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh photos
. .venv/bin/activate
out=${FLOWMO_DEMO_OUT:-runs/demo}
flowmo train --config configs/demo.yaml --out "$out" --export "$out/model" "$@"
echo "held-out originals (top) and reconstructions (bottom): $(ls "$out"/eval/*.png | tail -n 1)"
echo "the trained model: $out/model  (flowmo.FlowMo.from_pretrained(\"$out/model\"))"
