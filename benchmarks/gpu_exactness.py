"""Full-size exactness of the Triton kernel on a CUDA GPU (run by benchmarks/device_check.sh).

    python benchmarks/gpu_exactness.py [--sizes 256 4096 65536] [--json out.json]
    TRITON_INTERPRET=1 python benchmarks/gpu_exactness.py --device cpu --vocab 300 --dim 64 --sizes 40  # dry run

Paper shape (50,265 x 768), bf16 and fp32 inputs, cosine and l2: random rows of the roberta-base
scale, rows built as near-ties (a query halfway between two codes, moved by a relative 1e-9 to 1e-3),
and a table with duplicated rows. Every id is compared with the torch path, and a sample of rows
with a float64 argmin computed here on the CPU. Prints one line per case and the share of rows the
kernel sent to the exact fallback; exits 1 on any mismatch.

Then the accumulation probe: the kernel's raw fp32 dot products (metric "dot", a table of ones, so
each score is the sum of one query row) on rows built to make a truncating or short accumulator
lose the most (one large term then many just below its last bit, at every position of the K loop;
one large term per 16-wide tensor-core step; wide exponent ranges; cancelling pairs), compared with
the float64 sum. Each row's error is divided by the Higham bound the search assumes for the kernel
(``kernel_layout.kernel_arithmetic``: ``gamma_K`` with one truncating fp32 ulp per addition, plus the
TF32 input rounding for fp32) times ``sum |x_k|``: a ratio above 1 means the hardware accumulates
worse than the bound says, and the search's margins would be wrong.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from lqae_tokenizer import Codebook
from lqae_tokenizer.kernels import kernel_layout
from lqae_tokenizer.kernels import nearest_code_triton as kernel
from lqae_tokenizer.search import triton_fallback_share

V, D = 50265, 768  # paper shape; --vocab/--dim shrink it for a CPU dry run in the interpreter


def float64_argmin(x: torch.Tensor, table: torch.Tensor, metric: str) -> torch.Tensor:
    """Float64 argmin ``[N]`` on the CPU (ties: lowest id), computed on the inputs' device one query at a
    time with elementwise products and row sums (no matmul: every row is reduced the same way, so
    duplicated rows tie exactly)."""
    x64, t64 = x.double(), table.double()
    if metric == "cosine":
        x64 = x64 / x64.norm(dim=1, keepdim=True)
        t64 = t64 / t64.norm(dim=1, keepdim=True)
    ids = []
    for q in x64:
        dist = -(t64 * q).sum(1) if metric == "cosine" else (t64 - q).square_().sum(1)
        ids.append(int(torch.nonzero(dist == dist.min())[0]))
    return torch.tensor(ids, dtype=torch.long)


def near_ties(table: torch.Tensor, n: int, g: torch.Generator) -> torch.Tensor:
    """Queries at the midpoint of two random codes, nudged towards one by a log-uniform 1e-9..1e-3."""
    a = torch.randint(0, V, (n,), device=table.device, generator=g)
    b = torch.randint(0, V, (n,), device=table.device, generator=g)
    t = table.float()
    nudge = torch.pow(10.0, -9 + 6 * torch.rand(n, 1, device=table.device, generator=g))
    return (t[a] + t[b]) / 2 + nudge * (t[a] - t[b])


def accumulation_rows(family: str, n: int, g: torch.Generator, device: torch.device) -> torch.Tensor:
    """``[n, D]`` float32 rows whose plain sum a short or truncating accumulator gets most wrong."""
    rand = lambda *shape: torch.rand(*shape, device=device, generator=g)  # noqa: E731
    if family == "big-then-tiny":  # 1 at position i % D, the rest 0.75 ulp(1): lost by truncation
        x = torch.full((n, D), 1.5 * 2.0**-24, device=device)
        x[torch.arange(n, device=device), torch.arange(n, device=device) % D] = 1.0
    elif family == "big-every-16":  # a large term in every 16-wide step, tiny terms under its ulp
        x = torch.full((n, D), 1.5 * 2.0**-19, device=device)
        big = torch.arange(0, D, 16, device=device)[None, :] + (torch.arange(n, device=device)[:, None] % 16)
        x.scatter_(1, big, 1.0)
    elif family == "wide-exponents":  # random signs, exponents uniform over 2^-20 .. 2^0
        x = torch.pow(2.0, -20 * rand(n, D)) * torch.sign(rand(n, D) - 0.5)
    elif family == "cancelling-pairs":  # +a, -a pairs (exact zero) around small residuals
        a = torch.pow(2.0, 8 * rand(n, D // 2))
        x = torch.stack([a, -a], dim=2).reshape(n, D) + 2.0**-12 * (rand(n, D) - 0.5)
    else:  # "gaussian"
        x = torch.randn(n, D, device=device, generator=g)
    return x


PROBE_FAMILIES = ("big-then-tiny", "big-every-16", "wide-exponents", "cancelling-pairs", "gaussian")


def accumulation_probe(n: int, device: torch.device, g: torch.Generator) -> list[dict]:
    """Observed kernel error over the assumed bound, per input family, dtype and fp32 mode."""
    rows = []
    for dtype, precision in ((torch.bfloat16, "tf32"), (torch.float32, "tf32"), (torch.float32, "ieee")):
        table = torch.ones(64, D, dtype=dtype, device=device)  # 64 equal rows: score = sum of the query
        aux = torch.zeros(64, dtype=torch.float32, device=device)
        arithmetic = kernel_layout.kernel_arithmetic(dtype, precision, "dot")
        relative = arithmetic.product_error() + arithmetic.gamma(D) * (1 + arithmetic.product_error())
        for family in PROBE_FAMILIES:
            x = accumulation_rows(family, n, g, device).to(dtype).contiguous()
            best, ids, _ = kernel.merge_splits(*kernel.launch(x, table, aux, "dot", precision))
            exact = x.double().sum(1)
            bound = relative * x.double().abs().sum(1)
            ratio = ((best.double() - exact).abs() / bound).max()
            rows.append(dict(probe="accumulation", dtype=str(dtype), precision=precision, family=family, n=n,
                             max_error_over_bound=float(ratio), ids_all_zero=bool((ids == 0).all())))
    return rows


def main() -> int:
    global V, D
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 4096, 65536])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--vocab", type=int, default=V)
    parser.add_argument("--dim", type=int, default=D)
    parser.add_argument("--probe-rows", type=int, default=4096, help="rows per accumulation-probe family")
    parser.add_argument("--json")
    args = parser.parse_args()
    V, D = args.vocab, args.dim
    device = torch.device(args.device)
    g = torch.Generator(device=device).manual_seed(0)
    rows, ok = [], True
    for dtype in (torch.bfloat16, torch.float32):
        table = (torch.randn(V, D, device=device, generator=g) * 0.1).to(dtype)
        dup = table.clone()
        dup[V // 2 :: 997] = dup[:: 997][: dup[V // 2 :: 997].shape[0]]  # exact duplicates of lower ids
        for metric in ("cosine", "l2"):
            for kind, book_table in (("random", table), ("near-tie", table), ("duplicates", dup)):
                book = Codebook(book_table, metric=metric)
                for n in args.sizes:
                    if kind == "random":
                        x = (torch.randn(n, D, device=device, generator=g) * 0.1).to(dtype)
                    elif kind == "near-tie":
                        x = near_ties(book_table, n, g).to(dtype)
                    else:
                        x = book_table[torch.randint(0, V, (n,), device=device, generator=g)].clone()
                    row = dict(dtype=str(dtype), metric=metric, kind=kind, n=n)
                    try:
                        got = book.search(x, backend="triton")
                        same = torch.equal(got, book.search(x, backend="torch"))
                        sample = torch.arange(0, n, max(1, n // 128), device=device)
                        exact = torch.equal(got[sample].cpu(), float64_argmin(x[sample], book_table, metric))
                        row.update(triton_equals_torch=same, equals_float64_sample=exact,
                                   fallback_share=triton_fallback_share(book, x))
                    except Exception as err:  # record it and go on: the other cases still say something
                        same = exact = False
                        row.update(error=f"{type(err).__name__}: {str(err)[:300]}")
                    rows.append(row)
                    ok &= same and exact
                    print(json.dumps(row), flush=True)
    for row in accumulation_probe(args.probe_rows, device, g):
        rows.append(row)
        ok &= row["max_error_over_bound"] <= 1.0 and row["ids_all_zero"]
        print(json.dumps(row), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    print("EXACTNESS OK" if ok else "EXACTNESS FAILED")
    return 0 if ok else 1

if __name__ == "__main__":
    sys.exit(main())
