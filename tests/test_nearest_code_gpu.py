"""The compiled Triton kernel at full size on a CUDA GPU (skipped without one)."""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

from lqae_tokenizer import Codebook  # noqa: E402
from lqae_tokenizer.kernels.naive import nearest_code_naive  # noqa: E402


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("metric", ["cosine", "l2", "dot"])
@pytest.mark.parametrize("n", [256, 4099])
def test_full_size_matches_float64(dtype, metric, n):
    g = torch.Generator(device="cuda").manual_seed(0)
    table = (torch.randn(50265, 768, device="cuda", generator=g) * 0.05).to(dtype)
    x = table[torch.randint(0, 50265, (n,), device="cuda", generator=g)].float()
    x = (x + 0.01 * torch.randn(n, 768, device="cuda", generator=g)).to(dtype)
    book = Codebook(table, metric=metric)
    got = book.search(x, backend="triton")
    assert torch.equal(got, book.search(x, backend="torch"))
    sample = torch.arange(0, n, max(1, n // 16), device="cuda")  # the naive oracle is slow
    assert torch.equal(got[sample].cpu(), nearest_code_naive(x[sample], table, metric))
