"""Fashion-MNIST from Debian's ``dataset-fashion-mnist`` package (idx files), for recipes and studies.

Labels: 0 T-shirt/top, 1 trouser, 2 pullover, 3 dress, 4 coat, 5 sandal, 6 shirt, 7 sneaker, 8 bag,
9 ankle boot. :data:`LABEL_NAMES` are one-word-ish names an LLM reads and writes (no name's tokens
are a prefix of another's).
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

SOURCE = Path("/usr/share/datasets/fashion-mnist")
SPLITS = {"train": "train", "test": "t10k"}
LABEL_NAMES = ("T-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot")


def read_split(split: str, source: Path = SOURCE) -> tuple[np.ndarray, np.ndarray]:
    """``(images uint8 [n, 28, 28], labels uint8 [n])`` of ``"train"`` (60,000) or ``"test"`` (10,000).

    Raises ``FileNotFoundError`` naming the package when the files are missing."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
    prefix = source / SPLITS[split]
    files = (Path(f"{prefix}-images-idx3-ubyte.gz"), Path(f"{prefix}-labels-idx1-ubyte.gz"))
    if not all(f.is_file() for f in files):
        raise FileNotFoundError(f"Fashion-MNIST is not in {source}: apt-get install dataset-fashion-mnist")
    images = np.frombuffer(gzip.open(files[0]).read(), np.uint8, offset=16)
    labels = np.frombuffer(gzip.open(files[1]).read(), np.uint8, offset=8)
    return images.reshape(-1, 28, 28), labels
