"""Tokenize an image folder as a Hugging Face dataset and save it (or push it to the Hub).

    pip install datasets
    python examples/tokenize_dataset.py IMAGE_FOLDER OUTPUT_DIR [--model NAME_OR_PATH] [--num-proc 2]
    # then: datasets.load_from_disk(OUTPUT_DIR), or add --push-to-hub org/name

The folder is read with the ``imagefolder`` builder (sub-folder names become a ``label`` column);
``tok.datasets_map_fn()`` adds ``input_ids`` (the image's ids) and ``text`` (what goes in a prompt).
"""

from __future__ import annotations

import argparse


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images")
    parser.add_argument("output")
    parser.add_argument("--model", help="tokenizer checkpoint (default: the bundled one)")
    parser.add_argument("--num-proc", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--push-to-hub", metavar="REPO_ID")
    args = parser.parse_args()

    from datasets import load_dataset

    from lqae_tokenizer import ImageTokenizer
    from lqae_tokenizer.demo import load_demo

    tok = ImageTokenizer.from_pretrained(args.model) if args.model else load_demo()
    ds = load_dataset("imagefolder", data_dir=args.images, split="train")
    ds = ds.map(tok.datasets_map_fn(), batched=True, batch_size=args.batch_size,
                num_proc=args.num_proc if args.num_proc > 1 else None)
    print(ds)
    print(ds[0]["text"][:200])
    ds.save_to_disk(args.output)
    if args.push_to_hub:
        ds.push_to_hub(args.push_to_hub)


if __name__ == "__main__":
    main()
