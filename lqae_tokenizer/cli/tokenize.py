"""``lqae-tokenize``: print the tokens of image files, optionally writing their reconstructions.

Example:
    lqae-tokenize cat.jpg dog.png --model ./my-tokenizer --format json --reconstruct out/

Arguments and inputs are checked before the model loads, so a typo costs no loading time. With
several inputs, each line starts with the input's path and ``: `` (``--no-filename`` turns that
off). Unreadable inputs are reported on stderr by path and skipped; the others are still processed.
Exit status: 0 when every input was tokenized, 1 when any failed, 2 for usage errors.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from .common import FORMATS, UsageError, check_files, parse_device, read_images, tokenize_and_print


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lqae-tokenize",
        description="Turn images into tokens of a frozen language model's vocabulary.",
    )
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files to tokenize (folders: see --output)")
    parser.add_argument("--model", metavar="NAME_OR_PATH",
                        help="tokenizer checkpoint: a local folder or a Hugging Face Hub id "
                             "(default: the bundled tokenizer, see README)")
    parser.add_argument("--format", choices=FORMATS, default="text",
                        help="text: the LM's decoding (for prompts); tokens: token strings; ids: integers; "
                             "json: one object per image with path, ids, tokens and text (default: text)")
    labels = parser.add_mutually_exclusive_group()
    labels.add_argument("--with-filename", dest="label", action="store_true", default=None,
                        help="start each line with the input's path (the default with several inputs)")
    labels.add_argument("--no-filename", dest="label", action="store_false",
                        help="never start lines with the input's path")
    parser.add_argument("--reconstruct", metavar="DIR", type=Path,
                        help="also decode the ids and write each reconstruction as DIR/<name>.png")
    parser.add_argument("--device", default=None, help="torch device, e.g. cpu or cuda:0 (default: cuda if available)")
    parser.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default: 32)")
    parser.add_argument("--output", metavar="FILE.jsonl", type=Path,
                        help="collection mode: IMAGE may be folders (recursive); append one JSON line per image "
                             "to FILE.jsonl with a progress bar, skipping images already in it (resumable)")
    return parser


def load_tokenizer(model: str | None, device, prog: str = "lqae-tokenize"):
    """The tokenizer ``--model`` names, or the bundled one (said on stderr)."""
    from ..tokenizer import ImageTokenizer

    if model is None:
        from ..demo import DEMO_NOTICE, load_demo

        print(f"{prog}: no --model given, {DEMO_NOTICE}", file=sys.stderr)
        return load_demo(device=device)
    return ImageTokenizer.from_pretrained(model, device=device)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.batch_size < 1:
            raise UsageError("--batch-size must be >= 1")
        device = parse_device(args.device)
        if args.output is None:
            check_files(args.images)
    except UsageError as err:
        print(f"lqae-tokenize: {err}", file=sys.stderr)
        return 2
    loaded, failed = [], []
    if args.output is None:
        loaded, failed = read_images(args.images)
        if not loaded:
            print(f"lqae-tokenize: none of the {len(args.images)} inputs could be read", file=sys.stderr)
            return 1
    from ..checkpoint import CheckpointError

    try:
        tokenizer = load_tokenizer(args.model, device)
    except (CheckpointError, OSError, ImportError) as err:
        print(f"lqae-tokenize: cannot load {args.model or 'the bundled tokenizer'}: {err}", file=sys.stderr)
        return 2
    if not tokenizer.has_text and args.output is None and args.format not in ("ids", "json"):
        print(f"lqae-tokenize: --format {args.format} needs ids that are words, but {args.model}'s codebook is "
              "learned (a VQ-VAE baseline); use --format ids (or json)", file=sys.stderr)
        return 2
    if args.output is not None:
        from .collection import tokenize_collection

        try:
            failed_count = tokenize_collection(tokenizer, args.images, args.output, args.batch_size)
        except ValueError as err:  # e.g. a folder without images
            print(f"lqae-tokenize: {err}", file=sys.stderr)
            return 2
        return 1 if failed_count else 0
    label = args.label if args.label is not None else len(args.images) > 1
    tokenize_and_print(tokenizer, loaded, args.format, label, args.reconstruct, args.batch_size)
    if failed:
        print(f"lqae-tokenize: {len(failed)} of {len(args.images)} inputs failed", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
