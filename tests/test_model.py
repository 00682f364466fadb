"""The LQAE network: losses, gradients through the frozen LM, masking, the MLM switch."""

from __future__ import annotations

import warnings

import pytest
import torch

from lqae_tokenizer import ImageTokenizer, LQAEConfig
from lqae_tokenizer.quantizer import codebook_usage

from conftest import build_tokenizer


def test_training_forward_returns_every_term_and_trains_only_encoder_decoder(all_tokenizer):
    model = all_tokenizer.model
    lm_before = {k: v.clone() for k, v in model.language_model.state_dict().items()}
    pixels = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    model.train()
    try:
        out = model(pixels, generator=torch.Generator().manual_seed(0))
        out.loss.backward()
    finally:
        model.eval()
    assert out.reconstruction.shape == (4, 3, 32, 32) and out.ids.shape == (4, 16)
    c = model.config
    expected = c.pixel_loss_weight * out.pixel_loss + c.commitment_weight * out.commitment_loss + c.mlm_loss_weight * out.mlm_loss
    assert torch.allclose(out.loss, expected)
    assert out.mlm_loss > 0  # the small RoBERTa has a (randomly initialised but loaded) MLM head
    assert 0 < float(out.codebook_usage) <= 1 and 1 <= float(out.perplexity) <= 64
    # Gradients reach the encoder through the straight-through estimator and the frozen LM.
    assert model.encoder.patch_embed.weight.grad is not None and model.encoder.patch_embed.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.language_model.parameters())
    assert all(not p.requires_grad for p in model.language_model.parameters())
    for k, v in model.language_model.state_dict().items():
        assert torch.equal(v, lm_before[k]), k
    model.zero_grad(set_to_none=True)
    trainable = {id(p) for p in model.trainable_parameters()}
    assert not trainable & {id(p) for p in model.language_model.parameters()}


def test_mask_ratio_replaces_tokens_with_the_mask_embedding(all_tokenizer):
    model = all_tokenizer.model
    pixels = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        clean = model(pixels, mask_ratio=0.0)
        masked = model(pixels, mask_ratio=0.9, generator=torch.Generator().manual_seed(0))
        clean_again = model(pixels, mask_ratio=0.0)
    assert torch.equal(clean.ids, masked.ids)  # masking happens after quantization
    assert not torch.allclose(clean.reconstruction, masked.reconstruction)
    assert torch.equal(clean.reconstruction, clean_again.reconstruction)  # eval forward is deterministic
    assert float(clean.mlm_loss) == 0.0  # nothing masked, no MLM term


def test_decode_of_the_forward_ids_equals_the_unmasked_reconstruction(all_tokenizer):
    model = all_tokenizer.model
    pixels = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        out = model(pixels, mask_ratio=0.0)
        decoded = model.decode(out.ids)
    assert torch.equal(model.encode(pixels), out.ids)
    assert torch.allclose(decoded, out.reconstruction.clamp(0, 1), atol=1e-6)


def test_minilm_has_no_mlm_head_so_the_term_is_off_and_only_training_says_so(minilm_dir):
    config = LQAEConfig.from_preset("tiny", language_model=str(minilm_dir))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # building or loading for inference warns about nothing
        tok = ImageTokenizer(config, device="cpu")
    assert not tok.model.mlm_enabled and tok.model.mlm_term_dropped
    tok.model.train()
    out = tok.model(torch.rand(2, 3, 32, 32))
    assert float(out.mlm_loss) == 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ImageTokenizer(LQAEConfig.from_preset("tiny", language_model=str(minilm_dir), mlm_loss_weight=0.0), device="cpu")


def test_minilm_codebook_is_its_real_embedding_table(minilm_tokenizer, minilm_dir):
    from safetensors.torch import load_file

    stored = load_file(str(minilm_dir / "model.safetensors"))
    key = next(k for k in stored if k.endswith("word_embeddings.weight"))
    assert torch.equal(minilm_tokenizer.model.language_model.word_embeddings, stored[key])
    assert minilm_tokenizer.vocab_size == 30522 and minilm_tokenizer.model.language_model.hidden_size == 384


def test_too_many_tokens_for_the_language_model(roberta_lm_dir):
    with pytest.raises(ValueError, match="more than the language model's limit of 512"):
        build_tokenizer(roberta_lm_dir, image_size=192, patch_size=8)  # 576 tokens


def test_codebook_usage_and_perplexity_by_hand():
    usage, perplexity = codebook_usage(torch.tensor([[1, 1, 2, 3]]), codebook_size=8)
    assert float(usage) == pytest.approx(3 / 8)
    p = torch.tensor([0.5, 0.25, 0.25])
    assert float(perplexity) == pytest.approx(float(torch.exp(-(p * p.log()).sum())))
