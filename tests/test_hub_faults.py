"""The Hub under faults: cut downloads, tampered bytes, offline with nothing cached, secrets in errors."""

from __future__ import annotations

import json

import pytest

from hub_server import FakeHub
from test_hub import TOKEN, checkpoint_files, run_python


@pytest.fixture(scope="module")
def repo_files(word_tokenizer, tmp_path_factory):
    folder = tmp_path_factory.mktemp("repo")
    word_tokenizer.save_pretrained(folder, include_language_model=True)
    return checkpoint_files(folder), word_tokenizer.encode(__import__("conftest").random_image(5))


def load_code(cache: str, repo: str = "org/tok") -> str:
    return f"""
        import json
        from conftest import random_image
        from lqae_tokenizer import ImageTokenizer, CheckpointError
        try:
            tok = ImageTokenizer.from_pretrained({repo!r}, cache_dir={cache!r}, token={TOKEN!r})
            print(json.dumps({{"ids": tok.encode(random_image(5))}}))
        except CheckpointError as err:
            print(json.dumps({{"error": str(err)}}))
    """


@pytest.mark.slow
def test_download_cut_midway_then_retry_succeeds(repo_files, tmp_path):
    files, want = repo_files
    cache = str(tmp_path / "cache")
    with FakeHub() as hub:
        hub.state.commit("org/tok", files)
        hub.state.fail_next_downloads = 1
        first = run_python(load_code(cache), {"HF_ENDPOINT": hub.endpoint, "PYTHONPATH": _tests_path()}, tmp_path)
        if "error" in first:  # the client gave up on the cut file: a clear error, nothing half-loaded
            assert "cannot fetch" in first["error"] or "does not match" in first["error"]
            first = run_python(load_code(cache), {"HF_ENDPOINT": hub.endpoint, "PYTHONPATH": _tests_path()}, tmp_path)
        assert first["ids"] == want
        assert hub.state.fail_next_downloads == 0  # the fault really happened


@pytest.mark.slow
def test_tampered_bytes_are_detected_then_a_clean_download_works(repo_files, tmp_path):
    files, want = repo_files
    cache = str(tmp_path / "cache")
    weights = bytearray(files["model.safetensors"])
    weights[-3] ^= 0xFF  # same size, different bytes: only a hash check can tell
    env = {"PYTHONPATH": _tests_path()}
    with FakeHub() as hub:
        hub.state.commit("org/tok", files)
        hub.state.tampered["model.safetensors"] = bytes(weights)
        got = run_python(load_code(cache), {**env, "HF_ENDPOINT": hub.endpoint}, tmp_path)
        assert "model.safetensors does not match the hash the Hub advertised" in got["error"]
        hub.state.tampered.clear()
        got = run_python(load_code(cache), {**env, "HF_ENDPOINT": hub.endpoint}, tmp_path)
        assert got["ids"] == want


def test_offline_with_empty_cache_opens_no_socket(tmp_path):
    with FakeHub() as hub:
        got = run_python(load_code(str(tmp_path / "empty")), {"HF_ENDPOINT": hub.endpoint, "HF_HUB_OFFLINE": "1",
                                                              "PYTHONPATH": _tests_path()}, tmp_path)
        assert "not in the local Hugging Face cache" in got["error"]
        assert hub.state.requests == []  # not a single request reached the endpoint


def test_token_never_appears_in_errors(tmp_path):
    with FakeHub() as hub:
        got = run_python(load_code(str(tmp_path / "c"), repo="org/missing"), {"HF_ENDPOINT": hub.endpoint,
                                                                             "PYTHONPATH": _tests_path()}, tmp_path)
        assert "error" in got and TOKEN not in json.dumps(got)
        sent = [h for _, _, h in hub.state.requests]
        assert sent and all(h.get("authorization", h.get("Authorization")) == f"Bearer {TOKEN}" for h in sent)


def _tests_path() -> str:
    import os
    from pathlib import Path

    return os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])
