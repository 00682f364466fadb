"""Turning whatever a user passes as "an image" into RGB float tensors in [0, 1].

Accepted, one or a list of: a PIL image; a numpy array ``HxW`` or ``HxWxC`` (C = 1, 3 or 4) of
uint8 (0-255), uint16 (0-65535) or float in [0, 1]; a torch tensor ``CxHxW`` or ``BxCxHxW`` of
the same kinds (any device, float32/16/bfloat16/64); a file path (``str`` or ``os.PathLike``).

Conversion rules (documented in README "Inputs"):
- EXIF orientation is applied to files and PIL images.
- Transparency (RGBA, LA, PA, P with a transparency key, 4-channel arrays) is composited on white.
- 16-bit modes and uint16 arrays are divided by 65535 (scaled, never clipped at 255); ``I``
  (32-bit integer) is read on the same 0-65535 scale and clipped to it; ``F`` (32-bit float) is
  read on Pillow's own 0-255 scale and clipped to it.
- Greyscale, palette, 1-bit, CMYK, YCbCr, LAB and HSV go through Pillow's conversion to RGB.
- Animated files: the first frame.
Anything else raises ``TypeError`` (wrong kind) or ``ValueError`` (wrong shape, range or content).
"""

from __future__ import annotations

import io
import math
import os
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

# Formats a file may be decoded as. EPS/PS are excluded on purpose: Pillow hands them to Ghostscript.
ALLOWED_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP", "PPM", "TGA", "ICO")
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
_TRANSPARENT_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
# A large image is decoded or reduced to no less than this many times the size it will be resized to:
# the antialiased bicubic resize from there gives nearly the same pixels as from the full image.
REDUCE_MARGIN = 8


# File suffixes taken as images when a folder is listed (Pillow still decides what is readable).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm",
                  ".tga", ".ico")


class InvalidImageError(ValueError):
    """A file or object that cannot be read as an image (corrupt, truncated, too large, ...)."""


def open_image(path: str | os.PathLike, min_side: int | None = None) -> Image.Image:
    """Decode an image file with Pillow, safely.

    Only :data:`ALLOWED_FORMATS` are tried; images above ``PIL.Image.MAX_IMAGE_PIXELS`` are
    rejected before their pixels are decoded; truncated files raise instead of being padded.
    Returns a fully loaded PIL image with EXIF orientation applied.

    ``min_side``: the shorter side the caller will resize to. When given, a large image is decoded
    at reduced size (JPEG's DCT scaling, then :func:`reduce_for`) while its shorter side stays at
    least ``REDUCE_MARGIN * min_side``: far less memory and time for camera photos, and pixels that
    differ slightly from a full-size decode (docs/inputs.md measures what that does to ids).
    """
    text = os.fspath(path)
    if isinstance(text, bytes):
        text = text.decode()
    if text.startswith(("http://", "https://", "ftp://", "hf://")):
        raise ValueError(f"{text!r} is a URL; lqae-tokenizer never downloads images: save the file and pass its path")
    file = Path(text)
    if file.is_dir():
        raise ValueError(f"{text!r} is a directory; pass image files (e.g. sorted(Path(dir).glob('*.png')))")
    if not file.exists():
        raise FileNotFoundError(f"no such image file: {text!r}")
    return _decode(file, text, min_side)


def open_image_bytes(data: bytes, name: str, min_side: int | None = None) -> Image.Image:
    """:func:`open_image` for an image held in memory (e.g. a member of a tar shard); ``name`` is
    what error messages call it."""
    return _decode(io.BytesIO(data), name, min_side)


def _draft_size(image: Image.Image, min_side: int) -> tuple[int, int]:
    """The size to ask JPEG's draft mode for: the shorter side at ``REDUCE_MARGIN * min_side``."""
    scale = REDUCE_MARGIN * min_side / min(image.size)
    return (math.ceil(image.width * scale), math.ceil(image.height * scale))


def reduce_for(image: Image.Image, min_side: int | None) -> Image.Image:
    """Shrink ``image`` by an integer factor (``Image.reduce``: box averages in its own 8-bit values)
    while its shorter side stays at least ``REDUCE_MARGIN * min_side``; modes other than ``L`` and
    ``RGB`` (transparency, 16-bit, palettes) are left whole, so their conversion rules stay exact."""
    if min_side is None or image.mode not in ("L", "RGB"):
        return image
    factor = min(image.size) // (REDUCE_MARGIN * min_side)
    return image.reduce(factor) if factor >= 2 else image


def _decode(source, text: str, min_side: int | None = None) -> Image.Image:
    """Decode a file path or binary file object with :func:`open_image`'s limits and rules."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source, formats=ALLOWED_FORMATS) as image:
                limit = Image.MAX_IMAGE_PIXELS
                if limit is not None and image.width * image.height > limit:
                    raise Image.DecompressionBombError(f"Image size ({image.width * image.height} pixels) "
                                                       f"is {image.width}x{image.height}")
                if min_side is not None and image.format == "JPEG" and min(image.size) > REDUCE_MARGIN * min_side:
                    image.draft(image.mode, _draft_size(image, min_side))  # decode at 1/2, 1/4 or 1/8 size
                image.load()
                # A new image (the first frame, oriented): the file is closed when the block ends.
                return reduce_for(ImageOps.exif_transpose(image), min_side)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        # Pillow's own message names its error threshold (twice the limit): say the one limit that applies.
        found = re.search(r"\((\d+) pixels\)", str(err))
        size = f"{int(found.group(1)):,} pixels" if found else "too many pixels"
        raise InvalidImageError(
            f"{text!r} has {size}, above the limit of {Image.MAX_IMAGE_PIXELS:,} pixels "
            "(PIL.Image.MAX_IMAGE_PIXELS); it is refused before decoding: downscale the image first, or raise "
            "PIL.Image.MAX_IMAGE_PIXELS if you trust the file"
        ) from err
    except UnidentifiedImageError as err:
        raise InvalidImageError(
            f"cannot read {text!r} as an image ({err}); expected a file in one of {ALLOWED_FORMATS}"
        ) from err
    except (OSError, SyntaxError, ValueError) as err:
        if isinstance(err, InvalidImageError):
            raise
        reason = "truncated" if "truncated" in str(err).lower() else "corrupt"
        raise InvalidImageError(f"cannot decode {text!r}: the file is {reason} ({err})") from err


def _composite_on_white(rgba: np.ndarray) -> np.ndarray:
    """``[H, W, 4]`` float32 in [0, 1] -> ``[H, W, 3]`` float32 composited over white, with the same
    float32 operations as the tensor path (``rgb * alpha + (1 - alpha)``)."""
    alpha = rgba[..., 3:4]
    return rgba[..., :3] * alpha + (np.float32(1.0) - alpha)


def pil_to_array(image: Image.Image) -> np.ndarray:
    """PIL image (any mode) -> float32 ``[H, W, 3]`` in [0, 1], by the module's conversion rules."""
    image = ImageOps.exif_transpose(image)
    mode = image.mode
    if mode in _SIXTEEN_BIT_MODES or mode == "I":
        grey = np.asarray(image, dtype=np.float64) / 65535.0
        return np.repeat(np.clip(grey, 0.0, 1.0)[..., None], 3, axis=2).astype(np.float32)
    if mode == "F":
        grey = np.asarray(image, dtype=np.float64)
        if not np.isfinite(grey).all():
            raise ValueError("mode 'F' image contains NaN or infinity; expected finite values on a 0-255 scale")
        return np.repeat(np.clip(grey / 255.0, 0.0, 1.0)[..., None], 3, axis=2).astype(np.float32)
    if mode in _TRANSPARENT_MODES or (mode == "P" and "transparency" in image.info):
        rgba = np.asarray(image.convert("RGBA"), dtype=np.float32) / 255.0
        return _composite_on_white(rgba).astype(np.float32)
    return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0


def _array_to_hwc(array: np.ndarray) -> np.ndarray:
    """numpy image -> float32 ``[H, W, 3]`` in [0, 1]."""
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise ValueError(
            f"numpy images must be HxW or HxWxC with C in (1, 3, 4), got shape {array.shape}; "
            "for CxHxW data use np.transpose(a, (1, 2, 0))"
        )
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"numpy image is empty (shape {array.shape})")
    # float32 from here on, as for PIL images and tensors, so that the same pixels given as an array,
    # a PIL image or a tensor give bit-identical inputs (and ids).
    values = _scaled_to_unit(array, kind="numpy array").astype(np.float32)
    if values.shape[2] == 4:
        values = _composite_on_white(values)
    elif values.shape[2] == 1:
        values = np.repeat(values, 3, axis=2)
    return values


def _scaled_to_unit(array: np.ndarray, kind: str) -> np.ndarray:
    """uint8 / uint16 / float array -> float in [0, 1] (integers: float32, correctly rounded like the
    tensor path; floats: float64, checked, rounded by the caller); anything else is an error."""
    if array.dtype == np.uint8:
        return array.astype(np.float32) / np.float32(255.0)
    if array.dtype == np.uint16:
        return array.astype(np.float32) / np.float32(65535.0)
    if np.issubdtype(array.dtype, np.floating):
        values = array.astype(np.float64)
        if not np.isfinite(values).all():
            raise ValueError(f"{kind} contains NaN or infinity; expected finite values in [0, 1]")
        if values.size and (values.min() < 0.0 or values.max() > 1.0):
            raise ValueError(
                f"float {kind} values must be in [0, 1], got range [{values.min():.4g}, {values.max():.4g}]; "
                "divide 0-255 data by 255"
            )
        return values
    raise TypeError(
        f"{kind} dtype must be uint8, uint16 or float (values in [0, 1]), got {array.dtype}; "
        "convert with .astype(np.uint8) for 0-255 data"
    )


def _tensor_to_chw(tensor: torch.Tensor) -> torch.Tensor:
    """torch image ``[C, H, W]`` -> float32 ``[3, H, W]`` in [0, 1], on the tensor's device."""
    if tensor.device.type != "meta" and (tensor.dim() != 3 or tensor.shape[0] not in (1, 3, 4)):
        raise _channels_error(tensor)
    return tensor_batch_to_rgb(tensor.unsqueeze(0))[0]


def _channels_error(tensor: torch.Tensor) -> ValueError:
    return ValueError(
        f"torch images must be CxHxW or BxCxHxW with C in (1, 3, 4), got shape {list(tensor.shape)}; "
        "for HxWxC data use tensor.permute(2, 0, 1)"
    )


def tensor_batch_to_rgb(tensor: torch.Tensor) -> torch.Tensor:
    """torch images ``[B, C, H, W]`` (C in 1, 3, 4; uint8, uint16, or float in [0, 1]) -> float32
    ``[B, 3, H, W]`` in [0, 1] on the tensor's device, checked with one pass over the whole batch
    (no per-image loop). Alpha is composited on white."""
    if tensor.device.type == "meta":
        raise ValueError("torch image is a meta tensor (a shape without data); pass a tensor with pixel values")
    if tensor.dim() != 4 or tensor.shape[1] not in (1, 3, 4):
        raise _channels_error(tensor)
    if tensor.shape[2] == 0 or tensor.shape[3] == 0:
        raise ValueError(f"torch image is empty (shape {list(tensor.shape[1:])})")
    if tensor.dtype == torch.uint8:
        values = tensor.float() / 255.0
    elif tensor.dtype == torch.uint16:  # 16-bit data, scaled like uint16 arrays and 16-bit PNGs
        values = tensor.float() / 65535.0
    elif tensor.is_floating_point():
        values = tensor.float()
        if not bool(torch.isfinite(values).all()):
            raise ValueError("torch image contains NaN or infinity; expected finite values in [0, 1]")
        lo, hi = (float(v) for v in torch.aminmax(values))
        if lo < 0.0 or hi > 1.0:
            raise ValueError(
                f"float torch image values must be in [0, 1], got range [{lo:.4g}, {hi:.4g}]; divide 0-255 data by 255"
            )
    else:
        raise TypeError(f"torch image dtype must be uint8, uint16 or floating point in [0, 1], got {tensor.dtype}; "
                        "convert with .float() / 255 for 0-255 data")
    if values.shape[1] == 4:
        alpha = values[:, 3:4]
        values = values[:, :3] * alpha + (1.0 - alpha)
    elif values.shape[1] == 1:
        values = values.expand(-1, 3, -1, -1)
    return values.contiguous()


def to_tensor_list(images: Any, min_side: int | None = None) -> list[torch.Tensor]:
    """One image or a list of them -> list of float32 ``[3, H, W]`` tensors in [0, 1].

    A ``BxCxHxW`` tensor counts as B images. PIL/numpy/file inputs come back on the CPU; tensors
    stay on their device. ``min_side``: see :func:`to_tensor`.
    """
    if isinstance(images, (list, tuple)):
        if not images:
            raise ValueError("got an empty list of images")
        return [t for item in images for t in to_tensor_list(item, min_side)]
    if isinstance(images, torch.Tensor) and images.dim() == 4:
        return list(tensor_batch_to_rgb(images).unbind(0))
    return [to_tensor(images, min_side)]


def to_tensor(image: Any, min_side: int | None = None) -> torch.Tensor:
    """One image of any accepted kind -> float32 ``[3, H, W]`` in [0, 1].

    ``min_side``: the shorter side the caller will resize to; files and PIL images much larger than
    that are decoded or reduced in 8 bits first (:func:`open_image`). Arrays and tensors are never
    reduced."""
    if isinstance(image, Image.Image):
        image = reduce_for(ImageOps.exif_transpose(image), min_side)
        return torch.from_numpy(pil_to_array(image)).permute(2, 0, 1).contiguous()
    if isinstance(image, np.ndarray):
        return torch.from_numpy(_array_to_hwc(image)).permute(2, 0, 1).contiguous()
    if isinstance(image, torch.Tensor):
        return _tensor_to_chw(image)
    if isinstance(image, (str, os.PathLike)):
        return to_tensor(open_image(image, min_side))
    raise TypeError(
        "expected a PIL image, a numpy array (HxWxC), a torch tensor (CxHxW or BxCxHxW), a file path, "
        f"or a list of these; got {type(image).__name__}"
    )


def list_images(source: str | os.PathLike) -> list[Path]:
    """Image paths under a folder (recursive, sorted) or listed one per line in a text file.

    Folders are filtered by file suffix (Pillow decides what is readable when loading); a list file
    is taken as given (relative paths are relative to the list file).
    """
    source = Path(source)
    if source.is_dir():
        paths = sorted(p for p in source.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    elif source.is_file():
        lines = [line.strip() for line in source.read_text(encoding="utf-8").splitlines()]
        paths = [(source.parent / line) if not os.path.isabs(line) else Path(line) for line in lines if line]
    else:
        raise ValueError(f"image data {str(source)!r} is neither a folder nor a file listing images")
    if not paths:
        raise ValueError(f"no images found in {str(source)!r} (looked for {', '.join(IMAGE_SUFFIXES)})")
    return paths
