"""Hostile input: decompression bombs, pickles that must never run, malformed safetensors, fuzzing."""

from __future__ import annotations

import io
import json
import os
import pickle
import resource
import struct
import zlib

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from lqae_tokenizer import CheckpointError, ImageTokenizer, InvalidImageError
from lqae_tokenizer.images import to_tensor

from conftest import build_tokenizer, copy_roberta_tokenizer, random_image

MARKER_NAME = "pickle_payload_ran"


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG file whose header claims ``width x height`` RGB pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def test_png_bomb_is_rejected_before_decoding(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_claiming(20000, 20000))  # 400 M pixels: 1.2 GB if decoded
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(InvalidImageError, match="400,000,000 pixels, above the limit"):
        to_tensor(path)
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mib < 100
    assert Image.MAX_IMAGE_PIXELS == 89478485  # the global limit is read, never changed


def test_truncated_png_says_truncated(tmp_path):
    buffer = io.BytesIO()
    Image.fromarray(random_image(2, 64, 64)).save(buffer, format="PNG")
    path = tmp_path / "cut.png"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(InvalidImageError, match="truncated"):
        to_tensor(path)
    from PIL import ImageFile

    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


class _Payload:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_weights_are_never_loaded(word_tokenizer, tmp_path):
    marker = tmp_path / MARKER_NAME
    evil = pickle.dumps({"encoder.patch_embed.weight": _Payload(str(marker))})
    # A tokenizer checkpoint with only a pickle.
    folder = tmp_path / "ckpt"
    word_tokenizer.save_pretrained(folder)
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(evil)
    with pytest.raises(CheckpointError, match="never loaded"):
        ImageTokenizer.from_pretrained(folder)
    # A language model with only a pickle.
    lm = tmp_path / "lm"
    lm.mkdir()
    copy_roberta_tokenizer(lm)
    (lm / "config.json").write_text(json.dumps({"model_type": "roberta", "vocab_size": 50265, "hidden_size": 8,
                                                "num_hidden_layers": 1, "num_attention_heads": 2,
                                                "intermediate_size": 16, "max_position_embeddings": 514}))
    (lm / "pytorch_model.bin").write_bytes(evil)
    with pytest.raises(CheckpointError, match="never loaded"):
        build_tokenizer(lm)
    assert not marker.exists()


def _corrupt_variants(data: bytes) -> dict[str, bytes]:
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + n])
    names = [k for k in header if k != "__metadata__"]
    overlapping = dict(header)
    first, second = names[0], names[1]
    overlapping[second] = {**header[second], "data_offsets": header[first]["data_offsets"]}
    overlapped = json.dumps(overlapping).encode()
    overlapped += b" " * (-len(overlapped) % 8)
    return {
        "huge header length": struct.pack("<Q", 2**60) + data[8:],
        "bad JSON": struct.pack("<Q", n) + b"{!" + data[10 : 8 + n] + data[8 + n :],
        "overlapping offsets": struct.pack("<Q", len(overlapped)) + overlapped + data[8 + n :],
        "truncated body": data[: 8 + n + (len(data) - 8 - n) // 2],
        "empty file": b"",
    }


@pytest.mark.slow
def test_malformed_safetensors_are_refused(word_tokenizer, tmp_path):
    folder = tmp_path / "ckpt"
    word_tokenizer.save_pretrained(folder)
    good = (folder / "model.safetensors").read_bytes()
    for name, data in _corrupt_variants(good).items():
        (folder / "model.safetensors").write_bytes(data)
        with pytest.raises(CheckpointError, match="not a valid safetensors file|does not match"):
            ImageTokenizer.from_pretrained(folder)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(min_size=0, max_size=600))
def test_fuzz_image_files_raise_only_documented_errors(tmp_path, data):
    path = tmp_path / "fuzz.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + data if data[:1] == b"\x00" else data)
    try:
        out = to_tensor(path)
    except (InvalidImageError, ValueError, TypeError):
        return
    assert out.dtype == torch.float32 and out.shape[0] == 3 and 0 <= float(out.min()) and float(out.max()) <= 1


def _array(shape, dtype, fill):
    with np.errstate(all="ignore"):
        return np.full(shape, fill).astype(dtype)


ARRAYS = st.builds(
    _array,
    st.lists(st.integers(0, 6), min_size=0, max_size=4).map(tuple),
    st.sampled_from(["uint8", "uint16", "int64", "float32", "float64", "bool", "int8", "complex64"]),
    st.sampled_from([0, 1, 0.5, 255, -1, float("nan"), float("inf"), 2.0]),
)


@settings(max_examples=300, deadline=None)
@given(ARRAYS)
def test_fuzz_arrays_raise_only_documented_errors(array):
    try:
        with np.errstate(all="ignore"):
            out = to_tensor(array)
    except (ValueError, TypeError):
        return
    assert out.shape[0] == 3 and bool(torch.isfinite(out).all())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_fuzz_weight_loader_raises_only_checkpoint_errors(word_tokenizer, tmp_path_factory, data):
    from lqae_tokenizer.checkpoint import read_weights, write_weights

    expected = word_tokenizer.model.trainable_state_dict()
    folder = tmp_path_factory.mktemp("fuzzckpt")
    write_weights(folder, expected)
    blob = bytearray((folder / "model.safetensors").read_bytes())
    for _ in range(data.draw(st.integers(1, 8))):
        blob[data.draw(st.integers(0, min(len(blob) - 1, 4096)))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(blob)))
    (folder / "model.safetensors").write_bytes(bytes(blob[:cut]) if data.draw(st.booleans()) else bytes(blob))
    try:
        state = read_weights(folder, expected)
    except CheckpointError:
        return
    assert state.keys() == expected.keys()  # what loads is complete and correctly shaped
    assert all(state[k].shape == expected[k].shape for k in state)
