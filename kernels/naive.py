"""The naive exact nearest-codebook search: the oracle every backend is tested against.

Written from the definition only and independent of ``reference.py`` (no layouts, no bounds, no
filter pass, no shared helper): for each query, every code's distance in float64, then the lowest
id among the smallest. Quadratic in memory per query row and slow; for tests and small checks.

Distances (smaller is nearer), from the inputs converted to float64:
- ``"l2"``: ``sum((x - c)^2)``;
- ``"dot"``: ``-sum(x * c)``;
- ``"cosine"``: ``-sum(x/|x| * c/|c|)``, where a zero vector stays zero (so a zero query is at
  distance 0 from every code and gets id 0, and a zero code is at distance 0 from every query).
"""

from __future__ import annotations

import torch

METRICS = ("cosine", "l2", "dot")


def _unit(v: torch.Tensor) -> torch.Tensor:
    norm = v.norm(dim=-1, keepdim=True)
    return v / torch.where(norm > 0, norm, torch.ones_like(norm))


def naive_distances(x: torch.Tensor, codebook: torch.Tensor, metric: str) -> torch.Tensor:
    """``[N, V]`` float64 distances of ``x`` ``[N, D]`` to ``codebook`` ``[V, D]``, row by row."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    x64, c64 = x.detach().double().cpu(), codebook.detach().double().cpu()
    if metric == "cosine":
        x64, c64 = _unit(x64), _unit(c64)
    rows = []
    for query in x64:  # no matmul: products summed elementwise, one query at a time
        # square_() in place: float64 ``** 2`` on a fresh [V, D] tensor is ~25x slower on CPU.
        rows.append((c64 - query).square_().sum(1) if metric == "l2" else -(c64 * query).sum(1))
    return torch.stack(rows) if rows else torch.empty(0, codebook.shape[0], dtype=torch.float64)


def nearest_code_naive(x: torch.Tensor, codebook: torch.Tensor, metric: str = "cosine",
                       allowed_ids: torch.Tensor | None = None) -> torch.Tensor:
    """``LongTensor[N]`` (on the CPU): per query, the lowest id among the codes at the smallest
    float64 distance; with ``allowed_ids``, only those ids compete (and are returned)."""
    dist = naive_distances(x, codebook, metric)  # [N, V]
    if allowed_ids is not None:
        keep = torch.zeros(codebook.shape[0], dtype=torch.bool)
        keep[torch.as_tensor(allowed_ids).cpu()] = True
        dist = torch.where(keep, dist, torch.full_like(dist, float("inf")))
    best = dist.min(dim=1, keepdim=True).values
    ids = torch.arange(codebook.shape[0]).expand_as(dist)
    return torch.where(dist == best, ids, codebook.shape[0]).min(dim=1).values
