# Sourced by the train_llm*.sh recipes once WORK is set: the data every bundled ImageLM is trained and
# measured on. Fashion-MNIST as PNG folders ($WORK/fashion, from Debian's dataset-fashion-mnist), their
# words by the bundled fashion-mnist tokenizer ($WORK/train.jsonl, $WORK/test.jsonl; lqae-tokenize
# resumes a partial file and skips a finished one), the study's dev/final splits of the test words
# ($WORK/study), and LABELS, the file that names the raw labels.
LABELS=recipes/configs/fashion-mnist-labels.json
[ -d "$WORK/fashion/test" ] || python recipes/prepare_fashion_mnist.py "$WORK/fashion"
for split in train test; do
  lqae-tokenize "$WORK/fashion/$split" --model fashion-mnist --output "$WORK/$split.jsonl" --batch-size 256
done
[ -f "$WORK/study/final.jsonl" ] ||
  python experiments/llm_study.py splits --work "$WORK/study" --train "$WORK/train.jsonl" --test "$WORK/test.jsonl"
