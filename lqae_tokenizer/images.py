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
import os
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


class InvalidImageError(ValueError):
    """A file or object that cannot be read as an image (corrupt, truncated, too large, ...)."""


def open_image(path: str | os.PathLike) -> Image.Image:
    """Decode an image file with Pillow, safely.

    Only :data:`ALLOWED_FORMATS` are tried; images above ``PIL.Image.MAX_IMAGE_PIXELS`` are
    rejected before their pixels are decoded; truncated files raise instead of being padded.
    Returns a fully loaded PIL image with EXIF orientation applied.
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
    return _decode(file, text)


def open_image_bytes(data: bytes, name: str) -> Image.Image:
    """:func:`open_image` for an image held in memory (e.g. a member of a tar shard); ``name`` is
    what error messages call it."""
    return _decode(io.BytesIO(data), name)


def _decode(source, text: str) -> Image.Image:
    """Decode a file path or binary file object with :func:`open_image`'s limits and rules."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source, formats=ALLOWED_FORMATS) as image:
                limit = Image.MAX_IMAGE_PIXELS
                if limit is not None and image.width * image.height > limit:
                    raise Image.DecompressionBombError(f"{image.width}x{image.height} = {image.width * image.height} pixels")
                image.load()
                # A new image (the first frame, oriented): the file is closed when the block ends.
                return ImageOps.exif_transpose(image)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise InvalidImageError(
            f"{text!r} has too many pixels to decode safely ({err}); the limit is "
            f"PIL.Image.MAX_IMAGE_PIXELS = {Image.MAX_IMAGE_PIXELS}: downscale the image first"
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
    """``[H, W, 4]`` float in [0, 1] -> ``[H, W, 3]`` composited over white."""
    alpha = rgba[..., 3:4]
    return rgba[..., :3] * alpha + (1.0 - alpha)


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
    values = _scaled_to_unit(array, kind="numpy array")
    if values.shape[2] == 4:
        values = _composite_on_white(values)
    elif values.shape[2] == 1:
        values = np.repeat(values, 3, axis=2)
    return values.astype(np.float32)


def _scaled_to_unit(array: np.ndarray, kind: str) -> np.ndarray:
    """uint8 / uint16 / float array -> float64 in [0, 1]; anything else is an error."""
    if array.dtype == np.uint8:
        return array.astype(np.float64) / 255.0
    if array.dtype == np.uint16:
        return array.astype(np.float64) / 65535.0
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
    """torch images ``[B, C, H, W]`` (C in 1, 3, 4; uint8, or float in [0, 1]) -> float32
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
        raise TypeError(f"torch image dtype must be uint8 or floating point in [0, 1], got {tensor.dtype}")
    if values.shape[1] == 4:
        alpha = values[:, 3:4]
        values = values[:, :3] * alpha + (1.0 - alpha)
    elif values.shape[1] == 1:
        values = values.expand(-1, 3, -1, -1)
    return values.contiguous()


def to_tensor_list(images: Any) -> list[torch.Tensor]:
    """One image or a list of them -> list of float32 ``[3, H, W]`` tensors in [0, 1].

    A ``BxCxHxW`` tensor counts as B images. PIL/numpy/file inputs come back on the CPU; tensors
    stay on their device.
    """
    if isinstance(images, (list, tuple)):
        if not images:
            raise ValueError("got an empty list of images")
        return [t for item in images for t in to_tensor_list(item)]
    if isinstance(images, torch.Tensor) and images.dim() == 4:
        return list(tensor_batch_to_rgb(images).unbind(0))
    return [to_tensor(images)]


def to_tensor(image: Any) -> torch.Tensor:
    """One image of any accepted kind -> float32 ``[3, H, W]`` in [0, 1]."""
    if isinstance(image, Image.Image):
        return torch.from_numpy(pil_to_array(image)).permute(2, 0, 1).contiguous()
    if isinstance(image, np.ndarray):
        return torch.from_numpy(_array_to_hwc(image)).permute(2, 0, 1).contiguous()
    if isinstance(image, torch.Tensor):
        return _tensor_to_chw(image)
    if isinstance(image, (str, os.PathLike)):
        return to_tensor(open_image(image))
    raise TypeError(
        "expected a PIL image, a numpy array (HxWxC), a torch tensor (CxHxW or BxCxHxW), a file path, "
        f"or a list of these; got {type(image).__name__}"
    )
