"""The frozen language model: loading from the Hub or a folder, and the parts LQAE uses.

LQAE needs three things from a Hugging Face language model: its word-embedding table (the codebook),
its transformer stack run on ``inputs_embeds`` (the decoder reads the last hidden states), and, when
it has one, its trained masked-LM head (for the small MLM loss). All of its parameters stay frozen,
but gradients flow through it to the image encoder.

Two kinds are read:

- an encoder (RoBERTa, BERT, MiniLM, MPNet...), bidirectional: every position's hidden state sees
  every word of the image, as in the paper;
- a causal LM (Llama-family, e.g. SmolLM2; GGUF files are converted once, :mod:`gguf_cache`): its
  input-embedding table is the codebook, so every image word is one token of that LLM and the vector
  the encoder quantised to is the one the LLM's input layer reads. Its stack runs with its own causal
  mask: position i's hidden state sees words 0..i only, so the first positions carry little context
  (the decoder, a bidirectional ViT, still reads all positions). It has no masked-LM head.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from .checkpoint import CheckpointError
from .lm_source import locate
from .quiet import quiet_transformers

logger = logging.getLogger(__name__)


class FrozenLanguageModel(nn.Module):
    """A frozen Hugging Face language model with an optional trained masked-LM head.

    Args:
        model: a ``*ForMaskedLM`` model, or a bare stack (``AutoModel``: an encoder with no head, or
            a causal LM's decoder stack).
        has_trained_head: whether the MLM head's weights were loaded (not freshly initialised).
        revision: the resolved revision (commit) it was loaded from, when known.
        causal: whether the stack attends causally (a decoder-only LM: position i sees 0..i).
    """

    def __init__(self, model: nn.Module, has_trained_head: bool, revision: str | None = None,
                 causal: bool = False) -> None:
        super().__init__()
        if causal and has_trained_head:
            raise ValueError("a causal language model has no masked-LM head; pass has_trained_head=False")
        self.model = model
        self.backbone = model.base_model
        self.head = _mlm_head(model) if has_trained_head else None
        self.revision = revision
        self.causal = causal
        # A causal stack would build a key/value cache for generation on every call; LQAE never generates.
        self._extra = {"use_cache": False} if causal else {}
        self.model.requires_grad_(False)
        self.model.eval()
        config = self.backbone.config
        self.hidden_size = int(config.hidden_size)
        self.num_layers = int(config.num_hidden_layers)
        self.max_tokens = _max_positions(self.backbone)

    @property
    def has_trained_head(self) -> bool:
        return self.head is not None

    @property
    def word_embeddings(self) -> torch.Tensor:
        """``[V, H]`` the (frozen) input word-embedding table: the codebook."""
        return self.backbone.get_input_embeddings().weight

    def train(self, mode: bool = True) -> "FrozenLanguageModel":
        # Frozen means deterministic too: dropout stays off even while the image model trains.
        super().train(mode)
        self.model.eval()
        return self

    def forward(self, inputs_embeds: torch.Tensor) -> torch.Tensor:
        """``[B, N, H]`` token embeddings (no BOS/EOS) -> ``[B, N, H]`` last hidden states."""
        mask = torch.ones(inputs_embeds.shape[:2], dtype=torch.long, device=inputs_embeds.device)
        return self.backbone(inputs_embeds=inputs_embeds, attention_mask=mask, **self._extra).last_hidden_state

    def all_hidden_states(self, inputs_embeds: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``[B, N, H]`` embeddings -> (embedding output, layer 1, ..., layer L), each ``[B, N, H]``."""
        mask = torch.ones(inputs_embeds.shape[:2], dtype=torch.long, device=inputs_embeds.device)
        out = self.backbone(inputs_embeds=inputs_embeds, attention_mask=mask, output_hidden_states=True, **self._extra)
        return tuple(out.hidden_states)

    def mlm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """``[M, H]`` hidden states -> ``[M, V]`` vocabulary logits (requires a trained head)."""
        if self.head is None:
            raise RuntimeError("this language model has no trained masked-LM head")
        return self.head(hidden)


def _mlm_head(model: nn.Module) -> nn.Module:
    """The module that maps hidden states to vocabulary logits: the one child beside the backbone."""
    others = [m for name, m in model.named_children() if name != model.base_model_prefix]
    if len(others) != 1:
        raise ValueError(
            f"cannot find the masked-LM head of {type(model).__name__}: expected one module beside "
            f"'{model.base_model_prefix}', found {len(others)}"
        )
    return others[0]


def _max_positions(backbone: nn.Module) -> int:
    """Longest sequence the encoder accepts without BOS/EOS."""
    limit = int(getattr(backbone.config, "max_position_embeddings", 512))
    padding_idx = getattr(getattr(backbone, "embeddings", None), "padding_idx", None)
    # RoBERTa-style embeddings number positions from padding_idx + 1.
    return limit - (padding_idx + 1) if isinstance(padding_idx, int) else limit


def load_language_model(
    name_or_path: str | Path,
    *,
    revision: str | None = None,
    cache_dir: str | None = None,
    local_files_only: bool = False,
    token: str | bool | None = None,
) -> FrozenLanguageModel:
    """Load a frozen language model, from safetensors only, local copies first (:mod:`lm_source`).

    An encoder is loaded with its masked-LM head when it has one; a causal LM (a model type that
    transformers maps to ``AutoModelForCausalLM`` and not to a masked LM) as its bare decoder stack,
    marked ``causal``. A ``.gguf`` file or ``pkg:`` name of one is read through its converted folder.
    Pickle checkpoints (``pytorch_model.bin``) are refused: loading them can run code.
    Raises :class:`~lqae_tokenizer.checkpoint.CheckpointError` when the model cannot be found or
    opened (what and why, and how to fix it) and ``ValueError`` when the stack's own weights are
    missing (only the MLM head may be).
    """
    from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM

    source, hub = locate(str(name_or_path), revision, cache_dir=cache_dir, token=token,
                         local_files_only=local_files_only)
    kwargs = dict(**hub, use_safetensors=True, output_loading_info=True)
    with quiet_transformers(), _as_checkpoint_error(name_or_path):
        config = AutoConfig.from_pretrained(source, **hub)
        causal = is_causal_lm(config)
        loader = AutoModel if causal else AutoModelForMaskedLM
        try:
            model, info = loader.from_pretrained(source, config=config, **kwargs)
        except ValueError as err:
            if "Unrecognized configuration class" not in str(err):
                raise
            model, info = AutoModel.from_pretrained(source, config=config, **kwargs)
    prefix = model.base_model_prefix + "."
    missing = sorted(info.get("missing_keys", ()))
    backbone_missing = [k for k in missing if k.startswith(prefix) or model is model.base_model]
    if backbone_missing:
        raise ValueError(
            f"language model {name_or_path!s} lacks encoder weights {backbone_missing[:5]}; "
            "it would run with random weights. Point language_model at a complete checkpoint."
        )
    has_head = model is not model.base_model and not missing
    resolved = getattr(model.config, "_commit_hash", None) or revision
    return FrozenLanguageModel(model, has_trained_head=has_head, revision=resolved, causal=causal)


def is_causal_lm(config: Any) -> bool:
    """Whether a transformers config is a decoder-only LM: transformers maps its model type to a causal
    LM and not to a masked LM (BERT-likes map to both, and are read bidirectionally)."""
    from transformers.models.auto.modeling_auto import (MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
                                                        MODEL_FOR_MASKED_LM_MAPPING_NAMES)

    kind = getattr(config, "model_type", None)
    return kind in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and kind not in MODEL_FOR_MASKED_LM_MAPPING_NAMES


def load_text_tokenizer(name_or_path: str | Path, **hub: Any) -> Any:
    """The Hugging Face tokenizer of a language model or checkpoint folder, local copies first."""
    from transformers import AutoTokenizer

    folder = Path(name_or_path)
    if folder.is_dir():
        source, kwargs = str(folder), {}
    else:
        source, kwargs = locate(str(name_or_path), hub.pop("revision", None), **hub)
    with quiet_transformers(), _as_checkpoint_error(name_or_path):
        return AutoTokenizer.from_pretrained(source, **kwargs)


@contextlib.contextmanager
def _as_checkpoint_error(name: Any) -> Iterator[None]:
    """transformers reports a missing or unreadable model as OSError: say what it was about."""
    try:
        yield
    except OSError as err:
        folder = Path(str(name))
        pickles = sorted(p.name for p in (*folder.glob("*.bin"), *folder.glob("*.pt"))) if folder.is_dir() else []
        hint = (f" (found {pickles}: pickle files are never loaded because loading them can run code; "
                "convert them to safetensors, e.g. model.save_pretrained(folder, safe_serialization=True))"
                if pickles else "")
        raise CheckpointError(f"cannot open language model {str(name)!r}: {err}{hint}") from err
