"""The Triton kernel, run on the CPU by Triton's interpreter at small sizes, against the float64 oracle.

TRITON_INTERPRET=1 must be set before triton is first imported (it fixes the mode of every @triton.jit
function, triton's own ``tl.cdiv`` included, and transformers imports triton early). tests/conftest.py
sets it on machines without CUDA; on a GPU machine tests/test_nearest_code_gpu.py runs the compiled
kernel instead, and this module runs only with ``TRITON_INTERPRET=1 pytest tests/test_nearest_code_triton.py``.
"""

from __future__ import annotations

import os

import pytest
import torch

if os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("the interpreter tests need TRITON_INTERPRET=1 before triton is imported (tests/conftest.py "
                "sets it without CUDA; on a GPU, run them alone with TRITON_INTERPRET=1)", allow_module_level=True)
pytest.importorskip("triton")

from lqae_tokenizer import Codebook, nearest_code  # noqa: E402
from lqae_tokenizer.kernels import nearest_code_triton as kernel  # noqa: E402
from lqae_tokenizer.kernels.kernel_layout import kernel_margin, kernel_queries, prepare_kernel_layout  # noqa: E402
from lqae_tokenizer.kernels.naive import nearest_code_naive  # noqa: E402
from lqae_tokenizer.kernels.reference import exact_distances  # noqa: E402
from lqae_tokenizer.search import resolve_backend, triton_problem  # noqa: E402

DTYPES = [torch.float32, torch.bfloat16, torch.float16]
METRICS = ["cosine", "l2", "dot"]


def oracle(x, book, metric, allowed=None):
    return nearest_code_naive(x, book, metric, allowed)


def data(n, v, d, dtype, seed, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    book = torch.randn(v, d, generator=g)
    book[v // 3] = book[2]  # exact duplicates
    x = torch.randn(n, d, generator=g)
    x[: n // 3] = book[torch.randint(0, v, (n // 3,), generator=g)] + 1e-3 * torch.randn(n // 3, d, generator=g)
    x[0] = book[2]
    return (x * scale).to(dtype), book.to(dtype)


def test_interpreter_is_active():
    assert kernel.INTERPRETED and triton_problem(torch.device("cpu")) is None
    assert resolve_backend("triton", torch.device("cpu")) == "triton"
    assert resolve_backend("auto", torch.device("cpu")) == "torch"  # auto uses Triton on CUDA only


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_triton_backend_matches_oracle(metric, dtype):
    # 45 rows, 157 codes, width 40: multiples of no block size used below.
    x, book = data(45, 157, 40, dtype, seed=0)
    got = nearest_code(x, book, metric=metric, backend="triton")
    assert torch.equal(got, oracle(x, book, metric))
    assert got[0] == 2


@pytest.mark.parametrize("blocks, splits", [((16, 32, 16), 1), ((16, 16, 32), 5), ((32, 64, 16), 3), ((16, 16, 16), 40)])
def test_raw_kernel_proposals_are_the_oracle_when_accepted(blocks, splits):
    """The kernel itself must be right (not rescued by the re-rank) on almost every row."""
    x, book = data(70, 230, 48, torch.float32, seed=1)
    layout = prepare_kernel_layout(book, "cosine", torch.float32)
    fed, exact_q = kernel_queries(x, layout)
    best, ids, second = kernel.merge_splits(*kernel.launch(fed, layout.rows, layout.aux, "cosine", "ieee",
                                                           num_splits=splits, blocks=blocks))
    margin = kernel_margin(fed, exact_q, layout, best, "ieee")
    accepted = (best.double() - second.double()) > margin
    want = oracle(x, book, "cosine")
    assert accepted.float().mean() > 0.9
    assert torch.equal(ids[accepted], want[accepted])
    # Scores are the cosine numerators q.c/|c| of the scaled queries: compare with float64.
    exact = -(exact_distances(x, book[ids], "cosine").diagonal()) * fed.double().norm(dim=1)
    assert torch.allclose(best.double(), exact, rtol=1e-5, atol=1e-5)


def test_exact_ties_go_to_the_lowest_id_across_splits():
    book = torch.randn(4, 16).repeat(30, 1)  # row r appears at r, r+4, r+8, ...
    x = book[:4].clone()
    for splits in (1, 7, 30):
        best, ids, second = kernel.merge_splits(*kernel.launch(x, book, torch.zeros(120), "dot", "ieee",
                                                               num_splits=splits, blocks=(16, 16, 16)))
        assert ids.tolist() == [0, 1, 2, 3] and torch.equal(best, second)  # ties flagged for re-rank
    assert nearest_code(x, book, metric="l2", backend="triton").tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("scale", [1e-20, 1e15])
def test_extreme_norms(metric, scale):
    x, book = data(20, 70, 16, torch.float32, seed=2, scale=scale)
    if metric == "l2":
        book = book * scale
    assert torch.equal(nearest_code(x, book, metric=metric, backend="triton"), oracle(x, book, metric))


def test_allowed_ids_and_mixed_dtypes_and_tf32_setting():
    x, book = data(33, 120, 24, torch.float32, seed=3)
    allowed = torch.arange(1, 120, 2)
    cb = Codebook(book.to(torch.bfloat16), metric="cosine", allowed_ids=allowed)
    got = cb.search(x, backend="triton")  # fp32 queries against a bf16 table: computed in fp32
    assert torch.equal(got, oracle(x, book.to(torch.bfloat16), "cosine", allowed))
    assert torch.equal(cb.search(x, backend="triton", fp32_matmul="ieee"), got)
    assert torch.equal(cb.search(x, backend="torch"), got)


def test_non_contiguous_queries_and_batch_sizes():
    x, book = data(40, 90, 32, torch.float16, seed=4)
    xt = x.t().contiguous().t()
    assert not xt.is_contiguous()
    cb = Codebook(book, metric="l2")
    whole = cb.search(xt, backend="triton")
    assert torch.equal(whole, oracle(x, book, "l2"))
    assert torch.equal(torch.cat([cb.search(x[i : i + 9], backend="triton") for i in range(0, 40, 9)]), whole)



def perturbed_pairs(n: int, v: int, d: int, seed: int):
    """Each query near a code a, and a code b = a plus a step so small that their cosine, dot and
    l2 scores differ by a relative 1e-9 to 1e-3 (log-uniform): inside fp32's rounding for many rows."""
    g = torch.Generator().manual_seed(seed)
    book = torch.randn(v, d, generator=g, dtype=torch.float64)
    x = torch.empty(n, d, dtype=torch.float64)
    for i in range(n):
        a, b = torch.randperm(v, generator=g)[:2].tolist()
        x[i] = book[a] + 0.05 * torch.randn(d, generator=g, dtype=torch.float64)
        step = 10 ** (-9 + 6 * torch.rand(1, generator=g).item())
        book[b] = book[a] + step * book[a].norm() * torch.randn(d, generator=g, dtype=torch.float64) / d**0.5
    return x.float(), book.float()


@pytest.mark.parametrize("metric", METRICS)
def test_tiny_query_entries_keep_their_margin(metric):
    """Entries near 1e-25 square to 0 in fp32: the bound must not collapse with |x| (it did: 3 of
    100 cosine ids and 1 dot id were wrong before the queries were scaled and |x| taken in float64)."""
    x, book = perturbed_pairs(100, 60, 32, seed=3)
    tiny = x * 1e-25
    table = book * 1e-25 if metric == "l2" else book
    assert torch.equal(nearest_code(tiny, table, metric=metric, backend="triton"), oracle(tiny, table, metric))


def test_cosine_of_underflowing_rows_against_tiny_codes():
    row = torch.tensor([[1e-30, 0.0], [0.0, 3e-30], [1e-30, 1e-30]])
    table = torch.tensor([[1.0, 0.2], [1.0, 0.0], [0.0, 1.0], [0.7, 0.7]]) * 1e-30
    assert torch.equal(nearest_code(row, table, metric="cosine", backend="triton"), oracle(row, table, "cosine"))


def test_scores_that_overflow_fp32_go_to_the_exact_path():
    """|c|^2 past fp32's range and 2 x.c = inf - inf: the kernel's max would drop the NaN winner."""
    g = torch.Generator().manual_seed(6)
    book = torch.randn(40, 16, generator=g)
    book[17] = book[17] * 4e19  # |c_17|^2 ~ 1e40
    x = torch.cat([book[17:18] * 1.0001, torch.randn(5, 16, generator=g)])
    for metric in METRICS:
        assert torch.equal(nearest_code(x, book, metric=metric, backend="triton"), oracle(x, book, metric)), metric


@pytest.mark.parametrize("metric", METRICS)
def test_mixed_magnitudes_and_near_ties(metric):
    g = torch.Generator().manual_seed(7)
    book = torch.randn(120, 24, generator=g) * torch.pow(10.0, torch.randint(-20, 21, (120, 1), generator=g).float())
    x = book[torch.randint(0, 120, (40,), generator=g)] * (1 + 1e-6 * torch.randn(40, 24, generator=g))
    book[60] = book[5] * (1 + 1e-7)
    x[0] = book[5]
    assert torch.equal(nearest_code(x, book, metric=metric, backend="triton"), oracle(x, book, metric))


class ReplayingAutotuner:
    """Stands in for ``triton.autotune`` on the CPU, where the interpreter has no device to time on:
    it launches every config into the same output buffers (as the real autotuner's benchmarking
    does), then the chosen one last, and checks each grid against the buffers it writes into."""

    def __init__(self, configs, chosen: int):
        self.configs, self.best_config = configs, configs[chosen]

    def __getitem__(self, grid):
        def run(*args, **common):
            allocated = args[3].shape[0]  # best [S, N]: the split slots the launcher allocated
            for config in [*self.configs, self.best_config]:
                rows, splits = grid(config.kwargs)
                assert splits <= allocated, f"{config.kwargs} launches {splits} splits into {allocated} slots"
                kernel.nearest_code_kernel[(rows, splits)](*args, **common, **config.kwargs)

        return run


@pytest.mark.parametrize("chosen", range(len(kernel.AUTOTUNE_CONFIGS[4])))
def test_autotuned_launch_sizes_its_outputs_for_every_config(monkeypatch, chosen):
    # On the H200 the autotuner's wider BLOCK_M configs launched more codebook splits than the
    # outputs had room for (sized for the narrowest): out-of-bounds writes, wrong ids, NaN elsewhere.
    # Whichever config wins, every split it runs must fit, and only its own splits may be merged.
    configs = kernel.AUTOTUNE_CONFIGS[4]
    monkeypatch.setattr(kernel, "INTERPRETER_BLOCKS", None)
    monkeypatch.setattr(kernel, "_AUTOTUNED", {4: ReplayingAutotuner(configs, chosen)})
    monkeypatch.setattr(kernel, "num_multiprocessors", lambda device: 16)
    n, v = 300, 1024  # 2..5 row tiles, so the split count differs between the configs' BLOCK_M
    splits = {c.kwargs["BLOCK_M"]: kernel.default_num_splits(n, v, c.kwargs["BLOCK_M"], 16) for c in configs}
    assert len(set(splits.values())) > 1
    x, book = data(n, v, 32, torch.float32, seed=11)
    layout = prepare_kernel_layout(book, "cosine", torch.float32)
    fed, _ = kernel_queries(x, layout)
    best, best_id, second = kernel.launch(fed, layout.rows, layout.aux, "cosine", "ieee")
    assert best.shape[0] == splits[configs[chosen].kwargs["BLOCK_M"]]  # the winner's splits only
    _, ids, _ = kernel.merge_splits(best, best_id, second)
    assert torch.equal(ids, oracle(x, book, "cosine"))
