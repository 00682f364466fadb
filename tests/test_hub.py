"""Loading and pushing through the real huggingface_hub client, against a loopback Hub stand-in.

Each case runs in a fresh Python process so that ``HF_ENDPOINT`` / ``HF_HUB_OFFLINE`` are read
by huggingface_hub at import, exactly as for a user.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from hub_server import FakeHub

from conftest import random_image

TOKEN = "hf_testtoken_do_not_print_0123456789"


def run_python(code: str, env: dict[str, str], cwd: Path) -> dict:
    """Run ``code`` in a fresh interpreter; it must print one JSON line last."""
    full_env = {**os.environ, **env, "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=full_env, cwd=cwd,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert TOKEN not in proc.stdout + proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def checkpoint_files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def published(word_tokenizer, tmp_path_factory):
    """A bundled checkpoint, its image and expected ids, as files a Hub repo would hold."""
    folder = tmp_path_factory.mktemp("publish")
    word_tokenizer.save_pretrained(folder / "ckpt", include_language_model=True)
    image = folder / "image.png"
    from PIL import Image

    Image.fromarray(random_image(11)).save(image)
    return folder, word_tokenizer.encode(image)


LOAD = """
    import json
    from lqae_tokenizer import ImageTokenizer
    tok = ImageTokenizer.from_pretrained("lqae-org/tiny-words", cache_dir={cache!r}, device="cpu")
    print(json.dumps({{"ids": tok.encode({image!r})}}))
"""


@pytest.mark.slow
def test_download_from_hub_endpoint_then_offline_from_cache(published, tmp_path):
    folder, want = published
    cache = str(tmp_path / "hf-cache")
    with FakeHub() as hub:
        hub.state.commit("lqae-org/tiny-words", checkpoint_files(folder / "ckpt"))
        got = run_python(LOAD.format(cache=cache, image=str(folder / "image.png")),
                         {"HF_ENDPOINT": hub.endpoint}, tmp_path)
        assert got["ids"] == want
        fetched = {p for m, p, _ in hub.state.requests if m == "GET" and "/resolve/" in p}
        assert any(p.endswith("/model.safetensors") for p in fetched)
        assert any("/language_model/" in p for p in fetched)
    # The server is gone: offline mode must load everything from the cache, asking nobody.
    got = run_python(LOAD.format(cache=cache, image=str(folder / "image.png")),
                     {"HF_ENDPOINT": hub.endpoint, "HF_HUB_OFFLINE": "1"}, tmp_path)
    assert got["ids"] == want


def test_offline_with_an_empty_cache_is_a_clear_error(tmp_path):
    code = f"""
        import json
        from lqae_tokenizer import ImageTokenizer, CheckpointError
        try:
            ImageTokenizer.from_pretrained("lqae-org/missing", cache_dir={str(tmp_path / 'empty')!r})
        except CheckpointError as err:
            print(json.dumps({{"error": str(err)}}))
    """
    got = run_python(code, {"HF_HUB_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9"}, tmp_path)
    assert "not in the local Hugging Face cache" in got["error"]


@pytest.mark.slow
def test_push_to_hub_then_load_from_it(published, tmp_path):
    folder, want = published
    code = f"""
        import json
        from lqae_tokenizer import ImageTokenizer
        tok = ImageTokenizer.from_pretrained({str(folder / 'ckpt')!r}, device="cpu")
        url = tok.push_to_hub("lqae-org/pushed", token={TOKEN!r}, include_language_model=True)
        again = ImageTokenizer.from_pretrained("lqae-org/pushed", cache_dir={str(tmp_path / 'c')!r})
        print(json.dumps({{"url": url, "ids": again.encode({str(folder / 'image.png')!r})}}))
    """
    with FakeHub() as hub:
        got = run_python(code, {"HF_ENDPOINT": hub.endpoint}, tmp_path)
        pushed = hub.state.resolve("lqae-org/pushed", "main")[1]
        commits = [(m, p, h) for m, p, h in hub.state.requests if "/commit/" in p]
    assert got["ids"] == want
    assert "/lqae-org/pushed/commit/" in got["url"]
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md", "language_model/model.safetensors"} <= set(pushed)
    assert b"library_name: lqae-tokenizer" in pushed["README.md"]
    assert commits and all(h.get("authorization", h.get("Authorization")) == f"Bearer {TOKEN}" for _, _, h in commits)
    assert not any(TOKEN.encode() in data for data in pushed.values())
