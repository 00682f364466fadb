"""Resizing and batching: float ``[3, H, W]`` images in [0, 1] -> one ``[B, 3, S, S]`` batch.

Policy: the shorter side is resized to ``S`` (bicubic with antialiasing, clamped back to [0, 1]),
then the centre ``S x S`` square is cropped. Images already ``S x S`` are left untouched, so
equivalent inputs of any kind give bit-identical batches. ``do_resize=False`` requires the exact size.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from .images import tensor_batch_to_rgb, to_tensor_list


def resize_and_crop(image: torch.Tensor, size: int) -> torch.Tensor:
    """``[3, H, W]`` or a batch ``[B, 3, H, W]``, float in [0, 1] -> ``[..., 3, size, size]``:
    shorter side to ``size``, centre crop. A batch is resized in one call (same values as one by one)."""
    h, w = image.shape[-2:]
    if (h, w) == (size, size):
        return image
    scale = size / min(h, w)
    new_h, new_w = max(size, round(h * scale)), max(size, round(w * scale))
    if (new_h, new_w) != (h, w):
        batch = image if image.dim() == 4 else image.unsqueeze(0)
        batch = F.interpolate(batch, size=(new_h, new_w), mode="bicubic", antialias=True,
                              align_corners=False).clamp_(0.0, 1.0)
        image = batch if image.dim() == 4 else batch.squeeze(0)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return image[..., top : top + size, left : left + size]


def _check_size(i: int, shape: tuple[int, int], size: int) -> None:
    if shape != (size, size):
        raise ValueError(
            f"image {i} is {shape[1]}x{shape[0]} but do_resize=False requires "
            f"{size}x{size}; resize it first or pass do_resize=True"
        )


def prepare_batch(images: Any, size: int, *, do_resize: bool = True,
                  device: torch.device | str | None = None) -> torch.Tensor:
    """Any accepted image input (see :mod:`lqae_tokenizer.images`) -> float32 ``[B, 3, size, size]``.

    Raises ``ValueError`` when ``do_resize=False`` and an image is not ``size x size``.
    A ``BxCxHxW`` tensor is converted, checked and resized as one batch, without a per-image loop.
    """
    if isinstance(images, torch.Tensor) and images.dim() == 4:
        batch = tensor_batch_to_rgb(images)
        if not do_resize:
            _check_size(0, tuple(batch.shape[-2:]), size)
        batch = resize_and_crop(batch, size).contiguous()
        return batch.to(device) if device is not None else batch
    tensors = to_tensor_list(images, min_side=size if do_resize else None)
    out = []
    for i, image in enumerate(tensors):
        if not do_resize:
            _check_size(i, tuple(image.shape[-2:]), size)
        out.append(resize_and_crop(image, size).to(device) if device is not None else resize_and_crop(image, size))
    return torch.stack([t.to(out[0].device) for t in out])
