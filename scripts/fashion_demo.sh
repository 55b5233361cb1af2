#!/usr/bin/env bash
# The generation demo on Fashion-MNIST, offline on the CPU (about 30 minutes on 2 idle cores):
#   1. the dataset's IDX files -> class folders of 32x32 PNGs (2,000 training images per class);
#   2. train a small tokenizer on them (configs/fashion_tokenizer.yaml);
#   3. tokenize the class folders, each image also mirrored, into a labelled token set;
#   4. train a class-conditional MaskGiT on the tokens (configs/generators/fashion_maskgit.yaml);
#   5. generate a grid, one row per class;
#   6. measure: a small classifier trained on the 60,000 training images gives its test accuracy,
#      how often generated images get the class they were generated for, and Frechet distances
#      in its feature space (generated, reconstructed and random-token images vs real test images).
# The data: Debian/Ubuntu's package dataset-fashion-mnist (/usr/share/datasets/fashion-mnist),
# installed here with apt-get when absent and run as root; or any folder holding the four IDX
# files named by $FLOWMO_FASHION_MNIST. Outputs under $FLOWMO_FASHION_OUT (runs/fashion).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${FLOWMO_FASHION_MNIST:-}" ] && [ ! -d /usr/share/datasets/fashion-mnist ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get install -y -q dataset-fashion-mnist >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q dataset-fashion-mnist >/dev/null; }
  else
    echo "Fashion-MNIST not found: install Debian/Ubuntu's dataset-fashion-mnist (sudo apt-get install dataset-fashion-mnist)" >&2
    echo "or set FLOWMO_FASHION_MNIST to a folder holding train-images-idx3-ubyte(.gz), train-labels-idx1-ubyte(.gz)," >&2
    echo "t10k-images-idx3-ubyte(.gz) and t10k-labels-idx1-ubyte(.gz)" >&2
    exit 2
  fi
fi
bash scripts/setup.sh
. .venv/bin/activate
out=${FLOWMO_FASHION_OUT:-runs/fashion}
python -m examples.fashion.data --out "$out/images" --split train --limit-per-class 2000
# --resume / --overwrite: a second run of this script continues or redoes each step instead of refusing
flowmo train --config configs/fashion_tokenizer.yaml --set "train.data.folder=$out/images/train" \
  --out "$out/tokenizer" --resume --export "$out/tokenizer/model"
flowmo tokenize --model "$out/tokenizer/model" --classes --input "$out/images/train" --output "$out/tokens" \
  --hflip --overwrite
flowmo train-generator --config configs/generators/fashion_maskgit.yaml --set "train.tokens=$out/tokens" \
  --out "$out/generator" --resume --export "$out/generator/model"
flowmo generate --generator "$out/generator/model" --tokenizer "$out/tokenizer/model" \
  --classes 0 1 2 3 4 5 6 7 8 9 --per-class 10 --cfg 2 --seed 0 --out "$out/samples" --overwrite
echo
python -m examples.fashion.report --run "$out"
