"""Golden ids: fixed inputs through a fixed checkpoint must keep their ids, text and decoded pixels.

A failure here means a code change altered what ids mean. If that is deliberate, regenerate with
``python tests/golden/make_golden.py`` and say why in the commit.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lqae_tokenizer import ImageTokenizer

GOLDEN = Path(__file__).parent / "golden"
EXPECTED = json.loads((GOLDEN / "expected.json").read_text())


@pytest.fixture(scope="module")
def golden_tokenizer():
    return ImageTokenizer.from_pretrained(GOLDEN / "checkpoint", device="cpu")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_golden_ids_text_and_pixels(golden_tokenizer, name):
    from golden.make_golden import pixel_sha256

    want = EXPECTED[name]
    ids = golden_tokenizer.encode(GOLDEN / "inputs" / name)
    assert ids == want["ids"]
    assert golden_tokenizer.ids_to_text(ids) == want["text"]
    assert pixel_sha256(golden_tokenizer.decode(ids)) == want["pixels_sha256"]


def test_golden_checkpoint_is_pinned():
    config = json.loads((GOLDEN / "checkpoint" / "config.json").read_text())
    assert config["codebook_fingerprint"].startswith("sha256:")
    assert len(EXPECTED) >= 6
