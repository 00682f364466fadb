"""Measure a tokenizer on held-out photographs: reconstruction against simple baselines, and how much
of its vocabulary it uses.

    pip install scikit-image            # its sample photos; Debian's opencv-doc gives the others
    python examples/evaluate_photos.py [--model DIR] [--json out.json] [--grid docs/photo_reconstructions.png]

Held-out photos (never used for training, see examples/prepare_photos.py): scikit-image's colour
samples (astronaut, chelsea the cat, coffee, rocket) and photographs among OpenCV's samples
(baboon, fruits, building, home, messi, orange, apple, butterfly, squirrel, aero, fish, stuff,
leuven, smarties). Each is centre-cropped to a square and resized (bicubic) to the model's size.

Reported, per photo and on average:
- PSNR of the reconstruction ``decode(encode(photo))``;
- PSNR of the per-patch mean-colour baseline: every model patch replaced by its mean colour, then
  upsampled bicubically (what one colour per token would give);
- PSNR of a 4x4 average pool upsampled bicubically, and of one flat colour (the whole-image mean).
Codebook use over ``--crops`` random crops of the held-out photos (areas 5-100%): distinct ids, the
perplexity of their histogram, and the share of the codebook used.
"""

from __future__ import annotations

import argparse
import json
import math
import random
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

OPENCV = Path("/usr/share/doc/opencv-doc/examples/data")
OPENCV_PHOTOS = ("baboon.jpg", "fruits.jpg", "building.jpg", "home.jpg", "messi5.jpg", "orange.jpg", "apple.jpg",
                 "butterfly.jpg", "squirrel_cls.jpg", "aero1.jpg", "HappyFish.jpg", "stuff.jpg", "leuvenA.jpg",
                 "smarties.png")
SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")


def held_out_photos() -> dict[str, Image.Image]:
    """Name -> RGB photo, from whichever of the two sources is installed."""
    photos = {}
    try:
        from skimage import data

        for name in SKIMAGE_PHOTOS:
            try:
                photos[name] = Image.fromarray(getattr(data, name)()).convert("RGB")
            except Exception as err:  # a sample that needs a download: skip it, say so
                print(f"skipping skimage {name}: {err}")
    except ImportError:
        print("scikit-image not installed: pip install scikit-image for its sample photos")
    for name in OPENCV_PHOTOS:
        path = OPENCV / name
        if path.is_file():
            with Image.open(path) as image:
                photos[Path(name).stem] = image.convert("RGB")
    if not photos:
        raise SystemExit("no held-out photos: pip install scikit-image and/or apt-get install opencv-doc")
    return photos


def square(image: Image.Image, size: int) -> torch.Tensor:
    """Centre square crop resized (bicubic) to ``size``: float32 ``[3, size, size]`` in [0, 1]."""
    w, h = image.size
    side = min(w, h)
    box = ((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side)
    array = np.asarray(image.crop(box).resize((size, size), Image.BICUBIC), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a.clamp(0, 1) - b) ** 2).mean())
    return 10 * math.log10(1.0 / max(mse, 1e-12))


def pooled_baseline(image: torch.Tensor, block: int) -> torch.Tensor:
    """Each ``block`` x ``block`` patch replaced by its mean colour, upsampled bicubically."""
    small = F.avg_pool2d(image[None], block)
    return F.interpolate(small, size=image.shape[-2:], mode="bicubic", align_corners=False)[0].clamp(0, 1)


def random_crops(photos: dict[str, Image.Image], count: int, size: int, seed: int) -> torch.Tensor:
    rng = random.Random(seed)
    names = sorted(photos)
    crops = []
    for i in range(count):
        image = photos[names[i % len(names)]]
        w, h = image.size
        side = max(16, int(min(w, h) * math.sqrt(rng.uniform(0.05, 1.0))))
        x, y = rng.randint(0, w - side), rng.randint(0, h - side)
        crops.append(square(image.crop((x, y, x + side, y + side)), size))
    return torch.stack(crops)


def evaluate(tok, photos: dict[str, Image.Image], crops: int, seed: int) -> dict:
    size, patch = tok.image_size, tok.config.patch_size
    names = sorted(photos)
    originals = torch.stack([square(photos[n], size) for n in names])
    ids = tok(originals, return_tensors="pt")["input_ids"]
    recon = tok.batch_decode(ids, output_type="pt")
    rows = []
    for i, name in enumerate(names):
        rows.append(dict(photo=name, model=psnr(recon[i], originals[i]),
                         patch_mean_colour=psnr(pooled_baseline(originals[i], patch), originals[i]),
                         avg_pool_4=psnr(pooled_baseline(originals[i], 4), originals[i]),
                         flat_colour=psnr(originals[i].mean((1, 2), keepdim=True).expand_as(originals[i]), originals[i])))
    crop_ids = tok(random_crops(photos, crops, size, seed), return_tensors="pt")["input_ids"].reshape(-1)
    _, counts = torch.unique(crop_ids, return_counts=True)
    p = counts.double() / counts.sum()
    mean = {k: float(np.mean([r[k] for r in rows])) for k in ("model", "patch_mean_colour", "avg_pool_4", "flat_colour")}
    return dict(photos=rows, mean_psnr=mean, crops=crops, distinct_ids=int(counts.numel()),
                perplexity=float(torch.exp(-(p * p.log()).sum())), codebook_size=int(tok.codebook_ids.numel()),
                codebook_share=int(counts.numel()) / int(tok.codebook_ids.numel()),
                originals=originals, reconstructions=recon)


def save_grid(originals: torch.Tensor, recon: torch.Tensor, path: Path, columns: int = 9, scale: int = 2) -> None:
    """Originals (top) above their reconstructions (bottom), ``columns`` photos, upscaled ``scale``x."""
    n = min(columns, originals.shape[0])
    rows = [torch.cat(list(originals[:n]), dim=2), torch.cat(list(recon[:n].clamp(0, 1)), dim=2)]
    grid = torch.cat(rows, dim=1)
    array = (grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    image = Image.fromarray(array)
    image.resize((image.width * scale, image.height * scale), Image.NEAREST).save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="tokenizer folder or Hub id (default: the bundled tokenizer)")
    parser.add_argument("--crops", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--grid", type=Path, help="write originals above reconstructions to this PNG")
    args = parser.parse_args()
    if args.model:
        from lqae_tokenizer import ImageTokenizer

        tok = ImageTokenizer.from_pretrained(args.model)
    else:
        from lqae_tokenizer.demo import load_demo

        tok = load_demo()
    result = evaluate(tok, held_out_photos(), args.crops, args.seed)
    print("| photo | model | per-patch mean colour | 4x4 average pool | flat colour |")
    print("|---|---|---|---|---|")
    for r in result["photos"]:
        print(f"| {r['photo']} | {r['model']:.2f} | {r['patch_mean_colour']:.2f} | {r['avg_pool_4']:.2f} | {r['flat_colour']:.2f} |")
    m = result["mean_psnr"]
    print(f"| **mean** | **{m['model']:.2f}** | {m['patch_mean_colour']:.2f} | {m['avg_pool_4']:.2f} | {m['flat_colour']:.2f} |")
    print(f"codebook over {result['crops']} held-out crops: {result['distinct_ids']} distinct ids "
          f"({100 * result['codebook_share']:.1f}% of {result['codebook_size']}), perplexity {result['perplexity']:.0f}")
    if args.grid:
        save_grid(result["originals"], result["reconstructions"], args.grid)
    if args.json:
        kept = {k: v for k, v in result.items() if k not in ("originals", "reconstructions")}
        args.json.write_text(json.dumps(kept, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
