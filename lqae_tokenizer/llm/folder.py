"""An ImageLM folder on disk: where a name points, what ``image_lm.json`` must hold, and the pins.

Everything here runs before the LLM's weights load, so a damaged or mismatched folder is one
:class:`~lqae_tokenizer.checkpoint.CheckpointError` in a fraction of a second, not a traceback after
loading 135M parameters:

- :func:`resolve_image_lm`: a bundled ImageLM's name (the registry, :mod:`~lqae_tokenizer.bundled`),
  a folder, or a Hub id (a verified snapshot of :data:`HUB_PATTERNS` only, never a pickle);
- :func:`read_image_lm_config`: ``image_lm.json`` checked field by field;
- :func:`check_adapter_files`: the peft adapter's config and safetensors header;
- pins: ``image_lm.json["pins"]`` records a fingerprint of the image tokenizer (its codebook and
  weights) and of the base LM's input-embedding table; :func:`check_pin` compares them on load, so a
  retrained tokenizer or another LM under the same name is refused instead of silently misread.
  Folders written before pins existed load without the check.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch

from .. import bundled
from ..checkpoint import CheckpointError, read_json_object, resolve_folder
from ..quantizer import codebook_fingerprint
from .prompt import PromptFormat

FORMAT_VERSION = 1
CONFIG_NAME = "image_lm.json"
TOKENIZER_DIR = "image_tokenizer"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
# What a Hub download of an ImageLM fetches: its own files and its image tokenizer's, never pickles.
HUB_PATTERNS = [CONFIG_NAME, ADAPTER_CONFIG, ADAPTER_WEIGHTS, "README.md", f"{TOKENIZER_DIR}/*.json",
                f"{TOKENIZER_DIR}/*.safetensors", f"{TOKENIZER_DIR}/*.txt", f"{TOKENIZER_DIR}/README.md"]
REQUIRED = {"language_model": str, "image_tokenizer": str, "labels": list, "prompt": dict}


def resolve_image_lm(name_or_path: Any, *, revision: str | None = None, cache_dir: str | None = None,
                     local_files_only: bool = False, token: str | bool | None = None) -> Path:
    """The local folder of an ImageLM: bundled name -> folder -> Hub id (verified snapshot)."""
    if not isinstance(name_or_path, (str, Path)):
        raise TypeError(f"an ImageLM is named by a bundled name, a folder or a Hub id (str or Path), "
                        f"got {type(name_or_path).__name__}")
    name = str(name_or_path)
    if name in bundled.RETIRED and not Path(name).is_dir():
        raise CheckpointError(f"{name!r}: {bundled.RETIRED[name]}")
    if bundled.is_bundled(name, bundled.IMAGE_LM) and not Path(name).is_dir():
        return bundled.bundled_dir(name, bundled.IMAGE_LM)
    if bundled.is_bundled(name, bundled.TOKENIZER) and not Path(name).is_dir():
        raise CheckpointError(f"{name!r} is a bundled image tokenizer, not an ImageLM (load it with "
                              f"ImageTokenizer.from_pretrained); bundled ImageLMs are {bundled.names(bundled.IMAGE_LM)}")
    path = Path(name).expanduser()
    if path.is_file():
        raise CheckpointError(f"{name!r} is a file; an ImageLM is a folder holding {CONFIG_NAME}")
    if not path.is_dir() and "/" not in name:
        raise CheckpointError(f"{name!r} is neither a bundled ImageLM ({', '.join(bundled.names(bundled.IMAGE_LM))}), "
                              "nor a folder, nor a Hub id of the form 'org/name'")
    return resolve_folder(name, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only,
                          token=token, patterns=HUB_PATTERNS, bundled=bundled.names(bundled.IMAGE_LM))


def read_image_lm_config(folder: Path) -> dict[str, Any]:
    """``image_lm.json`` of ``folder``, every field checked (``CheckpointError`` naming the first bad one)."""
    path = folder / CONFIG_NAME
    if not path.is_file():
        held = sorted(p.name for p in folder.iterdir())[:6] if folder.is_dir() else []
        raise CheckpointError(f"{folder} is not an ImageLM folder: no {CONFIG_NAME}"
                              + (f" (it holds {held})" if held else ""))
    config = read_json_object(path)
    if config.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: format_version {config.get('format_version')!r}, "
                              f"this version of lqae-tokenizer reads {FORMAT_VERSION}")
    for key, kind in REQUIRED.items():
        if not isinstance(config.get(key), kind):
            raise CheckpointError(f"{path}: {key!r} must be a {kind.__name__}, got {config.get(key)!r}")
    labels = config["labels"]
    if len(labels) < 2 or not all(isinstance(label, str) for label in labels):
        raise CheckpointError(f"{path}: 'labels' must list at least two label names, got {labels!r}")
    try:
        PromptFormat.from_dict(config["prompt"])
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: bad 'prompt': {err}") from err
    for key in ("training", "pins"):
        if not isinstance(config.get(key, {}), dict):
            raise CheckpointError(f"{path}: {key!r} must be an object, got {config[key]!r}")
    tokens = config.get("tokens_per_image")
    if tokens is not None and (not isinstance(tokens, int) or isinstance(tokens, bool) or tokens < 1):
        raise CheckpointError(f"{path}: 'tokens_per_image' must be a positive integer, got {tokens!r}")
    return config


def check_adapter_files(folder: Path) -> None:
    """``CheckpointError`` unless the peft adapter's config is a JSON object and its weights a readable
    safetensors file with at least one tensor (pickled adapters are never loaded)."""
    from safetensors import SafetensorError, safe_open

    config = folder / ADAPTER_CONFIG
    weights = folder / ADAPTER_WEIGHTS
    for path in (config, weights):
        if not path.is_file():
            pickles = sorted(p.name for p in folder.glob("*.bin"))
            hint = f" (found {pickles}: pickles are never loaded; save the adapter as safetensors)" if pickles else ""
            raise CheckpointError(f"{folder} has no {path.name}: the LoRA adapter is missing{hint}")
    try:
        settings = read_json_object(config)
    except CheckpointError:
        settings = {}
    if "peft_type" not in settings:
        raise CheckpointError(f"{config} is not a peft adapter config (no 'peft_type')")
    try:
        with safe_open(str(weights), framework="pt") as handle:
            names = list(handle.keys())
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{weights} is not a valid safetensors file ({err})") from err
    if not names:
        raise CheckpointError(f"{weights} holds no tensors")


def image_tokenizer_pin(image_tokenizer: Any) -> str:
    """``"sha256:<hex>"`` over the tokenizer's codebook fingerprint, geometry and trainable weights:
    what its ids mean and how it draws them. A retrained tokenizer of the same name differs."""
    digest = hashlib.sha256()
    config = image_tokenizer.config
    digest.update(f"{config.codebook_fingerprint}|{config.tokens_per_image}|".encode())
    for name, tensor in sorted(image_tokenizer.model.trainable_state_dict().items()):
        digest.update(name.encode() + b"|")
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return "sha256:" + digest.hexdigest()


def language_model_pin(model: Any) -> str:
    """``"sha256:<hex>"`` of a causal LM's float32 input-embedding table (another LM or revision differs)."""
    table = model.get_input_embeddings().weight
    return codebook_fingerprint(table, torch.arange(table.shape[0]))


def check_pin(config: dict[str, Any], what: str, actual: str, source: str) -> None:
    """``CheckpointError`` when ``config["pins"][what]`` is recorded and differs from ``actual``."""
    expected = config.get("pins", {}).get(what)
    if expected is not None and expected != actual:
        raise CheckpointError(
            f"this ImageLM was trained with another {what.replace('_', ' ')} than the {source!r} found here "
            f"(pinned {expected[:19]}..., found {actual[:19]}...): its words or weights would be misread. "
            "Install the version it was trained with, or retrain the adapter on this one")
