"""Quantization onto a frozen language model's word embeddings.

The nearest allowed row (exact, see :mod:`lqae_tokenizer.search`) replaces each encoder vector; the
quantized vector is the raw (un-normalised) embedding row, passed back with the straight-through
estimator ``q_st = sg(q) + z - sg(z)`` (exactly ``q``, the gradient of ``z``); the commitment loss is
``mse(sg(q), z)``. When the table is trained (the VQ-VAE baseline), the codebook loss
``mse(q, sg(z))`` moves its rows towards the encoder's vectors; for a frozen table it is zero.

With a search projection (``search_dim`` > 0) the same happens in the projection: queries ``z`` are
``search_dim`` wide, the searched rows are ``normalize(E_w) @ P``, the commitment and codebook losses
compare ``z`` with the chosen projected row (the codebook loss trains ``P``), and the LM still gets the
raw row ``E_w``, straight-through: ``E_w + |E_w| (z - sg(z)) pinv(P)``, the displacement of the unit
embedding whose projection moved as ``z`` did, at the row's own scale.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .search import Codebook


def codebook_fingerprint(embeddings: torch.Tensor, allowed_ids: torch.Tensor) -> str:
    """``"sha256:<hex>"`` over the float32 embedding table ``[V, H]`` and the allowed ids.

    Pins what every id means: any change of weights (another LM or revision) or of the
    allowed-id rule changes it.
    """
    digest = hashlib.sha256()
    table = embeddings.detach().to("cpu", torch.float32).contiguous()
    digest.update(f"{list(table.shape)}|".encode())
    digest.update(table.numpy().tobytes())
    digest.update(allowed_ids.detach().to("cpu", torch.int64).contiguous().numpy().tobytes())
    return "sha256:" + digest.hexdigest()


@dataclass
class QuantizerOutput:
    """ids ``[B, N]`` int64; quantized ``[B, N, H]`` (straight-through); commitment and codebook
    losses (float32 scalars; the codebook loss is zero for a frozen table)."""

    ids: torch.Tensor
    quantized: torch.Tensor
    commitment_loss: torch.Tensor
    codebook_loss: torch.Tensor


class LanguageQuantizer(nn.Module):
    """Exact nearest-row quantizer over a frozen embedding table it does not own.

    Args:
        allowed_ids: ``LongTensor[K]`` sorted ids the quantizer may return.
        metric: ``"cosine"`` (paper) or ``"l2"``.
        projection: ``(H, d)`` to search in a trained ``d``-dim projection of the normalised rows
            (then ``metric`` must be ``"l2"`` and queries are ``d`` wide); None (paper) searches the rows.

    The table (the language model's ``[V, H]`` word embeddings) is passed to each call, so it is
    not registered twice; the prepared search layout of a frozen table is cached (see :meth:`codebook`).
    """

    def __init__(self, allowed_ids: torch.Tensor, metric: str, projection: tuple[int, int] | None = None,
                 center: bool = False) -> None:
        super().__init__()
        self.register_buffer("allowed_ids", allowed_ids.clone(), persistent=False)
        self.metric = metric
        self.center = center
        # P [H, d]: N(0, 1/H) keeps a unit row's projection at about unit size.
        self.projection = None
        if projection is not None:
            width, dim = projection
            self.projection = nn.Parameter(torch.randn(width, dim) * width**-0.5)
        self._codebook: Codebook | None = None
        self._codebook_key: tuple | None = None

    def searched_rows(self, embeddings: torch.Tensor) -> torch.Tensor:
        """``[V, D]`` the rows the search compares queries with: ``embeddings`` itself, the rows minus
        the allowed rows' mean (``center``), or with a projection ``normalize(embeddings) @ P``
        ``[V, d]``; the last two computed in float64 and rounded to float32.

        Float64 with autocast off, so that no global precision setting (autocast, reduced-precision
        float32 matmuls) changes the rows, and with them the ids."""
        if self.center:
            return centred_rows(embeddings, self.allowed_ids.to(embeddings.device))
        if self.projection is None:
            return embeddings
        with torch.autocast(embeddings.device.type, enabled=False):
            unit = F.normalize(embeddings.detach().double(), dim=-1)
            return (unit @ self.projection.detach().double()).float()

    def codebook(self, embeddings: torch.Tensor) -> Codebook:
        """The prepared search layout of ``embeddings``.

        While training (a trainable table or projection with gradients enabled) it is prepared at
        every call: training changes it every step anyway, and an update written through ``.data``
        (an EMA codebook, say) leaves no trace a cache could check. Otherwise (inference, or the
        language model's frozen table) it is prepared once and kept until the table or the
        projection moves, changes dtype or is changed in place through autograd-visible operations
        (their version counter). The tokenizer owns these tensors: writing into them through
        ``.data`` outside training is not detected; build a new tokenizer instead.
        """
        key = (embeddings.data_ptr(), embeddings.device, embeddings.dtype, embeddings._version)
        if self.projection is not None:
            p = self.projection
            key += (p.data_ptr(), p.device, p.dtype, p._version)
        trainable = embeddings.requires_grad or (self.projection is not None and self.projection.requires_grad)
        if trainable and torch.is_grad_enabled():
            key = None  # never equal to the stored key: prepare now
        if self._codebook is None or key is None or key != self._codebook_key:
            allowed = self.allowed_ids.to(embeddings.device)
            self._codebook = Codebook(self.searched_rows(embeddings), metric=self.metric, allowed_ids=allowed)
            self._codebook_key = key
        return self._codebook

    def search(self, z: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        """``[B, N, H]`` vectors -> ``[B, N]`` int64 ids (exact nearest allowed rows)."""
        flat = z.detach().reshape(-1, z.shape[-1])  # [B*N, H]
        if flat.dtype not in (torch.float32, torch.bfloat16, torch.float16):
            flat = flat.float()
        return self.codebook(embeddings).search(flat).view(z.shape[:-1])

    def forward(self, z: torch.Tensor, embeddings: torch.Tensor) -> QuantizerOutput:
        if self.projection is not None:
            return self._projected_forward(z, embeddings)
        ids = self.search(z, embeddings)
        q = F.embedding(ids, embeddings).to(z.dtype)  # raw rows, [B, N, H]
        # The commitment pulls the queries towards what they are compared with: the rows, or the
        # centred rows (the LM still reads the raw ones).
        target = q if not self.center else F.embedding(ids, self.searched_rows(embeddings)).to(z.dtype)
        commitment = F.mse_loss(z.float(), target.detach().float())
        if embeddings.requires_grad and torch.is_grad_enabled():
            codebook_loss = F.mse_loss(q.float(), z.detach().float())
        else:
            codebook_loss = z.new_zeros((), dtype=torch.float32)
        # Exactly q (z - z is 0) with z's gradient: z + (q - z) would round q's low bits away when the
        # encoder's vectors are far larger than the rows. q is detached: a learned table moves only
        # through the codebook loss, as in the official VQ-VAE.
        quantized = q.detach() + (z - z.detach())
        return QuantizerOutput(ids=ids, quantized=quantized, commitment_loss=commitment, codebook_loss=codebook_loss)

    def _projected_forward(self, z: torch.Tensor, embeddings: torch.Tensor) -> QuantizerOutput:
        """Search in the projection; losses there; raw rows to the LM with the straight-through gradient."""
        ids = self.search(z, embeddings)  # [B, N]
        rows = F.embedding(ids, embeddings).detach()  # raw rows, [B, N, H], in the table's dtype
        q = rows.to(z.dtype)  # what the LM reads
        unit = F.normalize(rows.float(), dim=-1)  # [B, N, H]
        projected = unit @ self.projection.float()  # the chosen rows in the projection, [B, N, d]
        commitment = F.mse_loss(z.float(), projected.detach())
        if self.projection.requires_grad and torch.is_grad_enabled():
            codebook_loss = F.mse_loss(projected, z.detach().float())
        else:
            codebook_loss = z.new_zeros((), dtype=torch.float32)
        # pinv(P) [d, H] maps a move of the projected query to the least move of the unit embedding
        # that makes it (P has full column rank), scaled to the row's norm; its value is exactly 0.
        back = torch.linalg.pinv(self.projection.detach().float())
        moved = ((z.float() - z.detach().float()) @ back) * rows.float().norm(dim=-1, keepdim=True)
        quantized = q + moved.to(q.dtype)
        return QuantizerOutput(ids=ids, quantized=quantized, commitment_loss=commitment, codebook_loss=codebook_loss)


def centred_rows(embeddings: torch.Tensor, allowed_ids: torch.Tensor) -> torch.Tensor:
    """``[V, D]`` float32: every row minus the mean of the allowed rows, computed in float64 with autocast
    off (no global precision setting can change the rows the exact search compares with)."""
    with torch.autocast(embeddings.device.type, enabled=False):
        table = embeddings.detach().double()
        return (table - table[allowed_ids].mean(0)).float()


def codebook_usage(ids: torch.Tensor, codebook_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Fraction of the codebook used by ``ids`` and the perplexity of their histogram.

    Returns two float32 scalars: usage in (0, 1] and perplexity in [1, number of distinct ids].
    """
    _, counts = torch.unique(ids.reshape(-1), return_counts=True)
    p = counts.float() / counts.sum()
    perplexity = torch.exp(-(p * p.log()).sum())
    return torch.tensor(counts.numel() / codebook_size, dtype=torch.float32), perplexity


def codebook_entropy(z: torch.Tensor, rows: torch.Tensor, temperature: float) -> torch.Tensor:
    """The official code's codebook entropy term (``entropy_loss_fn``, softmax type), float32 scalar.

    Args:
        z: ``[M, H]`` encoder vectors (gradients flow to them). rows: ``[K, H]`` codebook rows
            (constants). temperature: softmax temperature of the affinities.

    Affinity = -(squared distance of the l2-normalised vectors) = 2 cos - 2, as in the official
    code; ``p = softmax(affinity / temperature)`` over the K rows. Returns mean entropy of ``p``
    minus the entropy of the mean ``p``: low when each vector picks one row decisively and the
    sample as a whole spreads over many rows.
    """
    zn = F.normalize(z.float(), dim=-1)
    cn = F.normalize(rows.float(), dim=-1)
    logits = (2.0 * (zn @ cn.t()) - 2.0) / temperature  # [M, K]
    log_p = F.log_softmax(logits, dim=-1)
    p = log_p.exp()
    sample_entropy = -(p * log_p).sum(-1).mean()
    mean_p = p.mean(0)
    average_entropy = -(mean_p * torch.log(mean_p + 1e-5)).sum()
    return sample_entropy - average_entropy
