"""examples/kmeans_reference.py, the per-patch quantiser the README's photo analysis rests on."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
from kmeans_reference import from_patches, kmeans, nearest, to_patches  # noqa: E402


@pytest.mark.parametrize("patch", [4, 8, 16])
def test_patches_round_trip_and_hold_one_patch_each(patch):
    images = torch.rand(3, 3, 64, 64)
    rows = to_patches(images, patch)
    assert rows.shape == (3 * (64 // patch) ** 2, 3 * patch * patch)
    assert torch.equal(from_patches(rows, 3, patch), images)
    # Row 1 of image 0 is the second patch of the top row, channels first.
    assert torch.equal(rows[1].reshape(3, patch, patch), images[0, :, :patch, patch:2 * patch])


def test_nearest_in_chunks_is_the_brute_force_argmin():
    generator = torch.Generator().manual_seed(0)
    points, centres = torch.rand(1000, 12, generator=generator), torch.rand(37, 12, generator=generator)
    assert torch.equal(nearest(points, centres, chunk=64), torch.cdist(points, centres).argmin(1))


def test_kmeans_finds_separated_clusters():
    generator = torch.Generator().manual_seed(1)
    truth = torch.eye(8)[:5] * 10  # five centres 14 apart
    labels = torch.randint(0, 5, (2000,), generator=generator)
    points = truth[labels] + 0.1 * torch.randn(2000, 8, generator=generator)
    found = kmeans(points, 5, iterations=10, generator=generator)
    # Every true centre has a found centre within the noise, whatever the order.
    assert torch.cdist(truth, found).min(1).values.max() < 0.1
    error = ((found[nearest(points, found)] - points) ** 2).sum(1).mean()
    assert error < 0.1**2 * 8 * 1.2  # the noise's own variance, nothing more
