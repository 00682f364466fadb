"""Plain-PyTorch exact nearest-codebook search: the CPU path and the fallback of every backend.

The contract every backend meets: for each row ``x[i]`` the returned id is the argmin over the
(allowed) codebook rows of the distance computed in float64 by :func:`exact_distances`, ties going
to the lowest id.

How, without an N x V float64 matrix:

1. Layouts. Each metric becomes "largest ``q . r_j``" over a query layout ``q`` and a row layout
   ``r`` whose ranking equals the float64 one: cosine ``q = x * 2^-e`` (any positive scale) and
   ``r_j = c_j / |c_j|``; dot ``q = x * 2^-e`` and ``r_j = c_j * 2^-k``; l2 ``q = [x * 2^-k, 1]``,
   ``r_j = [c_j * 2^-k, m - |c_j * 2^-k|^2 / 2]`` (``|x - c|^2 = |x|^2 - 2 q . r`` up to the constant
   ``m``, the table's mean of ``|c * 2^-k|^2 / 2``: subtracting it keeps the appended entry small,
   so rounding it costs little). Powers of two keep every row's largest entry in [1, 2), so no
   fp32 or bf16 pass overflows or underflows.
2. Filter. One matmul pass over the codebook in the filter dtype (bf16 on CPUs with bf16 hardware:
   ~8x faster than fp32 there; fp32 elsewhere, under whatever global precision settings are in
   force) keeps the top :data:`CANDIDATES` scores per row.
3. Re-rank. Every candidate whose score lies within the proven bound of ``kernels/bounds.py`` of the
   best is re-scored with :func:`exact_distances`; the exact winner is among them.
4. Cascade. A row whose bound cannot be met by its candidates (more near-ties than candidates, or a
   row whose magnitudes could overflow) goes through a float64 matmul filter, and the few rows that
   still have more exact ties than candidates through a float64 scan. Rare, and exact.

Memory: one score tile of ``rows_per_chunk x codes_per_chunk`` (bounded by ``memory_budget``),
everything else O(N); the float64 stage converts the codebook chunk by chunk.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from . import bounds

METRICS = ("cosine", "l2", "dot")
SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
CANDIDATES = 16
FLOAT64_CANDIDATES = 64
DEFAULT_MEMORY_BUDGET = 64 * 2**20  # bytes of score tile
PREPARE_ROWS = 4096  # codebook rows converted to float64 at a time


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
        return (x64 - r64).square_().sum(-1)  # in place: one [N, K, D] temporary, not two
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
    """Exact argmin by scanning the whole codebook in float64 (the slowest, last-resort stage).

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


# -- layouts ---------------------------------------------------------------------------------------
def table_exponent(rows: torch.Tensor, metric: str) -> int:
    """``k`` with the table's largest entry times ``2^-k`` in [1, 2) (dot and l2; 0 for cosine)."""
    if metric == "cosine" or rows.numel() == 0:
        return 0
    amax = float(rows.detach().abs().amax())
    return math.frexp(amax)[1] - 1 if amax > 0 else 0


def _scaled(rows: torch.Tensor, exponent: int) -> torch.Tensor:
    r64 = rows.detach().to(torch.float64)
    return torch.ldexp(r64, torch.tensor(-exponent, dtype=torch.float64, device=r64.device))


def table_shift(rows: torch.Tensor, metric: str, exponent: int) -> float:
    """``m`` of the l2 layout: the mean of ``|c * 2^-k|^2 / 2`` over the table (0 for other metrics)."""
    if metric != "l2" or rows.shape[0] == 0:
        return 0.0
    total = sum(float((_scaled(rows[r0 : r0 + PREPARE_ROWS], exponent) ** 2).sum())
                for r0 in range(0, rows.shape[0], PREPARE_ROWS))
    return total / (2 * rows.shape[0])


def row_layout(rows: torch.Tensor, metric: str, exponent: int, shift: float = 0.0) -> torch.Tensor:
    """float64 row layout ``[V, K]`` of ``rows`` ``[V, D]`` (module docstring, step 1)."""
    if metric == "cosine":
        return _unit_rows(rows.detach().to(torch.float64))
    r64 = _scaled(rows, exponent)
    if metric == "dot":
        return r64
    return torch.cat([r64, shift - 0.5 * (r64 * r64).sum(1, keepdim=True)], dim=1)


def scale_each_row(v: torch.Tensor) -> torch.Tensor:
    """float64 rows each multiplied by the power of two that puts its largest entry in [1, 2)
    (zero rows stay zero). Exact unless a tiny entry underflows; used for queries (cosine, dot)
    and for the Triton kernel's cosine rows."""
    v64 = v.detach().to(torch.float64)
    amax = v64.abs().amax(dim=1, keepdim=True)
    _, e = torch.frexp(torch.where(amax > 0, amax, 1.0))
    return torch.ldexp(v64, (1 - e).to(torch.float64))


def query_layout(x: torch.Tensor, metric: str, exponent: int) -> torch.Tensor:
    """float64 query layout ``[N, K]`` of ``x`` ``[N, D]`` (module docstring, step 1)."""
    if metric == "l2":
        scaled = _scaled(x, exponent)
        return torch.cat([scaled, torch.ones_like(scaled[:, :1])], dim=1)
    return scale_each_row(x)


@dataclass
class PreparedCodebook:
    """A codebook laid out once for repeated search (see :func:`prepare_codebook`).

    Attributes:
        rows: ``[V, D]`` the original rows (dtype as given), used for the exact re-rank.
        metric: the metric the layout is for. exponent: ``k`` of the dot/l2 layouts.
        shift: ``m`` of the l2 layout (0 otherwise).
        filter_rows: ``[V, K]`` the row layout in the filter dtype (K = D, or D + 1 for l2).
        row_norm: largest norm of a filter row. row_error: largest norm of (filter row - exact row).
    """

    rows: torch.Tensor
    metric: str
    exponent: int
    shift: float
    filter_rows: torch.Tensor
    row_norm: float
    row_error: float

    @property
    def filter_dtype(self) -> torch.dtype:
        return self.filter_rows.dtype


def default_filter_dtype(device: torch.device) -> torch.dtype:
    """bf16 on CPUs whose bf16 matmul is fast and checked (:mod:`bounds`); fp32 elsewhere.

    CUDA keeps fp32: cuBLAS may reduce bf16 products in reduced precision
    (``allow_bf16_reduced_precision_reduction``), which no fixed bound covers.
    """
    if device.type == "cpu" and bounds.cpu_bf16_matmul_is_exact_enough():
        return torch.bfloat16
    return torch.float32


def prepare_codebook(codebook: torch.Tensor, metric: str, filter_dtype: torch.dtype | None = None) -> PreparedCodebook:
    """Lay out ``codebook`` ``[V, D]`` for ``metric``; ``ValueError`` when a row is not finite.
    ``filter_dtype``: ``torch.bfloat16`` or ``torch.float32`` (default: by device).

    Cosine tables of ordinary magnitudes take :func:`prepare_cosine_fp32` (no float64 pass over the
    table: several times faster, what a one-shot search pays); everything else, and any row that path
    cannot bound, the float64 layout of :func:`prepare_codebook_float64`, its reference."""
    rows = codebook.detach()
    dtype = filter_dtype or default_filter_dtype(rows.device)
    if metric == "cosine":
        fast = prepare_cosine_fp32(rows, dtype)
        if fast is not None:  # finite norms: every row is finite
            return fast
    if not bool(torch.isfinite(rows).all()):
        raise ValueError("embeddings contain NaN or infinity; every codebook row must be finite")
    return prepare_codebook_float64(rows, metric, dtype)


# Rows the fp32 cosine layout takes: norms in [2^-30, 2^60], so that no square or partial sum of squares
# (each at most the norm squared, 2^120 < 2^128) overflows or loses more than FLUSH to underflow (a
# table with a row outside goes float64).
COSINE_FP32_MAX_NORM = 2.0**60
COSINE_FP32_MIN_NORM = 2.0**-30


def prepare_cosine_fp32(rows: torch.Tensor, filter_dtype: torch.dtype) -> PreparedCodebook | None:
    """The cosine layout computed in float32, ``PREPARE_ROWS`` rows at a time: unit rows ``u = c / |c|``
    (norm and division in fp32), fed to the filter in ``filter_dtype``; None when a row is not finite,
    zero, tiny or huge (the caller takes the float64 path).

    ``row_error`` must bound ``|fed - e|`` for the exact unit row ``e`` without computing ``e``:
    ``|fed - u|`` is measured (the difference of a bf16 rounding and its fp32 source is exact, Sterbenz;
    its norm is summed in fp32: the factor ``1 + (D + 2) 2^-23``), and ``|u - e| <= (D + 16) 2^-23``
    bounds the fp32 norm (a D-term sum of squares in any order, then a square root: relative error at
    most ``(D/2 + 2) 2^-23``) and division (at most two roundings, reciprocal then product) of a unit
    row, with FLUSH slack for entries whose squares or quotients underflow. ``row_norm`` is then
    ``1 + row_error`` (``|fed| <= |e| + |fed - e|``), with no pass over the table to measure it.
    """
    dim = rows.shape[1]
    grow = 1 + (dim + 2) * 2.0**-23
    filter_rows = torch.empty((rows.shape[0], dim), dtype=filter_dtype, device=rows.device)
    gap = 0.0
    for r0 in range(0, rows.shape[0], PREPARE_ROWS):
        chunk = rows[r0 : r0 + PREPARE_ROWS].float()
        norms = torch.linalg.vector_norm(chunk, dim=1)
        low, high = (float(v) for v in torch.aminmax(norms))
        if not (COSINE_FP32_MIN_NORM <= low and high <= COSINE_FP32_MAX_NORM):  # also NaN and infinity
            return None
        unit = chunk / norms[:, None]
        fed = filter_rows[r0 : r0 + PREPARE_ROWS]
        fed.copy_(unit)  # rounds to filter_dtype
        if filter_dtype != torch.float32:
            gap = max(gap, float(torch.linalg.vector_norm(fed.float().sub_(unit), dim=1).max()) * grow)
    unit_error = (dim + 16) * 2.0**-23 + dim * bounds.FLUSH / COSINE_FP32_MIN_NORM**2
    row_error = gap + unit_error + math.sqrt(dim) * bounds.FLUSH
    return PreparedCodebook(rows, "cosine", 0, 0.0, filter_rows, 1.0 + row_error, row_error)


def prepare_codebook_float64(codebook: torch.Tensor, metric: str, filter_dtype: torch.dtype | None = None
                             ) -> PreparedCodebook:
    """The reference layout: every row laid out in float64 (a few thousand rows at a time, no float64
    copy of the whole table) and rounded to ``filter_dtype``, its errors measured against that."""
    rows = codebook.detach()
    dtype = filter_dtype or default_filter_dtype(rows.device)
    exponent = table_exponent(rows, metric)
    shift = table_shift(rows, metric, exponent)

    def feed(chunk: torch.Tensor, exact: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        fed = exact.to(dtype)
        return fed, fed.to(torch.float64)

    parts, row_norm, row_error = lay_out_in_chunks(rows, metric, exponent, shift, feed)
    filter_rows = torch.cat(parts).contiguous() if parts else rows.new_empty((0, rows.shape[1]), dtype=dtype)
    return PreparedCodebook(rows, metric, exponent, shift, filter_rows, row_norm, row_error)


def lay_out_in_chunks(rows: torch.Tensor, metric: str, exponent: int, shift: float, feed
                      ) -> tuple[list, float, float]:
    """The one preparation loop of every backend, ``PREPARE_ROWS`` rows at a time (no float64 copy of
    the table): ``feed(chunk, exact_layout)`` returns (what the backend keeps, the float64 layout its
    arithmetic really uses); returns the kept parts, the largest norm of a used row and the largest
    norm of (used - exact layout), which the rounding bounds take as ``row_norm`` and ``row_error``."""
    parts, row_norm, row_error = [], 0.0, 0.0
    for r0 in range(0, rows.shape[0], PREPARE_ROWS):
        chunk = rows[r0 : r0 + PREPARE_ROWS]
        exact = row_layout(chunk, metric, exponent, shift)
        kept, used = feed(chunk, exact)
        row_norm = max(row_norm, float(torch.linalg.vector_norm(used, dim=1).max()))
        row_error = max(row_error, float(torch.linalg.vector_norm(used - exact, dim=1).max()))
        parts.append(kept)
    return parts, row_norm, row_error


def filter_arithmetic(book: PreparedCodebook, device: torch.device) -> bounds.MatmulArithmetic:
    """How the filter matmul rounds on ``device`` with the settings in force now."""
    if book.filter_dtype == torch.bfloat16:
        return bounds.BF16_MATMUL_BF16_OUT
    return bounds.fp32_matmul_arithmetic(device)


# -- the search ------------------------------------------------------------------------------------
def chunk_sizes(n: int, v: int, memory_budget: int, element_bytes: int = 4) -> tuple[int, int]:
    """Rows and codes per score tile so that the tile fits ``memory_budget`` bytes."""
    codes = min(v, 16384)  # measured: larger tiles are no faster, smaller ones cost more topk merges
    rows = max(1, min(n, memory_budget // (element_bytes * max(codes, 1))))
    if rows < 64 and v > 1:  # keep the matmul reasonably shaped when the budget is tight
        codes = max(1, min(v, memory_budget // (element_bytes * 64)))
        rows = max(1, min(n, memory_budget // (element_bytes * codes)))
    return rows, codes


def _top_candidates(q: torch.Tensor, table: torch.Tensor, k: int, codes_per_chunk: int,
                    rows_fn=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Running top-``k`` scores ``q . r_j`` (as float32/float64) and positions over all chunks.

    ``table`` is the row layout, or the raw rows when ``rows_fn`` lays out each chunk on the fly.
    """
    n, v = q.shape[0], table.shape[0]
    k = min(k, v)
    wide = torch.float64 if q.dtype == torch.float64 else torch.float32
    best_val = torch.full((n, 0), -math.inf, dtype=wide, device=q.device)
    best_pos = torch.zeros((n, 0), dtype=torch.long, device=q.device)
    for c0 in range(0, v, codes_per_chunk):
        c1 = min(v, c0 + codes_per_chunk)
        tile = table[c0:c1] if rows_fn is None else rows_fn(table[c0:c1])
        scores = q @ tile.t()  # [n, c1 - c0]
        val, pos = scores.topk(min(k, c1 - c0), dim=1)
        best_val, order = torch.cat([best_val, val.to(wide)], 1).topk(min(k, best_val.shape[1] + val.shape[1]), dim=1)
        best_pos = torch.cat([best_pos, pos + c0], 1).gather(1, order)
    return best_val, best_pos


def _rerank(
    x: torch.Tensor, rows: torch.Tensor, metric: str, val: torch.Tensor, pos: torch.Tensor, margin: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Float64 winner among the candidates within ``margin`` of the best score.

    Returns ``(ids [n], unresolved [n] bool)``; an unresolved row may have winners outside its
    candidate list and needs the next stage.
    """
    best = val[:, 0].to(torch.float64)
    within = val.to(torch.float64) >= (best - margin).unsqueeze(1)  # [n, k]
    complete = val.shape[1] == rows.shape[0]
    unresolved = ~torch.isfinite(best) | (within[:, -1] & (not complete))
    ids = pos[:, 0].clone()
    # A row whose runner-up is outside the margin has a certain winner; only the (row, candidate)
    # pairs of rows with a second candidate inside it are scored in float64.
    within[:, 0] &= within[:, 1:].any(dim=1) if within.shape[1] > 1 else False
    within &= ~unresolved.unsqueeze(1)
    pair_row, pair_k = within.nonzero(as_tuple=True)  # [P] each
    if pair_row.numel() == 0:
        return ids, unresolved
    pair_id = pos[pair_row, pair_k]
    # index_select, not rows[pair_id]: advanced indexing is much slower on CPU.
    candidates = rows.index_select(0, pair_id).unsqueeze(1)  # [P, 1, D]
    dist = exact_distances(x.index_select(0, pair_row), candidates, metric).squeeze(1)  # [P]
    n = x.shape[0]
    min_dist = torch.full((n,), math.inf, dtype=torch.float64, device=x.device)
    min_dist = min_dist.scatter_reduce(0, pair_row, dist, "amin")
    # Among exact float64 ties the lowest codebook position wins (torch.argmin's rule).
    tied = dist == min_dist[pair_row]
    lowest = torch.full((n,), torch.iinfo(torch.long).max, dtype=torch.long, device=x.device)
    lowest = lowest.scatter_reduce(0, pair_row[tied], pair_id[tied], "amin")
    scored = lowest != torch.iinfo(torch.long).max
    ids[scored] = lowest[scored]
    return ids, unresolved


def score_margin(arithmetic, terms, fed_q, exact_q, row_norm, row_error, best, metric,
                 oracle_terms: int | None = None) -> torch.Tensor:
    """Per query row ``[n]`` float64: twice the score error bound of ``arithmetic`` plus twice the
    float64 oracle's slack. A candidate within this of the best score may be the float64 winner.

    Args:
        arithmetic: how the pass rounds (:mod:`bounds`). terms: products summed per score.
        fed_q: the queries the pass multiplied (any dtype); exact_q: their float64 layout.
        row_norm, row_error: of the rows the pass used (:func:`lay_out_in_chunks`).
        best: each row's best score. oracle_terms: the layout's width when it differs from ``terms``.

    Shared by the torch path and the Triton kernel (``kernel_layout.kernel_margin``).
    """
    wide = fed_q.to(torch.float64)
    q_norm = torch.linalg.vector_norm(wide, dim=1)
    q_error = torch.linalg.vector_norm(wide - exact_q, dim=1)
    bound = bounds.score_error_bound(arithmetic, terms, q_norm, q_error, row_norm, row_error, best)
    slack = bounds.float64_oracle_slack(oracle_terms or terms, q_norm + q_error, row_norm + row_error, metric)
    margin = 2 * (bound + slack)
    # A row whose partial sums could approach fp32's range has no bound: infinite margin sends it on.
    return torch.where(q_norm * row_norm < bounds.OVERFLOW_GUARD, margin, math.inf)


def _float64_stage(x: torch.Tensor, book: PreparedCodebook, codes_per_chunk: int) -> torch.Tensor:
    """Rows the filter could not settle: a float64 matmul filter, then a float64 scan if needed."""
    q = query_layout(x, book.metric, book.exponent)
    layout = lambda chunk: row_layout(chunk, book.metric, book.exponent, book.shift)  # noqa: E731
    val, pos = _top_candidates(q, book.rows, FLOAT64_CANDIDATES, min(codes_per_chunk, 4096), layout)
    margin = score_margin(bounds.FLOAT64, q.shape[1], q, q, book.row_norm + book.row_error, 0.0, val[:, 0], book.metric)
    ids, unresolved = _rerank(x, book.rows, book.metric, val, pos, margin)
    if bool(unresolved.any()):
        rows = unresolved.nonzero().squeeze(1)
        ids[rows] = float64_scan(x.index_select(0, rows), book.rows, book.metric)
    return ids


def _search_chunk(x: torch.Tensor, book: PreparedCodebook, arithmetic, codes_per_chunk: int) -> torch.Tensor:
    exact_q = query_layout(x, book.metric, book.exponent)
    fed_q = exact_q.to(book.filter_dtype)
    val, pos = _top_candidates(fed_q, book.filter_rows, CANDIDATES, codes_per_chunk)
    margin = score_margin(arithmetic, fed_q.shape[1], fed_q, exact_q, book.row_norm, book.row_error, val[:, 0],
                     book.metric)
    ids, unresolved = _rerank(x, book.rows, book.metric, val, pos, margin)
    if book.metric != "l2":  # a zero query is at distance 0 from every code: id 0, no search needed
        zero = (exact_q == 0).all(dim=1)
        ids[zero], unresolved = 0, unresolved & ~zero
    if bool(unresolved.any()):
        rows = unresolved.nonzero().squeeze(1)
        ids[rows] = _float64_stage(x.index_select(0, rows), book, codes_per_chunk)
    return ids


def nearest_code_torch(
    x: torch.Tensor, book: PreparedCodebook, *, memory_budget: int = DEFAULT_MEMORY_BUDGET
) -> torch.Tensor:
    """Exact nearest-codebook search in plain PyTorch.

    Args:
        x: ``[N, D]`` finite float32/bfloat16/float16 queries (validated by the caller).
        book: the codebook prepared by :func:`prepare_codebook` (its metric is used).
        memory_budget: bytes allowed for the score tile.

    Returns:
        ``[N]`` int64 positions into ``book.rows``: the float64 argmin, lowest position on ties.
    """
    n = x.shape[0]
    out = torch.empty(n, dtype=torch.long, device=x.device)
    if n == 0:
        return out
    element_bytes = book.filter_rows.element_size()
    rows_per_chunk, codes_per_chunk = chunk_sizes(n, book.rows.shape[0], memory_budget, element_bytes)
    arithmetic = filter_arithmetic(book, x.device)  # read once per call: settings may change between calls
    for r0 in range(0, n, rows_per_chunk):
        out[r0 : r0 + rows_per_chunk] = _search_chunk(x[r0 : r0 + rows_per_chunk], book, arithmetic,
                                                      codes_per_chunk)
    return out
