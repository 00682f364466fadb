"""Write Fashion-MNIST as PNG folders for lqae-train, from Debian's dataset-fashion-mnist package.

    apt-get install dataset-fashion-mnist
    python recipes/prepare_fashion_mnist.py OUTPUT_DIR

Creates OUTPUT_DIR/train/<label>/<index>.png (60,000 images) and OUTPUT_DIR/test/<label>/<index>.png
(10,000), 28x28 greyscale. Labels: 0 T-shirt/top, 1 trouser, 2 pullover, 3 dress, 4 coat, 5 sandal,
6 shirt, 7 sneaker, 8 bag, 9 ankle boot.
"""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image

from lqae_tokenizer.evaluation.fashion_mnist import SOURCE, read_split


def main() -> None:
    if not SOURCE.is_dir():
        sys.exit(f"{SOURCE} not found: apt-get install dataset-fashion-mnist")
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "fashion-mnist")
    for split in ("train", "test"):
        images, labels = read_split(split)
        for label in range(10):
            (out / split / str(label)).mkdir(parents=True, exist_ok=True)
        for i, (image, label) in enumerate(zip(images, labels)):
            Image.fromarray(image, mode="L").save(out / split / str(label) / f"{i:05d}.png")
        print(f"{split}: {len(images)} images in {out / split}")


if __name__ == "__main__":
    main()
