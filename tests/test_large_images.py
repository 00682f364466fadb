"""Large files are decoded at reduced size (JPEG draft, Image.reduce) when the model needs far fewer
pixels; smaller images and other modes go through the full-size path unchanged."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from lqae_tokenizer.images import REDUCE_MARGIN, open_image, to_tensor
from lqae_tokenizer.preprocessing import prepare_batch, resize_and_crop


def photo_like(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    base = rng.random((height // 50 + 1, width // 50 + 1, 3))
    smooth = np.kron(base, np.ones((50, 50, 1)))[:height, :width]
    return Image.fromarray((smooth * 255).astype(np.uint8))


def test_a_large_jpeg_is_decoded_small_and_stays_close_to_the_full_decode(tmp_path):
    path = tmp_path / "big.jpg"
    photo_like(4000, 3000).save(path, quality=92)
    reduced = open_image(path, min_side=64)
    assert REDUCE_MARGIN * 64 <= min(reduced.size) < 2 * REDUCE_MARGIN * 64  # 3000 -> draft 1/4 -> 750
    full = resize_and_crop(to_tensor(path), 64)
    small = prepare_batch(path, 64)[0]
    assert small.shape == full.shape == (3, 64, 64)
    assert float((small - full).abs().max()) < 0.05  # one more gentle resampling step, nothing else


def test_a_large_png_is_reduced_in_eight_bits(tmp_path):
    path = tmp_path / "big.png"
    photo_like(2100, 1100).save(path)
    reduced = open_image(path, min_side=64)
    assert reduced.size == (2100 // 2, 1100 // 2)  # 1100 // 512 = 2
    as_pil = to_tensor(Image.open(path), min_side=64)
    assert torch.equal(to_tensor(path, min_side=64), as_pil)  # file or PIL image: the same pixels


def test_images_below_the_margin_and_other_modes_are_untouched(tmp_path):
    small = photo_like(900, 700)  # 700 < 16 x 64
    small.save(tmp_path / "small.jpg", quality=95)
    assert torch.equal(to_tensor(tmp_path / "small.jpg", min_side=64), to_tensor(tmp_path / "small.jpg"))
    rgba = photo_like(2100, 1100).convert("RGBA")
    assert torch.equal(to_tensor(rgba, min_side=64), to_tensor(rgba))  # alpha compositing stays exact
    array = np.asarray(photo_like(2100, 1100))
    assert torch.equal(to_tensor(array, min_side=64), to_tensor(array))  # arrays are never reduced
