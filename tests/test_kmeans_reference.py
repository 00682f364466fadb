"""The per-patch k-means quantiser of experiments/kmeans_reference.py (its pieces live in
lqae_tokenizer.training.projected_fit), which the photo tokenizer's analysis rests on."""

from __future__ import annotations

import pytest
import torch

from lqae_tokenizer.training.projected_fit import image_patches, kmeans, nearest, patches_to_images


def to_patches(images: torch.Tensor, patch: int) -> torch.Tensor:
    return image_patches(images, patch).reshape(-1, 3 * patch * patch)


def from_patches(rows: torch.Tensor, count: int, patch: int) -> torch.Tensor:
    return patches_to_images(rows, count, patch, 64)


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
