"""``lqae-train`` / ``python -m lqae_tokenizer.train``: train or fine-tune an LQAE tokenizer.

    lqae-train --preset tiny --language_model ./minilm --train_data_dir ./images --output_dir run
    torchrun --nproc_per_node 8 -m lqae_tokenizer.train --preset paper --train_data_dir /data/imagenet/train ...

Settings come from the preset, then ``--config FILE.yaml|json``, then the flags below (flags win).
Everything else lives in the config dataclasses (``lqae_tokenizer.training.config``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from .training.config import MIXED_PRECISIONS, REPORT_TO, TRAIN_PRESETS, read_config_file, resolve_config

# flag -> (type, help). The flag name is the config field name.
FLAGS: dict[str, tuple[object, str]] = {
    "language_model": (str, "frozen LM: Hub id, local folder, .gguf file or pkg: name; an encoder or a causal LM "
                            "(default: the preset's)"),
    "codebook_vocabulary": (str, "'all' (paper) or 'words' (text round-trips exactly)"),
    "train_data_dir": (str, "image folder (recursive) or a .txt file listing image paths"),
    "validation_data_dir": (str, "held-out images for MSE/PSNR and reconstruction grids"),
    "output_dir": (str, "where checkpoints, metrics.jsonl, samples/ and final/ go"),
    "resolution": (int, "training image size (square)"),
    "train_batch_size": (int, "global batch per optimiser step, all ranks and accumulation included"),
    "gradient_accumulation_steps": (int, "micro-batches per optimiser step"),
    "learning_rate": (float, "absolute peak lr (default: 1.5e-4 x batch / 256)"),
    "max_train_steps": (int, "stop after this many optimiser steps (overrides epochs)"),
    "num_train_epochs": (float, "epochs to train"),
    "stop_after_steps": (int, "end after this step (checkpoint and final/); the schedule stays the full run's"),
    "mixed_precision": (str, f"one of {MIXED_PRECISIONS}"),
    "seed": (int, "seed of initialisation, data order, augmentation and masking"),
    "checkpointing_steps": (int, "save a checkpoint every N steps"),
    "checkpoints_total_limit": (int, "keep only the newest N checkpoints"),
    "resume_from_checkpoint": (str, "a checkpoint folder, or 'latest' in output_dir"),
    "init_from": (str, "fine-tune from a tokenizer checkpoint (folder or Hub id), fresh optimiser"),
    "report_to": (str, f"one of {REPORT_TO}"),
    "hub_model_id": (str, "repo id for --push_to_hub"),
    "hub_token": (str, "token for --push_to_hub (never written to disk or logs)"),
    "dataloader_num_workers": (int, "data loading worker processes per rank"),
    "log_every": (int, "write metrics every N steps"),
    "validation_steps": (int, "validate every N steps"),
    "max_grad_norm": (float, "gradient clipping norm (0 disables)"),
    "mask_ratio": (float, "fraction of tokens replaced by <mask> while training (paper: 0.5)"),
    "quantizer": (str, "'language' (LQAE) or 'learned' (VQ-VAE baseline: own codebook, no LM; needs mask_ratio 0)"),
}
SWITCHES = {"compile": "torch.compile the encoder and decoder", "push_to_hub": "upload final/ when done",
            "no_progress_bar": "disable the progress bar",
            "freeze_encoder": "with --init_from: train the decoder only, every image keeps its ids"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lqae-train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="paper", choices=sorted(TRAIN_PRESETS), help="starting settings")
    parser.add_argument("--config", metavar="FILE", help="yaml or json settings (nested by section or flat)")
    for name, (kind, text) in FLAGS.items():
        parser.add_argument(f"--{name}", type=kind, default=None, help=text)
    for name, text in SWITCHES.items():
        parser.add_argument(f"--{name}", action="store_true", help=text)
    return parser


def parse_config(argv: Sequence[str] | None = None):
    args = build_parser().parse_args(argv)
    overrides = {k: v for k, v in vars(args).items() if k in FLAGS and v is not None}
    overrides.update({k: True for k in ("compile", "push_to_hub", "freeze_encoder") if getattr(args, k)})
    if args.no_progress_bar:
        overrides["progress_bar"] = False
    file_values = read_config_file(args.config) if args.config else None
    return resolve_config(args.preset, file_values, overrides)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = parse_config(argv)
    except (ValueError, OSError) as err:
        print(f"lqae-train: {err}", file=sys.stderr)
        return 2
    from .training.trainer import Trainer, TrainingAborted

    trainer = None
    try:
        trainer = Trainer(config)
        return trainer.train()
    except (TrainingAborted, ValueError) as err:  # ValueError: a setting found invalid once the run starts
        print(f"lqae-train: aborted: {err}", file=sys.stderr)
        return 1
    except OSError as err:  # disk full, read-only or missing output folder...: nothing was reported as saved
        print(f"lqae-train: cannot write the run's files: {err}", file=sys.stderr)
        return 1
    finally:
        if trainer is not None:
            trainer.dist.close()


if __name__ == "__main__":
    sys.exit(main())
