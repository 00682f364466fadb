"""Rounding-error bounds for the score matmuls of the exact search.

Every fast pass scores a query layout ``q`` against a row layout ``r`` (``s_j = q . r_j``, larger is
nearer; see :mod:`lqae_tokenizer.kernels.reference`) with reduced-precision arithmetic. If every
computed score is within ``E`` of its exact real value, then the float64 winner is among the codes
whose computed score lies within ``2 E`` (plus the float64 oracle's own slack) of the best computed
score, and an exact re-rank of those finds it.

The bound is built from what actually happens, term by term (Higham, *Accuracy and Stability of
Numerical Algorithms*, ch. 3):

- layout rounding: ``q`` and ``r`` rounded to the matmul's input dtype, measured exactly per row;
- rounding of the inputs *inside* the matmul (TF32 truncates to 10 explicit bits, oneDNN's bf16
  mode rounds to 7), chosen by the global precision settings in force;
- accumulation of ``K`` products: ``gamma_K = K u / (1 - K u)`` times ``sum |q_k r_k| <= |q| |r|``;
- rounding of the result to the output dtype (a CPU bf16 matmul returns bf16);
- flush-to-zero and denormals-are-zero: at most ``2^-126`` per input term and per addition.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch

FP32_UNIT = 2.0**-24  # round-to-nearest fp32
TRUNCATING_FP32_UNIT = 2.0**-23  # tensor cores may truncate partial sums: one ulp per add
BF16_UNIT = 2.0**-8  # round-to-nearest bf16 (8 significant bits)
TF32_TRUNCATION = 2.0**-10  # TF32 keeps 10 explicit bits and truncates (no round-to-nearest)
FLUSH = 2.0**-126  # smallest normal fp32/bf16: the most a flushed denormal can be worth
FLOAT64_UNIT = 2.0**-53
# Largest |q| |r| a pass may see: every partial sum stays below it, far under fp32's 2^128.
OVERFLOW_GUARD = 2.0**100


@dataclass(frozen=True)
class MatmulArithmetic:
    """How one matmul rounds.

    Attributes:
        input_unit: relative error the matmul itself adds to each input element (0 when it
            multiplies its inputs exactly, ``2^-10`` for TF32, ``2^-8`` for bf16 modes).
        accumulate_unit: relative error per addition of the fp32 (or float64) accumulation.
        output_unit: relative error of rounding the result to the output dtype (0 for fp32 out).
        name: for messages and benchmarks.
    """

    input_unit: float
    accumulate_unit: float
    output_unit: float
    name: str

    def product_error(self) -> float:
        """Relative error of one product from the in-matmul rounding of both factors."""
        return 2 * self.input_unit + self.input_unit**2

    def gamma(self, terms: int) -> float:
        """``gamma_K``: relative error bound of a ``terms``-term fp sum, any order."""
        ku = terms * self.accumulate_unit
        if ku >= 0.5:
            raise ValueError(f"a {terms}-term sum is too long for unit roundoff {self.accumulate_unit}")
        return ku / (1 - ku)


BF16_MATMUL_BF16_OUT = MatmulArithmetic(0.0, TRUNCATING_FP32_UNIT, BF16_UNIT, "bf16 inputs, fp32 sum, bf16 out")
FP32_IEEE = MatmulArithmetic(0.0, TRUNCATING_FP32_UNIT, 0.0, "fp32 ieee")
FP32_REDUCED = MatmulArithmetic(BF16_UNIT, TRUNCATING_FP32_UNIT, 0.0, "fp32 under tf32/bf16 settings")
FLOAT64 = MatmulArithmetic(0.0, FLOAT64_UNIT, 0.0, "float64")


def _setting(path: str) -> str:
    """A ``torch.backends`` ``fp32_precision`` value, ``"none"`` when absent (older PyTorch)."""
    obj = torch.backends
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return "none"
    value = getattr(obj, "fp32_precision", "none")
    return str(value).lower()


def fp32_matmul_is_ieee(device: torch.device) -> bool:
    """Whether an fp32 matmul on ``device`` runs in full fp32 under the current global settings.

    Reads only PyTorch's per-backend ``fp32_precision`` settings (the legacy
    ``set_float32_matmul_precision``/``allow_tf32`` write into them; their *getters* raise once the
    new API was used, so they are never read). ``"none"`` inherits from the parent setting.
    """
    backend = {"cuda": "cuda.matmul", "cpu": "mkldnn.matmul"}.get(device.type)
    if backend is None:  # unknown backends: assume they may round their inputs
        return False
    chain = [backend, backend.split(".")[0]]
    for path in chain:
        value = _setting(path)
        if value != "none":
            return value == "ieee"
    generic = str(getattr(torch.backends, "fp32_precision", "none")).lower()
    return generic in ("none", "ieee")


def fp32_matmul_arithmetic(device: torch.device) -> MatmulArithmetic:
    """The arithmetic of an fp32 matmul on ``device`` as the global settings now stand."""
    return FP32_IEEE if fp32_matmul_is_ieee(device) else FP32_REDUCED


@functools.lru_cache(maxsize=None)
def cpu_bf16_matmul_is_exact_enough() -> bool:
    """Whether this CPU's bf16 matmul is fast here and rounds as :data:`BF16_MATMUL_BF16_OUT` says.

    Fast: the CPU has AVX512-BF16 or AMX (elsewhere bf16 is emulated and slower than fp32).
    Checked on small inputs built to expose the alternatives: partial sums kept in bf16 (a sum of
    many small terms onto a large one, and a cancellation across K blocks), and an output that is
    truncated instead of rounded to nearest.
    """
    cpu = getattr(torch, "cpu", None)
    fast = any(bool(getattr(cpu, name, lambda: False)()) for name in
               ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))
    if not fast:
        return False
    checks = []
    with torch.autocast("cpu", enabled=False):
        for k in (64, 768, 769):
            checks.append(_bf16_probe(k))
    return all(checks)


def _bf16_probe(k: int) -> bool:
    """One shape of :func:`cpu_bf16_matmul_is_exact_enough`, sized like a real search tile."""
    a = torch.zeros(256, k)
    a[0, 0], a[0, 1:] = 1.0, 2.0**-9  # fp32 sum 1 + (k-1) 2^-9; bf16 partial sums stay at 1
    third = k // 3
    a[1, :third], a[1, third : 2 * third], a[1, 2 * third : 3 * third] = 1.0, 2.0**-8, -1.0
    a[2, 0], a[2, 1], a[2, 2] = 1.0, 2.0**-8, 2.0**-9  # 1 + 0.75 ulp: nearest is 1 + 2^-7, truncated 1
    got = (a.bfloat16() @ torch.ones(k, 2048, dtype=torch.bfloat16)).float()[:3]
    # cancellation: third * 2^-8 survives only when the sum is carried in fp32 across K blocks
    want = torch.tensor([float(torch.tensor(1.0 + (k - 1) * 2.0**-9).bfloat16()), third * 2.0**-8, 1.0 + 2.0**-7])
    return bool((got == want[:, None]).all())


def flush_slack(terms: int, q_norm: torch.Tensor, r_norm: float) -> torch.Tensor:
    """Absolute error of flushed denormal inputs, products and partial sums: ``[N]`` float64."""
    return FLUSH * (math.sqrt(terms) * (q_norm + r_norm) + 2 * terms)


def score_error_bound(
    arithmetic: MatmulArithmetic,
    terms: int,
    q_norm: torch.Tensor,
    q_error: torch.Tensor,
    r_norm: float,
    r_error: float,
    best_score: torch.Tensor,
) -> torch.Tensor:
    """A bound ``E`` ``[N]`` (float64) on |computed score - exact score| for every code near the top.

    Args:
        arithmetic: how the matmul rounds. terms: ``K``, the length of each dot product.
        q_norm: ``[N]`` norms of the query rows as fed to the matmul (after layout rounding).
        q_error: ``[N]`` norms of (fed query row - exact query row).
        r_norm: largest norm of a fed codebook row. r_error: largest norm of (fed row - exact row).
        best_score: ``[N]`` the best computed score of each row (output rounding is relative to
            the scores near it).
    """
    q_norm, q_error, best = q_norm.double(), q_error.double(), best_score.double().abs()
    exact_q = q_norm + q_error
    layout = q_error * r_norm + exact_q * r_error
    product = arithmetic.product_error() * q_norm * r_norm
    accumulate = arithmetic.gamma(terms) * (1 + arithmetic.product_error()) * q_norm * r_norm
    base = layout + product + accumulate + flush_slack(terms, q_norm, r_norm)
    u = arithmetic.output_unit
    # Output rounding is u |s_j| for the codes that matter, whose |s_j| <= |best| + 2E.
    return (base + u * best) / (1 - 3 * u) * (1 + 2.0**-20)


def float64_oracle_slack(terms: int, q_norm: torch.Tensor, r_norm: float, metric: str) -> torch.Tensor:
    """How far the float64 oracle's own value may sit from the exact score, in score units ``[N]``."""
    q = q_norm.double()
    scale = (q + r_norm) ** 2 if metric == "l2" else q * r_norm
    return (terms + 16) * 4 * FLOAT64_UNIT * scale
