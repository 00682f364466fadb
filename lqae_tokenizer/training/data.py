"""Training data: image files, deterministic augmentation, and a resumable (distributed) sampler.

Determinism: the epoch's order is a permutation seeded by ``(seed, epoch)``; each sample's crop and
flip come from a generator seeded by ``(seed, epoch, index)``. Nothing depends on worker processes
or on RNG state carried between steps, so a resumed run sees exactly the images it would have seen.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterator

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Sampler

from ..images import IMAGE_SUFFIXES, list_images, to_tensor  # noqa: F401 (re-exported)
from .errors import TrainingAborted

MAX_SUBSTITUTIONS = 16  # consecutive unreadable files before a sample gives up


def sample_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + epoch) * 1_000_033 + index)


def random_resized_crop(image: torch.Tensor, size: int, min_scale: float, flip: bool,
                        generator: torch.Generator) -> torch.Tensor:
    """RandomResizedCrop(scale=(min_scale, 1), ratio=(3/4, 4/3), bicubic) + horizontal flip.

    ``image`` ``[3, H, W]`` float in [0, 1] -> ``[3, size, size]`` in [0, 1].
    """
    _, h, w = image.shape
    area = h * w
    top, left, ch, cw = 0, 0, h, w
    for _ in range(10):
        u = torch.rand(3, generator=generator).tolist()
        target = area * (min_scale + (1.0 - min_scale) * u[0])
        log_ratio = math.log(3 / 4) + (math.log(4 / 3) - math.log(3 / 4)) * u[1]
        ratio = math.exp(log_ratio)
        cw_try, ch_try = round(math.sqrt(target * ratio)), round(math.sqrt(target / ratio))
        if 0 < cw_try <= w and 0 < ch_try <= h:
            cw, ch = cw_try, ch_try
            top = int(u[2] * (h - ch + 1)) if h > ch else 0
            left = int(torch.randint(0, w - cw + 1, (1,), generator=generator)) if w > cw else 0
            break
    else:  # fall back to the largest centred crop of aspect ratio within [3/4, 4/3]
        if w / h < 3 / 4:
            cw, ch = w, min(h, round(w / (3 / 4)))
        elif w / h > 4 / 3:
            ch, cw = h, min(w, round(h * (4 / 3)))
        top, left = (h - ch) // 2, (w - cw) // 2
    crop = image[:, top : top + ch, left : left + cw].unsqueeze(0)
    out = F.interpolate(crop, size=(size, size), mode="bicubic", antialias=True, align_corners=False)
    out = out.squeeze(0).clamp_(0.0, 1.0)
    if flip and bool(torch.rand(1, generator=generator) < 0.5):
        out = out.flip(-1)
    return out


class ImageFiles(Dataset):
    """Images from files, augmented deterministically; unreadable files are replaced and reported.

    ``dataset[(epoch, index)]`` -> ``(pixels [3, R, R] float32, mask_seed int, failed_paths list[str])``;
    ``mask_seed`` seeds the sample's token masking, so masks are per-sample too. When the file
    at ``index`` cannot be read, the next files (``index + 1``, ...) are tried, so every batch keeps
    its size on every rank; the unreadable paths travel with the sample to be logged and counted.
    """

    def __init__(self, paths: list[Path], resolution: int, *, seed: int, train: bool,
                 min_crop_scale: float = 0.2, flip: bool = True) -> None:
        self.paths = paths
        self.resolution = resolution
        self.seed, self.train = seed, train
        self.min_crop_scale, self.flip = min_crop_scale, flip

    def __len__(self) -> int:
        return len(self.paths)

    def _load(self, index: int, epoch: int) -> torch.Tensor:
        from ..preprocessing import resize_and_crop

        image = to_tensor(self.paths[index])
        if self.train:
            g = sample_generator(self.seed, epoch, index)
            return random_resized_crop(image, self.resolution, self.min_crop_scale, self.flip, g)
        return resize_and_crop(image, self.resolution).contiguous()

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int, list[str]]:
        epoch, index = key
        failed: list[str] = []
        mask_seed = int(torch.randint(0, 2**62, (1,), generator=sample_generator(self.seed + 1, epoch, index)))
        for attempt in range(MAX_SUBSTITUTIONS):
            i = (index + attempt) % len(self.paths)
            try:
                return self._load(i, epoch), mask_seed, failed
            except (OSError, ValueError, TypeError) as err:  # InvalidImageError is a ValueError
                failed.append(f"{self.paths[i]}: {err}")
        raise TrainingAborted(
            f"{MAX_SUBSTITUTIONS} consecutive unreadable training files from {self.paths[index]} (far above any "
            f"max_bad_file_fraction); first errors: {failed[:3]}. Check the data folder."
        )


def collate(items: list[tuple[torch.Tensor, int, list[str]]]) -> tuple[torch.Tensor, list[int], list[str]]:
    """-> pixels ``[B, 3, R, R]``, mask seeds (B ints), unreadable paths met while filling the batch."""
    return (torch.stack([pixels for pixels, _, _ in items]), [seed for _, seed, _ in items],
            [path for _, _, failed in items for path in failed])


def token_masks(mask_seeds: list[int], tokens: int, ratio: float) -> torch.Tensor:
    """Bool ``[B, tokens]``: each token masked with probability ``ratio``, from each sample's seed."""
    return torch.stack([torch.rand(tokens, generator=torch.Generator().manual_seed(s)) < ratio for s in mask_seeds])


class ResumableSampler(Sampler):
    """Yields ``(epoch, index)`` for one rank: a seeded permutation per epoch, sharded by rank.

    Like ``DistributedSampler`` (pads by repeating to a multiple of ``world_size * batch``, rank r
    takes every ``world_size``-th index), plus ``start_batch`` to resume mid-epoch.
    """

    def __init__(self, size: int, batch_size: int, *, seed: int, rank: int = 0, world_size: int = 1) -> None:
        self.size, self.batch_size = size, batch_size
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.epoch, self.start_batch = 0, 0

    @property
    def batches_per_epoch(self) -> int:
        """Per-rank batches in an epoch (drop-last over the global batch)."""
        return max(1, self.size // (self.batch_size * self.world_size))

    def set_position(self, epoch: int, start_batch: int) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def __len__(self) -> int:
        return (self.batches_per_epoch - self.start_batch) * self.batch_size

    def __iter__(self) -> Iterator[tuple[int, int]]:
        g = torch.Generator().manual_seed(self.seed * 7919 + self.epoch)
        order = torch.randperm(self.size, generator=g).tolist()
        needed = self.batches_per_epoch * self.batch_size * self.world_size
        while len(order) < needed:  # tiny datasets: repeat the permutation
            order += order[: needed - len(order)]
        mine = order[:needed][self.rank :: self.world_size]
        for index in mine[self.start_batch * self.batch_size :]:
            yield self.epoch, index
