"""The staged fit of a projected-search tokenizer (lqae_tokenizer.training.projected_fit) and its driver
recipes/fit_projected.py: each stage against a planted answer or an independent least-squares solve."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from lqae_tokenizer.training.projected_fit import (fit_decoder, fit_linear_table, fit_search_encoder, image_patches,
                                                   init_skip_readout, pair_by_principal_axes,
                                                   pair_by_principal_axes_reference)
from lqae_tokenizer.vit import ImageDecoder, ImageEncoder

pytestmark = pytest.mark.slow  # subprocesses and training runs: excluded by -m "not slow"

ROOT = Path(__file__).resolve().parent.parent


def planted_words(count: int, width: int, seed: int) -> torch.Tensor:
    return F.normalize(torch.randn(count, width, generator=torch.Generator().manual_seed(seed)), dim=-1)


def test_pairing_is_one_to_one_and_keeps_neighbours_together():
    words = planted_words(512, 16, 0)
    # Centres that are a linear image of the words (plus noise): a locality-keeping pairing exists.
    mix = torch.randn(16, 6, generator=torch.Generator().manual_seed(1))
    centres = words @ mix + 0.01 * torch.randn(512, 6, generator=torch.Generator().manual_seed(2))
    centres = centres[torch.randperm(512, generator=torch.Generator().manual_seed(3))]  # order carries nothing
    pairing = pair_by_principal_axes(centres, words)
    assert sorted(pairing.tolist()) == list(range(512))
    # A centre's nearest other centre should get a word closer to its own word than a random word is.
    distances = torch.cdist(centres, centres) + torch.eye(512) * 1e9
    neighbour = distances.argmin(1)
    near = (words[pairing] * words[pairing[neighbour]]).sum(-1).mean()
    shuffled = (words[pairing] * words[pairing[torch.randperm(512, generator=torch.Generator().manual_seed(4))]])
    assert float(near) > float(shuffled.sum(-1).mean()) + 0.2


@pytest.mark.parametrize("count", [1, 2, 3, 37, 513])
def test_batched_pairing_equals_the_plain_recursion(count):
    # float64 so that the batched and the one-group-at-a-time power iterations (which sum in different
    # orders) cannot reorder two coordinates: the pairings must then be identical.
    g = torch.Generator().manual_seed(count)
    centres, words = torch.randn(count, 5, generator=g, dtype=torch.float64), torch.randn(count, 9, generator=g, dtype=torch.float64)
    assert torch.equal(pair_by_principal_axes(centres, words), pair_by_principal_axes_reference(centres, words))


def test_pairing_refuses_unequal_counts():
    for pair in (pair_by_principal_axes, pair_by_principal_axes_reference):
        with pytest.raises(ValueError, match="as many centres as words"):
            pair(torch.zeros(3, 2), torch.zeros(4, 2))


def test_linear_table_recovers_a_planted_table_from_a_corrupted_start():
    words = planted_words(64, 8, 5)
    generator = torch.Generator().manual_seed(6)
    a_true, b_true = torch.randn(8, 12, generator=generator), torch.rand(12, generator=generator)
    table = words @ a_true + b_true  # [64, 12], what each word's patch is
    truth = torch.arange(64).repeat(40)  # every word used 40 times
    patches = table[truth] + 1e-3 * torch.randn(len(truth), 12, generator=generator)
    start = truth.clone()
    wrong = torch.rand(len(truth), generator=generator) < 0.2
    start[wrong] = torch.randint(0, 64, (int(wrong.sum()),), generator=generator)  # 20% start on a wrong word
    seen = []
    weights, assign = fit_linear_table(patches, words, start, iterations=5, ridge=1e-6,
                                       on_iteration=lambda i, rows, a: seen.append(i))
    assert seen == [0, 1, 2, 3, 4]
    assert torch.equal(assign, truth)
    torch.testing.assert_close(weights[:8], a_true, atol=2e-3, rtol=0)
    torch.testing.assert_close(weights[8], b_true, atol=2e-3, rtol=0)


def test_skip_readout_is_the_least_squares_solution_and_the_vit_head_starts_at_zero():
    torch.manual_seed(0)
    decoder = ImageDecoder(16, 4, 32, 1, 2, 2.0, 24, "plain", skip=True)
    states, images = torch.randn(6, 16, 24), torch.rand(6, 3, 16, 16)
    init_skip_readout(decoder, states, images, 4, ridge=1e-9)
    # Independent solve: pixels - 0.5 (a plain decoder with a zero head outputs 0.5) on [states, 1].
    x = torch.cat([states.reshape(-1, 24), torch.ones(96, 1)], 1).double()
    y = (image_patches(images, 4).reshape(96, -1) - 0.5).double()
    solution = torch.linalg.lstsq(x, y).solution
    expected = F.fold((x @ solution).float().reshape(6, 16, 48).transpose(1, 2), 16, 4, stride=4) + 0.5
    with torch.no_grad():
        torch.testing.assert_close(decoder(states), expected, atol=1e-4, rtol=0)
    assert not decoder.to_pixels.weight.any() and not decoder.to_pixels.bias.any()


def test_skip_readout_needs_a_skip():
    with pytest.raises(ValueError, match="decoder_skip=True"):
        init_skip_readout(ImageDecoder(16, 4, 32, 1, 2, 2.0, 24, "plain"), torch.zeros(1, 16, 24),
                          torch.zeros(1, 3, 16, 16), 4)


def test_encoder_regression_and_decoder_fit_lower_their_losses():
    torch.manual_seed(0)
    images = torch.rand(8, 3, 16, 16)
    offset = torch.full((48,), 0.5)
    encoder = ImageEncoder(16, 4, 32, 1, 2, 2.0, 48, "plain")
    target = image_patches(images, 4) - offset
    with torch.no_grad():
        before = float(F.mse_loss(encoder(images), target))
    fit_search_encoder(encoder, lambda step: images, offset, 4, steps=60, learning_rate=3e-3, warmup=5)
    with torch.no_grad():
        assert float(F.mse_loss(encoder(images), target)) < before / 4
    decoder = ImageDecoder(16, 4, 32, 1, 2, 2.0, 24, "plain", skip=True)
    states = torch.randn(8, 16, 24)
    losses = []
    fit_decoder(decoder, lambda step: (states, images), steps=60, learning_rate=3e-3, warmup=5, autocast=False,
                on_step=lambda step, loss: losses.append(loss))
    assert len(losses) == 60 and losses[-1] < losses[0] / 2


def test_fit_projected_example_writes_a_tokenizer_that_round_trips(minilm_dir, tmp_path):
    """The driver end to end at toy sizes (the real run: recipes/train_photo.sh), on real PNG files."""
    from lqae_tokenizer import ImageTokenizer

    data = tmp_path / "train"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(90):  # 90 x 256 patches >= the 21,745 words k-means needs as centres
        base = rng.random((5, 5, 3))
        image = np.kron(base, np.ones((16, 16, 1)))[:72, :72] * 0.8 + rng.random((72, 72, 3)) * 0.2
        Image.fromarray((image * 255).astype(np.uint8)).save(data / f"{i}.png")
    output = tmp_path / "staged"
    command = [sys.executable, str(ROOT / "recipes" / "fit_projected.py"), str(data), str(output),
               "--language_model", str(minilm_dir), "--patch_images", "90", "--kmeans_iterations", "1",
               "--table_images", "20", "--table_iterations", "1", "--encoder_steps", "2", "--encoder_batch", "4", "--readout_images", "8",
               "--decoder_steps", "2", "--decoder_batch", "2"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "table iteration 0" in result.stderr and "wrote" in result.stderr
    for stage in ("kmeans.pt", "table.pt", "encoder.pt", "decoder.pt"):  # kept, so a rerun resumes after them
        assert (tmp_path / "staged.work" / stage).is_file()
    tokenizer = ImageTokenizer.from_pretrained(output, language_model=minilm_dir)
    assert tokenizer.config.search_dim == 48 and tokenizer.config.decoder_layers == (0, -1)
    image = np.asarray(Image.open(data / "0.png"))
    ids = tokenizer.encode(image)
    assert len(ids) == 256 and tokenizer.from_text(tokenizer.to_text(image)) == ids
    rerun = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0 and rerun.stderr.count("reusing") == 3
