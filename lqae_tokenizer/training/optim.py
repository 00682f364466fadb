"""AdamW with the paper's settings and a linear warm-up then cosine-to-zero schedule."""

from __future__ import annotations

import math

import torch
from torch import nn

from .config import OptimConfig


def build_optimizer(modules: dict[str, nn.Module], config: OptimConfig, lr: float) -> torch.optim.AdamW:
    """AdamW over the trainable modules. ``config.weight_decay_scope``: ``"all"`` decays every
    parameter (the official code); ``"matrices"`` exempts biases, norms, position embeddings and a
    learned codebook (its rows must follow the encoder's outputs, not shrink towards zero)."""
    decay, no_decay = [], []
    for module in modules.values():
        for name, p in module.named_parameters():
            if not p.requires_grad:
                continue
            exempt = p.dim() < 2 or "position" in name or isinstance(module, nn.Embedding)
            (no_decay if exempt and config.weight_decay_scope == "matrices" else decay).append(p)
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(config.adam_beta1, config.adam_beta2))


def warmup_cosine(warmup_steps: int, total_steps: int):
    """LR factor for completed step count s: linear warm-up to 1, then cosine to 0 at ``total_steps``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor
