"""lqae-tokenize on real files: formats, reconstructions, failures reported by path."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from conftest import random_image


@pytest.fixture(scope="module")
def setup(word_tokenizer, tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    word_tokenizer.save_pretrained(root / "model")
    paths = []
    for i in range(3):
        path = root / f"img{i}.png"
        Image.fromarray(random_image(20 + i, 40, 48)).save(path)
        paths.append(path)
    return root, paths, [word_tokenizer.encode(p) for p in paths]


def cli(*args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("lqae-tokenize", path=str(Path(sys.executable).parent))
    command = [exe] if exe else [sys.executable, "-m", "lqae_tokenizer.cli.tokenize"]
    return subprocess.run([*command, *map(str, args)], capture_output=True, text=True, timeout=300)


def cli_in_process(capsys, *args: str) -> subprocess.CompletedProcess:
    """lqae-tokenize's ``main`` in this process: the same code without an interpreter start per call
    (the console script itself is run by ``cli`` in the other tests)."""
    from lqae_tokenizer.cli.tokenize import main

    capsys.readouterr()
    try:
        code = main([str(a) for a in args])
    except SystemExit as exit_:
        code = exit_.code
    out = capsys.readouterr()
    return subprocess.CompletedProcess(list(args), code, out.out, out.err)


@pytest.mark.slow
def test_formats(setup, word_tokenizer, capsys):
    root, paths, ids = setup

    def cli(*args):
        return cli_in_process(capsys, *args)

    out = cli(*paths, "--model", root / "model", "--format", "json", "--batch-size", "2")
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["path"] for r in rows] == [str(p) for p in paths]
    assert [r["ids"] for r in rows] == ids
    assert rows[0]["tokens"] == word_tokenizer.text_tokenizer.convert_ids_to_tokens(ids[0])
    assert rows[0]["text"] == word_tokenizer.to_text(paths[0])
    text = cli(paths[0], "--model", root / "model")
    assert text.stdout.rstrip("\n") == word_tokenizer.to_text(paths[0])
    id_lines = cli(*paths, "--model", root / "model", "--format", "ids", "--no-filename").stdout.splitlines()
    assert [list(map(int, line.split())) for line in id_lines] == ids
    # Several inputs: each line says which input it belongs to, as grep does with several files.
    labelled = cli(*paths, "--model", root / "model", "--format", "ids").stdout.splitlines()
    assert labelled == [f"{p}: " + " ".join(map(str, row)) for p, row in zip(paths, ids)]
    single = cli(paths[0], "--model", root / "model", "--format", "ids", "--with-filename").stdout.strip()
    assert single == f"{paths[0]}: " + " ".join(map(str, ids[0]))
    token_line = cli(paths[1], "--model", root / "model", "--format", "tokens").stdout.split()
    assert word_tokenizer.from_tokens(token_line) == ids[1]


@pytest.mark.slow
def test_reconstruct_writes_decoded_pngs(setup, word_tokenizer, tmp_path):
    root, paths, ids = setup
    out = cli(paths[0], paths[1], "--model", root / "model", "--format", "ids", "--reconstruct", tmp_path / "rec")
    assert out.returncode == 0, out.stderr
    written = sorted(p.name for p in (tmp_path / "rec").iterdir())
    assert written == ["img0.png", "img1.png"]
    assert Image.open(tmp_path / "rec" / "img0.png").tobytes() == word_tokenizer.decode(ids[0]).tobytes()


@pytest.mark.slow
def test_unreadable_inputs_are_reported_and_the_rest_processed(setup, tmp_path):
    root, paths, ids = setup
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image at all")
    out = cli(paths[0], broken, tmp_path / "missing.jpg", paths[2], "--model", root / "model", "--format", "ids")
    assert out.returncode == 1
    assert out.stdout.splitlines() == [f"{p}: " + " ".join(map(str, row)) for p, row in ((paths[0], ids[0]),
                                                                                        (paths[2], ids[2]))]
    assert f"skipping {broken}" in out.stderr and "missing.jpg" in out.stderr
    assert "2 of 4 inputs failed" in out.stderr


@pytest.mark.slow
def test_bad_model_and_usage_errors(setup, tmp_path):
    root, paths, _ = setup
    out = cli(paths[0], "--model", tmp_path / "nowhere")
    assert out.returncode == 2 and "cannot load" in out.stderr
    out = cli(paths[0], "--model", root / "model", "--format", "xml")
    assert out.returncode == 2 and "invalid choice" in out.stderr
    for device, message in (("gpu", "is not a torch device"), ("cuda:7", "CUDA device")):
        if device.startswith("cuda") and __import__("torch").cuda.device_count() > 7:
            continue
        out = cli(paths[0], "--model", root / "model", "--device", device)
        assert out.returncode == 2 and message in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
    out = cli(root, "--model", root / "model")  # a folder without --output
    assert out.returncode == 2 and "--output" in out.stderr and "is a folder" in out.stderr


def test_inputs_are_checked_before_the_model_loads(setup, tmp_path):
    """A typo costs no model loading: the (missing) model is never opened when no input is readable."""
    out = cli(tmp_path / "typo.png", "--model", tmp_path / "no-such-model")
    assert out.returncode == 1 and "typo.png" in out.stderr and "cannot load" not in out.stderr


@pytest.mark.slow
def test_collection_mode_streams_to_jsonl_and_resumes(setup, word_tokenizer, tmp_path):
    root, paths, ids = setup
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    for i, p in enumerate(paths):
        shutil.copy(p, (data / "sub" if i == 2 else data) / p.name)
    (data / "broken.png").write_bytes(b"nope")
    output = tmp_path / "ids.jsonl"
    out = cli(data, "--model", root / "model", "--output", output, "--batch-size", "2")
    assert out.returncode == 1 and "skipping" in out.stderr and "broken.png" in out.stderr
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    by_name = {Path(r["path"]).name: r for r in rows}
    assert sorted(by_name) == ["img0.png", "img1.png", "img2.png"]
    assert [by_name[p.name]["ids"] for p in paths] == ids
    assert by_name["img0.png"]["text"] == word_tokenizer.ids_to_text(ids[0])
    # A crash left a partial line and one image undone: the rerun completes without duplicates.
    lines = output.read_text().splitlines()
    output.write_text("\n".join(lines[:1]) + "\n" + lines[1][:15])
    (data / "broken.png").unlink()
    again = cli(data, "--model", root / "model", "--output", output)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "1 already written" in again.stderr
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert sorted(Path(r["path"]).name for r in rows) == ["img0.png", "img1.png", "img2.png"]


@pytest.mark.parametrize("args, message", [
    (["--output", "/proc/x.jsonl"], "--output /proc/x.jsonl: cannot write in /proc"),
    (["--reconstruct", "/proc/out"], "--reconstruct /proc/out: cannot write in /proc"),
    (["--reconstruct", "README.md"], "is an existing file, not a folder"),
    (["--output", "tests"], "is a folder; give a file"),
])
def test_unusable_output_paths_are_usage_errors_before_the_model_loads(args, message):
    sample = str(Path(__file__).parent / "data" / "fashion-mnist-320" / "0_00019.png")
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "lqae_tokenizer.cli.tokenize", sample, "--model", "photo", *args],
                         capture_output=True, text=True, timeout=120, cwd=Path(__file__).parent.parent)
    assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert out.stdout == "" and "loading" not in out.stderr.lower()
    assert time.perf_counter() - start < 30  # Python and torch starting, no model


@pytest.mark.slow
def test_bundled_names_select_the_bundled_models(minilm_dir):
    sample = str(Path(__file__).parent / "data" / "fashion-mnist-320" / "0_00019.png")
    out = subprocess.run([sys.executable, "-m", "lqae_tokenizer.cli.tokenize", sample, "--model", "fashion-mnist",
                          "--format", "ids"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    from lqae_tokenizer import ImageTokenizer
    from lqae_tokenizer.demo import load_demo

    assert [int(i) for i in out.stdout.split()] == load_demo("fashion-mnist").encode(sample)
    assert ImageTokenizer.from_pretrained("fashion-mnist").encode(sample) == load_demo("fashion-mnist").encode(sample)
