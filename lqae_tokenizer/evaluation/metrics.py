"""Reconstruction metrics on pixels in [0, 1] and codebook statistics over a dataset."""

from __future__ import annotations

import math
from typing import Iterable

import torch
import torch.nn.functional as F


def _check(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape != b.shape or a.dim() != 4:
        raise ValueError(f"expected two [B, C, H, W] tensors of the same shape, got {list(a.shape)} and {list(b.shape)}")


def mse(reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image mean squared error ``[B]`` (float64) of ``[B, C, H, W]`` pixels in [0, 1]."""
    _check(reconstruction, target)
    return ((reconstruction.double() - target.double()) ** 2).flatten(1).mean(1)


def psnr(reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB ``[B]`` for a peak of 1: ``10 log10(1 / mse)`` (inf for identical images)."""
    err = mse(reconstruction, target)
    return torch.where(err > 0, 10.0 * torch.log10(1.0 / err.clamp_min(1e-300)), torch.full_like(err, math.inf))


def _gaussian_window(size: int, sigma: float, channels: int) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, size, size).contiguous()


def ssim(reconstruction: torch.Tensor, target: torch.Tensor, *, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Per-image SSIM ``[B]`` (Wang et al. 2004): Gaussian window 11, sigma 1.5, K1 0.01, K2 0.03, peak 1.

    Computed per channel over valid windows (no padding) and averaged; images smaller than the window
    use a window of their smaller side.
    """
    _check(reconstruction, target)
    x, y = reconstruction.double(), target.double()
    c = x.shape[1]
    size = min(window, x.shape[-1], x.shape[-2])
    w = _gaussian_window(size, sigma, c).to(x.device)
    blur = lambda t: F.conv2d(t, w, groups=c)  # noqa: E731
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return s.flatten(1).mean(1)


def codebook_statistics(id_batches: Iterable[torch.Tensor], codebook_size: int) -> dict[str, float]:
    """Over all ids seen: distinct ids, usage (distinct / codebook size) and perplexity of the histogram."""
    counts: dict[int, int] = {}
    for ids in id_batches:
        values, n = torch.unique(torch.as_tensor(ids).reshape(-1), return_counts=True)
        for v, k in zip(values.tolist(), n.tolist()):
            counts[v] = counts.get(v, 0) + k
    if not counts:
        raise ValueError("no ids given")
    p = torch.tensor(list(counts.values()), dtype=torch.float64)
    p = p / p.sum()
    return {"distinct_ids": float(len(counts)), "usage": len(counts) / codebook_size,
            "perplexity": float(torch.exp(-(p * p.log()).sum()))}
