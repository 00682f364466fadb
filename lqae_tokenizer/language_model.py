"""The frozen language model: loading from the Hub or a folder, and the parts LQAE uses.

LQAE needs three things from a Hugging Face encoder (RoBERTa, BERT, MiniLM, MPNet...): its
word-embedding table (the codebook), its encoder stack run on ``inputs_embeds`` (the decoder reads
the last hidden states), and, when it has one, its trained masked-LM head (for the small MLM loss).
All of its parameters stay frozen, but gradients flow through it to the image encoder.
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

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' load reports (we report what matters ourselves)."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


class FrozenLanguageModel(nn.Module):
    """A frozen Hugging Face encoder with an optional trained masked-LM head.

    Args:
        model: a ``*ForMaskedLM`` model, or a bare encoder (``AutoModel``) when no head exists.
        has_trained_head: whether the MLM head's weights were loaded (not freshly initialised).
        revision: the resolved revision (commit) it was loaded from, when known.
    """

    def __init__(self, model: nn.Module, has_trained_head: bool, revision: str | None = None) -> None:
        super().__init__()
        self.model = model
        self.backbone = model.base_model
        self.head = _mlm_head(model) if has_trained_head else None
        self.revision = revision
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
        return self.backbone(inputs_embeds=inputs_embeds, attention_mask=mask).last_hidden_state

    def all_hidden_states(self, inputs_embeds: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``[B, N, H]`` embeddings -> (embedding output, layer 1, ..., layer L), each ``[B, N, H]``."""
        mask = torch.ones(inputs_embeds.shape[:2], dtype=torch.long, device=inputs_embeds.device)
        out = self.backbone(inputs_embeds=inputs_embeds, attention_mask=mask, output_hidden_states=True)
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

    Pickle checkpoints (``pytorch_model.bin``) are refused: loading them can run code.
    Raises :class:`~lqae_tokenizer.checkpoint.CheckpointError` when the model cannot be found or
    opened (what and why, and how to fix it) and ``ValueError`` when the encoder's own weights are
    missing (only the MLM head may be).
    """
    from transformers import AutoModel, AutoModelForMaskedLM

    source, hub = locate(str(name_or_path), revision, cache_dir=cache_dir, token=token,
                         local_files_only=local_files_only)
    kwargs = dict(**hub, use_safetensors=True, output_loading_info=True)
    with quiet_transformers(), _as_checkpoint_error(name_or_path):
        try:
            model, info = AutoModelForMaskedLM.from_pretrained(source, **kwargs)
        except ValueError as err:
            if "Unrecognized configuration class" not in str(err):
                raise
            model, info = AutoModel.from_pretrained(source, **kwargs)
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
    return FrozenLanguageModel(model, has_trained_head=has_head, revision=resolved)


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
