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

from .common import (FORMATS, UsageError, check_files, check_output_file, check_output_folder, parse_device,
                     read_images, tokenize_and_print)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lqae-tokenize",
        description="Turn images into tokens of a frozen language model's vocabulary.",
    )
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files to tokenize (folders: see --output)")
    parser.add_argument("--model", metavar="NAME_OR_PATH",
                        help="a bundled tokenizer (photo, fashion-mnist), a local folder or a Hugging Face Hub id "
                             "(default: the bundled photo tokenizer)")
    parser.add_argument("--format", choices=(*FORMATS, "parquet"), default="text",
                        help="text: the LM's decoding (for prompts); tokens: token strings; ids: integers; "
                             "json: one object per image with path, ids, tokens and text (default: text); "
                             "with --output: parquet writes Parquet (also chosen by an output ending in .parquet)")
    labels = parser.add_mutually_exclusive_group()
    labels.add_argument("--with-filename", dest="label", action="store_true", default=None,
                        help="start each line with the input's path (the default with several inputs)")
    labels.add_argument("--no-filename", dest="label", action="store_false",
                        help="never start lines with the input's path")
    parser.add_argument("--reconstruct", metavar="DIR", type=Path,
                        help="also decode the ids and write each reconstruction as DIR/<name>.png")
    parser.add_argument("--device", default=None, help="torch device, e.g. cpu or cuda:0 (default: cuda if available)")
    parser.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default: 32)")
    parser.add_argument("--output", metavar="OUT", type=Path,
                        help="collection mode: IMAGE may be folders (recursive), .txt lists of paths or .tar "
                             "shards; append one record per image to OUT.jsonl (or a folder of Parquet files for "
                             "OUT.parquet) with a progress bar, skipping images already there (resumable); under "
                             "torchrun every process writes its own part")
    return parser


def load_tokenizer(model: str | None, device, prog: str = "lqae-tokenize"):
    """The tokenizer ``--model`` names (a bundled name, a folder or a Hub id), or the bundled default
    (said on stderr)."""
    from ..bundled import BUNDLED, DEFAULT_BUNDLED
    from ..tokenizer import ImageTokenizer

    if model is None:
        print(f"{prog}: no --model given, using the bundled {DEFAULT_BUNDLED} tokenizer: {BUNDLED[DEFAULT_BUNDLED]}",
              file=sys.stderr)
        model = DEFAULT_BUNDLED
    return ImageTokenizer.from_pretrained(model, device=device)


def collection_device(device):
    """Under torchrun each process takes its own GPU (``cuda:LOCAL_RANK``), or the CPU with its share
    of the cores; without torchrun, the device asked for."""
    import os

    import torch

    from .sources import distributed_rank

    _, world_size, local_rank = distributed_rank()
    if world_size == 1:
        return device
    if device is None and torch.cuda.is_available():
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
    return device or torch.device("cpu")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.batch_size < 1:
            raise UsageError("--batch-size must be >= 1")
        device = parse_device(args.device)
        check_output_folder(args.reconstruct, "--reconstruct")
        if args.output is None:
            check_files(args.images)
            if args.format == "parquet":
                raise UsageError("--format parquet writes collections: give --output OUT.parquet")
        else:
            from .collection import output_format

            if output_format(args.output, args.format) == "parquet":
                check_output_folder(args.output, "--output")
            else:
                check_output_file(args.output, "--output")
            device = collection_device(device)
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
        from .collection import output_format, tokenize_collection

        try:
            failed_count = tokenize_collection(tokenizer, args.images, args.output, args.batch_size,
                                               output_format(args.output, args.format))
        except ValueError as err:  # e.g. a folder without images, parts of another world size
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
