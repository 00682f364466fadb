"""The image encoder and decoder: plain ViTs with learned position embeddings and no CLS token."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, w = x.shape
        qkv = self.qkv(x).view(b, n, 3, self.heads, w // self.heads).permute(2, 0, 3, 1, 4)  # [3, B, h, N, w/h]
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # [B, h, N, w/h]
        return self.proj(out.transpose(1, 2).reshape(b, n, w))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, width: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        hidden = int(width * mlp_ratio)
        self.norm1 = nn.LayerNorm(width, eps=1e-6)
        self.attn = Attention(width, heads)
        self.norm2 = nn.LayerNorm(width, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class Transformer(nn.Module):
    """Learned position embedding, ``depth`` blocks, final LayerNorm. ``[B, N, W] -> [B, N, W]``."""

    def __init__(self, tokens: int, width: int, depth: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.position = nn.Parameter(torch.zeros(1, tokens, width))
        self.blocks = nn.ModuleList(Block(width, heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(width, eps=1e-6)
        nn.init.trunc_normal_(self.position, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.position
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


def init_linear_weights(module: nn.Module) -> None:
    """ViT initialisation: truncated normal (std 0.02) weights, zero biases."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class ImageEncoder(nn.Module):
    """Pixels ``[B, 3, H, W]`` in [0, 1] -> token vectors ``[B, N, out_width]``, N = (H/patch)^2."""

    def __init__(self, image_size: int, patch_size: int, width: int, depth: int, heads: int,
                 mlp_ratio: float, out_width: int) -> None:
        super().__init__()
        tokens = (image_size // patch_size) ** 2
        self.patch_embed = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size)
        self.transformer = Transformer(tokens, width, depth, heads, mlp_ratio)
        # Projects to the language model's width; identity when the widths already agree.
        self.to_codebook = nn.Linear(width, out_width) if width != out_width else nn.Identity()
        init_linear_weights(self)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(pixels * 2.0 - 1.0)  # [B, W, g, g], inputs centred to [-1, 1]
        x = x.flatten(2).transpose(1, 2)  # [B, N, W]
        return self.to_codebook(self.transformer(x))


class ImageDecoder(nn.Module):
    """Language-model hidden states ``[B, N, in_width]`` -> pixels ``[B, 3, H, W]`` (unclamped)."""

    def __init__(self, image_size: int, patch_size: int, width: int, depth: int, heads: int,
                 mlp_ratio: float, in_width: int) -> None:
        super().__init__()
        self.grid = image_size // patch_size
        self.patch_size = patch_size
        self.from_language_model = nn.Linear(in_width, width) if width != in_width else nn.Identity()
        self.transformer = Transformer(self.grid**2, width, depth, heads, mlp_ratio)
        self.to_pixels = nn.Linear(width, 3 * patch_size**2)
        init_linear_weights(self)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        x = self.to_pixels(self.transformer(self.from_language_model(hidden)))  # [B, N, 3*p*p]
        b, g, p = x.shape[0], self.grid, self.patch_size
        x = x.view(b, g, g, 3, p, p).permute(0, 3, 1, 4, 2, 5)  # [B, 3, g, p, g, p]
        return x.reshape(b, 3, g * p, g * p) * 0.5 + 0.5  # back from [-1, 1] to pixel scale
