"""Time the Triton search kernel alone under fixed tile shapes, warps, stages and splits (CUDA only).

    python benchmarks/sweep_kernel.py [--sizes 256 4096 65536 131072] [--json out.json]

For tuning: the autotuner only chooses among the configs in ``kernels/nearest_code_triton.py``; this
sweep times those, the same with the tile and K loops flattened into one pipelined loop (FLATTEN),
and a few others, on the paper shape (50,265 x 768, bf16, cosine). Each is the median of CUDA-event
timings (triton.testing.do_bench, L2 flushed before each run), beside the cuBLAS bf16 GEMM of the same
shape (output written, no argmin) and of the shape with V padded to a multiple of 64 (aligned output
rows, the fair floor). Each config's merged ids are compared with the autotuned launch's.
"""

from __future__ import annotations

import argparse
import json

import torch
import triton
from triton.testing import do_bench

from lqae_tokenizer import Codebook
from lqae_tokenizer.kernels import kernel_layout
from lqae_tokenizer.kernels import nearest_code_triton as kernel

V, D = 50265, 768
# (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages, FLATTEN): the autotuner's bf16 configs, the same
# with the tile and K loops flattened into one pipelined loop, then other candidates (2026-12-04 on the
# H200: none of these beat the autotuner's six).
AUTOTUNED = [(128, 128, 64, 8, 4), (128, 256, 64, 8, 3), (256, 128, 64, 8, 3), (128, 64, 64, 4, 4),
             (64, 128, 64, 4, 4), (64, 64, 64, 4, 3)]
SHAPES = ([(*shape, False) for shape in AUTOTUNED] + [(*shape, True) for shape in AUTOTUNED]
          + [(128, 128, 64, 4, 4, False), (128, 256, 64, 8, 4, False), (256, 128, 64, 8, 4, False)])


def run_shape(fed, layout, shape, splits):
    bm, bn, bk, warps, stages, flatten = shape
    n = fed.shape[0]
    s = splits or kernel.default_num_splits(n, V, bm, kernel.num_multiprocessors(fed.device))
    best = torch.full((s, n), float("-inf"), dtype=torch.float32, device=fed.device)
    best_id = torch.full((s, n), kernel.INT32_MAX, dtype=torch.int32, device=fed.device)
    second = torch.full((s, n), float("-inf"), dtype=torch.float32, device=fed.device)

    def go():
        kernel.nearest_code_kernel[(triton.cdiv(n, bm), s)](
            fed, layout.rows, layout.aux, best, best_id, second, n, V, D, kernel.n_bucket(n),
            METRIC=kernel.METRIC_IDS["cosine"], INPUT_PRECISION="tf32", UPCAST=False,
            BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, FLATTEN=flatten, num_warps=warps, num_stages=stages)

    go()
    ids = kernel.merge_splits(best, best_id, second)[1]
    return do_bench(go, warmup=25, rep=200, return_mode="median"), ids, s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 4096, 65536, 131072])
    parser.add_argument("--json")
    args = parser.parse_args()
    g = torch.Generator(device="cuda").manual_seed(0)
    table = (torch.randn(V, D, device="cuda", generator=g) * 0.1).bfloat16()
    book = Codebook(table, metric="cosine")
    layout = book._kernel_layout(torch.bfloat16)
    rows = []
    for n in args.sizes:
        x = (torch.randn(n, D, device="cuda", generator=g) * 0.1).bfloat16()
        fed, _ = kernel_layout.kernel_queries(x, layout)
        gemm = do_bench(lambda: fed @ layout.rows.t(), warmup=25, rep=200, return_mode="median")
        # V = 50,265 is odd: every output row of the GEMM above is misaligned, which slows cuBLAS down
        # several times. The same GEMM with V padded to a multiple of 64 is the fair floor.
        padded = torch.nn.functional.pad(layout.rows, (0, 0, 0, (-V) % 64))
        gemm_aligned = do_bench(lambda: fed @ padded.t(), warmup=25, rep=200, return_mode="median")
        auto = do_bench(lambda: kernel.launch(fed, layout.rows, layout.aux, "cosine", "tf32"), warmup=25, rep=200,
                        return_mode="median")
        reference_ids = kernel.merge_splits(*kernel.launch(fed, layout.rows, layout.aux, "cosine", "tf32"))[1]
        rows.append(dict(n=n, shape="cublas-gemm", ms=gemm, x_gemm=gemm / gemm_aligned))
        rows.append(dict(n=n, shape="cublas-gemm-aligned", ms=gemm_aligned, x_gemm=1.0))
        rows.append(dict(n=n, shape="autotuned", ms=auto, x_gemm=auto / gemm_aligned))
        extra_splits = [None]  # 1 or 2 splits at N >= 65,536 changed nothing on the H200 (2026-12-04)
        for shape in SHAPES:
            for splits in extra_splits:
                try:
                    ms, ids, s = run_shape(fed, layout, shape, splits)
                except Exception as err:  # out of shared memory / registers: record and go on
                    rows.append(dict(n=n, shape=str(shape), splits=splits, error=str(err)[:200]))
                    continue
                rows.append(dict(n=n, shape=str(shape), splits=s, ms=ms, x_gemm=ms / gemm_aligned,
                                 same_ids=bool(torch.equal(ids, reference_ids))))
        for r in rows:
            if r["n"] == n:
                print(json.dumps(r), flush=True)
    print("| N | shape (BM, BN, BK, warps, stages, flatten) | splits | kernel ms | x aligned GEMM | same ids |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        if "ms" in r:
            print(f"| {r['n']} | {r['shape']} | {r.get('splits', '-')} | {r['ms']:.4f} | {r['x_gemm']:.2f} "
                  f"| {r.get('same_ids', '-')} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
