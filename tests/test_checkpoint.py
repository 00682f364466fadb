"""save_pretrained / from_pretrained: identical results, strict loading, bundled language model."""

from __future__ import annotations

import warnings

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from lqae_tokenizer import CheckpointError, ImageTokenizer

from conftest import build_tokenizer, make_random_lm, random_image

IMAGES = [random_image(s) for s in range(4)]


@pytest.fixture(scope="module")
def saved(word_tokenizer, tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpt")
    word_tokenizer.save_pretrained(folder)
    return folder


def test_round_trip_gives_identical_ids_and_pixels(word_tokenizer, saved):
    loaded = ImageTokenizer.from_pretrained(saved, device="cpu")
    ids = word_tokenizer.encode(IMAGES)
    assert loaded.encode(IMAGES) == ids
    assert torch.equal(loaded.batch_decode(ids, output_type="pt"), word_tokenizer.batch_decode(ids, output_type="pt"))
    assert loaded.config == word_tokenizer.config
    assert loaded.to_text(IMAGES[0]) == word_tokenizer.to_text(IMAGES[0])


def test_folder_layout_holds_only_trainable_weights(word_tokenizer, saved):
    names = {p.name for p in saved.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= names
    assert not any(n.endswith((".bin", ".pt", ".pkl", ".tmp")) for n in names)
    weights = load_file(str(saved / "model.safetensors"))
    assert weights.keys() == word_tokenizer.model.trainable_state_dict().keys()
    assert all(k.split(".")[0] in ("encoder", "decoder") and "word_embeddings" not in k for k in weights)
    config = json.loads((saved / "config.json").read_text())
    assert config["codebook_fingerprint"].startswith("sha256:") and config["codebook_vocabulary"] == "words"


def _copy(saved, tmp_path):
    target = tmp_path / "copy"
    shutil.copytree(saved, target)
    return target


def test_missing_config_or_weights(saved, tmp_path):
    folder = _copy(saved, tmp_path)
    (folder / "config.json").unlink()
    with pytest.raises(CheckpointError, match="has no config.json"):
        ImageTokenizer.from_pretrained(folder)
    folder = _copy(saved, tmp_path / "b")
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(b"pickle payload that must never be loaded")
    with pytest.raises(CheckpointError, match=r"no model.safetensors .*pytorch_model.bin.*never loaded"):
        ImageTokenizer.from_pretrained(folder)


@pytest.mark.parametrize("edit, message", [
    (lambda w: w.pop("encoder.patch_embed.weight"), r"missing weights \['encoder.patch_embed.weight'\]"),
    (lambda w: w.__setitem__("encoder.extra", torch.zeros(1)), r"unexpected weights \['encoder.extra'\]"),
    (lambda w: w.__setitem__("decoder.to_pixels.bias", torch.zeros(5)), "has shape \\[5\\], the config needs \\[192\\]"),
    (lambda w: w.__setitem__("decoder.to_pixels.bias", torch.zeros(192, dtype=torch.int64)), "dtype torch.int64"),
])
def test_strict_weight_checks(saved, tmp_path, edit, message):
    folder = _copy(saved, tmp_path)
    weights = load_file(str(folder / "model.safetensors"))
    edit(weights)
    save_file(weights, str(folder / "model.safetensors"))
    with pytest.raises(CheckpointError, match=message):
        ImageTokenizer.from_pretrained(folder)


def test_corrupt_safetensors_and_config(saved, tmp_path):
    folder = _copy(saved, tmp_path)
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="not a valid safetensors file"):
        ImageTokenizer.from_pretrained(folder)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        ImageTokenizer.from_pretrained(folder)


def test_config_that_does_not_match_the_weights(saved, tmp_path):
    folder = _copy(saved, tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["encoder_width"] = 48
    config["encoder_heads"] = 2
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="has shape"):
        ImageTokenizer.from_pretrained(folder)


def test_a_different_embedding_table_is_refused(word_tokenizer, saved, tmp_path):
    """Same architecture, other LM weights (e.g. another revision): the fingerprint catches it."""
    other_lm = make_random_lm(tmp_path / "other-lm", "roberta", seed=123)
    folder = _copy(saved, tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["language_model"] = str(other_lm)
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="codebook fingerprint mismatch"):
        ImageTokenizer.from_pretrained(folder)


@pytest.mark.slow
def test_bundled_language_model_loads_with_no_other_source(tmp_path):
    lm = make_random_lm(tmp_path / "lm", "roberta", seed=5)
    tok = build_tokenizer(lm, codebook_vocabulary="words")
    ids = tok.encode(IMAGES)
    pixels = tok.batch_decode(ids, output_type="pt")
    tok.save_pretrained(tmp_path / "bundle", include_language_model=True)
    shutil.rmtree(lm)  # the original language model is gone
    loaded = ImageTokenizer.from_pretrained(tmp_path / "bundle")
    assert loaded.encode(IMAGES) == ids
    assert torch.equal(loaded.batch_decode(ids, output_type="pt"), pixels)
    assert loaded.model.language_model.has_trained_head


def test_bundled_minilm_keeps_its_missing_head_missing(minilm_tokenizer, tmp_path):
    minilm_tokenizer.save_pretrained(tmp_path / "bundle", include_language_model=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # loading for inference says nothing about training-only terms
        loaded = ImageTokenizer.from_pretrained(tmp_path / "bundle")
    assert not loaded.model.language_model.has_trained_head
    assert loaded.encode(IMAGES[0]) == minilm_tokenizer.encode(IMAGES[0])


def test_not_a_folder_nor_a_hub_id(tmp_path):
    with pytest.raises(CheckpointError, match="not a checkpoint folder"):
        ImageTokenizer.from_pretrained(tmp_path / "does-not-exist")


def test_saving_twice_overwrites_cleanly(word_tokenizer, tmp_path):
    word_tokenizer.save_pretrained(tmp_path / "x")
    word_tokenizer.save_pretrained(tmp_path / "x")
    assert not [p for p in (tmp_path / "x").iterdir() if p.name.startswith(".")]


def test_saved_files_get_normal_permissions(word_tokenizer, tmp_path):
    """Regression: files written through mkstemp were 0600, unreadable for other users."""
    import os

    umask = os.umask(0o022)
    try:
        word_tokenizer.save_pretrained(tmp_path / "perm", include_language_model=True)
    finally:
        os.umask(umask)
    for path in (tmp_path / "perm").rglob("*"):
        mode = path.stat().st_mode & 0o777
        assert mode == (0o755 if path.is_dir() else 0o644), (path, oct(mode))
