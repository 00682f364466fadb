"""The public ImageTokenizer API over a real byte-level BPE vocabulary."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import random_image

IMAGES = [random_image(s) for s in range(6)]


def test_encode_gives_codebook_ids_and_never_special_tokens(all_tokenizer):
    ids = all_tokenizer.encode(IMAGES)
    specials = set(all_tokenizer.text_tokenizer.all_special_ids)
    allowed = set(all_tokenizer.codebook_ids.tolist())
    assert len(ids) == 6 and all(len(row) == all_tokenizer.tokens_per_image == 16 for row in ids)
    flat = {i for row in ids for i in row}
    assert flat <= allowed and not flat & specials
    assert all_tokenizer.encode(IMAGES[0]) == ids[0]


def test_call_returns_input_ids_tensor(all_tokenizer):
    batch = all_tokenizer(IMAGES, return_tensors="pt")
    assert batch["input_ids"].dtype == torch.long and batch["input_ids"].shape == (6, 16)
    assert batch["input_ids"].tolist() == all_tokenizer.encode(IMAGES)
    assert all_tokenizer(IMAGES[0])["input_ids"] == [all_tokenizer.encode(IMAGES[0])]
    with pytest.raises(ValueError, match="return_tensors"):
        all_tokenizer(IMAGES, return_tensors="np")


def test_batching_does_not_change_ids(all_tokenizer):
    whole = all_tokenizer.encode(IMAGES, batch_size=64)
    assert all_tokenizer.encode(IMAGES, batch_size=1) == whole
    assert [all_tokenizer.encode(im) for im in IMAGES] == whole


def test_tokens_round_trip_exactly_with_the_full_vocabulary(all_tokenizer):
    for image in IMAGES:
        tokens = all_tokenizer.to_tokens(image)
        assert all_tokenizer.from_tokens(tokens) == all_tokenizer.encode(image)


def test_word_codebook_text_round_trips(word_tokenizer):
    for image in IMAGES:
        text = word_tokenizer.to_text(image)
        assert isinstance(text, str) and text.startswith(" ")
        assert word_tokenizer.from_text(text) == word_tokenizer.encode(image)
        # Generated text often loses the leading space; it still decodes to the same ids.
        assert word_tokenizer.from_text(text.strip()) == word_tokenizer.encode(image)
    assert word_tokenizer.to_text(IMAGES[:2]) == [word_tokenizer.to_text(IMAGES[0]), word_tokenizer.to_text(IMAGES[1])]


def test_text_is_plain_words(word_tokenizer):
    words = word_tokenizer.to_text(IMAGES[0]).split()
    assert len(words) == 16 and all(w.isalpha() and w.isascii() for w in words)


def test_from_text_rejects_text_that_is_not_an_image(word_tokenizer):
    with pytest.raises(ValueError, match="re-encodes to 2 ids, an image is exactly 16"):
        word_tokenizer.from_text("hello world")
    seventeen = word_tokenizer.to_text(IMAGES[0]) + " cat"
    with pytest.raises(ValueError, match="17 ids"):
        word_tokenizer.from_text(seventeen)
    with_special = " cat" * 15 + "<mask>"
    with pytest.raises(ValueError, match="outside the codebook"):
        word_tokenizer.from_text(with_special)
    with pytest.raises(TypeError, match="str"):
        word_tokenizer.from_text(["cat"])


def test_decode_output_types(all_tokenizer):
    ids = all_tokenizer.encode(IMAGES[0])
    pil = all_tokenizer.decode(ids)
    arr = all_tokenizer.decode(ids, output_type="np")
    pt = all_tokenizer.decode(ids, output_type="pt")
    assert isinstance(pil, Image.Image) and pil.size == (32, 32) and pil.mode == "RGB"
    assert arr.shape == (32, 32, 3) and arr.dtype == np.float32 and 0 <= arr.min() and arr.max() <= 1
    assert pt.shape == (3, 32, 32) and torch.allclose(pt.permute(1, 2, 0), torch.from_numpy(arr))
    assert np.array_equal(np.asarray(pil), np.round(arr * 255).astype(np.uint8))
    batch = all_tokenizer.batch_decode(all_tokenizer.encode(IMAGES[:3]), output_type="pt")
    assert batch.shape == (3, 3, 32, 32) and torch.equal(batch[0], pt)
    with pytest.raises(ValueError, match="output_type"):
        all_tokenizer.decode(ids, output_type="jpeg")


def test_decode_rejects_non_codebook_ids_and_wrong_lengths(all_tokenizer):
    ids = all_tokenizer.encode(IMAGES[0])
    mask = all_tokenizer.text_tokenizer.mask_token_id
    for bad, message in [
        (ids[:-1], "exactly 16 ids, got 15"),
        (ids + ids[:1], "exactly 16 ids, got 17"),
        ([mask] + ids[1:], "not codebook ids"),
        ([0] + ids[1:], "not codebook ids"),  # <s>
        ([50265] + ids[1:], "not codebook ids"),  # out of range
        ([-1] + ids[1:], "not codebook ids"),
    ]:
        with pytest.raises(ValueError, match=message):
            all_tokenizer.decode(bad)
    with pytest.raises(ValueError, match="batch_decode"):
        all_tokenizer.decode([ids, ids])
    with pytest.raises(TypeError, match="integers"):
        all_tokenizer.decode([float(i) for i in ids])


def test_word_codebook_rejects_non_word_ids_in_decode(word_tokenizer):
    ids = word_tokenizer.encode(IMAGES[0])
    non_word = word_tokenizer.text_tokenizer.convert_tokens_to_ids(",")
    with pytest.raises(ValueError, match="not codebook ids"):
        word_tokenizer.decode([non_word] + ids[1:])


def test_from_tokens_rejects_unknown_and_special_tokens(all_tokenizer):
    tokens = all_tokenizer.to_tokens(IMAGES[0])
    with pytest.raises(ValueError, match="not in the language model's vocabulary"):
        all_tokenizer.from_tokens(["Ġnot-a-real-token-xyz"] + tokens[1:])
    with pytest.raises(ValueError, match="not codebook ids"):
        all_tokenizer.from_tokens(["<mask>"] + tokens[1:])
    with pytest.raises(TypeError, match="token strings"):
        all_tokenizer.from_tokens("Ġcat")


def test_features_are_pooled_lm_hidden_states(all_tokenizer):
    feats = all_tokenizer.features(IMAGES)
    assert feats.shape == (6, 32) and feats.dtype == torch.float32
    ids = torch.tensor(all_tokenizer.encode(IMAGES))
    with torch.no_grad():
        hidden = all_tokenizer.model.hidden_states(ids)
    assert torch.allclose(feats, hidden.mean(1), atol=1e-6)


def test_properties(all_tokenizer):
    assert all_tokenizer.image_size == 32 and all_tokenizer.vocab_size == 50265
    assert all_tokenizer.config.codebook_fingerprint.startswith("sha256:")
    assert len(all_tokenizer.codebook_ids) == 50260


def test_decode_runs_through_the_language_model(roberta_lm_dir):
    """Changing only the LM's encoder layers (not the codebook) changes decode's pixels."""
    from conftest import build_tokenizer

    tok = build_tokenizer(roberta_lm_dir, seed=3)
    ids = tok.encode(IMAGES[0])
    before = tok.decode(ids, output_type="pt")
    with torch.no_grad():
        for layer in tok.model.language_model.backbone.encoder.layer:
            for p in layer.parameters():
                p.mul_(1.5).add_(0.05)
    after = tok.decode(ids, output_type="pt")
    assert tok.encode(IMAGES[0]) == ids  # encoding never uses the LM layers
    assert (after - before).abs().max() > 1e-3
