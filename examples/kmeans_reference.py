"""How well could any code of one id per 8x8 patch do? A reference for the photo tokenizer's PSNR.

    python examples/kmeans_reference.py TRAIN_FOLDER [--codes 1024 4096 16384] [--images 6000] [--patch 8]

Fits k-means codebooks of K patches (8x8x3 pixels by default, Lloyd's algorithm) to the patches of 64x64 training
images (each image of TRAIN_FOLDER resized to 64x64, bicubic; e.g. the crops examples/prepare_photos.py
cuts) and codes the held-out photos of ``examples/evaluate_photos.py`` with them: every patch is
replaced by its nearest codebook patch. That is an ideal memoryless quantiser at log2(K) bits per
patch: no context, but fitted directly to pixels instead of learned through an encoder, a frozen LM and
a decoder. Its mean PSNR against log2(K) says what one word per patch can be expected to give at the
rate the tokenizer's words carry (their perplexity), next to the per-patch mean-colour baseline.
"""

from __future__ import annotations

import argparse
import math
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from evaluate_photos import held_out_photos, pooled_baseline, psnr, square
from lqae_tokenizer.training.projected_fit import kmeans, nearest  # noqa: F401 (nearest: re-exported for tests)

SIZE = 64


def to_patches(images: torch.Tensor, patch: int) -> torch.Tensor:
    """``[B, 3, 64, 64]`` -> ``[B * (64 / patch)^2, 3 * patch^2]`` non-overlapping patches (float32 in [0, 1])."""
    return F.unfold(images, patch, stride=patch).transpose(1, 2).reshape(-1, 3 * patch * patch)


def from_patches(patches: torch.Tensor, count: int, patch: int) -> torch.Tensor:
    """Inverse of :func:`to_patches` for ``count`` images."""
    columns = patches.reshape(count, -1, 3 * patch * patch).transpose(1, 2)
    return F.fold(columns, SIZE, patch, stride=patch)


def training_images(folder: Path, count: int, seed: int) -> torch.Tensor:
    from lqae_tokenizer.training.data import list_images  # the trainer's own listing: same files it trains on

    files = list_images(folder)
    random.Random(seed).shuffle(files)
    images = []
    for path in files[:count]:
        with Image.open(path) as image:
            rgb = image.convert("RGB").resize((SIZE, SIZE), Image.BICUBIC)
        images.append(torch.from_numpy(np.array(rgb)).permute(2, 0, 1).float() / 255)
    if not images:
        raise SystemExit(f"no images under {folder}: give the folder of training crops")
    return torch.stack(images)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("train_folder", type=Path)
    parser.add_argument("--codes", type=int, nargs="+", default=[1024, 4096, 16384])
    parser.add_argument("--images", type=int, default=6000)
    parser.add_argument("--iterations", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--patch", type=int, default=8, choices=[4, 8, 16])
    args = parser.parse_args()
    generator = torch.Generator().manual_seed(args.seed)
    points = to_patches(training_images(args.train_folder, args.images, args.seed), args.patch)
    photos = torch.stack([square(image, SIZE) for image in held_out_photos().values()])
    baseline = np.mean([psnr(pooled_baseline(p, args.patch), p) for p in photos])
    print(f"{points.shape[0]} training patches of {args.patch}x{args.patch}; {len(photos)} held-out photos; "
          f"per-patch mean colour: {baseline:.2f} dB")
    print("| codes K | bits per patch | held-out mean PSNR (dB) | fit time (s) |")
    print("|---|---|---|---|")
    for k in args.codes:
        start = time.perf_counter()
        centres = kmeans(points, k, args.iterations, generator)
        coded = from_patches(centres[nearest(to_patches(photos, args.patch), centres)], len(photos), args.patch)
        score = np.mean([psnr(c, p) for c, p in zip(coded, photos)])
        print(f"| {k} | {math.log2(k):.1f} | {score:.2f} | {time.perf_counter() - start:.0f} |", flush=True)


if __name__ == "__main__":
    main()
