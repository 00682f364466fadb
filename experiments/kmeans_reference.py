"""How well could any code of one id per 8x8 patch do? A reference for the photo tokenizer's PSNR.

    python experiments/kmeans_reference.py TRAIN_FOLDER [--codes 1024 4096 16384] [--images 6000] [--patch 8]

Fits k-means codebooks of K patches (8x8x3 pixels by default, Lloyd's algorithm) to the patches of 64x64 training
images (each image of TRAIN_FOLDER resized to 64x64, bicubic; e.g. the crops recipes/prepare_photos.py
cuts) and codes the held-out dev photos (``lqae_tokenizer.evaluation.photo_sets``) with them: every patch is
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
from PIL import Image

from lqae_tokenizer.evaluation import psnr
from lqae_tokenizer.evaluation.ablation import patch_mean_colour
from lqae_tokenizer.evaluation.photo_sets import center_square, load_photo_set
from lqae_tokenizer.training.projected_fit import image_patches, kmeans, nearest, patches_to_images

SIZE = 64


def to_patches(images: torch.Tensor, patch: int) -> torch.Tensor:
    """``[B, 3, 64, 64]`` -> ``[B * (64 / patch)^2, 3 * patch^2]`` non-overlapping patches."""
    return image_patches(images, patch).reshape(-1, 3 * patch * patch)


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
    photos = torch.stack([center_square(image, SIZE) for image in load_photo_set("dev").values()])
    baseline = float(psnr(patch_mean_colour(photos, args.patch, upsample="bicubic"), photos).mean())
    print(f"{points.shape[0]} training patches of {args.patch}x{args.patch}; {len(photos)} held-out photos; "
          f"per-patch mean colour: {baseline:.2f} dB")
    print("| codes K | bits per patch | held-out mean PSNR (dB) | fit time (s) |")
    print("|---|---|---|---|")
    for k in args.codes:
        start = time.perf_counter()
        centres = kmeans(points, k, args.iterations, generator)
        coded = patches_to_images(centres[nearest(to_patches(photos, args.patch), centres)], len(photos), args.patch, SIZE)
        score = float(psnr(coded.clamp(0, 1), photos).mean())
        print(f"| {k} | {math.log2(k):.1f} | {score:.2f} | {time.perf_counter() - start:.0f} |", flush=True)


if __name__ == "__main__":
    main()
