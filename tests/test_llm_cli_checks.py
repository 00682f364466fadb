"""``lqae-llm``: every mistake that can be found before the LM loads is one line on stderr with exit 2,
naming the valid choices; ``lqae-llm labels NAME`` lists an adapter's labels. The LM loader is
replaced by one that fails the test, so each case proves nothing was loaded."""

from __future__ import annotations

import pytest

pytest.importorskip("peft", reason="pip install 'lqae-tokenizer[llm]'")


@pytest.fixture(autouse=True)
def no_lm_load(monkeypatch):
    from lqae_tokenizer.llm import causal_lm

    def refuse(*args, **kwargs):
        raise AssertionError("the LM was loaded before the command line was checked")

    monkeypatch.setattr(causal_lm, "load_causal_lm", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def run(capsys, *argv: str) -> tuple[int, str, str]:
    from lqae_tokenizer.llm.cli import main

    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_line_usage_error(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err


def test_labels_lists_an_adapters_labels_and_tasks(capsys):
    code, out, err = run(capsys, "labels", "fashion-mnist-smollm2-read")
    assert code == 0
    assert out.split() == ["T-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
                           "boot"]
    assert "trained to read" in err and "draw" not in err


def test_a_tokenizer_name_a_typo_and_a_hub_name_offline_are_one_line_each(capsys, tmp_path):
    image = tmp_path / "x.png"
    from PIL import Image

    Image.new("RGB", (28, 28)).save(image)
    code, _, err = run(capsys, "classify", "--model", "fashion-mnist", str(image))
    one_line_usage_error(code, err, "bundled image tokenizer, not an ImageLM", "fashion-mnist-smollm2-read")
    code, _, err = run(capsys, "classify", "--model", "fashion-mnist-smollm2-reed", str(image))
    one_line_usage_error(code, err, "neither a bundled ImageLM", "fashion-mnist-smollm2-read")
    code, _, err = run(capsys, "classify", "--model", "lqae-org/absent-reader", str(image))
    one_line_usage_error(code, err, "lqae-org/absent-reader")


def test_classify_checks_the_task_and_every_image_first(capsys, tmp_path):
    fake = tmp_path / "words.jpg"
    fake.write_text("not an image at all")
    folder = tmp_path / "photos"
    folder.mkdir()
    code, _, err = run(capsys, "classify", "--model", "fashion-mnist-smollm2-draw", str(fake))
    one_line_usage_error(code, err, "draw only, not to read", "fashion-mnist-smollm2-read")
    code, _, err = run(capsys, "classify", "--model", "fashion-mnist-smollm2-read", str(folder))
    one_line_usage_error(code, err, "is a folder")
    code, _, err = run(capsys, "classify", "--model", "fashion-mnist-smollm2-read", str(fake))
    one_line_usage_error(code, err, "words.jpg", "not an image")
    code, _, err = run(capsys, "classify", "--model", "fashion-mnist-smollm2-read", str(tmp_path / "absent.png"))
    one_line_usage_error(code, err, "no such image file")


@pytest.mark.parametrize("argv, needles", [
    (["--label", "shoe"], ["unknown --label 'shoe'", "sneaker"]),
    (["--label", "bag", "--reader", "fashion-mnist-smollm2-draw", "--candidates", "2"], ["draw only, not to read"]),
    (["--label", "bag", "--candidates", "2"], ["draw only, not to read"]),  # it would rank its own samples
    (["--label", "bag", "--scale", "10000"], ["--scale 1-32"]),
    (["--label", "bag", "--n", "0"], ["--n must be 1-256"]),
    (["--label", "bag", "--temperature", "0"], ["--temperature must be > 0"]),
])
def test_draw_checks_label_reader_and_sizes_first(capsys, tmp_path, argv, needles):
    code, _, err = run(capsys, "draw", "--model", "fashion-mnist-smollm2-draw", "--output", str(tmp_path / "d.png"),
                       *argv)
    one_line_usage_error(code, err, *needles)
    assert not (tmp_path / "d.png").exists()


def test_draw_refuses_a_reader_of_other_words(capsys, tmp_path):
    import json
    import shutil

    from lqae_tokenizer.bundled import BUNDLED_DIR

    other = tmp_path / "other-reader"
    shutil.copytree(BUNDLED_DIR / "fashion-mnist-smollm2-read", other)
    config = json.loads((other / "image_lm.json").read_text())
    config["image_tokenizer"], config["tokens_per_image"] = "photo", 256
    (other / "image_lm.json").write_text(json.dumps(config))
    code, _, err = run(capsys, "draw", "--model", "fashion-mnist-smollm2-draw", "--label", "bag", "--candidates", "2",
                       "--reader", str(other), "--output", str(tmp_path / "d.png"))
    one_line_usage_error(code, err, "photo (256 per image)", "same image tokenizer")


@pytest.mark.parametrize("limit", ["0", "-35"])
def test_evaluate_refuses_a_limit_below_one(capsys, tmp_path, limit):
    data = tmp_path / "d.jsonl"
    data.write_text('{"path": "a/0/x.png", "text": "dye"}\n')
    code, _, err = run(capsys, "evaluate", "--model", "fashion-mnist-smollm2-read", "--data", str(data),
                       "--limit", limit)
    one_line_usage_error(code, err, "--limit must be at least 1")
