"""Fitting a projected-search tokenizer (``search_dim`` > 0) in stages, before end-to-end training.

Why stages: learning which word each patch gets through the search alone is slow (README, "The bundled
tokenizers"), while a good assignment of words to patches can be fitted directly. The bundled photo
tokenizer is built this way (``recipes/fit_projected.py`` runs stages 1-4, then ``lqae-train
--freeze_encoder`` trains the decoder on the encoder's own words):

1. **A linear word table.** Every allowed word ``w`` gets the patch ``c_w = normalize(E_w) @ A + b``,
   a linear image of its embedding; ``A`` ``[H, D]`` and ``b`` ``[D]`` (``D = 3 p^2`` pixels) are fitted
   to training patches by alternating least squares: assign each patch its nearest ``c_w``, refit
   ``A, b`` to the assigned patches. It starts from k-means centres of the patches paired one-to-one
   with the words along matching principal axes (:func:`pair_by_principal_axes`), so that alike
   patches start on alike words. ``A`` becomes the search projection: the search then maps a query
   ``z`` to the word whose table patch, minus ``b``, is nearest.
2. **The encoder** regresses each patch minus ``b`` (``search_dim = D``), so its nearest word is the
   table's word for that patch.
3. **The decoder's skip** starts at the least-squares readout of the patches from the LM states of the
   table's words (the ViT head starts at zero); 4. the decoder trains on those states (teacher forcing).

Everything here is float32 on the CPU or one device; tensors are ``[rows, features]`` unless named.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)


def nearest(points: torch.Tensor, centres: torch.Tensor, chunk: int = 8192) -> torch.Tensor:
    """Index ``[M]`` of each point's nearest centre (squared l2) for points ``[M, D]``, centres ``[K, D]``.

    Chunked so the distance matrix stays ``chunk x K``. Float32 rounding may pick a centre whose distance
    is within ~1e-6 relative of the nearest: fine for fitting, not for tokenizing (which uses the exact
    :mod:`lqae_tokenizer.search`)."""
    sq = (centres * centres).sum(1)
    return torch.cat([(sq - 2 * part @ centres.T).argmin(1) for part in points.split(chunk)])


def kmeans(points: torch.Tensor, k: int, iterations: int, generator: torch.Generator) -> torch.Tensor:
    """Lloyd's algorithm from k random points ``[K, D]``; an emptied cluster restarts at a random point."""
    centres = points[torch.randperm(points.shape[0], generator=generator)[:k]].clone()
    for _ in range(iterations):
        assign = nearest(points, centres)
        sums = torch.zeros_like(centres).index_add_(0, assign, points)
        counts = torch.bincount(assign, minlength=k).float()
        live = counts > 0
        centres[live] = sums[live] / counts[live, None]
        dead = int((~live).sum())
        if dead:
            centres[~live] = points[torch.randint(0, points.shape[0], (dead,), generator=generator)]
    return centres


POWER_ITERATIONS = 30


def _principal_axis(x: torch.Tensor) -> torch.Tensor:
    """Coordinates ``[M]`` of the rows of ``x`` ``[M, D]`` along their first principal axis (power iteration)."""
    x = x - x.mean(0)
    v = torch.randn(x.shape[1], generator=torch.Generator().manual_seed(0), dtype=x.dtype)
    for _ in range(POWER_ITERATIONS):
        v = x.T @ (x @ v)
        v = v / v.norm().clamp_min(1e-12)
    return x @ v


def _principal_axes_of_groups(x: torch.Tensor, groups: list[torch.Tensor]) -> list[torch.Tensor]:
    """:func:`_principal_axis` of ``x[g]`` for every index group ``g``, all groups in one batched power
    iteration (the groups of one level of the pairing's recursion differ in size by at most one): the
    per-group Python loop of 30 tiny matmuls is what made pairing 21,745 words take ~40 s."""
    width = max(len(g) for g in groups)
    index = torch.zeros(len(groups), width, dtype=torch.long)
    mask = torch.zeros(len(groups), width, 1, dtype=x.dtype)
    for row, g in enumerate(groups):
        index[row, : len(g)] = g
        mask[row, : len(g)] = 1
    rows = x[index] * mask  # [G, W, D], padding rows zero
    sizes = mask.sum(1)  # [G, 1]
    rows = (rows - rows.sum(1, keepdim=True) / sizes[:, None]) * mask  # centred; padding stays zero
    v = torch.randn(x.shape[1], generator=torch.Generator().manual_seed(0), dtype=x.dtype).expand(len(groups), -1)
    for _ in range(POWER_ITERATIONS):
        v = torch.bmm(rows.transpose(1, 2), torch.bmm(rows, v[:, :, None]))[:, :, 0]
        v = v / v.norm(dim=1, keepdim=True).clamp_min(1e-12)
    coords = torch.bmm(rows, v[:, :, None])[:, :, 0]  # [G, W]
    return [coords[row, : len(g)] for row, g in enumerate(groups)]


def pair_by_principal_axes(centres: torch.Tensor, words: torch.Tensor) -> torch.Tensor:
    """A one-to-one pairing of ``K`` centres ``[K, D]`` with ``K`` word vectors ``[K, H]`` that keeps
    neighbours together: both sets are sorted along their own first principal axis and split in equal
    halves, recursively, and the i-th centre of a leaf pairs with its i-th word.

    Returns ``LongTensor[K]``: centre ``k`` pairs with word ``pairing[k]``. (Principal axes have no sign;
    a flipped half only mirrors the pairing, which the least-squares fit that follows absorbs.) One level
    of the recursion at a time, batched; :func:`pair_by_principal_axes_reference` is the plain recursion."""
    if centres.shape[0] != words.shape[0]:
        raise ValueError(f"need as many centres as words, got {centres.shape[0]} and {words.shape[0]}")
    pairing = torch.empty(centres.shape[0], dtype=torch.long)
    level = [(torch.arange(centres.shape[0]), torch.arange(words.shape[0]))]
    while level:
        for c, w in level:
            if len(c) == 1:
                pairing[c] = w
        level = [(c, w) for c, w in level if len(c) > 1]
        if not level:
            break
        c_coords = _principal_axes_of_groups(centres, [c for c, _ in level])
        w_coords = _principal_axes_of_groups(words, [w for _, w in level])
        split = []
        for (c, w), cc, wc in zip(level, c_coords, w_coords):
            c, w, half = c[cc.argsort()], w[wc.argsort()], len(c) // 2
            split += [(c[:half], w[:half]), (c[half:], w[half:])]
        level = split
    return pairing


def pair_by_principal_axes_reference(centres: torch.Tensor, words: torch.Tensor) -> torch.Tensor:
    """:func:`pair_by_principal_axes` as a plain recursion, one group at a time (the reference)."""
    if centres.shape[0] != words.shape[0]:
        raise ValueError(f"need as many centres as words, got {centres.shape[0]} and {words.shape[0]}")
    pairing = torch.empty(centres.shape[0], dtype=torch.long)
    stack = [(torch.arange(centres.shape[0]), torch.arange(words.shape[0]))]
    while stack:
        c, w = stack.pop()
        if len(c) == 1:
            pairing[c] = w
            continue
        c = c[_principal_axis(centres[c]).argsort()]
        w = w[_principal_axis(words[w]).argsort()]
        half = len(c) // 2
        stack += [(c[:half], w[:half]), (c[half:], w[half:])]
    return pairing


def fit_linear_table(patches: torch.Tensor, unit_words: torch.Tensor, assign: torch.Tensor, iterations: int,
                     ridge: float = 1e-3, on_iteration: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Alternating least squares for the linear word table ``c_w = unit_words[w] @ A + b``.

    Args:
        patches: ``[M, D]`` training patches (pixels in [0, 1]). unit_words: ``[K, H]`` unit-norm word
            embeddings. assign: ``LongTensor[M]`` the starting word of each patch.
        iterations: refits; each solves ``A, b`` (ridge ``ridge``) for the assigned patches, then moves
            every patch to its nearest table patch.
        on_iteration: called with (iteration, table ``[K, D]``, assignment) after each, e.g. to log.

    Returns ``(W [H + 1, D], assign [M])`` with ``A = W[:H]``, ``b = W[H]``.
    """
    words1 = torch.cat([unit_words, torch.ones(unit_words.shape[0], 1, dtype=unit_words.dtype)], 1)  # [K, H+1]
    for iteration in range(iterations):
        counts = torch.bincount(assign, minlength=words1.shape[0]).to(words1.dtype)
        sums = torch.zeros(words1.shape[0], patches.shape[1], dtype=patches.dtype).index_add_(0, assign, patches)
        gram = (words1 * counts[:, None]).T @ words1 + ridge * torch.eye(words1.shape[1], dtype=words1.dtype)
        weights = torch.linalg.solve(gram, words1.T @ sums)  # [H+1, D]
        table = words1 @ weights
        assign = nearest(patches, table)
        if on_iteration is not None:
            on_iteration(iteration, table, assign)
    return weights, assign


def image_patches(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """``[B, 3, S, S]`` -> ``[B, N, 3 p^2]`` non-overlapping patches, channel-major (``F.unfold``'s layout)."""
    return F.unfold(images, patch_size, stride=patch_size).transpose(1, 2)


def patches_to_images(patches: torch.Tensor, count: int, patch_size: int, size: int) -> torch.Tensor:
    """Inverse of :func:`image_patches` (flattened or not): ``[count * N, 3 p^2]`` -> ``[count, 3, size, size]``."""
    columns = patches.reshape(count, -1, 3 * patch_size * patch_size).transpose(1, 2)
    return F.fold(columns, size, patch_size, stride=patch_size)


def fit_search_encoder(encoder: nn.Module, batches: Callable[[int], torch.Tensor], offset: torch.Tensor,
                       patch_size: int, steps: int, learning_rate: float = 1e-3, warmup: int = 20,
                       log_every: int = 50) -> None:
    """Stage 2: train ``encoder`` (pixels ``[B, 3, S, S]`` -> ``[B, N, 3 p^2]``) to output each patch minus
    ``offset`` ``[3 p^2]`` (MSE, AdamW, gradient norm clipped at 1). ``batches(step)`` gives the images."""
    optimizer = torch.optim.AdamW(encoder.parameters(), lr=learning_rate, weight_decay=0.0)
    encoder.train()
    start = time.perf_counter()
    for step in range(1, steps + 1):
        images = batches(step)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate * min(1.0, step / warmup)
        loss = F.mse_loss(encoder(images), image_patches(images, patch_size) - offset)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(encoder.parameters(), 1.0)
        optimizer.step()
        if step % log_every == 0 or step == steps:
            logger.info("encoder step %d/%d: regression %.2f dB (%.0f s)", step, steps,
                        -10 * math.log10(max(loss.item(), 1e-12)), time.perf_counter() - start)
    encoder.eval()


def init_skip_readout(decoder: nn.Module, states: torch.Tensor, images: torch.Tensor, patch_size: int,
                      ridge: float = 1e-2) -> None:
    """Stage 3: zero the decoder's ViT head and set its skip (``decoder.skip``, a Linear from the states'
    width to ``3 p^2``) to the ridge least-squares readout of ``images`` ``[B, 3, S, S]`` from ``states``
    ``[B, N, F]``, so the decoder starts as that readout and its ViT learns only what context adds."""
    if decoder.skip is None:
        raise ValueError("the decoder has no skip to initialise: build it with decoder_skip=True")
    with torch.no_grad():
        nn.init.zeros_(decoder.to_pixels.weight)
        nn.init.zeros_(decoder.to_pixels.bias)
        nn.init.zeros_(decoder.skip.weight)
        nn.init.zeros_(decoder.skip.bias)
        base = decoder(states)  # what the decoder outputs with both heads at zero (a constant)
        x = states.reshape(-1, states.shape[-1]).double()
        x1 = torch.cat([x, torch.ones(x.shape[0], 1, dtype=x.dtype)], 1)
        target = image_patches(images - base, patch_size).reshape(x.shape[0], -1).double()
        gram = x1.T @ x1 + ridge * torch.eye(x1.shape[1], dtype=x.dtype)
        solution = torch.linalg.solve(gram, x1.T @ target)  # [F + 1, 3 p^2]
        decoder.skip.weight.copy_(solution[:-1].T.to(decoder.skip.weight.dtype))
        decoder.skip.bias.copy_(solution[-1].to(decoder.skip.bias.dtype))


def fit_decoder(decoder: nn.Module, batches: Callable[[int], tuple[torch.Tensor, torch.Tensor]], steps: int,
                learning_rate: float, warmup: int = 20, autocast: bool = True,
                on_step: Callable[[int, float], None] | None = None) -> None:
    """Stage 4: train ``decoder`` on ``batches(step) -> (states [B, N, F], images [B, 3, S, S])`` with a
    pixel MSE (AdamW, no weight decay, constant rate after ``warmup``, norm clipped at 1; bf16 autocast
    on CPU when ``autocast``). ``on_step(step, loss)`` is called after every step (logging, saving)."""
    params = list(decoder.parameters())
    optimizer = torch.optim.AdamW(params, lr=learning_rate, weight_decay=0.0)
    decoder.train()
    for step in range(1, steps + 1):
        states, images = batches(step)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate * min(1.0, step / warmup)
        with torch.autocast(states.device.type, dtype=torch.bfloat16, enabled=autocast):
            loss = F.mse_loss(decoder(states).float(), images)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        if on_step is not None:
            on_step(step, loss.item())
    decoder.eval()
