"""GGUF models (llama.cpp's format) converted once into an ordinary safetensors folder, then reused.

transformers opens a ``.gguf`` file by parsing all of its metadata (the tokenizer's 49,152 strings for
SmolLM2, twice) and de-quantizing every tensor: ~20-40 s on 2 CPU cores, at every load. The result is
an ordinary float model, so it is converted once and kept as a Hugging Face folder
(``config.json``, ``model.safetensors``, tokenizer files) in a cache keyed by the SHA-256 of the
GGUF file and the versions of the two converters (``transformers``, ``gguf``): a different file, or a
converter that might de-quantize differently, gets its own entry, so a cached folder can never
stand for another file. Loading the folder then takes about a second.

The cache lives in ``$LQAE_CACHE/gguf`` (default ``~/.cache/lqae-tokenizer/gguf``). An entry is
written to a temporary folder and renamed into place when complete, so a crash leaves no half
entry, and two processes converting the same file at once both succeed (the second rename loses and
its copy is discarded).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

CACHE_ENV = "LQAE_CACHE"
COMPLETE_MARKER = "converted-from.txt"
LLM_EXTRA = 'pip install "lqae-tokenizer[llm]" (gguf and accelerate)'
_HASH_CHUNK = 1 << 22


def cache_root() -> Path:
    """``$LQAE_CACHE/gguf``, default ``~/.cache/lqae-tokenizer/gguf``."""
    base = os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "lqae-tokenizer")
    return Path(base) / "gguf"


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in 4 MiB chunks (~0.3 s for SmolLM2's 98 MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def require_gguf_support() -> None:
    """``ImportError`` naming the ``[llm]`` extra when ``gguf`` or ``accelerate`` is missing."""
    missing = [m for m in ("gguf", "accelerate") if importlib.util.find_spec(m) is None]
    if missing:
        raise ImportError(f"reading a GGUF model needs {' and '.join(missing)}: {LLM_EXTRA}")


def _converter_versions() -> str:
    return "-".join(f"{name}{importlib.metadata.version(name)}" for name in ("transformers", "gguf"))


def converted_folder(gguf_path: str | os.PathLike) -> Path:
    """The safetensors folder holding ``gguf_path``'s model and tokenizer, converting it on first use.

    Args:
        gguf_path: a ``.gguf`` file of a causal LM that transformers can read.

    Returns:
        a folder that ``AutoModelForCausalLM.from_pretrained`` / ``AutoModel`` / ``AutoTokenizer``
        open without ``gguf_file``; its weights are the de-quantized float32 tensors.
    """
    path = Path(gguf_path).expanduser().resolve()
    if not path.is_file():
        raise FileNotFoundError(f"GGUF file {str(gguf_path)!r} does not exist")
    require_gguf_support()
    key = f"{file_sha256(path)[:32]}-{_converter_versions()}"
    target = cache_root() / key
    if (target / COMPLETE_MARKER).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{key}."))
    try:
        _convert(path, staging)
        (staging / COMPLETE_MARKER).write_text(f"{path.name}\n{key}\n", encoding="utf-8")
        try:
            os.rename(staging, target)
        except OSError:
            if not (target / COMPLETE_MARKER).is_file():  # not another process's finished copy
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _convert(path: Path, folder: Path) -> None:
    """De-quantize ``path`` with transformers and save model and tokenizer as a plain HF folder."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .quiet import quiet_transformers

    with quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
        _forget_quantization(model)
        model.save_pretrained(str(folder), safe_serialization=True)
        tokenizer.save_pretrained(str(folder))


def _forget_quantization(model) -> None:
    """transformers de-quantizes every GGUF tensor into an ordinary float tensor yet still marks the
    model as quantized (which would be saved into config.json); remove the marker."""
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is None:
        return
    if not all(p.dtype.is_floating_point for p in model.parameters()):
        raise ValueError("this GGUF model keeps quantized tensors after loading; it cannot be converted to float")
    quantizer.remove_quantization_config(model)
    for module in model.modules():
        config = getattr(module, "config", None)
        if getattr(config, "_is_quantized", False):
            config._is_quantized = False
