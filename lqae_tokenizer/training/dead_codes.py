"""Dead-code restarts for a learned (VQ-VAE) codebook: rows that no image chose for a while move to
encoder outputs.

A learned codebook moves only through the codebook loss, and a row that no encoder vector is nearest to
gets no gradient: it never moves again. So the VQ-VAE baseline collapses (the ablation's arm used 17 of
its 1,024 rows). Every ``every`` optimiser steps, the rows that no token of any rank chose since the last
check are set to distinct encoder vectors drawn at random from the step's batch (the restarts of
Dhariwal et al., 2020, Jukebox, and Zeghidour et al., 2021, SoundStream), and their AdamW moments start
again from zero, so that the dead row's stale moments do not carry it off its new place.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager

import torch

from .distributed import DistributedContext


class CodeUsage:
    """How often each of a learned codebook's ``size`` rows was chosen since the last check.

    ``counts`` is ``[size]`` float64 on this rank (exact for any count below 2**53); ``dead_rows`` sums it
    over the ranks, so every rank decides the same rows, and starts the next window.
    """

    def __init__(self, size: int, every: int) -> None:
        if not isinstance(every, int) or every < 1:
            raise ValueError(f"dead-code restarts need a window of at least 1 step, got {every!r}")
        self.size = size
        self.every = every
        self.counts = torch.zeros(size, dtype=torch.float64)

    def observe(self, ids: torch.Tensor) -> None:
        """Count the rows of a batch's ids (int64, any shape, values in [0, size))."""
        self.counts += torch.bincount(ids.detach().flatten().cpu(), minlength=self.size).double()

    def due(self, step: int) -> bool:
        """Whether the check runs after optimiser step ``step`` (1-based)."""
        return step % self.every == 0

    def dead_rows(self, dist: DistributedContext) -> torch.Tensor:
        """``[size]`` bool: the rows no rank chose in this window (the same on every rank); then a new window."""
        total = dist.sum_tensor(self.counts)
        self.counts.zero_()
        return total == 0

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"counts": self.counts.clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        counts = state["counts"]
        if counts.shape != self.counts.shape:
            raise ValueError(f"the checkpoint counts {counts.shape[0]} codebook rows, this codebook has {self.size}")
        self.counts = counts.double().clone()


def replacement_rows(candidates: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` rows of ``candidates`` ``[M, H]`` drawn at random: distinct rows while ``count <= M``,
    then again from all of them (a restart has to fill every dead row). Returns ``[count, H]``."""
    m = candidates.shape[0]
    if m == 0:
        raise ValueError("no encoder vectors to restart dead codebook rows from (an empty batch)")
    picks = [torch.randperm(m, generator=generator) for _ in range(-(-count // m))]
    return candidates[torch.cat(picks)[:count].to(candidates.device)]


def reset_moments(optimizer: torch.optim.Optimizer, parameter: torch.Tensor, rows: torch.Tensor) -> None:
    """Zero the Adam(W) moments of ``parameter``'s ``rows`` (bool ``[K]``); its other rows keep theirs."""
    state = optimizer.state.get(parameter, {})
    for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
        if key in state:
            state[key][rows.to(state[key].device)] = 0


def restart_dead_codes(model: torch.nn.Module, optimizer: torch.optim.Optimizer, usage: CodeUsage,
                       pixels: torch.Tensor, dist: DistributedContext, seed: int,
                       autocast: Callable[[], AbstractContextManager]) -> int:
    """Move ``model.codebook``'s rows that no rank chose in ``usage``'s window to encoder outputs of rank 0's
    ``pixels`` ``[B, C, H, W]``, send rank 0's codebook to every rank (they stay identical, as DDP needs) and
    zero those rows' moments. ``seed`` fixes the draw. Returns how many rows moved (the same on every rank)."""
    dead = usage.dead_rows(dist)
    count = int(dead.sum())
    if not count:
        return 0
    weight = model.codebook.weight
    with torch.no_grad():
        if dist.is_main:
            with autocast():
                z = model.encoder(pixels.to(dist.device))  # [B, N, H]
            generator = torch.Generator().manual_seed(seed)
            rows = replacement_rows(z.reshape(-1, z.shape[-1]).float(), count, generator)
            weight[dead.to(weight.device)] = rows.to(weight.dtype)
        dist.broadcast_(weight.data)
    reset_moments(optimizer, weight, dead)
    return count
