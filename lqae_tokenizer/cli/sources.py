"""The inputs of collection mode: image files, folders, lists of paths, and WebDataset-style tar shards.

Every input becomes a sorted list of *keys*, one per image:

- an image file: its path as given;
- a folder: the images under it (recursive, by suffix), sorted;
- a ``.txt`` file: one image path per line (relative paths are relative to the list file), in order;
- a ``.tar`` shard: its image members in archive order, keyed ``<shard>::<member>`` (WebDataset
  shards are plain tars; members whose suffix is not an image's, e.g. ``.json`` or ``.cls``, are
  ignored). Members are read straight from the archive, never extracted to disk.

:func:`read_batch` decodes a batch of keys with the same safety rules as image files
(``lqae_tokenizer.images``), keeping a tar open while consecutive keys come from it.
"""

from __future__ import annotations

import os
import sys
import tarfile
from pathlib import Path
from typing import Sequence

import torch

from ..images import IMAGE_SUFFIXES, InvalidImageError, list_images, open_image_bytes, to_tensor
from .common import UsageError

TAR_SEPARATOR = "::"


def _tar_members(shard: Path) -> list[str]:
    try:
        with tarfile.open(shard, "r:*") as tar:
            return [m.name for m in tar.getmembers() if m.isfile() and Path(m.name).suffix.lower() in IMAGE_SUFFIXES]
    except (tarfile.TarError, OSError) as err:
        raise ValueError(f"cannot read tar shard {shard}: {err}") from err


def expand_inputs(inputs: Sequence[str]) -> list[str]:
    """Keys of every image the inputs name, in a deterministic order (see the module docstring)."""
    keys: list[str] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            keys.extend(str(p) for p in list_images(item))
        elif path.suffix.lower() == ".txt" and path.is_file():
            keys.extend(str(p) for p in list_images(item))
        elif path.suffix.lower() == ".tar" and path.is_file():
            keys.extend(f"{item}{TAR_SEPARATOR}{name}" for name in _tar_members(path))
        else:
            keys.append(item)
    return keys


def read_batch(keys: Sequence[str], prog: str = "lqae-tokenize") -> tuple[list[tuple[str, torch.Tensor]], list[str]]:
    """Decode ``keys``; failures are reported on stderr by key and returned."""
    loaded, failed = [], []
    tar, tar_path = None, None
    try:
        for key in keys:
            try:
                shard, sep, member = key.partition(TAR_SEPARATOR)
                if sep and Path(shard).suffix.lower() == ".tar":
                    if shard != tar_path:
                        if tar is not None:
                            tar.close()
                        tar, tar_path = tarfile.open(shard, "r:*"), shard
                    handle = tar.extractfile(member)
                    if handle is None:
                        raise InvalidImageError(f"{key!r} is not a regular file in its tar")
                    loaded.append((key, to_tensor(open_image_bytes(handle.read(), key))))
                else:
                    loaded.append((key, to_tensor(key)))
            except (InvalidImageError, OSError, ValueError, TypeError, KeyError, tarfile.TarError) as err:
                print(f"{prog}: skipping {key}: {err}", file=sys.stderr)
                failed.append(key)
    finally:
        if tar is not None:
            tar.close()
    return loaded, failed


def shard_batches(count: int, batch_size: int, rank: int, world_size: int) -> list[range]:
    """This rank's batches of a sorted list of ``count`` keys: batch b (keys ``[b*B, (b+1)*B)``)
    belongs to rank ``b % world_size``. Batches are the ones a single process would form, so every
    image is encoded in the same company, and ids equal a single-process run's."""
    starts = range(rank * batch_size, count, world_size * batch_size)
    return [range(s, min(s + batch_size, count)) for s in starts]


def distributed_rank() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` from torchrun's environment (``(0, 1, 0)`` without it)."""
    def read(name: str, default: int) -> int:
        value = os.environ.get(name)
        if value is None:
            return default
        if not value.isdigit():
            raise UsageError(f"{name}={value!r} is not a non-negative integer")
        return int(value)

    rank, world, local = read("RANK", 0), read("WORLD_SIZE", 1), read("LOCAL_RANK", 0)
    if world < 1 or rank >= world:
        raise UsageError(f"RANK={rank} must be below WORLD_SIZE={world}")
    return rank, world, local
