"""``lqae-llm train`` checks every input before the first step and keeps its run folder safe: bad
labels, text of another tokenizer, malformed or empty data, settings out of range, a resume on other
data, a second run into the same folder, and checkpoints left incomplete by a kill."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest

pytest.importorskip("peft", reason="pip install 'lqae-tokenizer[llm]'")

from conftest import DATA  # noqa: E402

NAMES = {"0": "T-shirt", "1": "trouser"}


@pytest.fixture(scope="module")
def words(fashion_tokenizer) -> list[str]:
    images = sorted((DATA / "fashion-mnist-320").glob("*.png"))[:4]
    return fashion_tokenizer.to_text([str(p) for p in images])


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def config_for(tmp_path, causal_lm_dir, data: Path, **changes):
    from lqae_tokenizer.llm.training import AdapterTrainingConfig

    return AdapterTrainingConfig(data=[str(data)], output_dir=str(tmp_path / "run"), language_model=str(causal_lm_dir),
                                 label_names=NAMES, batch_size=2, lora_rank=2, progress_bar=False, **changes)


def refused(config, match: str) -> None:
    from lqae_tokenizer.llm import causal_lm
    from lqae_tokenizer.llm.training import TrainingSetupError, train_adapter

    real = causal_lm.load_causal_lm
    causal_lm.load_causal_lm = lambda *a, **k: pytest.fail("the LM loaded before the data was checked")
    try:
        with pytest.raises(TrainingSetupError, match=match):
            train_adapter(config)
    finally:
        causal_lm.load_causal_lm = real
    assert not Path(config.output_dir, "final").exists()


def test_labels_that_cannot_be_told_apart_are_refused_before_training(tmp_path, causal_lm_dir, words):
    data = write_jsonl(tmp_path / "d.jsonl", [{"path": f"x/{i % 2}/{i}.png", "text": t} for i, t in enumerate(words)])
    config = config_for(tmp_path, causal_lm_dir, data)
    config.label_names = {"0": "coat", "1": "coat rack"}
    refused(config, "cannot be told apart")
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_text_of_another_tokenizer_is_refused_naming_file_and_line(tmp_path, causal_lm_dir, words):
    rows = [{"path": f"x/{i % 2}/{i}.png", "text": t} for i, t in enumerate(words)]
    rows[2]["text"] = " ".join(words[2].split()[:16])  # 16 words: another tokenizer's image, not 64
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    refused(config_for(tmp_path, causal_lm_dir, data), r"d\.jsonl:3: .*not the words of the image tokenizer")
    rows[2]["text"] = words[2].replace(words[2].split()[5], "zzqxv", 1)  # a word outside the codebook
    write_jsonl(data, rows)
    refused(config_for(tmp_path, causal_lm_dir, data), r"d\.jsonl:3: .*outside the codebook|d\.jsonl:3: .*re-encodes")


@pytest.mark.parametrize("content, match", [
    ('{"path": "x/0/a.png", "text": "dye"}\n{not json\n', r"bad\.jsonl:2: not a JSON line"),
    ('["a list"]\n', r"bad\.jsonl:1: expected a JSON object"),
    ('{"path": "x/0/a.png"}\n', r"bad\.jsonl:1: a record without a 'text'"),
    ("\n\n", "holds no records"),
])
def test_malformed_or_empty_data_names_the_file_and_line(tmp_path, causal_lm_dir, content, match):
    data = tmp_path / "bad.jsonl"
    data.write_text(content)
    refused(config_for(tmp_path, causal_lm_dir, data), match)


@pytest.mark.parametrize("change, match", [
    ({"epochs": 0}, "epochs must be in"), ({"epochs": float("nan")}, "epochs must be in"),
    ({"batch_size": 0}, "batch_size must be a positive integer"), ({"learning_rate": -1.0}, "learning_rate"),
    ({"save_steps": 0}, "save_steps"), ({"tasks": ("read", "paint")}, "tasks must be"),
    ({"lora_dropout": 1.0}, "lora_dropout"), ({"target_modules": ()}, "target_modules"),
])
def test_settings_out_of_range_are_refused_when_the_config_is_made(tmp_path, change, match):
    from lqae_tokenizer.llm.training import AdapterTrainingConfig

    with pytest.raises(ValueError, match=match):
        AdapterTrainingConfig(data=["x"], output_dir=str(tmp_path), **change)


def test_a_second_run_into_the_same_folder_is_refused(tmp_path, causal_lm_dir, words):
    from lqae_tokenizer.llm.run_folder import run_lock

    data = write_jsonl(tmp_path / "d.jsonl", [{"path": f"x/{i % 2}/{i}.png", "text": t} for i, t in enumerate(words)])
    config = config_for(tmp_path, causal_lm_dir, data)
    with run_lock(Path(config.output_dir)):
        refused(config, r"another lqae-llm train \(pid \d+\) is running")


def test_resume_on_other_data_is_refused(tmp_path, causal_lm_dir, words):
    from lqae_tokenizer.llm.run_folder import data_fingerprints, write_run_settings
    from lqae_tokenizer.llm.training import run_settings

    data = write_jsonl(tmp_path / "d.jsonl", [{"path": f"x/{i % 2}/{i}.png", "text": t} for i, t in enumerate(words)])
    config = config_for(tmp_path, causal_lm_dir, data, resume=True)
    run = Path(config.output_dir)
    run.mkdir()
    write_run_settings(run, {**run_settings(config), "data_sha256": data_fingerprints([str(data)])})
    write_jsonl(data, [{"path": f"x/{i % 2}/{i}.png", "text": t} for i, t in enumerate(reversed(words))])
    refused(config, "settings differ: data_sha256")


def test_incomplete_checkpoints_are_set_aside_never_deleted(tmp_path):
    from lqae_tokenizer.llm.run_folder import set_aside_incomplete_checkpoints

    checkpoints = tmp_path / "checkpoints"
    for step, state in ((2, "{}"), (4, None), (6, '{"global_step": 6')):  # complete, empty, cut mid-write
        folder = checkpoints / f"checkpoint-{step}"
        folder.mkdir(parents=True)
        (folder / "adapter_model.safetensors").write_bytes(b"x")
        if state is not None:
            (folder / "trainer_state.json").write_text(state)
    moved = set_aside_incomplete_checkpoints(checkpoints)
    assert sorted(p.name for p in moved) == ["incomplete-checkpoint-4", "incomplete-checkpoint-6"]
    assert sorted(p.name for p in checkpoints.iterdir()) == ["checkpoint-2", "incomplete-checkpoint-4",
                                                             "incomplete-checkpoint-6"]
    assert (checkpoints / "incomplete-checkpoint-4" / "adapter_model.safetensors").is_file()


@pytest.mark.slow
def test_a_non_bundled_tokenizer_travels_with_the_adapter_and_a_kill_mid_save_does_not_block_resume(
        tmp_path, causal_lm_dir, fashion_tokenizer, words):
    from lqae_tokenizer.llm import ImageLM
    from lqae_tokenizer.llm.training import AdapterTrainingConfig, train_adapter

    local = tmp_path / "my-tokenizer"
    fashion_tokenizer.save_pretrained(local)
    data = write_jsonl(tmp_path / "d.jsonl", [{"path": f"x/{i % 2}/{i}.png", "text": t} for i, t in enumerate(words)])
    config = config_for(tmp_path, causal_lm_dir, data, image_tokenizer=str(local), save_steps=1)
    final = train_adapter(config)
    saved = json.loads((final / "image_lm.json").read_text())
    assert saved["image_tokenizer"] == "image_tokenizer" and (final / "image_tokenizer" / "config.json").is_file()
    local.rename(tmp_path / "moved-away")  # the adapter no longer needs the folder it was trained from
    assert ImageLM.from_pretrained(final).labels == list(NAMES.values())
    checkpoints = tmp_path / "run" / "checkpoints"
    (checkpoints / "checkpoint-99").mkdir()  # a kill while Trainer wrote its next checkpoint
    config = AdapterTrainingConfig(**{**asdict(config), "image_tokenizer": str(tmp_path / "moved-away"),
                                      "epochs": 2, "resume": True})
    with pytest.raises(ValueError, match="image_tokenizer"):  # a tokenizer path is a setting of the run
        train_adapter(config)
    config.image_tokenizer = str(local)
    (tmp_path / "moved-away").rename(local)
    resumed = ImageLM.from_pretrained(train_adapter(config))
    assert resumed.training["resumed_from_step"] == 4 and resumed.training["optimizer_steps"] == 8
    assert (checkpoints / "incomplete-checkpoint-99").is_dir()  # kept: Trainer's rotation never matched it
