"""The two sets of held-out photographs the bundled photo tokenizer is measured on, and their loading.

- ``"dev"`` (18 photos): scikit-image's colour samples (astronaut, chelsea, coffee, rocket) and 14
  photographs among OpenCV's samples (Debian ``opencv-doc``). Never trained on, but **used to choose**
  the photo tokenizer's ViT block, decoder inputs and patch size: a development set, whose numbers are
  optimistic.
- ``"final"`` (12 photos): scikit-image's other colour photographs (a motorcycle, an
  immunohistochemistry slide, a retina; not the Hubble deep field, a bundled sample image that
  developers have looked at), matplotlib's Grace Hopper portrait, and the OpenCV colour photographs not
  in the dev set, leaving out pairs of dev photos (aero3, leuvenB), renders, synthetic and greyscale
  images. Chosen once, before the current model was measured on it, and used for nothing but reporting.

Neither set shares a file with the photo tokenizer's training data (its SOURCES.md). ``load_photo_set``
refuses, naming the missing files and the packages that install them, rather than averaging over fewer
photos than the set holds.
"""

from __future__ import annotations

import importlib.util
import math
import random
from pathlib import Path

import numpy as np
import torch
from PIL import Image

OPENCV_DATA = Path("/usr/share/doc/opencv-doc/examples/data")
PHOTO_SETS: dict[str, dict[str, tuple[str, str]]] = {
    # name -> (where: "skimage", "matplotlib" or "opencv", file name)
    "dev": {
        **{n: ("skimage", f) for n, f in (("astronaut", "astronaut.png"), ("chelsea", "chelsea.png"),
                                          ("coffee", "coffee.png"), ("rocket", "rocket.jpg"))},
        **{Path(f).stem: ("opencv", f) for f in (
            "baboon.jpg", "fruits.jpg", "building.jpg", "home.jpg", "messi5.jpg", "orange.jpg", "apple.jpg",
            "butterfly.jpg", "squirrel_cls.jpg", "aero1.jpg", "HappyFish.jpg", "stuff.jpg", "leuvenA.jpg",
            "smarties.png")},
    },
    "final": {
        **{n: ("skimage", f) for n, f in (("motorcycle", "motorcycle_left.png"), ("ihc", "ihc.png"),
                                          ("retina", "retina.jpg"))},
        "grace_hopper": ("matplotlib", "grace_hopper.jpg"),
        **{Path(f).stem: ("opencv", f) for f in (
            "aloeL.jpg", "rubberwhale1.png", "chicky_512.png", "pca_test1.jpg", "graf1.png", "ela_original.jpg",
            "board.jpg", "licenseplate_motion.jpg")},
    },
}
INSTALL = {"skimage": "pip install scikit-image", "matplotlib": "pip install --no-deps matplotlib (only its sample "
           "data is read)", "opencv": "apt-get install opencv-doc"}


def _package_data(module: str, *parts: str) -> Path | None:
    spec = importlib.util.find_spec(module)  # found without importing the package
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)), *parts)


def photo_path(where: str, name: str) -> Path | None:
    """Where a set's photo lies on this machine (None when its package is missing)."""
    folder = {"skimage": lambda: _package_data("skimage", "data"),
              "matplotlib": lambda: _package_data("matplotlib", "mpl-data", "sample_data"),
              "opencv": lambda: OPENCV_DATA}[where]()
    return None if folder is None else folder / name


def load_photo_set(name: str) -> dict[str, Image.Image]:
    """``{photo name: RGB PIL image}`` of a set, sorted by name; ``FileNotFoundError`` naming every missing
    photo and how to install it when any is missing (a partial set would change the mean silently)."""
    if name not in PHOTO_SETS:
        raise ValueError(f"unknown photo set {name!r}; sets are {sorted(PHOTO_SETS)}")
    photos, missing = {}, []
    for photo, (where, file) in sorted(PHOTO_SETS[name].items()):
        path = photo_path(where, file)
        if path is None or not path.is_file():
            missing.append(f"{file} ({INSTALL[where]})")
            continue
        with Image.open(path) as image:
            photos[photo] = image.convert("RGB")
    if missing:
        raise FileNotFoundError(f"the {name!r} photo set needs {len(missing)} more photo(s): {', '.join(missing)}")
    return photos


def center_square(image: Image.Image, size: int) -> torch.Tensor:
    """The centre square of ``image`` resized (bicubic, Pillow) to ``size``: float32 ``[3, size, size]`` in [0, 1]."""
    w, h = image.size
    side = min(w, h)
    box = ((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side)
    array = np.asarray(image.convert("RGB").crop(box).resize((size, size), Image.BICUBIC), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def random_crops(photos: dict[str, Image.Image], count: int, size: int, seed: int = 0) -> torch.Tensor:
    """``[count, 3, size, size]`` square crops (5-100% of each photo's area, photos in turn), seeded."""
    rng = random.Random(seed)
    names = sorted(photos)
    crops = []
    for i in range(count):
        image = photos[names[i % len(names)]]
        w, h = image.size
        side = max(16, int(min(w, h) * math.sqrt(rng.uniform(0.05, 1.0))))
        x, y = rng.randint(0, w - side), rng.randint(0, h - side)
        crops.append(center_square(image.crop((x, y, x + side, y + side)), size))
    return torch.stack(crops)
