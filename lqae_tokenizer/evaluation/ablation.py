"""Where a tokenizer's pixels come from: PSNR with each decoder input ablated, one at a time.

``decode(ids)`` runs ids -> embedding rows -> the frozen LM -> the decoder, which reads the hidden
states listed in ``config.decoder_layers`` (0 = the LM's embedding output, -1 = its last layer).
:func:`decoder_input_ablation` rebuilds the same images with one of those inputs replaced:

- ``"<layer> mean"``: that hidden state replaced by its mean over every image and position;
- ``"<layer> zero"``: set to zero;
- ``"<layer> shuffled words"``: computed by the LM from the image's words in a random order, then put
  back at each word's own position (the words stay, their context is scrambled);
- ``"no LM layers"``: every input the decoder reads taken from the embedding output (layer 0): the
  word-embedding lookup with position embeddings and LayerNorm, none of the LM's transformer layers.

If the LM's contextual states mattered, "last mean", "last zero" and "last shuffled words" would fall
far below the full model; if the pixels come from the word lookup, "no LM layers" stays close to it.
Baselines beside them: each patch's exact mean colour (block-constant, and upsampled bicubically) and
one flat colour.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from .metrics import psnr


def _layer_name(index: int, states: int) -> str:
    index = index % states
    return "embedding output" if index == 0 else ("last layer" if index == states - 1 else f"layer {index}")


def patch_mean_colour(pixels: torch.Tensor, patch: int, *, upsample: str = "nearest") -> torch.Tensor:
    """``[B, 3, H, W]`` -> each ``patch x patch`` block's exact mean colour, block-constant
    (``upsample="nearest"``) or upsampled bicubically (``"bicubic"``, clamped to [0, 1])."""
    small = F.avg_pool2d(pixels.double(), patch)
    if upsample == "nearest":
        return small.repeat_interleave(patch, 2).repeat_interleave(patch, 3).to(pixels.dtype)
    if upsample == "bicubic":
        return F.interpolate(small, size=pixels.shape[-2:], mode="bicubic", align_corners=False).clamp(0, 1).to(pixels.dtype)
    raise ValueError(f"upsample must be 'nearest' or 'bicubic', got {upsample!r}")


@torch.inference_mode()
def decoder_input_ablation(tok: Any, pixels: torch.Tensor, *, seed: int = 0) -> dict[str, float]:
    """Mean PSNR (dB) over images of the full model and of each ablation (module docstring).

    Args:
        tok: an :class:`~lqae_tokenizer.ImageTokenizer` whose codebook is the LM's (not a VQ-VAE).
        pixels: ``[B, 3, S, S]`` float in [0, 1] at the tokenizer's size (e.g. ``prepare_batch``).
        seed: the word order of the "shuffled words" rows.

    Returns ``{name: mean PSNR}``, the full model first, then the ablations, then the baselines.
    """
    model = tok.model
    if not tok.has_text:
        raise ValueError("decoder_input_ablation needs a tokenizer whose codebook is the LM's (not a VQ-VAE)")
    pixels = pixels.to(tok.device, torch.float32)
    layers = tuple(model.config.decoder_layers)
    with tok._autocast():
        ids = model.encode(pixels)  # [B, N]
        states = [s.float() for s in model.language_model.all_hidden_states(model.embed(ids))]
        g = torch.Generator().manual_seed(seed)
        order = torch.stack([torch.randperm(ids.shape[1], generator=g) for _ in range(ids.shape[0])]).to(ids.device)
        shuffled = model.language_model.all_hidden_states(model.embed(ids.gather(1, order)))
        back = order.argsort(1)  # position of each original word in the shuffled sequence
        unshuffled = [s.float().gather(1, back[..., None].expand_as(s)) for s in shuffled]

        def rebuilt(inputs: list[torch.Tensor]) -> float:
            out = model.decoder(torch.cat(inputs, dim=-1).to(next(model.decoder.parameters()).dtype))
            return float(psnr(out.float().clamp(0, 1), pixels).mean())

        chosen = [states[i] for i in layers]
        results = {"full model": rebuilt(chosen)}
        for k, index in enumerate(layers):
            name = _layer_name(index, len(states))
            variants = {"mean": chosen[k].mean(dim=(0, 1), keepdim=True).expand_as(chosen[k]),
                        "zero": torch.zeros_like(chosen[k]), "shuffled words": unshuffled[index]}
            for kind, replacement in variants.items():
                results[f"{name} {kind}"] = rebuilt(chosen[:k] + [replacement] + chosen[k + 1:])
        results["no LM layers (embedding output for every input)"] = rebuilt([states[0]] * len(layers))
    patch = model.config.patch_size
    results[f"per-patch mean colour ({patch}x{patch}, block-constant)"] = float(
        psnr(patch_mean_colour(pixels, patch), pixels).mean())
    results[f"per-patch mean colour ({patch}x{patch}, upsampled bicubically)"] = float(
        psnr(patch_mean_colour(pixels, patch, upsample="bicubic"), pixels).mean())
    results["one flat colour"] = float(psnr(pixels.mean(dim=(2, 3), keepdim=True).expand_as(pixels), pixels).mean())
    return results
