"""Where an encode call spends its time: preprocessing, the ViT encoder, the exact codebook search.

    python benchmarks/profile_encode.py --preset paper --batch-size 8 --repeats 3
    python benchmarks/profile_encode.py --preset paper --precision bf16 --device cuda --batch-size 256

Times, in the same process on the same synthetic images (median of --repeats after a warm-up):
  total     ``tok(images)``: the public path, from uint8 HxWx3 arrays to ids
  prepare   ``prepare_batch``: uint8 -> float [0, 1], resize, stacking (no model)
  encoder   ``model.encoder`` on the prepared pixels (under the tokenizer's precision)
  search    ``quantizer.search`` on the encoder's output against the codebook table
and which search path ran (``search_backend`` of the quantizer). Random weights with the real shapes
(see bench_pipeline.py); the share of each part is what the README's speed section quotes.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from bench_pipeline import build, timed
from lqae_tokenizer.preprocessing import prepare_batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as folder:
        tok = build(args.preset, device, args.precision, Path(folder))
        size = tok.image_size
        rng = np.random.default_rng(0)
        images = [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(args.batch_size)]
        model = tok.model
        with torch.inference_mode(), tok._autocast():
            pixels = tok._to_device(prepare_batch(images, size))
            z = model.encoder(pixels)
            table = model.codebook_table
            parts = {
                "total": lambda: tok(images, batch_size=args.batch_size),
                "prepare": lambda: prepare_batch(images, size),
                "encoder": lambda: model.encoder(pixels),
                "search": lambda: model.quantizer.search(z, table),
            }
            seconds = {name: timed(fn, device, args.repeats)[0] for name, fn in parts.items()}
    total = seconds["total"]
    print(f"preset {args.preset}, {args.precision}, device {device}, batch {args.batch_size}, "
          f"{tok.tokens_per_image} tokens/image, codebook {tuple(table.shape)}, z {tuple(z.shape)} {z.dtype}")
    print("| part | median ms | share of total |")
    print("|---|---|---|")
    for name, value in seconds.items():
        print(f"| {name} | {value * 1e3:.1f} | {value / total:.0%} |")
    rest = total - seconds["prepare"] - seconds["encoder"] - seconds["search"]
    # The parts are timed separately: their sum differs from the total by timing noise as well.
    print(f"| total minus parts (copies, id transfer, noise) | {rest * 1e3:.1f} | {rest / total:.0%} |")


if __name__ == "__main__":
    main()
