"""The paper preset against the official code (forhaoliu/language-quantized-autoencoders @ 79cd033):
the ViT block, its parameter count, the training settings, the probe features and head, and the
VQ-VAE baseline's loss and initialisation."""

from __future__ import annotations

import math

import pytest
import torch

from lqae_tokenizer import LQAEConfig
from lqae_tokenizer.evaluation import LARS, official_linear_probe
from lqae_tokenizer.training.config import TRAIN_PRESETS, resolve_config
from lqae_tokenizer.training.optim import build_optimizer
from lqae_tokenizer.vit import GatedConvMLP, ImageDecoder, ImageEncoder, LQAEBlock

from conftest import build_tokenizer


def official_tower_parameters(width: int, depth: int, mlp_ratio: int, patch: int, tokens: int) -> tuple[int, int]:
    """Parameter counts of the official VitEncoder and VitDecoder, from base_vit.py's layer sizes."""
    hidden = width * mlp_ratio
    layer_norm = 2 * width
    attention = 4 * width * width  # query, key, value, output Dense, use_bias=False
    glu = (2 * width) + 2 * width * hidden + 9 * hidden + 2 * hidden + hidden * width  # LN, fc1, fc2, dw-conv, LN, fc_out
    block = layer_norm + attention + layer_norm + glu  # pre-LN, attention, NormFormer LN, GLU
    position = tokens * width
    encoder = 3 * patch * patch * width + position + depth * block  # patch conv without bias
    decoder = position + depth * block + width * 3 * patch * patch + 3  # ConvTranspose with bias
    return encoder, decoder


def test_paper_preset_towers_have_the_official_parameter_count():
    c = LQAEConfig.from_preset("paper")
    assert c.vit_block == "lqae"
    encoder = ImageEncoder(c.image_size, c.patch_size, c.encoder_width, c.encoder_depth, c.encoder_heads,
                           c.mlp_ratio, 768, c.vit_block)
    decoder = ImageDecoder(c.image_size, c.patch_size, c.decoder_width, c.decoder_depth, c.decoder_heads,
                           c.mlp_ratio, 768, c.vit_block)
    want_encoder, want_decoder = official_tower_parameters(768, 12, 4, 16, 256)
    assert sum(p.numel() for p in encoder.parameters()) == want_encoder == 114_493_440
    assert sum(p.numel() for p in decoder.parameters()) == want_decoder
    assert encoder.patch_embed.bias is None and isinstance(encoder.transformer.norm, torch.nn.Identity)
    assert isinstance(decoder.to_pixels, torch.nn.ConvTranspose2d) and decoder.to_pixels.bias is not None


def test_official_block_mixes_only_neighbouring_patches_in_its_mlp():
    torch.manual_seed(0)
    mlp = GatedConvMLP(width=8, hidden=16, grid=5)
    x = torch.randn(1, 25, 8)
    poked = x.clone()
    poked[0, 12] += torch.randn(8)  # the centre patch (2, 2); not a constant shift, which LayerNorm removes
    changed = (mlp(poked) - mlp(x)).abs().sum(-1).view(5, 5) > 1e-6
    expected = torch.zeros(5, 5, dtype=torch.bool)
    expected[1:4, 1:4] = True  # the 3x3 depthwise convolution's reach
    assert torch.equal(changed, expected)


def test_official_block_normalises_attention_output_and_has_no_biases():
    block = LQAEBlock(width=16, heads=2, mlp_ratio=4.0, grid=4)
    assert not [name for name, p in block.named_parameters() if name.endswith("bias") and "norm" not in name]
    x = torch.randn(2, 16, 16)
    attn = block.attn(block.norm1(x))
    after_attention = x + block.norm_attn_out(attn)
    assert torch.allclose(block(x), after_attention + block.mlp(after_attention), atol=1e-6)


def test_official_tower_reads_pixels_in_zero_one_and_writes_pixels():
    torch.manual_seed(0)
    encoder = ImageEncoder(32, 8, 16, 1, 2, 2.0, 16, "lqae")
    pixels = torch.rand(1, 3, 32, 32)
    patches = encoder.patch_embed(pixels).flatten(2).transpose(1, 2)
    assert torch.allclose(encoder(pixels), encoder.transformer(patches), atol=1e-6)
    decoder = ImageDecoder(32, 8, 16, 1, 2, 2.0, 16, "lqae")
    hidden = torch.randn(1, 16, 16)
    manual = decoder.to_pixels(decoder.transformer(hidden).transpose(1, 2).reshape(1, 16, 4, 4))
    assert torch.allclose(decoder(hidden), manual)


def test_paper_training_settings_are_the_official_ones():
    config = resolve_config("paper", None, {"train_data_dir": "x"})
    assert config.optim.max_grad_norm == 0.0  # official clip_gradient=1e9: no clipping
    assert config.optim.weight_decay_scope == "all"
    encoder = ImageEncoder(32, 8, 16, 1, 2, 2.0, 16, "lqae")
    optimizer = build_optimizer({"encoder": encoder}, config.optim, 1e-3)
    decayed = {id(p) for g in optimizer.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    assert decayed == {id(p) for p in encoder.parameters()}  # norms and positions decay too
    demo = resolve_config("demo", None, {"train_data_dir": "x"})
    assert demo.optim.max_grad_norm == 1.0 and demo.optim.weight_decay_scope == "matrices"
    assert TRAIN_PRESETS["paper"]["model"]["preset"] == "paper"


def test_all_layer_features_concatenate_every_encoder_block_and_lm_state(roberta_lm_dir):
    tok = build_tokenizer(roberta_lm_dir, vit_block="lqae")
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    feats = tok.features(images, layers="all")
    c = tok.config
    lm_states = tok.model.language_model.backbone.config.num_hidden_layers + 1
    width = tok.model.language_model.hidden_size
    assert feats.shape == (3, c.encoder_depth * c.encoder_width + lm_states * width)
    with torch.no_grad():
        layers = tok.model.encoder.layer_outputs(images)
        ids = torch.tensor(tok.encode(images))
        states = tok.model.language_model.all_hidden_states(tok.model.embed(ids))
    manual = torch.cat([h.mean(1) for h in layers] + [h.mean(1) for h in states], dim=1)
    assert torch.allclose(feats, manual, atol=1e-5)
    with pytest.raises(ValueError, match="'all'"):
        tok.features(images, layers="every")


def test_lars_step_by_hand():
    w = torch.nn.Parameter(torch.tensor([3.0, 4.0]))
    w.grad = torch.tensor([0.6, 0.8])
    opt = LARS([w], lr=2.0, weight_decay=0.1, momentum=0.9, trust_coefficient=0.001)
    opt.step()
    update = torch.tensor([0.6, 0.8]) + 0.1 * torch.tensor([3.0, 4.0])  # |update| = 1.5, |w| = 5
    expected = torch.tensor([3.0, 4.0]) - 2.0 * (0.001 * 5 / 1.5) * update
    assert torch.allclose(w.detach(), expected)


@pytest.mark.slow
def test_official_probe_learns_a_separable_problem():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(4, 64, generator=g) * 3
    labels = torch.randint(0, 4, (400,), generator=g)
    feats = centres[labels] + torch.randn(400, 64, generator=g)
    acc = official_linear_probe(feats[:300], labels[:300], feats[300:], labels[300:], epochs=30, batch_size=64)
    assert acc > 0.95
    shuffled = official_linear_probe(feats[:300], labels[:300][torch.randperm(300, generator=g)], feats[300:],
                                     labels[300:], epochs=30, batch_size=64)
    assert shuffled < 0.6  # labels carry no information: chance-level, not memorised


def test_vqvae_baseline_uses_the_official_loss_weights_and_initialisation(roberta_lm_dir):
    tok = build_tokenizer(roberta_lm_dir, quantizer="learned", learned_codebook_size=256, metric="l2",
                          mask_ratio=0.0, commitment_weight=0.5)
    model = tok.model
    width = model.language_model.hidden_size
    std = float(model.codebook.weight.std())
    assert math.isclose(std, width**-0.5, rel_tol=0.1)
    assert LQAEConfig.from_preset("demo-vqvae").codebook_loss_weight == 2.0
    assert LQAEConfig.from_preset("demo-vqvae").commitment_weight == 0.5
    model.train()
    out = model(torch.rand(2, 3, 32, 32))
    assert torch.allclose(out.loss, out.pixel_loss + 2.0 * out.codebook_loss + 0.5 * out.commitment_loss)
    feats = tok.features(torch.rand(2, 3, 32, 32), layers="all")  # the encoder's layers only
    assert feats.shape == (2, tok.config.encoder_depth * tok.config.encoder_width)
