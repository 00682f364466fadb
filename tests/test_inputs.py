"""Every accepted image input gives the ids of its equivalent PIL image; bad inputs are explained."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
import torch
from PIL import Image

from lqae_tokenizer import InvalidImageError
from lqae_tokenizer.images import pil_to_array, to_tensor
from lqae_tokenizer.preprocessing import prepare_batch, resize_and_crop

from conftest import random_image

RGB = random_image(7)  # uint8 [32, 32, 3]


@pytest.fixture(scope="module")
def pil_ids(all_tokenizer):
    return all_tokenizer.encode(Image.fromarray(RGB))


def test_equivalent_inputs_give_identical_ids(all_tokenizer, pil_ids, tmp_path):
    png = tmp_path / "image.png"
    Image.fromarray(RGB).save(png)
    chw_uint8 = torch.from_numpy(RGB).permute(2, 0, 1)
    equivalents = {
        "numpy uint8 HWC": RGB,
        "numpy float HWC": RGB.astype(np.float64) / 255.0,
        "numpy float32 HWC": RGB.astype(np.float32) / 255.0,
        "numpy uint16 HWC": RGB.astype(np.uint16) * 257,  # 255 * 257 = 65535
        "torch uint8 CHW": chw_uint8,
        "torch float CHW": chw_uint8.float() / 255.0,
        "torch non-contiguous": torch.from_numpy(np.ascontiguousarray(RGB.transpose(2, 1, 0))).permute(0, 2, 1),
        "path str": str(png),
        "pathlib.Path": png,
        "numpy RGBA opaque": np.concatenate([RGB, np.full((32, 32, 1), 255, np.uint8)], axis=2),
    }
    for name, image in equivalents.items():
        assert all_tokenizer.encode(image) == pil_ids, name
    batch = torch.stack([chw_uint8, chw_uint8])
    assert all_tokenizer.encode(batch) == [pil_ids, pil_ids]
    assert all_tokenizer.encode([RGB, str(png), chw_uint8]) == [pil_ids] * 3


def test_bfloat16_tensor_gives_the_ids_of_float32(all_tokenizer):
    as_bf16 = (torch.from_numpy(RGB).permute(2, 0, 1).float() / 255).to(torch.bfloat16)
    assert all_tokenizer.encode(as_bf16) == all_tokenizer.encode(as_bf16.float())


def test_greyscale_inputs_agree(all_tokenizer):
    grey = RGB[..., 0]
    want = all_tokenizer.encode(Image.fromarray(grey, mode="L"))
    assert all_tokenizer.encode(grey) == want
    assert all_tokenizer.encode(grey[..., None]) == want
    assert all_tokenizer.encode(torch.from_numpy(grey)[None]) == want


def test_exif_orientation_is_applied(all_tokenizer, tmp_path):
    upright = Image.fromarray(random_image(3, 32, 48))  # 48 wide, 32 high
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # what a camera writes: pixels rotated
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display" undoes ROTATE_90 (counter-clockwise)
    path = tmp_path / "rotated.png"
    stored.save(path, exif=exif)
    assert all_tokenizer.encode(path) == all_tokenizer.encode(upright)
    assert all_tokenizer.encode(Image.open(path)) == all_tokenizer.encode(upright)


def test_transparency_is_composited_on_white():
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 255  # red ...
    rgba[:2, :, 3] = 0  # ... fully transparent on top, opaque below
    rgba[2:, :, 3] = 255
    out = to_tensor(Image.fromarray(rgba, mode="RGBA"))
    assert torch.allclose(out[:, 0, 0], torch.ones(3))  # white
    assert torch.allclose(out[:, 3, 0], torch.tensor([1.0, 0.0, 0.0]))  # red
    assert torch.equal(to_tensor(rgba), out)
    la = Image.fromarray(rgba[..., [0, 3]], mode="LA")
    assert torch.allclose(to_tensor(la)[:, 0, 0], torch.ones(3))
    palette = Image.fromarray(rgba, mode="RGBA").convert("P")
    palette.info["transparency"] = palette.getpixel((0, 0))
    assert torch.allclose(to_tensor(palette)[:, 0, 0], torch.ones(3))


def test_sixteen_bit_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 1000, 32768, 65535]], dtype=np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    out = to_tensor(path)[0, 0]
    assert torch.allclose(out, torch.tensor([0, 1000, 32768, 65535]) / 65535.0)
    assert torch.allclose(to_tensor(values)[0, 0], out)


def test_float_and_cmyk_and_bilevel_modes():
    f = Image.fromarray(np.array([[0.0, 127.5, 255.0, 400.0]], dtype=np.float32), mode="F")
    assert torch.allclose(to_tensor(f)[0, 0], torch.tensor([0.0, 0.5, 1.0, 1.0]))
    cmyk = Image.fromarray(RGB).convert("CMYK")
    assert np.allclose(pil_to_array(cmyk), np.asarray(cmyk.convert("RGB")) / 255.0)
    bilevel = Image.fromarray(RGB).convert("1")
    assert set(np.unique(pil_to_array(bilevel))) <= {0.0, 1.0}


def test_animated_gif_uses_the_first_frame(tmp_path):
    frames = [Image.fromarray(np.full((8, 8, 3), v, np.uint8)) for v in (10, 200)]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    first = to_tensor(path)
    assert torch.allclose(first, torch.full_like(first, 10 / 255), atol=2 / 255)


def test_resize_policy_shorter_side_then_centre_crop():
    image = torch.zeros(3, 40, 80)
    image[:, :, 20:60] = 1.0  # a bright centre square
    out = resize_and_crop(image, 20)  # 40x80 -> 20x40 -> centre 20x20
    assert out.shape == (3, 20, 20)
    assert torch.allclose(out[:, 10, 10], torch.ones(3), atol=1e-3)
    same = torch.rand(3, 20, 20)
    assert resize_and_crop(same, 20) is same


def test_do_resize_false_requires_exact_size(all_tokenizer):
    with pytest.raises(ValueError, match="do_resize=False requires 32x32"):
        all_tokenizer.encode(random_image(1, 40, 40), do_resize=False)
    assert len(all_tokenizer.encode(RGB, do_resize=False)) == 16
    assert prepare_batch([random_image(1, 40, 64)], 32).shape == (1, 3, 32, 32)


@pytest.mark.parametrize("bad, error, message", [
    (np.zeros((4, 4, 2), np.uint8), ValueError, "C in \\(1, 3, 4\\)"),
    (np.zeros((2, 4, 4, 3), np.uint8), ValueError, "HxW or HxWxC"),
    (np.zeros((0, 4, 3), np.uint8), ValueError, "empty"),
    (np.zeros((4, 4, 3), np.int64), TypeError, "uint8, uint16 or float"),
    (np.full((4, 4, 3), np.nan, np.float32), ValueError, "NaN or infinity"),
    (np.full((4, 4, 3), 2.0, np.float32), ValueError, "must be in \\[0, 1\\]"),
    (torch.zeros(4, 4), ValueError, "CxHxW"),
    (torch.zeros(3, 4, 4, dtype=torch.int32), TypeError, "uint8, uint16 or floating point"),
    (torch.full((3, 4, 4), 255.0), ValueError, "must be in \\[0, 1\\]"),
    (torch.full((3, 4, 4), float("inf")), ValueError, "NaN or infinity"),
    (torch.zeros(3, 4, 4, device="meta"), ValueError, "meta tensor"),
    (12345, TypeError, "expected a PIL image"),
    (b"\x89PNG", TypeError, "expected a PIL image"),
    ([], ValueError, "empty list"),
    ("https://example.com/cat.png", ValueError, "never downloads"),
])
def test_bad_inputs_raise_clear_errors(all_tokenizer, bad, error, message):
    with pytest.raises(error, match=message):
        all_tokenizer.encode(bad)


def test_bad_files(all_tokenizer, tmp_path):
    with pytest.raises(FileNotFoundError, match="no such image file"):
        all_tokenizer.encode(tmp_path / "missing.png")
    with pytest.raises(ValueError, match="is a directory"):
        all_tokenizer.encode(tmp_path)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    text = tmp_path / "text.png"
    text.write_text("this is not an image")
    for path in (empty, text):
        with pytest.raises(InvalidImageError, match="cannot read"):
            all_tokenizer.encode(path)
    buffer = io.BytesIO()
    Image.fromarray(random_image(0, 64, 64)).save(buffer, format="JPEG")
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(InvalidImageError, match="truncated"):
        all_tokenizer.encode(truncated)


def test_eps_is_never_opened(tmp_path):
    eps = tmp_path / "evil.eps"
    eps.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n")
    with pytest.raises(InvalidImageError, match="expected a file in one of"):
        to_tensor(eps)


def test_too_many_pixels_is_rejected_before_decoding(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    Image.new("RGB", (100, 100)).save(path)
    for limit in (6000, 4000, 100):  # 1x-2x (Pillow only warns), exactly 2x+ (Pillow raises), far above
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
        with pytest.raises(InvalidImageError) as caught:
            to_tensor(path)
        message = str(caught.value).replace(str(path), "<path>")  # digits in tmp_path are not sizes
        # One limit, the one that applies (Pillow's own message names twice it), and the image's size.
        assert f"has 10,000 pixels, above the limit of {limit:,} pixels" in message
        assert {int(n.replace(",", "")) for n in re.findall(r"\d[\d,]*\d", message)} == {10000, limit}
