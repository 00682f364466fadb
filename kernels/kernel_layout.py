"""What the Triton kernel reads, and the rounding bound that decides which of its answers stand.

The kernel scores raw-scaled rows with an fp32 epilogue (``kernels/nearest_code_triton.py``):
cosine ``acc_j * aux_j`` with ``aux_j = 1/|row_j|``; dot ``acc_j``; l2 ``2 acc_j - aux_j`` with
``aux_j = |row_j|^2 - 2 m`` (``m`` as in the reference l2 layout). Rows and queries are scaled by powers of two as in the reference layouts
(``kernels/reference.py``): cosine rows each to a largest entry in [1, 2) (so ``1/|row|`` stays
below 1 and no absolute slack is blown up by it), dot and l2 rows by one table-wide power, queries
per row (cosine, dot) or by the table's power (l2). Scaling is exact unless a tiny entry underflows;
whatever rounding remains is measured here, in float64, and enters the bound.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from . import bounds
from .reference import (lay_out_in_chunks, query_layout, scale_each_row, score_margin, table_exponent,
                        table_shift)


@dataclass
class KernelLayout:
    """Kernel inputs for one compute dtype.

    Attributes:
        rows: ``[V, D]`` contiguous rows in the kernel dtype. aux: ``[V]`` fp32 epilogue values.
        metric, exponent, shift: as in :class:`reference.PreparedCodebook`.
        row_norm: largest norm of an effective row (cosine: ``row_j * aux_j``, about 1; l2: the
            augmented ``[row_j, -aux_j / 2]``). row_error: largest norm of (effective - exact layout row).
    """

    rows: torch.Tensor
    aux: torch.Tensor
    metric: str
    exponent: int
    shift: float
    row_norm: float
    row_error: float


def _scaled_rows(chunk: torch.Tensor, metric: str, exponent: int) -> torch.Tensor:
    """float64 rows as the kernel should see them (before rounding to its dtype)."""
    if metric == "cosine":
        return scale_each_row(chunk)
    return torch.ldexp(chunk.detach().to(torch.float64), torch.tensor(-exponent, dtype=torch.float64,
                                                                      device=chunk.device))


def _effective(fed: torch.Tensor, aux: torch.Tensor, metric: str) -> torch.Tensor:
    """The row layout the kernel's scores correspond to, from its fed rows and aux (float64)."""
    if metric == "cosine":
        return fed * aux.unsqueeze(1)
    if metric == "dot":
        return fed
    return torch.cat([fed, -0.5 * aux.unsqueeze(1)], dim=1)


def prepare_kernel_layout(rows: torch.Tensor, metric: str, dtype: torch.dtype) -> KernelLayout:
    """Lay out ``rows`` ``[V, D]`` for the kernel in ``dtype`` (the reference's chunked preparation)."""
    exponent = table_exponent(rows, metric)
    shift = table_shift(rows, metric, exponent)

    def feed(chunk: torch.Tensor, exact: torch.Tensor):
        fed = _scaled_rows(chunk, metric, exponent).to(dtype)
        wide = fed.to(torch.float64)
        norms = torch.linalg.vector_norm(wide, dim=1)
        if metric == "cosine":  # zero rows: score 0 with everything, like the float64 oracle
            aux = torch.where(norms > 0, 1.0 / torch.where(norms > 0, norms, 1.0), 0.0).to(torch.float32)
        elif metric == "l2":
            aux = (norms**2 - 2 * shift).to(torch.float32)
        else:
            aux = torch.zeros_like(norms, dtype=torch.float32)
        return (fed, aux), _effective(wide, aux.to(torch.float64), metric)

    parts, row_norm, row_error = lay_out_in_chunks(rows, metric, exponent, shift, feed)
    return KernelLayout(torch.cat([f for f, _ in parts]).contiguous(), torch.cat([a for _, a in parts]), metric,
                        exponent, shift, row_norm, row_error)


def kernel_queries(x: torch.Tensor, layout: KernelLayout) -> tuple[torch.Tensor, torch.Tensor]:
    """``(fed [N, D] contiguous in the kernel dtype, exact layout [N, K] float64)`` for ``x``."""
    exact = query_layout(x, layout.metric, layout.exponent)
    fed = exact[:, : x.shape[1]].to(layout.rows.dtype).contiguous()
    return fed, exact


def kernel_arithmetic(dtype: torch.dtype, precision: str, metric: str) -> bounds.MatmulArithmetic:
    """How the kernel rounds: ``tl.dot`` (bf16/fp16 products exact; fp32 by TF32 truncation or
    IEEE), fp32 sums that tensor cores may truncate, then the metric's fp32 epilogue."""
    tf32 = dtype == torch.float32 and precision == "tf32"
    u = bounds.FP32_UNIT
    # cosine: acc * aux rounds once; l2: the subtraction rounds once. (aux's own rounding is part
    # of the layout's measured row_error.)
    epilogue = {"cosine": u, "dot": 0.0, "l2": u}[metric]
    return bounds.MatmulArithmetic(bounds.TF32_TRUNCATION if tf32 else 0.0, bounds.TRUNCATING_FP32_UNIT,
                                   epilogue, f"triton {dtype} {precision}")


def kernel_margin(fed: torch.Tensor, exact: torch.Tensor, layout: KernelLayout, best: torch.Tensor,
                  precision: str) -> torch.Tensor:
    """Per row ``[N]`` (float64, kernel score units): accept the kernel's best id when its lead over
    the runner-up exceeds this. ``inf`` where no bound holds (magnitudes near fp32's range)."""
    metric = layout.metric
    arithmetic = kernel_arithmetic(layout.rows.dtype, precision, metric)
    wide = fed.to(torch.float64)
    if metric == "l2":  # the kernel's score is 2 (q . r_j): the augmented query is [x, 1], halved
        wide = torch.cat([wide, torch.ones_like(wide[:, :1])], dim=1)
        best = best.double() / 2
    margin = score_margin(arithmetic, fed.shape[1], wide, exact, layout.row_norm, layout.row_error, best, metric,
                          oracle_terms=exact.shape[1])
    return margin * (2.0 if metric == "l2" else 1.0)
