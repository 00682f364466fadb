"""The decoder-input ablation tool: its full-model row is decode(encode(x)), and it shows what the
bundled models' pixels depend on (fashion-mnist: the LM's last layer; photo: the word lookup)."""

from __future__ import annotations

import pytest
import torch

from lqae_tokenizer.evaluation.ablation import decoder_input_ablation, patch_mean_colour
from lqae_tokenizer.evaluation.metrics import psnr
from lqae_tokenizer.preprocessing import prepare_batch

from conftest import DATA


@pytest.fixture(scope="module")
def fashion(minilm_dir):
    from lqae_tokenizer import ImageTokenizer

    tok = ImageTokenizer.from_pretrained("fashion-mnist", device="cpu")
    return tok, prepare_batch(sorted((DATA / "fashion-mnist-320").glob("*.png"))[::8], tok.image_size)


def test_full_model_row_is_decode_of_encode(fashion):
    tok, pixels = fashion
    results = decoder_input_ablation(tok, pixels)
    direct = tok.batch_decode(tok.encode(pixels), output_type="pt")
    assert results["full model"] == pytest.approx(float(psnr(direct, pixels).mean()), abs=1e-4)


def test_fashion_mnist_pixels_depend_on_the_lms_last_layer(fashion):
    tok, pixels = fashion
    r = decoder_input_ablation(tok, pixels)
    assert set(r) >= {"last layer mean", "last layer zero", "last layer shuffled words",
                      "no LM layers (embedding output for every input)"}
    assert r["last layer mean"] < r["full model"] - 5 and r["last layer zero"] < r["full model"] - 5
    assert r["last layer shuffled words"] < r["full model"]  # context carries part of the image


def test_patch_mean_colour_baselines():
    pixels = torch.rand(2, 3, 8, 8)
    blocks = patch_mean_colour(pixels, 4)
    assert torch.allclose(blocks[:, :, :4, :4], pixels[:, :, :4, :4].mean(dim=(2, 3), keepdim=True).expand(-1, -1, 4, 4))
    smooth = patch_mean_colour(pixels, 4, upsample="bicubic")
    assert smooth.shape == pixels.shape and float(smooth.min()) >= 0 and float(smooth.max()) <= 1
    with pytest.raises(ValueError, match="upsample"):
        patch_mean_colour(pixels, 4, upsample="linear")
