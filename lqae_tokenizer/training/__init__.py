"""``lqae-train``: training and fine-tuning LQAE tokenizers, from one CPU to many GPUs."""
