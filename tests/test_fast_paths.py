"""Every fast path against the straightforward implementation (lqae_tokenizer.straightforward):
same ids, same pixels and features to tolerance. CUDA variants skip without a GPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lqae_tokenizer.preprocessing import prepare_batch, resize_and_crop
from lqae_tokenizer.straightforward import straightforward_model

from conftest import build_tokenizer, random_image

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def image_batch(n: int, seed: int = 0, size: int = 32) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", ["word_tokenizer", "all_tokenizer"])
def test_encode_decode_features_match_the_straightforward_model(name, request):
    tok = request.getfixturevalue(name)
    pixels = image_batch(24)
    plain = straightforward_model(tok.model, distance_dtype=torch.float64)
    with torch.inference_mode():
        expected_ids = plain.encode(pixels)
        expected_pixels = plain.decode(expected_ids)
        expected_features = plain.hidden_states(expected_ids).mean(1)
    ids = tok(pixels, return_tensors="pt", batch_size=7)["input_ids"]  # uneven batches on purpose
    assert torch.equal(ids, expected_ids)
    torch.testing.assert_close(tok.batch_decode(ids, output_type="pt", batch_size=5), expected_pixels)
    torch.testing.assert_close(tok.features(pixels, batch_size=5), expected_features)


def test_float32_cdist_baseline_agrees_on_ordinary_data(word_tokenizer):
    pixels = image_batch(16, seed=3)
    with torch.inference_mode():
        baseline = straightforward_model(word_tokenizer.model).encode(pixels)  # float32 cdist
    fast = word_tokenizer(pixels, return_tensors="pt")["input_ids"]
    assert (fast == baseline).float().mean() > 0.99  # float32 cdist may differ on near-ties only


def test_training_forward_matches_the_straightforward_model(all_tokenizer):
    model = all_tokenizer.model
    plain = straightforward_model(model, distance_dtype=torch.float64)
    pixels = image_batch(8, seed=1)
    mask = torch.rand(8, all_tokenizer.tokens_per_image, generator=torch.Generator().manual_seed(2)) < 0.5
    with torch.no_grad():
        fast, slow = model(pixels, mask=mask), plain(pixels, mask=mask)
    assert torch.equal(fast.ids, slow.ids)
    torch.testing.assert_close(fast.loss, slow.loss)
    torch.testing.assert_close(fast.reconstruction, slow.reconstruction)
    assert plain.quantizer is not model.quantizer and plain.encoder is model.encoder  # a view, not a copy


@pytest.mark.parametrize("make", [
    lambda: image_batch(5, size=32),                                              # already the right size
    lambda: image_batch(5, size=48)[:, :, :, :40],                                # resized and cropped
    lambda: (image_batch(5, size=40) * 255).to(torch.uint8),                      # uint8
    lambda: torch.cat([image_batch(5, size=36), image_batch(5, seed=9, size=36)[:, :1]], dim=1),  # RGBA
    lambda: image_batch(5, size=32)[:, :1],                                       # grey
])
def test_batched_preprocessing_equals_image_by_image(make):
    batch = make()
    batched = prepare_batch(batch, 32)
    one_by_one = torch.stack([prepare_batch(image, 32)[0] for image in batch])
    assert batched.shape == (5, 3, 32, 32) and batched.is_contiguous()
    assert torch.equal(batched, one_by_one)


def test_batched_preprocessing_keeps_the_errors():
    with pytest.raises(ValueError, match="do_resize=False requires 32x32"):
        prepare_batch(image_batch(2, size=40), 32, do_resize=False)
    bad = image_batch(3)
    bad[2, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinity"):
        prepare_batch(bad, 32)
    with pytest.raises(ValueError, match=r"values must be in \[0, 1\]"):
        prepare_batch(image_batch(2) * 255, 32)


def test_resize_of_a_batch_equals_resize_of_each_image():
    batch = image_batch(4, size=50)
    assert torch.equal(resize_and_crop(batch, 32), torch.stack([resize_and_crop(b, 32) for b in batch]))


def test_bf16_precision_keeps_the_search_exact(word_tokenizer):
    """bf16 changes the encoder's output, never the search: ids are the exact nearest codes of it."""
    pixels = image_batch(12, seed=4)
    try:
        word_tokenizer.precision = "bf16"
        ids = word_tokenizer(pixels, return_tensors="pt")["input_ids"]
        decoded = word_tokenizer.batch_decode(ids, output_type="pt")
    finally:
        word_tokenizer.precision = "auto"
    model = word_tokenizer.model
    plain = straightforward_model(model, distance_dtype=torch.float64)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        z = model.encoder(pixels)
    assert z.dtype == torch.bfloat16
    assert torch.equal(ids, plain.quantizer.search(z, model.codebook_table))
    with torch.inference_mode():
        reference = plain.decode(ids)
    torch.testing.assert_close(decoded, reference, atol=0.05, rtol=0)  # bf16 arithmetic, same ids


def test_precision_is_validated(word_tokenizer):
    with pytest.raises(ValueError, match="precision must be one of"):
        word_tokenizer.precision = "half"
    assert word_tokenizer.precision == "auto"


@pytest.mark.slow
def test_compiled_tokenizer_gives_the_same_ids_and_pixels(roberta_lm_dir):
    eager = build_tokenizer(roberta_lm_dir, codebook_vocabulary="words")
    compiled = build_tokenizer(roberta_lm_dir, codebook_vocabulary="words").compile()
    images = [random_image(s) for s in range(6)]
    ids = eager.encode(images)
    assert compiled.encode(images) == ids
    torch.testing.assert_close(compiled.batch_decode(ids, output_type="pt"), eager.batch_decode(ids, output_type="pt"),
                               atol=1e-5, rtol=1e-5)


@cuda
def test_cuda_default_is_bf16_autocast_with_exact_ids(word_tokenizer, tmp_path):
    word_tokenizer.save_pretrained(tmp_path / "t")
    from lqae_tokenizer import ImageTokenizer

    tok = ImageTokenizer.from_pretrained(tmp_path / "t", device="cuda")
    pixels = image_batch(32, seed=5)
    ids = tok(pixels, return_tensors="pt")["input_ids"]
    assert ids.device.type == "cpu"
    plain = straightforward_model(tok.model, distance_dtype=torch.float64)
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
        z = tok.model.encoder(pixels.cuda())
    assert torch.equal(ids, plain.quantizer.search(z, tok.model.codebook_table).cpu())
    tok.precision = "fp32"
    with torch.inference_mode():
        exact = plain.encode(pixels.cuda()).cpu()
    assert torch.equal(tok(pixels, return_tensors="pt")["input_ids"], exact)
    assert np.isfinite(tok.batch_decode(ids, output_type="np")).all()


def test_encode_never_runs_the_language_model(word_tokenizer):
    calls = []
    handle = word_tokenizer.model.language_model.register_forward_hook(lambda *_: calls.append(1))
    try:
        word_tokenizer.encode([random_image(s) for s in range(3)])
        assert calls == []
        word_tokenizer.features(random_image(0))
        assert calls  # the hook itself works: features do run the LM
    finally:
        handle.remove()


def test_a_single_image_entry_point_refuses_a_batch():
    from lqae_tokenizer.images import to_tensor

    with pytest.raises(ValueError, match="CxHxW or BxCxHxW"):
        to_tensor(image_batch(2))
