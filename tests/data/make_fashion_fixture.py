"""Regenerate tests/data/fashion-mnist-320 from Debian's dataset-fashion-mnist (apt-get install dataset-fashion-mnist).

The first 32 test-set images of each of the 10 classes, as 28x28 greyscale PNGs, plus labels.csv.
"""

import gzip
from pathlib import Path

import numpy as np
from PIL import Image

SOURCE = Path("/usr/share/datasets/fashion-mnist")
TARGET = Path(__file__).parent / "fashion-mnist-320"


def main() -> None:
    images = np.frombuffer(gzip.open(SOURCE / "t10k-images-idx3-ubyte.gz").read(), np.uint8, offset=16).reshape(-1, 28, 28)
    labels = np.frombuffer(gzip.open(SOURCE / "t10k-labels-idx1-ubyte.gz").read(), np.uint8, offset=8)
    TARGET.mkdir(exist_ok=True)
    rows = ["file,label"]
    for cls in range(10):
        for i in np.flatnonzero(labels == cls)[:32]:
            name = f"{cls}_{i:05d}.png"
            Image.fromarray(images[i], mode="L").save(TARGET / name, optimize=True)
            rows.append(f"{name},{cls}")
    (TARGET / "labels.csv").write_text("\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
