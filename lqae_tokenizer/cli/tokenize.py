"""``lqae-tokenize``: print the tokens of image files, optionally writing their reconstructions.

Example:
    lqae-tokenize cat.jpg dog.png --model ./my-tokenizer --format json --reconstruct out/

Unreadable inputs are reported on stderr by path and skipped; the others are still processed.
Exit status: 0 when every input was tokenized, 1 when any failed, 2 for usage errors.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

import torch

from ..images import InvalidImageError, to_tensor

FORMATS = ("text", "tokens", "ids", "json")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lqae-tokenize",
        description="Turn images into tokens of a frozen language model's vocabulary.",
    )
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files to tokenize")
    parser.add_argument("--model", metavar="NAME_OR_PATH",
                        help="tokenizer checkpoint: a local folder or a Hugging Face Hub id "
                             "(default: the small bundled demo, see README)")
    parser.add_argument("--format", choices=FORMATS, default="text",
                        help="text: the LM's decoding (for prompts); tokens: token strings; ids: integers; "
                             "json: one object per image with path, ids, tokens and text (default: text)")
    parser.add_argument("--reconstruct", metavar="DIR", type=Path,
                        help="also decode the ids and write each reconstruction as DIR/<name>.png")
    parser.add_argument("--device", default=None, help="torch device, e.g. cpu or cuda:0 (default: cuda if available)")
    parser.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default: 32)")
    parser.add_argument("--output", metavar="FILE.jsonl", type=Path,
                        help="collection mode: IMAGE may be folders (recursive); append one JSON line per image "
                             "to FILE.jsonl with a progress bar, skipping images already in it (resumable)")
    return parser


def read_images(paths: Sequence[str]) -> tuple[list[tuple[str, torch.Tensor]], list[str]]:
    """Decode every path; failures are reported on stderr and returned by path."""
    loaded, failed = [], []
    for path in paths:
        try:
            loaded.append((path, to_tensor(path)))
        except (InvalidImageError, OSError, ValueError, TypeError) as err:
            print(f"lqae-tokenize: skipping {path}: {err}", file=sys.stderr)
            failed.append(path)
    return loaded, failed


def _format_line(fmt: str, path: str, ids: list[int], tokenizer) -> str:
    if fmt == "ids":
        return " ".join(map(str, ids))
    tokens = tokenizer.text_tokenizer.convert_ids_to_tokens(ids)
    if fmt == "tokens":
        return " ".join(tokens)
    text = tokenizer.ids_to_text(ids)
    if fmt == "text":
        return text
    return json.dumps({"path": path, "ids": ids, "tokens": tokens, "text": text}, ensure_ascii=False)


def _reconstruction_paths(paths: Sequence[str], folder: Path) -> list[Path]:
    """``folder/<stem>.png`` per input, with ``-1``, ``-2``... added when stems collide."""
    seen: dict[str, int] = {}
    out = []
    for path in paths:
        stem = Path(path).stem or "image"
        count = seen.get(stem, 0)
        seen[stem] = count + 1
        out.append(folder / (f"{stem}.png" if count == 0 else f"{stem}-{count}.png"))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.batch_size < 1:
        print("lqae-tokenize: --batch-size must be >= 1", file=sys.stderr)
        return 2
    from ..checkpoint import CheckpointError
    from ..tokenizer import ImageTokenizer

    try:
        if args.model is None:
            from ..demo import DEMO_NOTICE, load_demo

            print(f"lqae-tokenize: no --model given, {DEMO_NOTICE}", file=sys.stderr)
            tokenizer = load_demo(device=args.device)
        else:
            tokenizer = ImageTokenizer.from_pretrained(args.model, device=args.device)
    except (CheckpointError, OSError, ImportError) as err:
        print(f"lqae-tokenize: cannot load {args.model or 'the demo tokenizer'}: {err}", file=sys.stderr)
        return 2
    if not tokenizer.has_text and args.output is None and args.format != "ids":
        print(f"lqae-tokenize: --format {args.format} needs ids that are words, but {args.model}'s codebook is "
              "learned (a VQ-VAE baseline); use --format ids", file=sys.stderr)
        return 2
    if args.output is not None:
        from .collection import tokenize_collection

        try:
            failed_count = tokenize_collection(tokenizer, args.images, args.output, args.batch_size)
        except ValueError as err:  # e.g. a folder without images
            print(f"lqae-tokenize: {err}", file=sys.stderr)
            return 2
        return 1 if failed_count else 0
    loaded, failed = read_images(args.images)
    if args.reconstruct is not None:
        args.reconstruct.mkdir(parents=True, exist_ok=True)
        targets = _reconstruction_paths([p for p, _ in loaded], args.reconstruct)
    for start in range(0, len(loaded), args.batch_size):
        chunk = loaded[start : start + args.batch_size]
        ids = tokenizer.encode([t for _, t in chunk], batch_size=args.batch_size)
        for (path, _), row in zip(chunk, ids):
            print(_format_line(args.format, path, row, tokenizer), flush=True)
        if args.reconstruct is not None:
            for target, image in zip(targets[start : start + args.batch_size], tokenizer.batch_decode(ids)):
                image.save(target)
    if failed:
        print(f"lqae-tokenize: {len(failed)} of {len(args.images)} inputs failed", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
