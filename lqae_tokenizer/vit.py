"""The image encoder and decoder: ViTs with learned position embeddings and no CLS token.

Two tower designs (``LQAEConfig.vit_block``):

- ``"lqae"``: the official LQAE code's ViT (``lqae/models/base_vit.py`` of
  forhaoliu/language-quantized-autoencoders): pre-LayerNorm attention without biases and a second
  LayerNorm on its output before the residual (NormFormer); a bias-free gated MLP
  ``LN -> gelu(fc1 x) * fc2 x -> 3x3 depthwise conv over the patch grid -> LN -> fc_out``; no final
  LayerNorm; a bias-free patch convolution on pixels in [0, 1]; the decoder ends in a per-patch
  transposed convolution with bias. GELU is the tanh approximation (flax's default); weights are
  initialised N(0, 0.02).
- ``"plain"``: a standard pre-LN ViT with biases, a Linear-GELU-Linear MLP, a final LayerNorm,
  pixels scaled to [-1, 1] and a linear per-patch head (the bundled demo and older checkpoints).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

VIT_BLOCKS = ("lqae", "plain")


class Attention(nn.Module):
    def __init__(self, width: int, heads: int, bias: bool = True) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width, bias=bias)
        self.proj = nn.Linear(width, width, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, w = x.shape
        qkv = self.qkv(x).view(b, n, 3, self.heads, w // self.heads).permute(2, 0, 3, 1, 4)  # [3, B, h, N, w/h]
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # [B, h, N, w/h]
        return self.proj(out.transpose(1, 2).reshape(b, n, w))


class PlainBlock(nn.Module):
    """Pre-norm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, grid: int) -> None:
        super().__init__()
        hidden = int(width * mlp_ratio)
        self.norm1 = nn.LayerNorm(width, eps=1e-6)
        self.attn = Attention(width, heads)
        self.norm2 = nn.LayerNorm(width, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class GatedConvMLP(nn.Module):
    """The official block's MLP: ``[B, N, W] -> [B, N, W]`` over a ``grid x grid`` patch grid."""

    def __init__(self, width: int, hidden: int, grid: int) -> None:
        super().__init__()
        self.grid = grid
        self.norm_in = nn.LayerNorm(width, eps=1e-5)
        self.fc1 = nn.Linear(width, hidden, bias=False)
        self.fc2 = nn.Linear(width, hidden, bias=False)
        # Depthwise 3x3 over neighbouring patches ("SAME" padding), one filter per channel.
        self.conv = nn.Conv2d(hidden, hidden, kernel_size=3, padding=1, groups=hidden, bias=False)
        self.norm_mid = nn.LayerNorm(hidden, eps=1e-5)
        self.fc_out = nn.Linear(hidden, width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        x = self.norm_in(x)
        h = F.gelu(self.fc1(x), approximate="tanh") * self.fc2(x)  # [B, N, hidden]
        grid = h.transpose(1, 2).reshape(b, -1, self.grid, self.grid)  # [B, hidden, g, g]
        h = self.conv(grid).flatten(2).transpose(1, 2)  # [B, N, hidden]
        return self.fc_out(self.norm_mid(h))


class LQAEBlock(nn.Module):
    """The official block: x + ln(attn(ln(x))) (no attention biases), then x + gated_conv_mlp(x)."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, grid: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width, eps=1e-5)
        self.attn = Attention(width, heads, bias=False)
        self.norm_attn_out = nn.LayerNorm(width, eps=1e-5)  # NormFormer's post-attention norm
        self.mlp = GatedConvMLP(width, int(width * mlp_ratio), grid)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.norm_attn_out(self.attn(self.norm1(x)))
        return x + self.mlp(x)


class Transformer(nn.Module):
    """Learned position embedding and ``depth`` blocks (+ a final LayerNorm for the plain design).
    ``[B, N, W] -> [B, N, W]`` with N = grid**2."""

    def __init__(self, tokens: int, width: int, depth: int, heads: int, mlp_ratio: float,
                 block: str = "plain") -> None:
        super().__init__()
        grid = math.isqrt(tokens)
        block_class = {"plain": PlainBlock, "lqae": LQAEBlock}[block]
        self.position = nn.Parameter(torch.zeros(1, tokens, width))
        self.blocks = nn.ModuleList(block_class(width, heads, mlp_ratio, grid) for _ in range(depth))
        self.norm = nn.LayerNorm(width, eps=1e-6) if block == "plain" else nn.Identity()
        nn.init.trunc_normal_(self.position, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_layers(x)[-1]

    def forward_layers(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every block's output ``[B, N, W]``; the last entry is the tower's output (after any final norm)."""
        x = x + self.position
        outputs = []
        for block in self.blocks:
            x = block(x)
            outputs.append(x)
        outputs[-1] = self.norm(x)
        return outputs


def init_weights(module: nn.Module, truncated: bool = True) -> None:
    """ViT initialisation: normal (std 0.02; truncated at 2 std for the plain design) weights, zero biases."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            if truncated:
                nn.init.trunc_normal_(m.weight, std=0.02)
            else:
                nn.init.normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class ImageEncoder(nn.Module):
    """Pixels ``[B, 3, H, W]`` in [0, 1] -> token vectors ``[B, N, out_width]``, N = (H/patch)^2."""

    def __init__(self, image_size: int, patch_size: int, width: int, depth: int, heads: int,
                 mlp_ratio: float, out_width: int, block: str = "plain") -> None:
        super().__init__()
        tokens = (image_size // patch_size) ** 2
        self.block = block
        self.patch_embed = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size, bias=block == "plain")
        self.transformer = Transformer(tokens, width, depth, heads, mlp_ratio, block)
        # Projects to the language model's width; identity when the widths already agree.
        self.to_codebook = nn.Linear(width, out_width) if width != out_width else nn.Identity()
        init_weights(self, truncated=block == "plain")

    def _patches(self, pixels: torch.Tensor) -> torch.Tensor:
        # The official tower reads pixels in [0, 1]; the plain one centres them to [-1, 1].
        x = self.patch_embed(pixels if self.block == "lqae" else pixels * 2.0 - 1.0)  # [B, W, g, g]
        return x.flatten(2).transpose(1, 2)  # [B, N, W]

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.to_codebook(self.transformer(self._patches(pixels)))

    def layer_outputs(self, pixels: torch.Tensor) -> list[torch.Tensor]:
        """Every encoder block's output ``[B, N, W]`` (the official probe's encoder features)."""
        return self.transformer.forward_layers(self._patches(pixels))


class ImageDecoder(nn.Module):
    """Language-model hidden states ``[B, N, in_width]`` -> pixels ``[B, 3, H, W]`` (unclamped).

    ``skip=True`` adds a linear map from each token's states straight to its patch's pixels, beside
    the ViT: the patch's own word decides most of its pixels, and the ViT learns what context adds.
    """

    def __init__(self, image_size: int, patch_size: int, width: int, depth: int, heads: int,
                 mlp_ratio: float, in_width: int, block: str = "plain", skip: bool = False) -> None:
        super().__init__()
        self.grid = image_size // patch_size
        self.patch_size = patch_size
        self.block = block
        self.from_language_model = nn.Linear(in_width, width) if width != in_width else nn.Identity()
        self.transformer = Transformer(self.grid**2, width, depth, heads, mlp_ratio, block)
        if block == "lqae":  # the official head: one transposed convolution per patch, with bias
            self.to_pixels = nn.ConvTranspose2d(width, 3, kernel_size=patch_size, stride=patch_size)
        else:
            self.to_pixels = nn.Linear(width, 3 * patch_size**2)
        # Per token: 3 x p x p pixels in channel, row, column order (F.fold's layout), pixel scale.
        self.skip = nn.Linear(in_width, 3 * patch_size**2) if skip else None
        init_weights(self, truncated=block == "plain")

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        x = self.transformer(self.from_language_model(hidden))  # [B, N, W]
        b, g, p = x.shape[0], self.grid, self.patch_size
        if self.block == "lqae":
            pixels = self.to_pixels(x.transpose(1, 2).reshape(b, -1, g, g))  # [B, 3, g*p, g*p], pixel scale
        else:
            x = self.to_pixels(x).view(b, g, g, 3, p, p).permute(0, 3, 1, 4, 2, 5)  # [B, 3, g, p, g, p]
            pixels = x.reshape(b, 3, g * p, g * p) * 0.5 + 0.5  # back from [-1, 1] to pixel scale
        if self.skip is not None:
            pixels = pixels + F.fold(self.skip(hidden).transpose(1, 2), g * p, p, stride=p)
        return pixels
