"""Package a finished demo run as the bundled demo tokenizer (lqae_tokenizer/demo_models/fashion-mnist/).

    python examples/package_demo.py RUN_DIR [FASHION_DIR]

Copies RUN_DIR/final (config, trainable weights, text tokenizer files) into the package, records the
language model by its Hub id (the local path of the training machine means nothing elsewhere; the
codebook fingerprint still pins the exact table), adds one sample image per class from the
Fashion-MNIST test split, and draws docs/demo_reconstructions.png (inputs over reconstructions).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "lqae_tokenizer" / "demo_models" / "fashion-mnist"
FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")


def main() -> None:
    run = Path(sys.argv[1])
    fashion = Path(sys.argv[2] if len(sys.argv) > 2 else "/tmp/fashion")
    shutil.rmtree(TARGET, ignore_errors=True)
    (TARGET / "samples").mkdir(parents=True)
    for name in FILES:
        shutil.copyfile(run / "final" / name, TARGET / name)
    config = json.loads((TARGET / "config.json").read_text())
    config["language_model"] = "sentence-transformers/all-MiniLM-L6-v2"
    (TARGET / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    for label in range(10):
        first = sorted((fashion / "test" / str(label)).glob("*.png"))[0]
        shutil.copyfile(first, TARGET / "samples" / f"{label}_{first.stem}.png")

    from lqae_tokenizer.demo import load_demo, sample_images

    tok = load_demo("fashion-mnist", device="cpu")
    paths = sample_images("fashion-mnist")
    recon = tok.batch_decode(tok.encode(paths), output_type="np")  # [10, 32, 32, 3]
    from lqae_tokenizer.preprocessing import prepare_batch

    inputs = prepare_batch(paths, tok.image_size).permute(0, 2, 3, 1).numpy()
    grid = np.concatenate([np.concatenate(list(inputs), 1), np.concatenate(list(recon), 1)], 0)
    big = Image.fromarray(np.round(grid * 255).astype(np.uint8)).resize((grid.shape[1] * 4, grid.shape[0] * 4),
                                                                        Image.Resampling.NEAREST)
    (ROOT / "docs").mkdir(exist_ok=True)
    big.save(ROOT / "docs" / "demo_reconstructions.png")
    print(f"packaged {run / 'final'} into {TARGET}; picture in docs/demo_reconstructions.png")


if __name__ == "__main__":
    main()
