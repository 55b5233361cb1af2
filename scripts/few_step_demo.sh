#!/usr/bin/env bash
# Few-step decoders for the two CPU demo models, and the table that compares them
# (docs/performance.md, "Few-step decoders"). Needs the trained models of the two demos:
#   the photo demo model       runs/demo/model                 (bash scripts/demo.sh), or $FLOWMO_DEMO_MODEL
#   the Fashion-MNIST tokenizer runs/fashion/tokenizer/model   (bash scripts/fashion_demo.sh), or $FLOWMO_FASHION_TOKENIZER
#   with its training images   runs/fashion/images/train       or $FLOWMO_FASHION_IMAGES
# For each model and k = 4, 2, 1 it trains two students from the model (400 steps each):
#   distillation of the guided 31-call sampler (configs/few_step/*_distill.yaml) and the mode-seeking
#   chain on a fixed k-step grid (configs/few_step/*_mode_seeking.yaml); the two models' students train
#   side by side (one thread each). Then benchmarks/few_step_table.py prints one table per model.
# About 70 minutes on 2 idle cores (67 measured). Outputs under $FLOWMO_FEW_STEP_OUT (runs/few_step); a second run
# continues (--resume) instead of starting over.
set -euo pipefail
cd "$(dirname "$0")/.."
demo=${FLOWMO_DEMO_MODEL:-runs/demo/model}
fashion=${FLOWMO_FASHION_TOKENIZER:-runs/fashion/tokenizer/model}
images=${FLOWMO_FASHION_IMAGES:-runs/fashion/images/train}
out=${FLOWMO_FEW_STEP_OUT:-runs/few_step}
for need in "$demo/config.json:run bash scripts/demo.sh first, or set FLOWMO_DEMO_MODEL" \
            "$fashion/config.json:run bash scripts/fashion_demo.sh first, or set FLOWMO_FASHION_TOKENIZER" \
            "$images:run bash scripts/fashion_demo.sh first, or set FLOWMO_FASHION_IMAGES"; do
  [ -e "${need%%:*}" ] || { echo "missing ${need%%:*}: ${need#*:}" >&2; exit 2; }
done
bash scripts/setup.sh photos
. .venv/bin/activate
mkdir -p "$out"

students() {  # $1: demo or fashion; $2: the model folder; further arguments go to flowmo train
  local name=$1 init=$2
  shift 2
  for k in 4 2 1; do
    for objective in distill mode_seeking; do
      flowmo train --config "configs/few_step/${name}_${objective}.yaml" --set "model.posttrain.k=$k" \
        --set "train.init_from=$init" "$@" --out "$out/${name}_${objective}_$k" --resume \
        --export "$out/${name}_${objective}_$k/model"
    done
  done
}
echo "training the students (logs: $out/demo.log, $out/fashion.log) ..."
students demo "$demo" > "$out/demo.log" 2>&1 &
p1=$!
students fashion "$fashion" --set "train.data.folder=$images" > "$out/fashion.log" 2>&1 &
p2=$!
wait $p1 || { echo "the photo model's students failed: see $out/demo.log" >&2; exit 1; }
wait $p2 || { echo "the Fashion-MNIST students failed: see $out/fashion.log" >&2; exit 1; }
python benchmarks/few_step_table.py --model "$demo" --data photos --classifier "$out/classifier" \
  --students "$out"/demo_{distill,mode_seeking}_{4,2,1}/model --out "$out/demo_table.json"
echo
python benchmarks/few_step_table.py --model "$fashion" --data fashion --classifier "$out/classifier" \
  --students "$out"/fashion_{distill,mode_seeking}_{4,2,1}/model --out "$out/fashion_table.json"
