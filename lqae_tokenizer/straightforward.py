"""The straightforward implementation of the same model: the baseline of the pipeline benchmarks and
the reference the fast paths are tested against.

It shares the trained modules with an :class:`~lqae_tokenizer.model.LQAEModel` but computes the
plain way: float32 eager, no autocast, the whole batch at once, and the quantizer is
``torch.cdist`` over every allowed codebook row followed by ``argmin`` (a ``[B*N, K]`` distance
matrix; cosine = distance between l2-normalised vectors). Everything else (encoder, frozen LM,
decoder) is the same code, so the two paths differ only in what the fast path adds.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from .model import LQAEModel
from .quantizer import LanguageQuantizer


class CdistQuantizer(LanguageQuantizer):
    """``argmin`` over a full ``torch.cdist`` distance matrix, in ``distance_dtype``.

    With ``distance_dtype=torch.float64`` it is an exact oracle for ordinary data (ties to the
    lowest id, as :meth:`torch.argmin`); with float32 it is what a first implementation would do.
    """

    def __init__(self, allowed_ids: torch.Tensor, metric: str, distance_dtype: torch.dtype, center: bool = False) -> None:
        super().__init__(allowed_ids, metric, center=center)
        self.distance_dtype = distance_dtype

    def search(self, z: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        """``[B, N, H]`` vectors -> ``[B, N]`` int64 ids of the nearest allowed rows."""
        allowed = self.allowed_ids.to(embeddings.device)
        rows = embeddings.detach()[allowed]  # [K, H]
        if self.center:  # the library's centred rows: float64 mean of the allowed rows, rounded to float32
            table = rows.double()
            rows = (table - table.mean(0)).float()
        rows = rows.to(self.distance_dtype)
        flat = z.detach().reshape(-1, z.shape[-1]).to(self.distance_dtype)  # [B*N, H]
        if self.metric == "cosine":
            rows, flat = F.normalize(rows, dim=1), F.normalize(flat, dim=1)
        positions = torch.cdist(flat, rows).argmin(dim=1)  # [B*N]
        return allowed[positions].view(z.shape[:-1])


def straightforward_model(model: LQAEModel, *, distance_dtype: torch.dtype = torch.float32) -> LQAEModel:
    """A view of ``model`` (same parameters, no copies) whose quantizer is :class:`CdistQuantizer`.

    Its ``encode``/``decode``/``hidden_states``/``forward`` are the model's own methods; call them
    without autocast for the straightforward path.
    """
    plain = copy.copy(model)
    plain._modules = dict(model._modules)  # so that replacing the quantizer leaves ``model`` alone
    plain.quantizer = CdistQuantizer(model.quantizer.allowed_ids, model.quantizer.metric, distance_dtype,
                                     center=model.quantizer.center)
    return plain
