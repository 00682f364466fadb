"""LQAEConfig: presets by exact name and validation that names the field and the fix."""

from __future__ import annotations

import pytest

from lqae_tokenizer import LQAEConfig


def test_paper_preset_matches_the_paper():
    c = LQAEConfig.from_preset("paper")
    assert (c.image_size, c.patch_size, c.tokens_per_image) == (256, 16, 256)
    assert (c.encoder_width, c.encoder_depth, c.encoder_heads) == (768, 12, 12)
    assert (c.decoder_width, c.decoder_depth, c.decoder_heads) == (768, 12, 12)
    assert c.language_model == "FacebookAI/roberta-base"
    assert (c.metric, c.mask_ratio, c.commitment_weight, c.mlm_loss_weight) == ("cosine", 0.5, 0.01, 1e-4)


def test_tiny_preset_and_overrides():
    c = LQAEConfig.from_preset("tiny", language_model="./lm", codebook_vocabulary="words")
    assert (c.image_size, c.patch_size, c.tokens_per_image) == (32, 8, 16)
    assert c.language_model == "./lm" and c.codebook_vocabulary == "words"


def test_unknown_preset_lists_valid_names():
    with pytest.raises(ValueError, match=r"valid presets are \['demo', 'demo-smollm2', 'demo-vqvae', 'paper', 'tiny'\]"):
        LQAEConfig.from_preset("Paper")


@pytest.mark.parametrize("field, value, message", [
    ("patch_size", 7, "divisible by patch_size"),
    ("mask_ratio", 1.0, r"mask_ratio must be in \[0, 1\)"),
    ("mask_ratio", -0.1, "mask_ratio"),
    ("encoder_heads", 5, "encoder_width .* divisible by encoder_heads"),
    ("image_size", 0, "image_size must be a positive integer"),
    ("metric", "dot", "metric must be one of"),
    ("codebook_vocabulary", "subwords", "codebook_vocabulary must be one of"),
    ("commitment_weight", -1.0, "commitment_weight must be >= 0"),
    ("language_model", "", "language_model"),
])
def test_validation_names_the_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        LQAEConfig.from_preset("tiny", **{field: value})


def test_round_trip_through_dict_and_unknown_keys():
    c = LQAEConfig.from_preset("tiny")
    assert LQAEConfig.from_dict(c.to_dict()) == c
    with pytest.raises(ValueError, match=r"unknown LQAEConfig fields \['colour'\]"):
        LQAEConfig.from_dict({**c.to_dict(), "colour": "red"})


def test_every_field_belongs_to_exactly_one_concern():
    import dataclasses

    from lqae_tokenizer.config import NETWORK_FIELDS, PROVENANCE_FIELDS, TRAINING_FIELDS

    groups = NETWORK_FIELDS + TRAINING_FIELDS + PROVENANCE_FIELDS
    assert len(groups) == len(set(groups))
    assert set(groups) == {f.name for f in dataclasses.fields(LQAEConfig)}
    config = LQAEConfig.from_preset("demo")
    assert {**config.network(), **config.training(), **config.provenance()} == config.to_dict()
