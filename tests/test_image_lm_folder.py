"""The ImageLM folder as an artifact: saving never deletes what it did not write and swaps whole
folders, damaged folders and mismatched pins are one clear CheckpointError before the LM loads, Hub
round trip through the real huggingface_hub client, wrong label types. A small random Llama over
roberta-base's real tokenizer stands for the LM; the bundled fashion-mnist tokenizer for the words."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
import torch

pytest.importorskip("peft", reason="pip install 'lqae-tokenizer[llm]'")

from conftest import make_random_lm  # noqa: E402
from hub_server import FakeHub  # noqa: E402

LABELS = ["coat", "bag", "sandal"]


@pytest.fixture(scope="module")
def adapter(causal_lm_dir, fashion_tokenizer):
    from peft import LoraConfig, get_peft_model

    from lqae_tokenizer.evaluation import load_causal_lm
    from lqae_tokenizer.llm import ImageLM

    base, tok = load_causal_lm(str(causal_lm_dir))
    torch.manual_seed(0)
    model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    return ImageLM(fashion_tokenizer, model, tok, LABELS, language_model=str(causal_lm_dir),
                   image_tokenizer_name="fashion-mnist", training={"images": 3})


@pytest.fixture()
def saved(adapter, tmp_path) -> Path:
    return adapter.save_pretrained(tmp_path / "adapter")


@pytest.fixture()
def no_lm_load(monkeypatch):
    """Fail the test if the causal LM's weights are loaded (the checks must come before)."""
    from lqae_tokenizer.llm import causal_lm

    def refuse(*args, **kwargs):
        raise AssertionError("the LM was loaded before the folder was checked")

    monkeypatch.setattr(causal_lm, "load_causal_lm", refuse)


# -- saving ----------------------------------------------------------------------------------------
def test_saving_into_a_folder_holding_other_files_is_refused_and_deletes_nothing(adapter, tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="notes.txt"):
        adapter.save_pretrained(folder)
    assert (folder / "notes.txt").read_text() == "keep me"
    assert [p.name for p in tmp_path.iterdir()] == ["mine"]  # no staging folder left behind


def test_saving_into_the_current_directory_is_refused(adapter, tmp_path, monkeypatch):
    (tmp_path / "work.py").write_text("print('mine')")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileExistsError):
        adapter.save_pretrained(".")
    assert (tmp_path / "work.py").read_text() == "print('mine')"
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.chdir(empty)
    with pytest.raises(FileExistsError, match="current directory"):
        adapter.save_pretrained(".")


def test_an_imagelm_folder_or_an_empty_one_is_replaced_whole(adapter, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (adapter.save_pretrained(empty) / "image_lm.json").is_file()
    (empty / "stale.txt").write_text("from an older save")
    adapter.save_pretrained(empty)
    assert not (empty / "stale.txt").exists()  # the folder is the new one, not a merge


def test_concurrent_saves_all_succeed_and_a_reader_never_sees_a_partial_folder(adapter, tmp_path):
    from lqae_tokenizer.folders import exchange

    target = tmp_path / "shared"
    adapter.save_pretrained(target)
    expected = {p.name for p in target.iterdir()}
    errors, seen, stop = [], [], threading.Event()

    def save():
        try:
            for _ in range(3):
                adapter.save_pretrained(target)
        except Exception as err:  # noqa: BLE001 (collected and asserted empty)
            errors.append(err)

    def poll():  # as a loader does: each file opened by its path
        while not stop.is_set():
            if not target.exists():
                seen.append(None)
                continue
            seen.append({name for name in expected if (target / name).is_file()})

    probe = tmp_path / "probe"
    probe.mkdir()
    (tmp_path / "probe2").mkdir()
    atomic = exchange(probe, tmp_path / "probe2")
    savers = [threading.Thread(target=save) for _ in range(3)]
    reader = threading.Thread(target=poll)
    reader.start()
    for t in savers:
        t.start()
    for t in savers:
        t.join()
    stop.set()
    reader.join()
    assert errors == []
    assert {p.name for p in target.iterdir()} == expected
    assert [s for s in seen if s is not None and s != expected] == []  # never half-written
    if atomic:  # renameat2(RENAME_EXCHANGE): never even missing
        assert None not in seen


# -- loading: damaged folders, pins, names ---------------------------------------------------------
@pytest.mark.parametrize("damage, message", [
    (lambda f: (f / "image_lm.json").write_text("{not json"), "not valid JSON"),
    (lambda f: (f / "image_lm.json").unlink(), "no image_lm.json"),
    (lambda f: (f / "adapter_model.safetensors").write_bytes(b"\x00" * 40), "not a valid safetensors"),
    (lambda f: (f / "adapter_model.safetensors").unlink(), "no adapter_model.safetensors"),
    (lambda f: (f / "adapter_config.json").write_text("[]"), "not a peft adapter config"),
    (lambda f: _edit(f, labels="coat"), "'labels' must be a list"),
    (lambda f: _edit(f, labels=["coat", "coat rack"]), "labels do not work with its LM"),
    (lambda f: _edit(f, tokens_per_image=256), "trained on 256 words per image"),
    (lambda f: _edit(f, prompt={"read": "{words}", "draw": "x"}), "bad 'prompt'"),
    (lambda f: _edit(f, format_version=7), "format_version 7"),
])
def test_a_damaged_folder_is_one_checkpoint_error_before_the_lm_loads(saved, no_lm_load, damage, message):
    from lqae_tokenizer.checkpoint import CheckpointError
    from lqae_tokenizer.llm import ImageLM

    damage(saved)
    with pytest.raises(CheckpointError, match=message):
        ImageLM.from_pretrained(saved)


def _edit(folder: Path, **changes) -> None:
    path = folder / "image_lm.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


def test_a_retrained_image_tokenizer_is_refused_by_its_pin(saved, no_lm_load, fashion_tokenizer, tmp_path):
    from lqae_tokenizer.checkpoint import CheckpointError
    from lqae_tokenizer.llm import ImageLM

    retrained = tmp_path / "retrained"
    weight = next(fashion_tokenizer.model.decoder.parameters())
    original = weight.detach().clone()
    weight.data.add_(1e-3)  # "retrained": the same words, other decoder weights
    try:
        fashion_tokenizer.save_pretrained(retrained)
    finally:
        weight.data.copy_(original)
    (saved / "image_tokenizer").mkdir()
    for path in retrained.iterdir():
        (saved / "image_tokenizer" / path.name).write_bytes(path.read_bytes())
    _edit(saved, image_tokenizer="image_tokenizer")
    with pytest.raises(CheckpointError, match="another image tokenizer"):
        ImageLM.from_pretrained(saved)


def test_another_lm_under_the_same_name_is_refused_by_its_pin(saved, causal_lm_dir, tmp_path):
    from lqae_tokenizer.checkpoint import CheckpointError
    from lqae_tokenizer.llm import ImageLM

    other = make_random_lm(tmp_path / "other-lm", "llama", seed=9)
    _edit(saved, language_model=str(other))
    with pytest.raises(CheckpointError, match="another language model"):
        ImageLM.from_pretrained(saved)


def test_names_that_are_not_imagelms_say_what_they_are(no_lm_load, tmp_path):
    from lqae_tokenizer.checkpoint import CheckpointError
    from lqae_tokenizer.llm import ImageLM

    with pytest.raises(CheckpointError, match="bundled image tokenizer, not an ImageLM"):
        ImageLM.from_pretrained("fashion-mnist")
    with pytest.raises(CheckpointError, match="neither a bundled ImageLM"):
        ImageLM.from_pretrained("fashion-mnist-smollm3")
    (tmp_path / "words.jpg").write_text("not an image")
    with pytest.raises(CheckpointError, match="is a file"):
        ImageLM.from_pretrained(tmp_path / "words.jpg")
    with pytest.raises(TypeError, match="str or Path"):
        ImageLM.from_pretrained(3)


def test_labels_given_as_one_string_are_a_type_error(adapter):
    with pytest.raises(TypeError, match="list of label names"):
        adapter.classify([torch.rand(3, 32, 32)], labels="coat")
    with pytest.raises(TypeError, match="list of label names"):
        adapter.scores_of_texts(["dye " * 64], labels="bag")


def test_the_folder_records_pins_and_old_folders_without_them_still_load(saved, adapter):
    from lqae_tokenizer.llm import ImageLM

    pins = json.loads((saved / "image_lm.json").read_text())["pins"]
    assert set(pins) == {"image_tokenizer", "language_model"}
    config = json.loads((saved / "image_lm.json").read_text())
    del config["pins"]
    (saved / "image_lm.json").write_text(json.dumps(config))
    loaded = ImageLM.from_pretrained(saved)
    texts = ["dye florence " * 32]
    torch.testing.assert_close(loaded.scores_of_texts(texts), adapter.scores_of_texts(texts))


# -- the Hub ---------------------------------------------------------------------------------------
TOKEN = "hf_testtoken_do_not_print_0123456789"


@pytest.mark.slow
def test_push_to_hub_then_load_it_by_repo_id_and_offline_from_the_cache(saved, tmp_path):
    code = f"""
        import json, torch
        from lqae_tokenizer.llm import ImageLM
        lm = ImageLM.from_pretrained({str(saved)!r})
        url = lm.push_to_hub("lqae-org/reader", token={TOKEN!r})
        again = ImageLM.from_pretrained("lqae-org/reader", cache_dir={str(tmp_path / 'c')!r})
        texts = ["dye florence " * 32]
        same = bool(torch.equal(again.scores_of_texts(texts), lm.scores_of_texts(texts)))
        print(json.dumps({{"url": url, "same": same, "labels": again.labels}}))
    """
    offline = f"""
        import json
        from lqae_tokenizer.llm import ImageLM
        lm = ImageLM.from_pretrained("lqae-org/reader", cache_dir={str(tmp_path / 'c')!r})
        print(json.dumps({{"labels": lm.labels}}))
    """
    env = {**os.environ, "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    with FakeHub() as hub:
        proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                              env={**env, "HF_ENDPOINT": hub.endpoint}, cwd=tmp_path, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        pushed = hub.state.resolve("lqae-org/reader", "main")[1]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["same"] and got["labels"] == LABELS and "/lqae-org/reader/commit/" in got["url"]
    assert {"image_lm.json", "adapter_config.json", "adapter_model.safetensors", "README.md"} <= set(pushed)
    assert b"library_name: lqae-tokenizer" in pushed["README.md"]
    assert TOKEN not in proc.stdout + proc.stderr
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(offline)], capture_output=True, text=True,
                          env={**env, "HF_HUB_OFFLINE": "1"}, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1])["labels"] == LABELS


def test_an_imagelm_name_given_to_the_tokenizer_says_what_it_is(tmp_path):
    from lqae_tokenizer import ImageTokenizer
    from lqae_tokenizer.bundled import TOKENIZER, names
    from lqae_tokenizer.checkpoint import CheckpointError

    # The message lists every bundled image tokenizer, whichever the registry holds.
    tokenizers = names(TOKENIZER)
    assert {"photo", "fashion-mnist", "fashion-mnist-smollm2-words"} <= set(tokenizers)
    with pytest.raises(CheckpointError, match=f"bundled ImageLM.*ImageLM.from_pretrained.*{re.escape(str(tokenizers))}"):
        ImageTokenizer.from_pretrained("fashion-mnist-smollm2-read")


def test_bf16_precision_reads_with_autocast_close_to_float32(adapter):
    texts = ["dye florence " * 32, "a " * 64]
    assert adapter.precision == "auto"  # float32 on a CPU
    fp32 = adapter.scores_of_texts(texts)
    adapter.precision = "bf16"
    try:
        bf16 = adapter.scores_of_texts(texts)
        drawn = adapter.draw_ids("bag", 1, seed=0)
    finally:
        adapter.precision = "auto"
    assert not torch.equal(bf16, fp32)  # the autocast really ran
    torch.testing.assert_close(bf16, fp32, rtol=0.05, atol=0.3)
    assert drawn.shape == (1, 64)
    from lqae_tokenizer.llm import ImageLM

    with pytest.raises(ValueError, match="precision must be one of"):
        ImageLM(adapter.image_tokenizer, adapter.model, adapter.llm_tokenizer, LABELS, precision="fp16")
