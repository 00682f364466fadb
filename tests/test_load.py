"""Load: many encode calls keep memory and open files flat; one-by-one equals batched."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import random_image

pytestmark = pytest.mark.slow  # subprocesses and training runs: excluded by -m "not slow"


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def open_files() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_two_thousand_five_hundred_mixed_encode_calls_stay_flat(all_tokenizer, tmp_path):
    rng = np.random.default_rng(0)
    pool = [random_image(i, int(h), int(w)) for i, (h, w) in enumerate(rng.integers(8, 64, size=(40, 2)))]
    files = []
    for i in range(10):
        files.append(tmp_path / f"{i}.png")
        Image.fromarray(pool[i]).save(files[-1])
    inputs = pool + files + [Image.fromarray(p) for p in pool[:10]]

    def call(i: int) -> None:
        item = inputs[i % len(inputs)]
        ids = all_tokenizer.encode([item, item]) if i % 7 == 0 else all_tokenizer.encode(item)
        assert ids

    for i in range(500):  # warm-up: allocator pools and caches settle
        call(i)
    rss, fds = rss_mib(), open_files()
    for i in range(500, 2500):
        call(i)
    assert rss_mib() - rss < 20, (rss, rss_mib())  # 2,000 calls: a leak of 10 KB per call would show
    assert open_files() == fds


def test_one_at_a_time_equals_batches_of_64(all_tokenizer):
    images = [random_image(1000 + i, 24 + i % 17, 32 + i % 9) for i in range(1000)]
    singles = [all_tokenizer.encode(im) for im in images]
    batched = [row for s in range(0, 1000, 64) for row in all_tokenizer.encode(images[s : s + 64])]
    assert singles == batched
