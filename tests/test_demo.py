"""The bundled demo tokenizer: offline, round-trips its text, decodes to the right size, is the CLI default."""

from __future__ import annotations

import subprocess
import sys

import pytest
from PIL import Image

from lqae_tokenizer.demo import demo_dir, load_demo, sample_images


@pytest.fixture(scope="module")
def demo(minilm_dir):
    return load_demo("fashion-mnist", device="cpu")


def test_demo_is_small_and_offline(demo, monkeypatch):
    assert (demo_dir("fashion-mnist") / "model.safetensors").stat().st_size <= 20 * 2**20
    assert demo.tokens_per_image == 64 and demo.image_size == 32
    assert demo.config.codebook_vocabulary == "words"
    assert demo.config.language_model == "sentence-transformers/all-MiniLM-L6-v2"
    assert len(sample_images("fashion-mnist")) == 10


def test_demo_text_round_trips_and_decodes(demo):
    for path in sample_images("fashion-mnist")[:4]:
        ids = demo.encode(path)
        text = demo.to_text(path)
        assert demo.from_text(text) == ids
        assert len(text.split()) == 64 and all(w.isalpha() for w in text.split())
        image = demo.decode(ids)
        assert isinstance(image, Image.Image) and image.size == (32, 32)


def test_cli_without_model_uses_the_demo_and_says_so(demo, tmp_path):
    out = subprocess.run([sys.executable, "-m", "lqae_tokenizer.demo", "--tokenizer", "fashion-mnist", "--reconstruct", str(tmp_path)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "using the bundled fashion-mnist tokenizer" in out.stderr
    lines = out.stdout.splitlines()
    assert lines == [f"{p}: {demo.to_text(p)}" for p in sample_images("fashion-mnist")]
    usage = subprocess.run([sys.executable, "-m", "lqae_tokenizer.demo", "--help"], capture_output=True, text=True,
                           timeout=120)
    assert usage.returncode == 0 and usage.stdout.startswith("usage: python -m lqae_tokenizer.demo")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in sample_images("fashion-mnist"))
