"""Build the photo tokenizer's training crops from Debian's wallpaper and image packages.

    sudo apt-get install -y --no-install-recommends gnome-backgrounds mate-backgrounds ukui-wallpapers \
        plasma-workspace-wallpapers lomiri-wallpapers lomiri-wallpapers-16.04 lomiri-wallpapers-20.04 \
        sway-backgrounds visp-images-data imagemagick-6-doc extremetuxracer-data
    python recipes/prepare_photos.py photo-data [--crops-per-image 320 --size 96]

Writes ``photo-data/train/*.png`` (random square crops at areas from 1% to 100% of each source,
resized to ``--size`` pixels; the trainer then takes RandomResizedCrop(0.6-1) + flips of them to
its resolution), ``photo-data/val/*.png`` (a few crops of held-back sources) and
``photo-data/SOURCES.md``: every source file used, with its package, version and licence (the Debian
packages above, extremetuxracer-data's terrain and sky textures for more texture, and the two
photographs scikit-learn ships).

Which files count as photographs or photo-like art: raster images (png, jpg, jpeg, webp) whose short
side is at least 256 pixels and that have many colours (a 64x64 thumbnail with at least 1,500
distinct colours: drawings, logos, charts and calibration patterns have far fewer). The same
wallpaper shipped at several resolutions is used once, at its largest. OpenCV's ``opencv-doc`` and
scikit-image's sample photos are never used: they are the held-out evaluation set
(``recipes/evaluate_photos.py``).
"""

from __future__ import annotations

import argparse
import hashlib
import random
import re
import subprocess
from pathlib import Path

import numpy as np
from PIL import Image

PACKAGES = ("gnome-backgrounds", "mate-backgrounds", "ukui-wallpapers", "plasma-workspace-wallpapers",
            "lomiri-wallpapers", "lomiri-wallpapers-16.04", "lomiri-wallpapers-20.04", "sway-backgrounds",
            "visp-images-data", "imagemagick-6-doc", "extremetuxracer-data")
# Two photographs that scikit-learn ships (sklearn.datasets.load_sample_images), CC BY 2.0.
PYPI_PHOTOS = ("sklearn.datasets.images", ("china.jpg", "flower.jpg"), "scikit-learn", "CC-BY-2.0 (danielbuechele, vultilion)")
SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
MIN_SIDE = 256
MIN_COLOURS = 1500
VALIDATION_EVERY = 12  # every 12th source (in sorted order) is held back for validation crops
Image.MAX_IMAGE_PIXELS = 80_000_000  # the largest wallpapers are ~8K x 5K


def package_info(package: str) -> tuple[str, str, list[Path]] | None:
    """(version, licences, files) of an installed Debian package, or None when it is not installed."""
    try:
        version = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True,
                                 check=True).stdout.strip()
        listing = subprocess.run(["dpkg", "-L", package], capture_output=True, text=True, check=True).stdout
    except (subprocess.CalledProcessError, FileNotFoundError):
        return None
    copyright_file = Path(f"/usr/share/doc/{package}/copyright")
    licences = "see /usr/share/doc/" + package + "/copyright"
    if copyright_file.is_file():
        found = sorted(set(re.findall(r"^License:\s*(\S.*)$", copyright_file.read_text(errors="replace"), re.M)))
        licences = ", ".join(found) or licences
    files = [Path(line) for line in listing.splitlines() if Path(line).suffix.lower() in SUFFIXES]
    return version, licences, [f for f in files if f.is_file()]


def is_photo_like(image: Image.Image) -> bool:
    if min(image.size) < MIN_SIDE:
        return False
    thumbnail = image.convert("RGB").resize((64, 64), Image.BILINEAR)
    return len(thumbnail.getcolors(maxcolors=64 * 64) or ()) >= MIN_COLOURS


def wallpaper_key(path: Path) -> str:
    """Files that are one wallpaper at several resolutions (and its screenshot) share a key."""
    if "contents" in path.parts:  # Plasma: .../<Name>/contents/images/1920x1080.jpg, .../contents/screenshot.jpg
        return str(Path(*path.parts[: path.parts.index("contents")]))
    return str(path.with_suffix(""))


def pypi_photos() -> list[tuple[Path, str, str, str]]:
    """The photographs of :data:`PYPI_PHOTOS` when that package is installed."""
    import importlib.metadata
    import importlib.util

    module, names, distribution, licence = PYPI_PHOTOS
    try:
        spec = importlib.util.find_spec(module)
        version = importlib.metadata.version(distribution)
    except (ImportError, importlib.metadata.PackageNotFoundError):
        return []
    folder = Path(next(iter(spec.submodule_search_locations)))
    return [(folder / n, f"{distribution} (PyPI)", version, licence) for n in names if (folder / n).is_file()]


def collect_sources(base_only: bool = False) -> list[tuple[Path, str, str, str]]:
    """(path, package, version, licences) of every photo-like source, largest per wallpaper
    (``base_only``: the wallpaper and image packages only, as the first training phase used)."""
    best: dict[str, tuple[int, Path, str, str, str]] = {}
    for package in PACKAGES[:-1] if base_only else PACKAGES:
        info = package_info(package)
        if info is None:
            print(f"skipping {package}: not installed")
            continue
        version, licences, files = info
        for path in files:
            try:
                with Image.open(path) as image:
                    image.load()
                    if not is_photo_like(image):
                        continue
                    pixels = image.size[0] * image.size[1]
            except (OSError, ValueError, Image.DecompressionBombError):
                continue
            key = wallpaper_key(path)
            if key not in best or pixels > best[key][0]:
                best[key] = (pixels, path, package, version, licences)
    found = [(p, pkg, ver, lic) for _, p, pkg, ver, lic in sorted(best.values(), key=lambda item: str(item[1]))]
    return found if base_only else found + pypi_photos()


def shown_path(path: Path) -> str:
    """How SOURCES.md names a file: Debian paths as they are, files of a Python package from the package
    folder on (not this machine's virtual environment)."""
    parts = path.parts
    return "/".join(parts[parts.index("site-packages") + 1:]) if "site-packages" in parts else str(path)


def is_flat(crop: Image.Image) -> bool:
    """Nearly uniform: mean absolute difference of neighbouring grey levels below 2 (of 255)."""
    grey = np.asarray(crop.convert("L"), dtype=np.float32)
    return float(np.abs(np.diff(grey, axis=0)).mean() + np.abs(np.diff(grey, axis=1)).mean()) < 4.0


def random_crops(image: Image.Image, count: int, size: int, rng: random.Random) -> list[Image.Image]:
    """Square crops covering 1% to 100% of the image's area (log-uniform), random flips, resized.
    Wallpapers have large smooth areas: a nearly flat crop is kept only one time in four."""
    w, h = image.size
    crops = []
    while len(crops) < count:
        side = int(min(w, h) * (10 ** rng.uniform(-1.0, 0.0)))  # 10% to 100% of the short side
        side = max(size // 2, min(side, w, h))
        x, y = rng.randint(0, w - side), rng.randint(0, h - side)
        crop = image.crop((x, y, x + side, y + side)).resize((size, size), Image.BICUBIC, reducing_gap=3.0)
        if rng.random() < 0.5:
            crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
        if is_flat(crop) and rng.random() < 0.75:
            continue
        crops.append(crop)
    return crops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output", type=Path)
    parser.add_argument("--crops-per-image", type=int, default=320)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--base-only", action="store_true",
                        help="the wallpaper and image packages only (the first training phase's data)")
    args = parser.parse_args()
    sources = collect_sources(args.base_only)
    if not sources:
        raise SystemExit("no source images found: install the packages listed in this script's docstring")
    rng = random.Random(args.seed)
    (args.output / "train").mkdir(parents=True, exist_ok=True)
    (args.output / "val").mkdir(parents=True, exist_ok=True)
    lines = ["# Photo training sources", "", "| file | package | version | licence | use |", "|---|---|---|---|---|"]
    counts = {"train": 0, "val": 0}
    for i, (path, package, version, licences) in enumerate(sources):
        split = "val" if i % VALIDATION_EVERY == VALIDATION_EVERY - 1 else "train"
        with Image.open(path) as image:
            rgb = image.convert("RGB")
        count = args.crops_per_image if split == "train" else 8
        stem = hashlib.sha1(str(path).encode()).hexdigest()[:10]
        for j, crop in enumerate(random_crops(rgb, count, args.size, rng)):
            crop.save(args.output / split / f"{stem}_{j:04d}.png")
        counts[split] += count
        lines.append(f"| {shown_path(path)} | {package} | {version} | {licences} | {split} |")
    (args.output / "SOURCES.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"{len(sources)} sources -> {counts['train']} training and {counts['val']} validation crops in {args.output}")


if __name__ == "__main__":
    main()
