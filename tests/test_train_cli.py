"""lqae-train's command line and configuration: presets, files, overrides, help, Hub upload."""

from __future__ import annotations

import json

import pytest

from lqae_tokenizer.train import FLAGS, build_parser, parse_config
from lqae_tokenizer.training.config import TRAIN_PRESETS

from hub_server import FakeHub
from train_helpers import run_train, train_args


def test_paper_preset_is_the_official_recipe():
    c = parse_config(["--train_data_dir", "x"])
    assert (c.optim.adam_beta1, c.optim.adam_beta2, c.optim.weight_decay) == (0.9, 0.95, 5e-4)
    assert (c.optim.base_learning_rate, c.optim.warmup_epochs, c.optim.learning_rate) == (1.5e-4, 5.0, None)
    assert (c.run.train_batch_size, c.run.num_train_epochs, c.run.seed) == (512, 100.0, 42)
    assert (c.data.resolution, c.data.min_crop_scale, c.data.horizontal_flip) == (256, 0.2, True)
    assert c.model.preset == "paper"


def test_file_values_then_flags_win(tmp_path):
    yaml_file = tmp_path / "run.yaml"
    yaml_file.write_text("run:\n  seed: 7\n  train_batch_size: 64\noptim:\n  weight_decay: 0.1\nresolution: 64\n")
    c = parse_config(["--preset", "tiny", "--config", str(yaml_file), "--train_data_dir", "d", "--seed", "9"])
    assert (c.run.seed, c.run.train_batch_size, c.optim.weight_decay, c.data.resolution) == (9, 64, 0.1, 64)
    assert c.model.preset == "tiny"
    json_file = tmp_path / "run.json"
    json_file.write_text(json.dumps({"nonsense": 1}))
    with pytest.raises(ValueError, match="unknown training option 'nonsense'"):
        parse_config(["--config", str(json_file), "--train_data_dir", "d"])


def test_errors_are_clear(tmp_path, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--preset", "huge"])
    assert "invalid choice: 'huge'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="train_data_dir is required"):
        parse_config([])
    with pytest.raises(ValueError, match="mixed_precision must be one of"):
        parse_config(["--train_data_dir", "d", "--mixed_precision", "fp8"])
    with pytest.raises(ValueError, match="push_to_hub needs hub_model_id"):
        parse_config(["--train_data_dir", "d", "--push_to_hub"])
    with pytest.raises(ValueError, match="stop_after_steps must be a positive integer"):
        parse_config(["--train_data_dir", "d", "--stop_after_steps", "0"])


def test_help_is_short_and_complete(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    text = capsys.readouterr().out
    for flag in ("--preset", "--config", "--train_data_dir", "--resume_from_checkpoint", "--mixed_precision",
                 "--push_to_hub", "--compile"):
        assert flag in text
    assert len(FLAGS) + 5 <= 32  # kept near 30 flags
    assert set(TRAIN_PRESETS) == {"paper", "tiny", "demo", "demo-smollm2", "demo-vqvae", "demo-vqvae-restarts"}


@pytest.mark.slow
def test_uneven_batch_split_is_refused(roberta_lm_dir, tmp_path):
    out = run_train(train_args(roberta_lm_dir, tmp_path / "r", "--max_train_steps", "1",
                               "--gradient_accumulation_steps", "3"))
    assert out.returncode != 0 and "must be a multiple of" in out.stderr


@pytest.mark.slow
def test_bf16_autocast_and_accumulation_train(roberta_lm_dir, tmp_path):
    out = run_train(train_args(roberta_lm_dir, tmp_path / "r", "--max_train_steps", "4", "--mixed_precision", "bf16",
                               "--gradient_accumulation_steps", "2"))
    assert out.returncode == 0, out.stderr[-3000:]
    assert (tmp_path / "r" / "final" / "model.safetensors").exists()


@pytest.mark.slow
def test_push_to_hub_uploads_the_final_tokenizer(roberta_lm_dir, tmp_path):
    token = "hf_secret_token_for_tests_0000"
    with FakeHub() as hub:
        out = run_train(train_args(roberta_lm_dir, tmp_path / "r", "--max_train_steps", "3", "--push_to_hub",
                                   "--hub_model_id", "lqae-org/trained", "--hub_token", token),
                        env={"HF_ENDPOINT": hub.endpoint})
        assert out.returncode == 0, out.stderr[-3000:]
        files = hub.state.resolve("lqae-org/trained", "main")[1]
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(files)
    assert files["model.safetensors"] == (tmp_path / "r" / "final" / "model.safetensors").read_bytes()
    assert token not in out.stdout + out.stderr
    for path in (tmp_path / "r").rglob("*"):
        if path.is_file():
            assert token.encode() not in path.read_bytes(), path


@pytest.mark.slow
def test_report_to_tensorboard(roberta_lm_dir, tmp_path):
    import importlib.util

    out = run_train(train_args(roberta_lm_dir, tmp_path / "r", "--max_train_steps", "2", "--report_to", "tensorboard"))
    if importlib.util.find_spec("tensorboard") is None:
        assert out.returncode == 1 and "needs the tensorboard package: pip install tensorboard" in out.stderr
        assert "Traceback" not in out.stderr
    else:
        assert out.returncode == 0, out.stderr[-2000:]
        assert list((tmp_path / "r" / "tensorboard").glob("events.out.tfevents.*"))
