"""Measure the bundled fashion-mnist tokenizer: reconstruction PSNR, what its pixels come from
(decoder-input ablation) and its vocabulary, on Fashion-MNIST test images it never saw.

    apt-get install dataset-fashion-mnist
    python recipes/evaluate_fashion_mnist.py [--model fashion-mnist] [--first 7000 --count 1000] [--json out.json]

Images: the test split's images ``first .. first + count - 1`` (default 7000-7999: outside the 320
images in tests/data, the first 100 per class the few-shot scripts read, and the LLM study's dev
(6000-6999) and final (8000-9999) sets), 28x28 grey, resized by the tokenizer to 32x32.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from lqae_tokenizer import ImageTokenizer
from lqae_tokenizer.evaluation import codebook_statistics
from lqae_tokenizer.evaluation.ablation import decoder_input_ablation
from lqae_tokenizer.evaluation.fashion_mnist import read_split
from lqae_tokenizer.preprocessing import prepare_batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="fashion-mnist")
    parser.add_argument("--first", type=int, default=7000)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    tok = ImageTokenizer.from_pretrained(args.model, device="cpu")
    images, _ = read_split("test")
    grey = torch.from_numpy(images[args.first : args.first + args.count].copy())  # [n, 28, 28] uint8
    pixels = prepare_batch(grey[:, None], tok.image_size)  # [n, 3, 32, 32]
    ablation = decoder_input_ablation(tok, pixels)
    stats = codebook_statistics([tok.encode(pixels)], tok.codebook_ids.numel())
    for name, value in ablation.items():
        print(f"{value:6.2f}  {name}")
    print(f"codebook: {stats['distinct_ids']:.0f} distinct ids, perplexity {stats['perplexity']:.1f}")
    if args.json:
        args.json.write_text(json.dumps({"model": args.model, "test_images": [args.first, args.first + args.count],
                                         "ablation": ablation, **stats}, indent=1) + "\n")


if __name__ == "__main__":
    main()
