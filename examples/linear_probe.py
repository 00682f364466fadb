"""Linear probe on the frozen language model's features of image tokens, against raw pixels.

    python examples/linear_probe.py                            # demo tokenizer, bundled Fashion-MNIST images
    python examples/linear_probe.py --model ./my-tokenizer --data ./labelled-folder

--data holds images and a labels.csv (file,label). Three quarters train the probe, a quarter tests it.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import torch

from lqae_tokenizer.evaluation import linear_probe
from lqae_tokenizer.preprocessing import prepare_batch

DATA = Path(__file__).resolve().parent.parent / "tests" / "data" / "fashion-mnist-320"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="tokenizer checkpoint (default: the bundled demo)")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--layers", type=int, nargs="+", help="LM hidden states to average (default: last)")
    args = parser.parse_args()

    from lqae_tokenizer import ImageTokenizer
    from lqae_tokenizer.demo import load_demo

    tok = ImageTokenizer.from_pretrained(args.model) if args.model else load_demo("fashion-mnist")
    rows = list(csv.DictReader(open(args.data / "labels.csv")))
    paths = [args.data / r["file"] for r in rows]
    labels = torch.tensor([int(r["label"]) for r in rows])
    order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(0))
    cut = len(rows) * 3 // 4
    train, test = order[:cut], order[cut:]

    features = tok.features(paths, layers=args.layers)
    pixels = prepare_batch(paths, tok.image_size).flatten(1)
    for name, x in (("LM features of the image tokens", features), ("raw pixels", pixels)):
        acc = linear_probe(x[train], labels[train], x[test], labels[test])
        print(f"{name:32s} [{x.shape[1]:5d} dims]: {acc:.3f} test accuracy ({len(test)} images)")


if __name__ == "__main__":
    main()
