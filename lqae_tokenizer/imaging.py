"""Small image helpers shared by the library, its command lines and the example scripts."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image


def image_grid(rows: Sequence[Sequence[Image.Image]], *, scale: int = 1, gap: int = 2,
               background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Paste images into one RGB picture, ``rows[r][c]`` at row r, column c, each enlarged ``scale``
    times (nearest neighbour, so pixels stay visible) with ``gap`` pixels between cells.

    Example:
        >>> image_grid([[a, b], [c, d]], scale=4).save("grid.png")
    """
    if not rows or not any(rows):
        raise ValueError("image_grid needs at least one image")
    cell_w = max(im.width for row in rows for im in row) * scale
    cell_h = max(im.height for row in rows for im in row) * scale
    columns = max(len(row) for row in rows)
    grid = Image.new("RGB", (columns * cell_w + (columns - 1) * gap, len(rows) * cell_h + (len(rows) - 1) * gap),
                     background)
    for r, row in enumerate(rows):
        for c, im in enumerate(row):
            big = im.convert("RGB").resize((im.width * scale, im.height * scale), Image.NEAREST)
            grid.paste(big, (c * (cell_w + gap), r * (cell_h + gap)))
    return grid


def image_row(images: Sequence[Image.Image], *, scale: int = 1, gap: int = 2) -> Image.Image:
    """One row of images (see :func:`image_grid`)."""
    return image_grid([list(images)], scale=scale, gap=gap)


def tensor_to_image(pixels) -> Image.Image:
    """float ``[3, H, W]`` (or ``[1, H, W]``) in [0, 1] -> an RGB ``PIL.Image`` (rounded, clamped)."""
    array = (pixels.detach().float().clamp(0, 1).cpu().numpy() * 255.0).round().astype(np.uint8)
    if array.shape[0] == 1:
        array = np.repeat(array, 3, axis=0)
    return Image.fromarray(array.transpose(1, 2, 0), mode="RGB")
