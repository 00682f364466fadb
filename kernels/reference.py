"""Plain-PyTorch exact nearest-codebook search: the CPU path and the test oracle.

The contract every backend meets: for each row ``x[i]`` the returned id is the argmin over the
(allowed) codebook rows of the distance computed in float64 by :func:`exact_distances`, ties going
to the lowest id. The fast path here runs one fp32 matmul pass over the codebook in chunks, keeps
the top ``CANDIDATES`` scores per row, and re-ranks in float64 every candidate whose fp32 score lies
within a proven rounding bound of the best. A row whose candidate list could be incomplete (more
near-ties than it holds, or a non-finite fp32 score) is settled by a float64 scan: rare, and exact.

Memory: the fp32 score tile is ``rows_per_chunk x codes_per_chunk`` (bounded by ``memory_budget``);
everything else is O(N). The N x V distance matrix is never materialised.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

METRICS = ("cosine", "l2", "dot")
SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
CANDIDATES = 8
DEFAULT_MEMORY_BUDGET = 64 * 2**20  # bytes of fp32 score tile
_FP32_UNIT_ROUNDOFF = 2.0**-24
_TF32_UNIT_ROUNDOFF = 2.0**-11
_FP32_TINY = 2.0**-126  # absolute slack for subnormal rounding per product


def exact_distances(x: torch.Tensor, rows: torch.Tensor, metric: str) -> torch.Tensor:
    """The canonical float64 distance that defines "nearest" for every backend.

    Args:
        x: ``[N, D]`` queries, any float dtype (converted to float64).
        rows: ``[N, K, D]`` per-query candidate rows, or ``[K, D]`` rows shared by all queries.
        metric: ``"cosine"`` (negative cosine similarity; a zero vector has distance 0 to all),
            ``"l2"`` (squared Euclidean) or ``"dot"`` (negative inner product).

    Returns:
        ``[N, K]`` float64 distances, smaller is nearer. Computed pairwise with an elementwise
        product and a sum over D, so identical inputs give bit-identical distances wherever they sit.
    """
    x64 = x.to(torch.float64).unsqueeze(1)  # [N, 1, D]
    r64 = rows.to(torch.float64)
    if r64.dim() == 2:
        r64 = r64.unsqueeze(0)  # [1, K, D]
    if metric == "l2":
        return ((x64 - r64) ** 2).sum(-1)
    if metric == "cosine":
        x64 = _unit_rows(x64)
        r64 = _unit_rows(r64)
    return -(x64 * r64).sum(-1)


def _unit_rows(v: torch.Tensor) -> torch.Tensor:
    """Rows divided by their float64 norm; zero rows stay zero (no eps that would bend tiny rows)."""
    norm = torch.linalg.vector_norm(v, dim=-1, keepdim=True)
    return torch.where(norm > 0, v / torch.where(norm > 0, norm, 1.0), torch.zeros_like(v))


def float64_scan(
    x: torch.Tensor, codebook: torch.Tensor, metric: str, *, codes_per_chunk: int = 2048
) -> torch.Tensor:
    """Exact argmin by scanning the whole codebook in float64 (the oracle; also the slow fallback).

    Args:
        x: ``[N, D]`` queries. codebook: ``[V, D]`` rows. metric: one of :data:`METRICS`.
    Returns:
        ``[N]`` int64 positions into ``codebook``; ties go to the lowest position.
    """
    best_dist = torch.full((x.shape[0],), math.inf, dtype=torch.float64, device=x.device)
    best_id = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
    rows_per_chunk = max(1, (2**22) // max(1, codes_per_chunk * x.shape[1]))  # <= 32 MiB float64
    for r0 in range(0, x.shape[0], rows_per_chunk):
        xr = x[r0 : r0 + rows_per_chunk]
        for c0 in range(0, codebook.shape[0], codes_per_chunk):
            dist = exact_distances(xr, codebook[c0 : c0 + codes_per_chunk], metric)  # [n, v]
            chunk_dist, chunk_arg = dist.min(dim=1)  # min returns the first index on ties
            # Strict "<" keeps the earlier chunk on ties: the lowest id wins overall.
            better = chunk_dist < best_dist[r0 : r0 + rows_per_chunk]
            best_dist[r0 : r0 + rows_per_chunk] = torch.where(better, chunk_dist, best_dist[r0 : r0 + rows_per_chunk])
            best_id[r0 : r0 + rows_per_chunk] = torch.where(better, chunk_arg + c0, best_id[r0 : r0 + rows_per_chunk])
    return best_id


@dataclass
class PreparedCodebook:
    """A codebook laid out once for repeated fp32 search (see :func:`prepare_codebook`).

    Attributes:
        rows: ``[V, D]`` the original rows (dtype as given), used for the float64 re-rank.
        search_rows: ``[V, D]`` fp32 rows the matmul pass uses (unit rows for cosine).
        squared_norms: ``[V]`` fp32 ``|c|^2`` (l2 only, else ``None``).
        max_norm: largest float64 row norm of ``search_rows`` (enters the rounding bound).
        metric: the metric the layout is for.
    """

    rows: torch.Tensor
    search_rows: torch.Tensor
    squared_norms: torch.Tensor | None
    max_norm: float
    metric: str


def prepare_codebook(codebook: torch.Tensor, metric: str) -> PreparedCodebook:
    """Precompute the fp32 search layout of ``codebook`` ``[V, D]`` for ``metric``."""
    rows64 = codebook.detach().to(torch.float64)
    norms64 = torch.linalg.vector_norm(rows64, dim=1)
    squared = None
    if metric == "cosine":
        # Normalise in float64 then round once: the fp32 unit rows carry a relative error <= u.
        search = _unit_rows(rows64).to(torch.float32)
        max_norm = 1.0
    else:
        search = codebook.detach().to(torch.float32)
        max_norm = float(norms64.max()) if norms64.numel() else 0.0
        if metric == "l2":
            squared = (norms64**2).to(torch.float32)
    return PreparedCodebook(codebook.detach(), search.contiguous(), squared, max_norm, metric)


def _query_layout(x: torch.Tensor, metric: str) -> tuple[torch.Tensor, torch.Tensor]:
    """fp32 queries for the matmul pass and their float64 norms ``[N]`` (after any rescaling).

    cosine: unit rows (normalised in float64). dot: each row scaled by a power of two so that its
    largest entry is in [1, 2): exact, argmax-preserving, and immune to fp32 overflow/underflow.
    l2: unchanged (a per-row scale would change the ranking).
    """
    x64 = x.to(torch.float64)
    if metric == "cosine":
        unit = _unit_rows(x64)
        return unit.to(torch.float32), torch.linalg.vector_norm(unit, dim=1)
    if metric == "dot":
        amax = x64.abs().amax(dim=1, keepdim=True)
        _, exponent = torch.frexp(torch.where(amax > 0, amax, 1.0))
        x64 = torch.ldexp(x64, 1 - exponent)
    return x64.to(torch.float32), torch.linalg.vector_norm(x64, dim=1)


def _rounding_margin(
    query_norms: torch.Tensor, book: PreparedCodebook, unit_roundoff: float
) -> torch.Tensor:
    """Twice a bound on |fp32 score - exact score| per row ``[N]`` (float64).

    With gamma = k*u/(1-k*u) for a k-term fp32 dot product (Higham, Accuracy and Stability of
    Numerical Algorithms, 3.1), |fl(x.c) - x.c| <= gamma |x||c|. Inputs rounded to fp32 add a few u
    more; cosine rows are unit so their bound is a constant. Two scores, each off by at most the
    bound, can swap order only when they are within twice it.
    """
    d = book.search_rows.shape[1] + 4
    gamma = d * unit_roundoff / (1 - d * unit_roundoff)
    cmax = book.max_norm
    subnormal_slack = d * _FP32_TINY
    if book.metric == "cosine":
        bound = (gamma + 4 * unit_roundoff) * torch.ones_like(query_norms)
    elif book.metric == "dot":
        bound = (gamma + 2 * unit_roundoff) * query_norms * cmax
    else:  # score = 2 x.c - |c|^2
        bound = 2 * gamma * query_norms * cmax + 2 * unit_roundoff * cmax**2
    return 2 * (bound * 1.01 + subnormal_slack)


def _scores(xq: torch.Tensor, book: PreparedCodebook, c0: int, c1: int) -> torch.Tensor:
    """fp32 scores ``[n, c1 - c0]``, larger is nearer."""
    tile = book.search_rows[c0:c1]
    if book.metric == "l2":
        return torch.addmm(book.squared_norms[c0:c1].neg(), xq, tile.t(), alpha=2.0)
    return xq @ tile.t()


def _top_candidates(
    xq: torch.Tensor, book: PreparedCodebook, codes_per_chunk: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Running top-``CANDIDATES`` fp32 scores and positions over all codebook chunks."""
    n, v = xq.shape[0], book.search_rows.shape[0]
    k = min(CANDIDATES, v)
    best_val = torch.full((n, 0), -math.inf, dtype=torch.float32, device=xq.device)
    best_pos = torch.zeros((n, 0), dtype=torch.long, device=xq.device)
    for c0 in range(0, v, codes_per_chunk):
        c1 = min(v, c0 + codes_per_chunk)
        scores = _scores(xq, book, c0, c1)
        val, pos = scores.topk(min(k, c1 - c0), dim=1)
        best_val, order = torch.cat([best_val, val], 1).topk(min(k, best_val.shape[1] + val.shape[1]), dim=1)
        best_pos = torch.cat([best_pos, pos + c0], 1).gather(1, order)
    return best_val, best_pos


def _rerank(
    x: torch.Tensor, book: PreparedCodebook, val: torch.Tensor, pos: torch.Tensor, margin: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Float64 winner among the candidates within ``margin`` of the best fp32 score.

    Returns ``(ids [n], ambiguous [n] bool)``; an ambiguous row needs the full float64 scan.
    """
    best = val[:, 0].to(torch.float64)
    within = val.to(torch.float64) >= (best - margin).unsqueeze(1)  # [n, k]
    complete = val.shape[1] == book.search_rows.shape[0]
    ambiguous = ~torch.isfinite(best) | (within[:, -1] & (not complete))
    ids = pos[:, 0].clone()
    # A row whose runner-up is outside the margin has a certain winner: every other code's exact
    # score is below the best one's. Only rows with a second candidate within it need float64.
    close = (within[:, 1:].any(dim=1) if within.shape[1] > 1 else torch.zeros_like(ambiguous)).nonzero().squeeze(1)
    if close.numel() == 0:
        return ids, ambiguous
    pos_c, within_c = pos.index_select(0, close), within.index_select(0, close)
    # index_select, not rows[pos]: advanced indexing with a 2-D index is ~1000x slower on CPU.
    candidates = book.rows.index_select(0, pos_c.reshape(-1)).view(*pos_c.shape, -1)  # [m, k, D]
    dist = exact_distances(x.index_select(0, close), candidates, book.metric)  # [m, k]
    dist = torch.where(within_c, dist, math.inf)
    min_dist = dist.min(dim=1, keepdim=True).values
    # Among exact float64 ties the lowest codebook position wins (torch.argmin's rule).
    tied_pos = torch.where(dist == min_dist, pos_c, torch.iinfo(torch.long).max)
    ids[close] = tied_pos.min(dim=1).values
    return ids, ambiguous


def unit_roundoff_for(device: torch.device) -> float:
    """Unit roundoff of an fp32 matmul on ``device`` (TF32 when CUDA allows it)."""
    if device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32:
        return _TF32_UNIT_ROUNDOFF
    return _FP32_UNIT_ROUNDOFF


def chunk_sizes(n: int, v: int, memory_budget: int) -> tuple[int, int]:
    """Rows and codes per fp32 score tile so that the tile fits ``memory_budget`` bytes."""
    codes = min(v, 16384)
    rows = max(1, min(n, memory_budget // (4 * max(codes, 1))))
    if rows < 64 and v > 1:  # keep the matmul reasonably shaped when the budget is tight
        codes = max(1, min(v, memory_budget // (4 * 64)))
        rows = max(1, min(n, memory_budget // (4 * codes)))
    return rows, codes


def nearest_code_torch(
    x: torch.Tensor, book: PreparedCodebook, *, memory_budget: int = DEFAULT_MEMORY_BUDGET
) -> torch.Tensor:
    """Exact nearest-codebook search in plain PyTorch.

    Args:
        x: ``[N, D]`` float32/bfloat16/float16 queries (validated by the caller).
        book: the codebook prepared by :func:`prepare_codebook` (its metric is used).
        memory_budget: bytes allowed for the fp32 score tile.

    Returns:
        ``[N]`` int64 positions into ``book.rows``: the float64 argmin, lowest position on ties.
    """
    n = x.shape[0]
    out = torch.empty(n, dtype=torch.long, device=x.device)
    if n == 0:
        return out
    rows_per_chunk, codes_per_chunk = chunk_sizes(n, book.search_rows.shape[0], memory_budget)
    unit_roundoff = unit_roundoff_for(x.device)
    for r0 in range(0, n, rows_per_chunk):
        xr = x[r0 : r0 + rows_per_chunk]
        xq, query_norms = _query_layout(xr, book.metric)
        val, pos = _top_candidates(xq, book, codes_per_chunk)
        margin = _rounding_margin(query_norms, book, unit_roundoff)
        ids, ambiguous = _rerank(xr, book, val, pos, margin)
        if bool(ambiguous.any()):
            rows = ambiguous.nonzero().squeeze(1)
            ids[rows] = float64_scan(xr.index_select(0, rows), book.rows, book.metric)
        out[r0 : r0 + rows_per_chunk] = ids
    return out
