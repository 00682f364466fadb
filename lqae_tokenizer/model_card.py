"""The ``README.md`` model card written beside every checkpoint (``huggingface_hub.ModelCard``), so the
Hub shows what the tokenizer is and its search finds it by library, tags and language model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .config import LQAEConfig

CARD_NAME = "README.md"
TAGS = ["image-tokenizer", "lqae", "vector-quantization", "image-to-text"]


def _body(config: LQAEConfig, training: dict[str, Any]) -> str:
    words = "whole-word" if config.codebook_vocabulary == "words" else "full"
    search = f"{config.metric} search"
    if config.search_dim:
        search = f"l2 search in a learned {config.search_dim}-dim projection of the embeddings"
    lines = [
        "# LQAE image tokenizer",
        "",
        f"Turns a {config.image_size}x{config.image_size} RGB image into {config.tokens_per_image} ids of the "
        f"frozen language model `{config.language_model}`'s vocabulary ({words} codebook, {search}) "
        "and back, with [lqae-tokenizer](https://pypi.org/project/lqae-tokenizer/) "
        "(Language Quantized AutoEncoder, Liu, Yan & Abbeel, 2023).",
        "",
        "```python",
        "from lqae_tokenizer import ImageTokenizer",
        'tok = ImageTokenizer.from_pretrained("<this repo or folder>")',
        'ids = tok.encode("photo.jpg"); text = tok.to_text("photo.jpg"); image = tok.decode(ids)',
        "```",
        "",
        "To load elsewhere it needs its language model: bundled in `language_model/` when saved with "
        "`include_language_model=True`, else from the Hub id, the installed package (`pkg:` names) or the "
        "Hugging Face cache; the codebook fingerprint in `config.json` checks it is the same table.",
    ]
    if training:
        lines += ["", "## Training", ""] + [f"- {key}: {value}" for key, value in training.items()]
    return "\n".join(lines) + "\n"


def build_model_card(config: LQAEConfig, training: dict[str, Any] | None = None):
    """A ``ModelCard`` with YAML metadata (library, tags, language model and revision, image size,
    tokens per image, and ``training`` facts such as data and metrics when given)."""
    facts = dict(training or {})
    datasets, metrics = facts.pop("datasets", None), facts.pop("metrics", None)
    metadata: dict[str, Any] = dict(
        library_name="lqae-tokenizer", tags=list(TAGS), language_model=config.language_model,
        language_model_revision=config.language_model_revision, image_size=config.image_size,
        tokens_per_image=config.tokens_per_image, codebook_vocabulary=config.codebook_vocabulary,
        vit_block=config.vit_block, datasets=datasets, lqae_metrics=metrics, lqae_training=facts or None,
    )
    return card_with_metadata(metadata, _body(config, training or {}), config.language_model)


def card_with_metadata(metadata: dict[str, Any], body: str, base_model: str | None = None):
    """A ``huggingface_hub.ModelCard``: ``metadata`` as its YAML header (None values left out), then
    ``body`` (Markdown). ``base_model`` is recorded when it is a Hub id (not a ``pkg:`` name or a path),
    so the Hub links the model to it. Both kinds of card (tokenizer, ImageLM) are written by this."""
    from huggingface_hub import ModelCard, ModelCardData

    metadata = dict(metadata)
    if base_model and "/" in base_model and not base_model.startswith(("pkg:", "/", ".", "~")):
        metadata["base_model"] = base_model
    data = ModelCardData(**{k: v for k, v in metadata.items() if v is not None})
    return ModelCard.from_template(data, template_str="---\n{{ card_data }}\n---\n\n" + body)


def read_training_facts(folder: Path) -> dict[str, Any]:
    """The ``training`` facts of a checkpoint's card (empty when it has none), to carry on re-save."""
    path = folder / CARD_NAME
    if not path.is_file():
        return {}
    from huggingface_hub import ModelCard

    try:
        data = ModelCard.load(path).data.to_dict()
    except Exception:  # a hand-written or foreign README: not ours to interpret
        return {}
    facts = dict(data.get("lqae_training") or {})
    if "datasets" in data:
        facts["datasets"] = data["datasets"]
    if "lqae_metrics" in data:
        facts["metrics"] = data["lqae_metrics"]
    return facts
