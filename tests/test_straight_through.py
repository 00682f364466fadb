"""The straight-through estimator: the language model reads the real embedding rows, bit for bit,
and the gradient at them reaches the encoder unchanged (a learned table moves only by its own loss)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lqae_tokenizer.quantizer import LanguageQuantizer


def encoder_vectors(dtype: torch.dtype) -> torch.Tensor:
    # Far larger than the rows, as a trained encoder's are under the cosine metric: the old
    # z + (q - z) rounded the rows' low bits away.
    return (torch.randn(2, 7, 12, generator=torch.Generator().manual_seed(1)) * 40).to(dtype).requires_grad_()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_quantized_vectors_are_the_rows_exactly_and_pass_the_gradient_as_is(dtype):
    table = torch.randn(50, 12, generator=torch.Generator().manual_seed(2)) * 0.03
    z = encoder_vectors(dtype)
    out = LanguageQuantizer(torch.arange(50), "cosine")(z, table)
    assert torch.equal(out.quantized.detach(), F.embedding(out.ids, table).to(dtype))
    g = torch.randn(out.quantized.shape, generator=torch.Generator().manual_seed(3)).to(dtype)
    out.quantized.backward(g)
    assert torch.equal(z.grad, g)


def test_a_learned_table_gets_no_gradient_through_the_quantized_vectors():
    table = (torch.randn(50, 12, generator=torch.Generator().manual_seed(2)) * 0.03).requires_grad_()
    z = encoder_vectors(torch.float32)
    out = LanguageQuantizer(torch.arange(50), "l2")(z, table)
    out.quantized.sum().backward()
    assert table.grad is None or not table.grad.any()  # only the codebook loss moves the rows
    out = LanguageQuantizer(torch.arange(50), "l2")(z, table)
    out.codebook_loss.backward()
    assert table.grad is not None and table.grad.any()
