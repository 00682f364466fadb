"""Full-size exactness of the Triton kernel on a CUDA GPU (run by benchmarks/device_check.sh).

    python benchmarks/gpu_exactness.py [--sizes 256 4096 65536] [--json out.json]

Paper shape (50,265 x 768), bf16 and fp32 inputs, cosine and l2: random rows of the roberta-base
scale, rows built as near-ties (a query halfway between two codes, moved by a relative 1e-9 to 1e-3),
and a table with duplicated rows. Every id is compared with the torch path, and a sample of rows
with a float64 argmin computed here on the CPU. Prints one line per case and the share of rows the
kernel sent to the exact fallback; exits 1 on any mismatch.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from lqae_tokenizer import Codebook
from lqae_tokenizer.kernels import kernel_layout
from lqae_tokenizer.kernels import nearest_code_triton as kernel

V, D = 50265, 768


def float64_argmin(x: torch.Tensor, table: torch.Tensor, metric: str) -> torch.Tensor:
    x64, t64 = x.double().cpu(), table.double().cpu()
    if metric == "cosine":
        x64 = x64 / x64.norm(dim=1, keepdim=True)
        t64 = t64 / t64.norm(dim=1, keepdim=True)
        return (x64 @ t64.t()).argmax(1)
    return ((t64**2).sum(1)[None] - 2 * x64 @ t64.t()).argmin(1)


def near_ties(table: torch.Tensor, n: int, g: torch.Generator) -> torch.Tensor:
    """Queries at the midpoint of two random codes, nudged towards one by a log-uniform 1e-9..1e-3."""
    a = torch.randint(0, V, (n,), device=table.device, generator=g)
    b = torch.randint(0, V, (n,), device=table.device, generator=g)
    t = table.float()
    nudge = torch.pow(10.0, -9 + 6 * torch.rand(n, 1, device=table.device, generator=g))
    return (t[a] + t[b]) / 2 + nudge * (t[a] - t[b])


def fallback_share(book: Codebook, x: torch.Tensor) -> float:
    layout = book._kernel_layout(torch.promote_types(x.dtype, book.dtype))
    fed, exact = kernel_layout.kernel_queries(x, layout)
    best, _, second = kernel.merge_splits(*kernel.launch(fed, layout.rows, layout.aux, layout.metric, "tf32"))
    margin = kernel_layout.kernel_margin(fed, exact, layout, best, "tf32")
    return float((~((best.double() - second.double()) > margin)).float().mean())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 4096, 65536])
    parser.add_argument("--json")
    args = parser.parse_args()
    g = torch.Generator(device="cuda").manual_seed(0)
    rows, ok = [], True
    for dtype in (torch.bfloat16, torch.float32):
        table = (torch.randn(V, D, device="cuda", generator=g) * 0.1).to(dtype)
        dup = table.clone()
        dup[V // 2 :: 997] = dup[:: 997][: dup[V // 2 :: 997].shape[0]]  # exact duplicates of lower ids
        for metric in ("cosine", "l2"):
            for kind, book_table in (("random", table), ("near-tie", table), ("duplicates", dup)):
                book = Codebook(book_table, metric=metric)
                for n in args.sizes:
                    if kind == "random":
                        x = (torch.randn(n, D, device="cuda", generator=g) * 0.1).to(dtype)
                    elif kind == "near-tie":
                        x = near_ties(book_table, n, g).to(dtype)
                    else:
                        x = book_table[torch.randint(0, V, (n,), device="cuda", generator=g)].clone()
                    got = book.search(x, backend="triton")
                    same = torch.equal(got, book.search(x, backend="torch"))
                    sample = torch.arange(0, n, max(1, n // 128), device="cuda")
                    exact = torch.equal(got[sample].cpu(), float64_argmin(x[sample], book_table, metric))
                    share = fallback_share(book, x)
                    row = dict(dtype=str(dtype), metric=metric, kind=kind, n=n, triton_equals_torch=same,
                               equals_float64_sample=exact, fallback_share=share)
                    rows.append(row)
                    ok &= same and exact
                    print(json.dumps(row), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    print("EXACTNESS OK" if ok else "EXACTNESS FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
