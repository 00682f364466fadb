"""Measure a photo tokenizer on the held-out photo sets: reconstruction against simple baselines, what
its pixels come from (decoder-input ablation), and how much of its vocabulary it uses.

    pip install scikit-image && pip install --no-deps matplotlib && apt-get install opencv-doc
    python recipes/evaluate_photos.py [--model photo] [--set dev final] [--json out.json] [--grid DIR]

Sets (``lqae_tokenizer.evaluation.photo_sets``): ``dev``, 18 photos that chose the photo tokenizer's
ViT block, decoder inputs and patch size (a development set), and ``final``, 13 photos used for
nothing else. A set with a missing photo is refused, never averaged over fewer photos. Each photo is
centre-cropped to a square and resized (bicubic) to the model's size.

Per set: PSNR of ``decode(encode(photo))`` per photo and on average; baselines (each patch's exact
mean colour, block-constant and upsampled bicubically; one flat colour); the decoder-input ablation
(``lqae_tokenizer.evaluation.ablation``); codebook use over ``--crops`` random crops (distinct ids,
perplexity, share of the codebook).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from lqae_tokenizer import ImageTokenizer
from lqae_tokenizer.evaluation import codebook_statistics, psnr
from lqae_tokenizer.evaluation.ablation import decoder_input_ablation, patch_mean_colour
from lqae_tokenizer.evaluation.photo_sets import PHOTO_SETS, center_square, load_photo_set, random_crops
from lqae_tokenizer.imaging import image_grid, tensor_to_image


def evaluate(tok: ImageTokenizer, set_name: str, crops: int, seed: int) -> tuple[dict, torch.Tensor, torch.Tensor]:
    photos = load_photo_set(set_name)
    names = sorted(photos)
    size, patch = tok.image_size, tok.config.patch_size
    originals = torch.stack([center_square(photos[n], size) for n in names])
    recon = tok.batch_decode(tok.encode(originals), output_type="pt")
    baselines = {"per-patch mean colour, block-constant": patch_mean_colour(originals, patch),
                 "per-patch mean colour, bicubic": patch_mean_colour(originals, patch, upsample="bicubic"),
                 "one flat colour": originals.mean(dim=(2, 3), keepdim=True).expand_as(originals)}
    per_photo = {"model": psnr(recon, originals), **{k: psnr(v, originals) for k, v in baselines.items()}}
    stats = codebook_statistics([tok.encode(random_crops(photos, crops, size, seed))], tok.codebook_ids.numel())
    result = {"set": set_name, "photos": names, "per_photo": {k: v.tolist() for k, v in per_photo.items()},
              "mean_psnr": {k: float(v.mean()) for k, v in per_photo.items()},
              "ablation": decoder_input_ablation(tok, originals, seed=seed), "crops": crops, **stats}
    return result, originals, recon


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="photo", help="bundled name, folder or Hub id (default: photo)")
    parser.add_argument("--set", nargs="+", choices=sorted(PHOTO_SETS), default=["dev", "final"], dest="sets")
    parser.add_argument("--crops", type=int, default=1000, help="random crops for the codebook statistics")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write every number here")
    parser.add_argument("--grid", type=Path, help="write DIR/photo_<set>.png: originals above reconstructions")
    args = parser.parse_args()
    tok = ImageTokenizer.from_pretrained(args.model, device="cpu")
    results = {}
    for set_name in args.sets:
        result, originals, recon = evaluate(tok, set_name, args.crops, args.seed)
        results[set_name] = result
        print(f"\n## {set_name} set ({len(result['photos'])} photos)\n")
        columns = list(result["per_photo"])
        print("| photo | " + " | ".join(columns) + " |\n" + "|---" * (len(columns) + 1) + "|")
        for i, photo in enumerate(result["photos"]):
            print(f"| {photo} | " + " | ".join(f"{result['per_photo'][c][i]:.2f}" for c in columns) + " |")
        print("| **mean** | " + " | ".join(f"**{result['mean_psnr'][c]:.2f}**" for c in columns) + " |")
        print("\nablation (mean PSNR, dB):")
        for name, value in result["ablation"].items():
            print(f"  {value:6.2f}  {name}")
        print(f"codebook over {args.crops} crops: {result['distinct_ids']} distinct ids "
              f"({100 * result['usage']:.1f}%), perplexity {result['perplexity']:.0f}")
        if args.grid:
            args.grid.mkdir(parents=True, exist_ok=True)
            rows = [[tensor_to_image(t) for t in originals], [tensor_to_image(t) for t in recon]]
            image_grid(rows, scale=2).save(args.grid / f"photo_{set_name}.png")
    if args.json:
        args.json.write_text(json.dumps({"model": args.model, **results}, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
