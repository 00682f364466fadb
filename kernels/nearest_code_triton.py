"""Fused distance + running top-2 over the codebook, in Triton.

Inputs are contiguous (the launcher's caller lays them out; ``kernels/kernel_layout.py``), so the
row stride is ``D`` and every offset is int64. One program owns ``BLOCK_M`` query rows and one
contiguous slice of the codebook (a "split"). It
walks its slice in ``BLOCK_N`` tiles, computes the fp32 scores of the tile with ``tl.dot`` (bf16/fp16
on tensor cores with fp32 accumulation; fp32 via TF32 or IEEE), applies the metric's epilogue, and
keeps per row the best score, its id (strict ``>`` while walking in id order keeps the lowest id), and
the second-best score. Splits let one image (N = 256) fill every multiprocessor; their partial
results are merged deterministically by :func:`merge_splits`.

The kernel only proposes: the caller accepts the best id of a row when the gap to the second best
exceeds twice the proven rounding bound, and re-ranks every other row exactly (see
``lqae_tokenizer.search``). Nothing N x V is ever written.

Scores (larger is nearer), from the inputs exactly as given:
    cosine: (x . c) * inv_norm[c]     (x's own norm does not change the ranking)
    dot:    x . c
    l2:     2 (x . c) - |c|^2
"""

from __future__ import annotations

import os

import triton
import triton.language as tl

METRIC_IDS = {"cosine": 0, "dot": 1, "l2": 2}
# Whether @triton.jit below built interpreter functions (decided at import by TRITON_INTERPRET=1).
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
INT32_MAX = 2**31 - 1
# Compiled Triton reads module globals only when they are constexpr.
_KERNEL_INT32_MAX = tl.constexpr(INT32_MAX)


@triton.jit
def _epilogue(acc, aux_ptr, cols64, col_ok, METRIC: tl.constexpr):
    """fp32 dot products ``[BM, BN]`` -> metric scores, larger is nearer; -inf past the slice."""
    if METRIC == 0:  # cosine: x . c / |c|
        score = acc * tl.load(aux_ptr + cols64, mask=col_ok, other=0.0)[None, :]
    elif METRIC == 1:  # dot
        score = acc
    else:  # l2: 2 x . c - |c|^2
        score = 2.0 * acc - tl.load(aux_ptr + cols64, mask=col_ok, other=0.0)[None, :]
    return tl.where(col_ok[None, :], score, float("-inf"))


@triton.jit
def _update_top2(score, cols, best, best_id, second):
    """Fold one tile's scores into the running (best, best_id, second) per row."""
    tile_best = tl.max(score, axis=1)
    tile_id = tl.min(tl.where(score == tile_best[:, None], cols[None, :], _KERNEL_INT32_MAX), axis=1)
    tile_second = tl.max(tl.where(cols[None, :] == tile_id[:, None], float("-inf"), score), axis=1)
    # Strict ">" keeps the earlier (lower) id when a later tile only ties.
    better = tile_best > best
    second = tl.where(better, tl.maximum(best, tile_second), tl.maximum(second, tile_best))
    return tl.where(better, tile_best, best), tl.where(better, tile_id, best_id), second


@triton.jit
def _scan_tile(x_ptr, c_ptr, aux_ptr, row_offsets, row_ok, offs_k, v0, v_end, D, best, best_id, second,
               METRIC: tl.constexpr, INPUT_PRECISION: tl.constexpr, UPCAST: tl.constexpr,
               BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """Score codes ``[v0, v0 + BLOCK_N)`` (those below ``v_end``) and fold them into the running top 2."""
    cols = v0 + tl.arange(0, BLOCK_N)
    col_ok = cols < v_end
    cols64 = cols.to(tl.int64)
    col_offsets = cols64 * D
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, D, BLOCK_K):
        k = k0 + offs_k
        k_ok = k < D
        a = tl.load(x_ptr + row_offsets[:, None] + k[None, :],
                    mask=row_ok[:, None] & k_ok[None, :], other=0.0)  # [BM, BK]
        b = tl.load(c_ptr + col_offsets[None, :] + k[:, None],
                    mask=col_ok[None, :] & k_ok[:, None], other=0.0)  # [BK, BN]
        if UPCAST:  # the CPU interpreter's dot misreads bf16; bf16 products are exact in fp32 anyway
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        acc = tl.dot(a, b, acc, input_precision=INPUT_PRECISION)
    score = _epilogue(acc, aux_ptr, cols64, col_ok, METRIC)
    return _update_top2(score, cols, best, best_id, second)


@triton.jit
def nearest_code_kernel(
    # pointers
    x_ptr, c_ptr, aux_ptr, best_ptr, best_id_ptr, second_ptr,
    # sizes (D is also the row stride of x and c: both are contiguous)
    N, V, D, N_BUCKET,
    # compile-time
    METRIC: tl.constexpr, INPUT_PRECISION: tl.constexpr, UPCAST: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    FLATTEN: tl.constexpr = False,
):
    pid_m = tl.program_id(0)
    pid_s = tl.program_id(1)
    # This split's slice of the codebook, whole BLOCK_N tiles, in id order.
    tiles_per_split = tl.cdiv(tl.cdiv(V, BLOCK_N), tl.num_programs(1))
    v_begin = pid_s * tiles_per_split * BLOCK_N
    v_end = tl.minimum(V, v_begin + tiles_per_split * BLOCK_N)

    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < N
    row_offsets = rows.to(tl.int64) * D  # int64: N x D and V x D may pass 2**31 elements
    offs_k = tl.arange(0, BLOCK_K)
    best = tl.full((BLOCK_M,), float("-inf"), tl.float32)
    second = tl.full((BLOCK_M,), float("-inf"), tl.float32)
    best_id = tl.full((BLOCK_M,), _KERNEL_INT32_MAX, tl.int32)

    # FLATTEN asks the compiler to pipeline the codebook-tile and K loops as one, so that the next
    # tile's first loads overlap this tile's epilogue (an experiment for benchmarks/sweep_kernel.py;
    # off in the autotuned configs until a GPU run shows it helps). The branch is resolved at compile
    # time, so Triton versions whose tl.range has no ``flatten`` never see it.
    if FLATTEN:
        for v0 in tl.range(v_begin, v_end, BLOCK_N, flatten=True):
            best, best_id, second = _scan_tile(x_ptr, c_ptr, aux_ptr, row_offsets, row_ok, offs_k, v0, v_end, D,
                                               best, best_id, second, METRIC, INPUT_PRECISION, UPCAST,
                                               BLOCK_M, BLOCK_N, BLOCK_K)
    else:
        for v0 in range(v_begin, v_end, BLOCK_N):
            best, best_id, second = _scan_tile(x_ptr, c_ptr, aux_ptr, row_offsets, row_ok, offs_k, v0, v_end, D,
                                               best, best_id, second, METRIC, INPUT_PRECISION, UPCAST,
                                               BLOCK_M, BLOCK_N, BLOCK_K)

    out = pid_s.to(tl.int64) * N + rows
    tl.store(best_ptr + out, best, mask=row_ok)
    tl.store(best_id_ptr + out, best_id, mask=row_ok)
    tl.store(second_ptr + out, second, mask=row_ok)


def _configs(block_k: int, wide_stages: int) -> list:
    """Autotune seeds: 128x128 tiles, 8 warps (the known-good fused GEMM + reduction shape for
    D = 768 on H100/H200), wider tiles, and narrower ones for few rows or many splits. ``block_k``
    and the stages keep each config's pipelined tiles within sm_80's 163 KiB of shared memory
    (checked by tests/test_kernel_compile.py for sm_80 and sm_90)."""
    c = triton.Config
    return [
        c({"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": block_k}, num_warps=8, num_stages=4),
        c({"BLOCK_M": 128, "BLOCK_N": 256, "BLOCK_K": block_k}, num_warps=8, num_stages=wide_stages),
        c({"BLOCK_M": 256, "BLOCK_N": 128, "BLOCK_K": block_k}, num_warps=8, num_stages=wide_stages),
        c({"BLOCK_M": 128, "BLOCK_N": 64, "BLOCK_K": block_k}, num_warps=4, num_stages=4),
        c({"BLOCK_M": 64, "BLOCK_N": 128, "BLOCK_K": block_k}, num_warps=4, num_stages=4),
        c({"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": block_k}, num_warps=4, num_stages=3),
    ]


# 2-byte inputs take 64-deep K tiles; fp32 inputs (twice the bytes) take 32-deep ones.
AUTOTUNE_CONFIGS = {2: _configs(64, 3), 4: _configs(32, 3)}
_AUTOTUNED = {
    size: triton.autotune(configs=configs, key=["N_BUCKET", "V", "D", "METRIC", "INPUT_PRECISION"])(nearest_code_kernel)
    for size, configs in AUTOTUNE_CONFIGS.items()
}


def n_bucket(n: int) -> int:
    """Autotune key for the batch: one image (<= 512 rows), a batch (<= 16,384), or large."""
    return 0 if n <= 512 else 1 if n <= 16384 else 2


def num_multiprocessors(device) -> int:
    import torch

    return torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 4


def default_num_splits(n: int, v: int, block_m: int, multiprocessors: int) -> int:
    """Codebook splits so that one image (few row tiles of ``block_m``) still fills the GPU."""
    row_tiles = triton.cdiv(max(n, 1), block_m)
    return max(1, min(triton.cdiv(v, 128), triton.cdiv(2 * multiprocessors, row_tiles)))


# Fixed tiles for the CPU interpreter, which has no device to autotune on (small tiles keep it quick).
INTERPRETER_BLOCKS = (16, 32, 16)


def launch(x, rows, aux, metric: str, input_precision: str, *, num_splits: int | None = None,
           blocks: tuple[int, int, int] | None = None):
    """Run the kernel; returns per-split partials ``(best [S, N] f32, best_id [S, N] i32, second [S, N] f32)``.

    Args:
        x: ``[N, D]`` contiguous queries, same dtype as ``rows``.
        rows: ``[V, D]`` contiguous codebook rows. aux: ``[V]`` fp32 (cosine: 1/|c|; l2: |c|^2; dot: unused).
        input_precision: "tf32" | "ieee" for fp32 inputs (ignored by bf16/fp16 tensor-core dots).
        num_splits: fixed codebook splits (default: enough to fill the GPU for the chosen BLOCK_M).
        blocks: fixed ``(BLOCK_M, BLOCK_N, BLOCK_K)`` instead of autotuning (always fixed in the
            CPU interpreter).

    The split count depends on BLOCK_M (wider row tiles, fewer of them, more splits), so the outputs
    are sized for the config that launches the most splits, and only the splits of the config that
    ran last are returned: while autotuning, every config writes into the same buffers, and a split
    that only another config wrote would hold stale partials.
    """
    import torch

    if not (x.is_contiguous() and rows.is_contiguous()) or x.dtype != rows.dtype:
        raise ValueError(f"launch needs contiguous x and rows of one dtype, got {x.dtype} and {rows.dtype}")
    n, d = x.shape
    v = rows.shape[0]
    if blocks is None and INTERPRETED and INTERPRETER_BLOCKS is not None:
        blocks = INTERPRETER_BLOCKS
    tuner = None if blocks else _AUTOTUNED[x.element_size()]
    sms = num_multiprocessors(x.device)
    block_ms = [blocks[0]] if blocks else [c.kwargs["BLOCK_M"] for c in tuner.configs]
    splits = {bm: num_splits or default_num_splits(n, v, bm, sms) for bm in block_ms}
    most = max(splits.values())
    best = torch.full((most, n), float("-inf"), dtype=torch.float32, device=x.device)
    best_id = torch.full((most, n), INT32_MAX, dtype=torch.int32, device=x.device)
    second = torch.full((most, n), float("-inf"), dtype=torch.float32, device=x.device)
    args = (x, rows, aux, best, best_id, second, n, v, d, n_bucket(n))
    interpreting = INTERPRETED
    common = dict(METRIC=METRIC_IDS[metric], INPUT_PRECISION="ieee" if interpreting else input_precision,
                  UPCAST=interpreting and x.dtype == torch.bfloat16)
    if tuner is not None:
        tuner[lambda meta: (triton.cdiv(n, meta["BLOCK_M"]), splits[meta["BLOCK_M"]])](*args, **common)
        used = splits[tuner.best_config.kwargs["BLOCK_M"]]
    else:
        bm, bn, bk = blocks
        nearest_code_kernel[(triton.cdiv(n, bm), most)](*args, **common, BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk)
        used = most
    return best[:used], best_id[:used], second[:used]


def merge_splits(best, best_id, second):
    """Deterministic merge of per-split partials ``[S, N]`` -> ``(best [N], id [N] int64, second [N])``.

    The best is the largest split best, ties to the lowest id; the second is the larger of every
    split's second and every other split's best.
    """
    import torch

    top = best.max(dim=0).values
    ids = torch.where(best == top, best_id, INT32_MAX).min(dim=0).values
    chosen = (best == top) & (best_id == ids)
    first_chosen = chosen & (chosen.cumsum(0) == 1)
    others = torch.where(first_chosen, float("-inf"), best).max(dim=0).values
    return top, ids.long(), torch.maximum(others, second.max(dim=0).values)
