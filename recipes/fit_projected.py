"""Stages 1-4 of a projected-search tokenizer (the bundled photo tokenizer's recipe), written as a tokenizer
folder that ``lqae-train --init_from FOLDER --freeze_encoder`` then trains further.

    python recipes/fit_projected.py TRAIN_FOLDER OUTPUT [--config recipes/configs/photo-projected.json]
        [--language_model DIR] [--work DIR] [stage sizes, see --help]

The model is the config's (its ``search_dim`` must equal the patch's pixel count 3 p^2: the table maps
words to patches). Stages (:mod:`lqae_tokenizer.training.projected_fit`): k-means centres of training
patches paired with the allowed words along principal axes; alternating least squares for the linear word
table ``c_w = normalize(E_w) A + b`` (A becomes the search projection); the encoder regresses patch - b;
the decoder's skip starts at the least-squares readout of the patches from the LM states of the table's
words; the decoder trains on those states. Each stage's result is kept in ``--work`` (default
OUTPUT.work), so an interrupted run restarts at the stage it was in. Logs every stage's numbers.
"""

from __future__ import annotations

import argparse
import logging
import math
import random
import time
from pathlib import Path

import torch

from lqae_tokenizer.training.config import read_config_file, resolve_config
from lqae_tokenizer.training.data import ImageFiles, list_images
from lqae_tokenizer.training.projected_fit import (fit_decoder, fit_linear_table, fit_search_encoder, image_patches,
                                                   init_skip_readout, kmeans, nearest, pair_by_principal_axes)
from lqae_tokenizer.training.trainer import build_tokenizer

logger = logging.getLogger("fit_projected")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("train_folder", type=Path)
    parser.add_argument("output", type=Path)
    parser.add_argument("--config", type=Path, default=Path(__file__).parent / "configs" / "photo-projected.json")
    parser.add_argument("--language_model", help="the frozen LM's folder (default: the config's)")
    parser.add_argument("--work", type=Path, help="where stage results are kept (default OUTPUT.work)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--patch_images", type=int, default=4000, help="training images for k-means")
    parser.add_argument("--kmeans_iterations", type=int, default=10)
    parser.add_argument("--table_images", type=int, default=1500, help="training images for the table (others)")
    parser.add_argument("--table_iterations", type=int, default=20)
    parser.add_argument("--encoder_steps", type=int, default=250)
    parser.add_argument("--encoder_batch", type=int, default=64)
    parser.add_argument("--readout_images", type=int, default=400)
    parser.add_argument("--decoder_steps", type=int, default=900)
    parser.add_argument("--decoder_batch", type=int, default=32)
    parser.add_argument("--decoder_learning_rate", type=float, default=5e-4)
    return parser.parse_args()


def cached(path: Path, compute):
    """The stage result stored at ``path``, computed (and stored atomically) when absent."""
    if path.is_file():
        logger.info("reusing %s", path)
        return torch.load(path, weights_only=True)
    value = compute()
    partial = path.with_suffix(".partial")
    torch.save(value, partial)
    partial.replace(path)
    return value


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    overrides = {"train_data_dir": str(args.train_folder), "seed": args.seed}
    if args.language_model:
        overrides["language_model"] = args.language_model
    config = resolve_config("demo", read_config_file(args.config), overrides)
    tokenizer = build_tokenizer(config, torch.device("cpu"))
    model = tokenizer.model
    patch, size = model.config.patch_size, model.config.image_size
    pixels = 3 * patch * patch
    if model.config.search_dim != pixels or not model.config.decoder_skip:
        raise SystemExit(f"the staged fit maps words to {patch}x{patch} patches: the config needs search_dim={pixels} "
                         f"(got {model.config.search_dim}) and decoder_skip=true (got {model.config.decoder_skip})")
    work = args.work or args.output.with_name(args.output.name + ".work")
    work.mkdir(parents=True, exist_ok=True)
    files = list_images(args.train_folder)
    if not files:
        raise SystemExit(f"no images under {args.train_folder}")
    allowed = model.quantizer.allowed_ids
    table = model.language_model.word_embeddings.detach().float()
    unit_words = torch.nn.functional.normalize(table[allowed], dim=-1)  # [K, H]

    def images(seed: int, count: int, generator: torch.Generator) -> torch.Tensor:
        data = ImageFiles(files, size, seed=seed, train=True, min_crop_scale=config.data.min_crop_scale)
        return torch.stack([data[(0, int(i))][0] for i in torch.randint(0, len(files), (count,), generator=generator)])

    # Stage 1: k-means centres paired with the words, then the linear table on other crops.
    def patch_sample(seed: int, count: int) -> torch.Tensor:
        order = list(range(len(files)))
        random.Random(seed).shuffle(order)
        data = ImageFiles(files, size, seed=seed, train=True, min_crop_scale=config.data.min_crop_scale)
        return image_patches(torch.stack([data[(0, i)][0] for i in order[:count]]), patch).reshape(-1, pixels)

    def paired_centres():
        patches = patch_sample(args.seed, args.patch_images)
        start = time.perf_counter()
        centres = kmeans(patches, len(allowed), args.kmeans_iterations, torch.Generator().manual_seed(args.seed))
        logger.info("k-means: %d centres of %d patches (%.0f s)", len(centres), len(patches), time.perf_counter() - start)
        return {"centres": centres, "pairing": pair_by_principal_axes(centres, unit_words)}  # centre k <-> word

    def linear_table():
        paired = cached(work / "kmeans.pt", paired_centres)
        patches = patch_sample(args.seed + 1, args.table_images)

        def report(iteration, rows, assign):
            error = float(((rows[assign] - patches) ** 2).mean())
            logger.info("table iteration %d: %d distinct words, training patches %.2f dB", iteration,
                        int(torch.bincount(assign, minlength=len(rows)).gt(0).sum()), -10 * math.log10(error))

        start = paired["pairing"][nearest(patches, paired["centres"])]
        weights, _ = fit_linear_table(patches, unit_words, start, args.table_iterations, on_iteration=report)
        return weights

    weights = cached(work / "table.pt", linear_table)  # [H + 1, 3 p^2]
    projection, offset = weights[:-1], weights[-1]
    with torch.no_grad():
        model.quantizer.projection.copy_(projection)

    # Stage 2: the encoder.
    def encoder_weights():
        generator = torch.Generator().manual_seed(args.seed + 2)
        fit_search_encoder(model.encoder, lambda step: images(args.seed + 2, args.encoder_batch, generator), offset,
                           patch, args.encoder_steps)
        return model.encoder.state_dict()

    model.encoder.load_state_dict(cached(work / "encoder.pt", encoder_weights))
    model.encoder.eval()

    # Stages 3 and 4: the decoder on the LM states of the table's own words (teacher forcing).
    def states_of_table_words(batch: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            queries = image_patches(batch, patch) - offset  # the table's word for each patch: its nearest c_w
            ids = model.quantizer.search(queries, model.language_model.word_embeddings)
            return model.decoder_input(model.embed(ids))[0].float()

    def decoder_weights():
        generator = torch.Generator().manual_seed(args.seed + 3)
        fit = images(args.seed + 3, args.readout_images, generator)
        states = torch.cat([states_of_table_words(part) for part in fit.split(50)])
        init_skip_readout(model.decoder, states, fit, patch)

        def batch(step):
            x = images(args.seed + 3, args.decoder_batch, generator)
            return states_of_table_words(x), x

        def log(step, loss):
            if step % 25 == 0 or step == args.decoder_steps:
                logger.info("decoder step %d/%d: training %.2f dB", step, args.decoder_steps,
                            -10 * torch.log10(torch.tensor(loss)))

        fit_decoder(model.decoder, batch, args.decoder_steps, args.decoder_learning_rate, on_step=log)
        return model.decoder.state_dict()

    model.decoder.load_state_dict(cached(work / "decoder.pt", decoder_weights))
    tokenizer.training_facts = {"recipe": "recipes/fit_projected.py (staged fit), then lqae-train --freeze_encoder"}
    tokenizer.save_pretrained(args.output)
    logger.info("wrote %s", args.output)


if __name__ == "__main__":
    main()
