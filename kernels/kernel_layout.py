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

import math
from dataclasses import dataclass

import torch

from . import bounds
from .reference import PREPARE_ROWS, query_layout, row_layout, table_exponent, table_shift


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
    r64 = chunk.detach().to(torch.float64)
    if metric == "cosine":
        amax = r64.abs().amax(dim=1, keepdim=True)
        _, e = torch.frexp(torch.where(amax > 0, amax, 1.0))
        return torch.ldexp(r64, (1 - e).to(torch.float64))
    return torch.ldexp(r64, torch.tensor(-exponent, dtype=torch.float64, device=r64.device))


def _effective(fed: torch.Tensor, aux: torch.Tensor, metric: str) -> torch.Tensor:
    """The row layout the kernel's scores correspond to, from its fed rows and aux (float64)."""
    if metric == "cosine":
        return fed * aux.unsqueeze(1)
    if metric == "dot":
        return fed
    return torch.cat([fed, -0.5 * aux.unsqueeze(1)], dim=1)


def prepare_kernel_layout(rows: torch.Tensor, metric: str, dtype: torch.dtype) -> KernelLayout:
    """Lay out ``rows`` ``[V, D]`` for the kernel in ``dtype``, a few thousand rows at a time."""
    exponent = table_exponent(rows, metric)
    shift = table_shift(rows, metric, exponent)
    fed_parts, aux_parts, row_norm, row_error = [], [], 0.0, 0.0
    for r0 in range(0, rows.shape[0], PREPARE_ROWS):
        chunk = rows[r0 : r0 + PREPARE_ROWS]
        fed = _scaled_rows(chunk, metric, exponent).to(dtype)
        wide = fed.to(torch.float64)
        norms = torch.linalg.vector_norm(wide, dim=1)
        if metric == "cosine":  # zero rows: score 0 with everything, like the float64 oracle
            aux = torch.where(norms > 0, 1.0 / torch.where(norms > 0, norms, 1.0), 0.0).to(torch.float32)
        elif metric == "l2":
            aux = (norms**2 - 2 * shift).to(torch.float32)
        else:
            aux = torch.zeros_like(norms, dtype=torch.float32)
        effective = _effective(wide, aux.to(torch.float64), metric)
        exact = row_layout(chunk, metric, exponent, shift)
        row_norm = max(row_norm, float(torch.linalg.vector_norm(effective, dim=1).max()))
        row_error = max(row_error, float(torch.linalg.vector_norm(effective - exact, dim=1).max()))
        fed_parts.append(fed)
        aux_parts.append(aux)
    return KernelLayout(torch.cat(fed_parts).contiguous(), torch.cat(aux_parts), metric, exponent, shift,
                        row_norm, row_error)


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
    q_norm = torch.linalg.vector_norm(wide, dim=1)
    q_error = torch.linalg.vector_norm(wide - exact, dim=1)
    bound = bounds.score_error_bound(arithmetic, fed.shape[1], q_norm, q_error, layout.row_norm,
                                     layout.row_error, best)
    slack = bounds.float64_oracle_slack(exact.shape[1], q_norm + q_error, layout.row_norm + layout.row_error, metric)
    margin = 2 * (bound + slack) * (2.0 if metric == "l2" else 1.0)
    return torch.where(q_norm * layout.row_norm < bounds.OVERFLOW_GUARD, margin, math.inf)
