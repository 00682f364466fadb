"""Exact nearest-codebook search: the torch path against the float64 oracle."""

from __future__ import annotations

import math

import pytest
import torch

from lqae_tokenizer import Codebook, nearest_code
from lqae_tokenizer.kernels import reference
from lqae_tokenizer.kernels.naive import nearest_code_naive
from lqae_tokenizer.kernels.reference import float64_scan

DTYPES = [torch.float32, torch.bfloat16, torch.float16]
METRICS = ["cosine", "l2", "dot"]


def oracle(x, codebook, metric, allowed=None):
    """The naive float64 scan (kernels/naive.py, written apart from the search): lowest id on ties."""
    return nearest_code_naive(x, codebook, metric, allowed)


def near_tie_data(n, v, d, dtype, seed):
    """Queries that are codebook rows plus tiny noise, a codebook with duplicated rows."""
    g = torch.Generator().manual_seed(seed)
    book = torch.randn(v, d, generator=g)
    book[v // 2] = book[1]  # exact duplicates: the lowest id must win
    book[v - 1] = book[1]
    x = book[torch.randint(0, v, (n,), generator=g)] + 1e-4 * torch.randn(n, d, generator=g)
    x[:3] = book[1]
    return x.to(dtype), book.to(dtype)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_matches_float64_oracle_on_near_ties_and_duplicates(metric, dtype):
    x, book = near_tie_data(n=203, v=517, d=37, dtype=dtype, seed=0)
    got = nearest_code(x, book, metric=metric)
    assert torch.equal(got, oracle(x, book, metric))
    assert got[:3].tolist() == [1, 1, 1]


@pytest.mark.parametrize("metric", METRICS)
def test_random_data_and_chunking_give_same_ids(metric):
    g = torch.Generator().manual_seed(1)
    x, book = torch.randn(300, 24, generator=g), torch.randn(1001, 24, generator=g)
    want = oracle(x, book, metric)
    cb = Codebook(book, metric=metric)
    # A tiny budget forces many row and code chunks (sizes that divide nothing); the tightest (3 rows x
    # 1 code per tile: 1,001 tiles per row chunk) on the first 40 rows only, which keeps it to seconds.
    for budget, rows in ((reference.DEFAULT_MEMORY_BUDGET, 300), (4 * 7 * 64, 300), (4 * 3, 40)):
        assert torch.equal(cb.search(x[:rows], memory_budget=budget), want[:rows])
    # Batch size does not change ids.
    assert torch.equal(torch.cat([cb.search(x[i : i + 7]) for i in range(0, 300, 7)]), want)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("scale", [1e-30, 1e-6, 1e6, 1e30])
def test_extreme_norms(metric, scale):
    g = torch.Generator().manual_seed(2)
    book = torch.randn(257, 16, generator=g)
    x = (book[torch.randint(0, 257, (40,), generator=g)] + 0.01 * torch.randn(40, 16, generator=g)) * scale
    if metric == "l2":
        book = book * scale  # same geometry at every scale
    assert torch.equal(nearest_code(x, book, metric=metric), oracle(x, book, metric))


def test_more_exact_ties_than_candidates_fall_back_to_the_exact_scan():
    book = torch.randn(3, 8).repeat(20, 1)  # every row appears 20 times (> CANDIDATES)
    x = book[:3] + 0.0
    assert nearest_code(x, book, metric="l2").tolist() == [0, 1, 2]
    zero = torch.zeros(2, 8)  # a zero query ties with every row under cosine
    assert nearest_code(zero, book, metric="cosine").tolist() == [0, 0]


@pytest.mark.parametrize("metric", METRICS)
def test_allowed_ids_subset_returns_full_vocabulary_ids(metric):
    g = torch.Generator().manual_seed(3)
    book = torch.randn(500, 12, generator=g)
    allowed = torch.arange(5, 500, 3)
    x = torch.randn(64, 12, generator=g)
    got = nearest_code(x, book, metric=metric, allowed_ids=allowed)
    assert torch.equal(got, oracle(x, book, metric, allowed))
    assert set(got.tolist()) <= set(allowed.tolist())


def test_non_contiguous_inputs_and_inference_mode():
    g = torch.Generator().manual_seed(4)
    book = torch.randn(24, 300, generator=g).t()  # [300, 24], non-contiguous
    x = torch.randn(24, 50, generator=g).t()
    assert not x.is_contiguous() and not book.is_contiguous()
    with torch.inference_mode():
        got = nearest_code(x, book)
    assert torch.equal(got, oracle(x, book, "cosine"))


def test_float64_scan_agrees_with_cdist_on_generic_data():
    # Independent check of the oracle itself: no ties, so any correct float64 method agrees.
    g = torch.Generator().manual_seed(5)
    x, book = torch.randn(50, 10, generator=g, dtype=torch.float64), torch.randn(400, 10, generator=g, dtype=torch.float64)
    assert torch.equal(float64_scan(x, book, "l2"), torch.cdist(x, book).argmin(1))
    cos = torch.nn.functional.normalize(x, dim=1) @ torch.nn.functional.normalize(book, dim=1).t()
    assert torch.equal(float64_scan(x, book, "cosine"), cos.argmax(1))
    assert torch.equal(float64_scan(x, book, "dot"), (x @ book.t()).argmax(1))


def test_rejects_bad_inputs_with_clear_errors():
    book = torch.randn(10, 4)
    with pytest.raises(ValueError, match=r"shape \[N, 4\]"):
        nearest_code(torch.randn(3, 5), book)
    with pytest.raises(ValueError, match=r"shape \[N, 4\]"):
        nearest_code(torch.randn(4), book)
    with pytest.raises(TypeError, match="float32, bfloat16 or float16"):
        nearest_code(torch.randn(3, 4, dtype=torch.float64), book)
    with pytest.raises(TypeError, match="torch.Tensor"):
        nearest_code([[0.0] * 4], book)
    with pytest.raises(ValueError, match="metric must be one of"):
        nearest_code(torch.randn(3, 4), book, metric="manhattan")
    with pytest.raises(ValueError, match="backend must be one of"):
        nearest_code(torch.randn(3, 4), book, backend="cuda-magic")
    with pytest.raises(ValueError, match="allowed_ids must lie in"):
        nearest_code(torch.randn(3, 4), book, allowed_ids=torch.tensor([0, 10]))
    with pytest.raises(ValueError, match="duplicates"):
        nearest_code(torch.randn(3, 4), book, allowed_ids=torch.tensor([1, 1]))


def test_backend_environment_override(monkeypatch):
    book, x = torch.randn(10, 4), torch.randn(3, 4)
    monkeypatch.setenv("LQAE_BACKEND", "torch")
    assert torch.equal(nearest_code(x, book), oracle(x, book, "cosine"))
    monkeypatch.setenv("LQAE_BACKEND", "bogus")
    with pytest.raises(ValueError, match="LQAE_BACKEND"):
        nearest_code(x, book)


def test_empty_query_batch():
    assert nearest_code(torch.zeros(0, 4), torch.randn(10, 4)).shape == (0,)


def test_score_tile_respects_memory_budget():
    rows, codes = reference.chunk_sizes(131072, 50265, reference.DEFAULT_MEMORY_BUDGET)
    assert rows * codes * 4 <= reference.DEFAULT_MEMORY_BUDGET
    rows, codes = reference.chunk_sizes(10, 50265, 4096)
    assert rows * codes * 4 <= 4096 and not math.isnan(rows)


def _op_args(book: Codebook, x: torch.Tensor, backend: str = "torch"):
    from lqae_tokenizer.search import op_inputs

    return (x, *op_inputs(book._book, None), book.metric, backend, "tf32", reference.DEFAULT_MEMORY_BUDGET)


@pytest.mark.parametrize("metric", METRICS)
def test_registered_op_passes_opcheck(metric):
    book = Codebook(torch.randn(60, 8), metric=metric)
    torch.library.opcheck(torch.ops.lqae.nearest_code.default, _op_args(book, torch.randn(9, 8)))


@pytest.mark.parametrize("compile_backend", ["aot_eager", "inductor"])
def test_torch_compile_has_no_graph_break_on_the_op(compile_backend):
    torch._dynamo.reset()
    book = Codebook(torch.randn(200, 16), metric="cosine")

    def quantize(z):  # a typical caller: some math, the search, a lookup
        ids = book.search(torch.tanh(z) * 2.0)
        return ids, ids * 2

    z = torch.randn(33, 16)
    compiled = torch.compile(quantize, fullgraph=True, backend=compile_backend)
    got, doubled = compiled(z)
    assert torch.equal(got, quantize(z)[0]) and torch.equal(doubled, got * 2)
    assert torch.equal(got, oracle(torch.tanh(z) * 2.0, book._book.rows, "cosine"))


def test_queries_must_be_finite():
    with pytest.raises(ValueError, match="NaN or infinity"):
        nearest_code(torch.tensor([[float("nan"), 0.0]]), torch.randn(5, 2))
    with pytest.raises(ValueError, match="every codebook row must be finite"):
        Codebook(torch.tensor([[float("inf"), 0.0]]))


def test_explicit_triton_that_cannot_run_says_why(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    from lqae_tokenizer.search import resolve_backend

    with pytest.raises(RuntimeError, match="backend='triton' cannot run: .*CUDA"):
        resolve_backend("triton", torch.device("cpu"))
    with pytest.raises(RuntimeError, match="backend='triton' cannot run"):
        resolve_backend("triton", torch.device("meta"))


@pytest.mark.slow
@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_enclosing_bf16_autocast_does_not_change_ids(metric):
    # Regression: under torch.autocast (mixed-precision training, bf16 inference) the torch path's
    # fp32 score tiles silently became bf16 matmuls and some ids were wrong (5 of 3,000 here).
    g = torch.Generator().manual_seed(0)
    table, x = torch.randn(5000, 64, generator=g), torch.randn(3000, 64, generator=g)
    book = Codebook(table, metric=metric)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ids = book.search(x)
    assert torch.equal(ids, oracle(x, table, metric))
