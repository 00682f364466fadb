"""Tokenize your own images with the bundled photo tokenizer, offline, and look at the result.

    python examples/quickstart.py [IMAGE ...] [--output quickstart-output]

For each image (default: the photo tokenizer's bundled samples): its 256 words (what goes in a
prompt), a check that the words map back to the same ids, and a picture of the image beside its
reconstruction from those words (``OUTPUT/<name>.png``, 64x64 each, enlarged 4x). The bundled model is
small (64x64 colour, trained on a few hundred Debian wallpapers and photos): expect soft pictures.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lqae_tokenizer import ImageTokenizer
from lqae_tokenizer.demo import sample_images
from lqae_tokenizer.imaging import image_row
from lqae_tokenizer.preprocessing import prepare_batch
from lqae_tokenizer.imaging import tensor_to_image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", nargs="*", type=Path, help="image files (default: the bundled samples)")
    parser.add_argument("--output", type=Path, default=Path("quickstart-output"))
    args = parser.parse_args()
    images = args.images or sample_images("photo")

    tok = ImageTokenizer.from_pretrained("photo")  # offline: shipped inside the package
    args.output.mkdir(parents=True, exist_ok=True)
    for path in images:
        ids = tok.encode(path)                     # 256 ids of MiniLM's vocabulary
        text = tok.to_text(path)                   # the same ids as 256 words
        assert tok.from_text(text) == ids          # words -> ids is exact
        original = tensor_to_image(prepare_batch(path, tok.image_size)[0])  # what the model sees
        picture = image_row([original, tok.decode(ids)], scale=4)
        picture.save(args.output / f"{path.stem}.png")
        print(f"{path}: {' '.join(text.split()[:12])} ... ({len(text.split())} words) -> {args.output / path.stem}.png")


if __name__ == "__main__":
    main()
