"""Benchmark exact nearest-codebook search against straightforward PyTorch, side by side in one run.

    python benchmarks/bench_nearest_code.py                      # CPU: N in {256, 4096}
    python benchmarks/bench_nearest_code.py --device cuda        # GPU: N in {256, 4096, 32768, 131072}
    python benchmarks/bench_nearest_code.py --sizes 256 --dtypes bfloat16 --metrics cosine --json out.json
    python benchmarks/bench_nearest_code.py --fast                 # a 2,000 x 64 table, N=64: seconds, for CI

Methods (V=50,265 rows of width D=768, random data of the roberta-base embedding scale):
  floor       one matmul of the same shape in the input dtype (no argmin): the speed of light
  floor-aligned the same with V padded to a multiple of 64 (V = 50,265 is odd, so the plain floor's
              output rows are misaligned, which slows cuBLAS down several times on a GPU)
  floor-fp32  the same matmul in fp32 (for bf16/fp16 inputs)
  cdist       torch.cdist(x, table).argmin(1), in row chunks that fit memory (fp32; cosine on
              normalised rows, where the l2 argmin is the cosine argmax; not for dot)
  matmul      chunked x @ table.T then argmax (normalised for cosine): fast, NOT exact
  ours-torch  lqae_tokenizer's exact torch path, Codebook prepared once
  ours-oneshot nearest_code(x, table): the one-shot call, which prepares the table every time (no cache)
  oneshot-float64 the same with the reference float64 layout and a snapshot copy of the table (what a
              one-shot call paid before the float32 cosine layout of 2026-12-06)
  ours-triton lqae_tokenizer's exact Triton kernel (CUDA only): kernel, margin test, exact fallback
  triton-kernel the kernel launch and split merge alone (CUDA only): what the exactness checks add is
              ours-triton minus this
"float64 stage" = share of rows the torch path's filter could not settle (sent to the float64 stages);
for ours-triton, the share of rows the kernel left to the torch path ("fallback").
For each: median seconds (CPU: over --repeats runs after a warm-up, host clock; CUDA: CUDA-event
timings by triton.testing.do_bench, L2 flushed before each run, median), TFLOP/s (2*N*V*D flops),
GB/s of the codebook read (N=256), peak extra memory (CUDA: measured; CPU: the score tile it
allocates), and agreement with the float64 argmin on a sample of rows.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from datetime import date

import torch
import torch.nn.functional as F

from lqae_tokenizer import Codebook, nearest_code
from lqae_tokenizer.kernels import reference
from lqae_tokenizer.search import triton_fallback_share
from lqae_tokenizer.kernels.naive import nearest_code_naive
from lqae_tokenizer.kernels.reference import DEFAULT_MEMORY_BUDGET

V, D = 50265, 768
CHUNK_BYTES = 2 * 2**30  # chunk budget for the baselines' N x V score blocks


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, repeats: int) -> tuple[float, float]:
    """Median seconds over ``repeats`` runs after one warm-up; peak extra CUDA bytes (0 on CPU)."""
    fn()
    sync(device)
    base = 0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        start = time.perf_counter()
        fn()
        sync(device)
        estimate_ms = 1e3 * (time.perf_counter() - start)
        peak = torch.cuda.max_memory_allocated(device) - base
        from triton.testing import do_bench

        # At least ``repeats`` timed runs (do_bench sizes its loop to fill ``rep`` milliseconds).
        ms = do_bench(fn, warmup=max(10, estimate_ms), rep=max(50, 1.2 * estimate_ms * repeats), return_mode="median")
        return ms / 1e3, peak
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated(device) - base if device.type == "cuda" else 0
    return statistics.median(times), peak


def rows_per_chunk(n: int, bytes_per_row: int) -> int:
    return max(1, min(n, CHUNK_BYTES // bytes_per_row))


def cdist_argmin(x: torch.Tensor, table: torch.Tensor, metric: str) -> torch.Tensor:
    step = rows_per_chunk(x.shape[0], table.shape[0] * 4)
    x, table = x.float(), table.float()
    if metric == "cosine":
        x, table = F.normalize(x, dim=1), F.normalize(table, dim=1)
    return torch.cat([torch.cdist(x[i : i + step], table).argmin(1) for i in range(0, x.shape[0], step)])


def float64_stage_share(x: torch.Tensor, book: Codebook) -> float:
    """Share of rows the torch path's filter leaves unresolved (they go to the float64 stages)."""
    b = book._book
    exact_q = reference.query_layout(x, b.metric, b.exponent)
    fed = exact_q.to(b.filter_dtype)
    _, codes = reference.chunk_sizes(x.shape[0], b.rows.shape[0], DEFAULT_MEMORY_BUDGET, b.filter_rows.element_size())
    val, pos = reference._top_candidates(fed, b.filter_rows, reference.CANDIDATES, codes)
    margin = reference.score_margin(reference.filter_arithmetic(b, x.device), fed.shape[1], fed, exact_q, b.row_norm,
                               b.row_error, val[:, 0], b.metric)
    _, unresolved = reference._rerank(x, b.rows, b.metric, val, pos, margin)
    return float(unresolved.float().mean())


def matmul_argmax(x: torch.Tensor, table: torch.Tensor, metric: str) -> torch.Tensor:
    step = rows_per_chunk(x.shape[0], table.shape[0] * x.element_size())
    if metric == "cosine":
        table = F.normalize(table, dim=1)
        return torch.cat([(x[i : i + step] @ table.t()).argmax(1) for i in range(0, x.shape[0], step)])
    if metric == "dot":
        return torch.cat([(x[i : i + step] @ table.t()).argmax(1) for i in range(0, x.shape[0], step)])
    sq = (table.float() ** 2).sum(1)
    return torch.cat([(2 * (x[i : i + step] @ table.t()).float() - sq).argmax(1) for i in range(0, x.shape[0], step)])


def floor_matmul(x: torch.Tensor, table: torch.Tensor) -> None:
    step = rows_per_chunk(x.shape[0], table.shape[0] * x.element_size())
    for i in range(0, x.shape[0], step):
        x[i : i + step] @ table.t()


def agreement(ids: torch.Tensor, want: torch.Tensor, sample: torch.Tensor) -> float:
    """Share of the sampled rows whose id equals the float64 argmin ``want`` (CPU ids)."""
    return float((ids[sample].cpu() == want).float().mean())


def run_case(n: int, dtype: torch.dtype, metric: str, device: torch.device, repeats: int) -> list[dict]:
    g = torch.Generator(device=device).manual_seed(0)
    table = (torch.randn(V, D, device=device, generator=g) * 0.1).to(dtype)  # roberta-base row norms ~ 3
    x = (torch.randn(n, D, device=device, generator=g) * 0.1).to(dtype)
    sample = torch.arange(0, n, max(1, n // 64), device=device)
    want = nearest_code_naive(x[sample], table, metric)  # float64 oracle, once per case
    book = Codebook(table, metric=metric)
    flops = 2.0 * n * V * D
    methods = {"floor": lambda: floor_matmul(x, table)}
    aligned = torch.nn.functional.pad(table, (0, 0, 0, (-V) % 64))
    methods["floor-aligned"] = lambda: floor_matmul(x, aligned)
    if dtype != torch.float32:
        x32, table32 = x.float(), table.float()
        methods["floor-fp32"] = lambda: floor_matmul(x32, table32)
    if metric != "dot":  # a distance cannot give the largest dot product
        methods["cdist"] = lambda: cdist_argmin(x, table, metric)
    methods["matmul"] = lambda: matmul_argmax(x, table, metric)
    methods["ours-torch"] = lambda: book.search(x, backend="torch")
    methods["ours-oneshot"] = lambda: nearest_code(x, table, metric=metric, backend="torch")
    methods["oneshot-float64"] = lambda: reference.nearest_code_torch(
        x, reference.prepare_codebook_float64(table.clone(), metric))
    if device.type == "cuda":
        from lqae_tokenizer.kernels import kernel_layout
        from lqae_tokenizer.kernels import nearest_code_triton as kernel

        methods["ours-triton"] = lambda: book.search(x, backend="triton")
        layout = book._kernel_layout(dtype)
        fed, _ = kernel_layout.kernel_queries(x, layout)
        methods["triton-kernel"] = lambda: kernel.merge_splits(*kernel.launch(fed, layout.rows, layout.aux, metric,
                                                                               "tf32"))[1]
    rows = []
    for name, fn in methods.items():
        seconds, peak = timed(fn, device, repeats)
        ids = fn() if not name.startswith("floor") else None
        if device.type == "cpu" and name == "ours-torch":
            peak = DEFAULT_MEMORY_BUDGET * book._book.filter_rows.element_size() // 4
        rows.append(dict(
            n=n, dtype=str(dtype).replace("torch.", ""), metric=metric, method=name, median_ms=seconds * 1e3,
            float64_stage=(float64_stage_share(x, book) if name == "ours-torch" else
                           triton_fallback_share(book, x) if name == "ours-triton" else None),
            tflops=flops / seconds / 1e12, codebook_gbs=(V * D * table.element_size()) / seconds / 1e9,
            peak_extra_mib=peak / 2**20,
            exact_fraction=None if ids is None else agreement(ids, want, sample),
        ))
    floor = rows[0]["median_ms"]
    for row in rows:
        row["x_floor"] = row["median_ms"] / floor
    return rows


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        model = platform.processor() or "unknown CPU"
    flags = [f for f in ("avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if _has_cpu_flag(f)]
    return f"{model}, {torch.get_num_threads()} threads, flags: {' '.join(flags) or 'no avx512'}"


def _has_cpu_flag(flag: str) -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            return any(line.startswith("flags") and f" {flag}" in line for line in f)
    except OSError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", type=int, nargs="+")
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--metrics", nargs="+", default=["cosine", "l2", "dot"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", help="also write every row to this file")
    parser.add_argument("--fast", action="store_true", help="a tiny table (2,000 x 64), N=64, 1 repeat: checks "
                                                             "that every method runs (CI), measures nothing")
    args = parser.parse_args()
    device = torch.device(args.device)
    sizes = args.sizes or ([256, 4096, 32768, 131072] if device.type == "cuda" else [256, 4096])
    if args.fast:
        global V, D
        V, D, sizes, args.repeats = 2000, 64, [64], 1
    rows = []
    for metric in args.metrics:
        for dtype in args.dtypes:
            for n in sizes:
                rows.extend(run_case(n, getattr(torch, dtype), metric, device, args.repeats))
    print(f"# {machine(device)} | torch {torch.__version__} | {date.today()} | median of {args.repeats}")
    print("| N | dtype | metric | method | median ms | x floor | TFLOP/s | codebook GB/s | peak extra MiB | exact "
          "| float64 stage |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        exact = "-" if r["exact_fraction"] is None else f"{r['exact_fraction']:.3f}"
        stage = "-" if r["float64_stage"] is None else f"{100 * r['float64_stage']:.2f}%"
        print(f"| {r['n']} | {r['dtype']} | {r['metric']} | {r['method']} | {r['median_ms']:.3f} | {r['x_floor']:.2f} "
              f"| {r['tflops']:.3f} | {r['codebook_gbs']:.1f} | {r['peak_extra_mib']:.0f} | {exact} | {stage} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine(device), "date": str(date.today()), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
