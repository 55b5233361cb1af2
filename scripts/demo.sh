#!/usr/bin/env bash
# The CPU demo: set up ./.venv, train the demo model (configs/demo.yaml) on random crops of
# the photos that ship inside scikit-image / scikit-learn / matplotlib, then report how well it
# reconstructs held-out photos (python -m examples.photo_demo.report: PSNR, SSIM, decoder calls, the
# same-bits thumbnail, bits per pixel; PNGs of originals over reconstructions).
# About 10 minutes of training on 2 idle CPU cores (11 with setup). Extra arguments go to `flowmo train` (e.g. --set train.steps=200).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh photos
. .venv/bin/activate
out=${FLOWMO_DEMO_OUT:-runs/demo}
# --resume: a second run of this script continues (or, when finished, only re-exports) the first
flowmo train --config configs/demo.yaml --out "$out" --resume --export "$out/model" "$@"
echo
python -m examples.photo_demo.report --run "$out"
echo "the trained model: $out/model  (flowmo.FlowMo.from_pretrained(\"$out/model\"))"
