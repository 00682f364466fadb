"""Exact nearest-codebook search: one public op, a prepared codebook, and backend dispatch.

``nearest_code(x, codebook)`` returns, for every row of ``x``, the id of the codebook row at the
smallest float64 distance (ties: lowest id), on every backend and batch size. The plain-PyTorch
path lives in ``lqae_tokenizer.kernels.reference``; faster backends plug in through
:func:`_select_backend`.
"""

from __future__ import annotations

import logging
import os

import torch

from .kernels import reference

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "torch")


def _validate_metric(metric: str) -> None:
    if metric not in reference.METRICS:
        raise ValueError(f"metric must be one of {reference.METRICS}, got {metric!r}")


def _select_backend(backend: str) -> str:
    """Resolve ``backend`` ("auto" honours the ``LQAE_BACKEND`` environment variable)."""
    if backend == "auto":
        backend = os.environ.get("LQAE_BACKEND", "auto").strip().lower() or "auto"
        if backend not in BACKENDS:
            raise ValueError(f"LQAE_BACKEND must be one of {BACKENDS}, got {backend!r}; unset it or fix the value")
    elif backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return "torch"


def _check_queries(x: torch.Tensor, dim: int, device: torch.device) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor of shape [N, {dim}], got {type(x).__name__}")
    if x.dim() != 2 or x.shape[1] != dim:
        raise ValueError(f"x must have shape [N, {dim}] (the codebook's width), got {list(x.shape)}")
    if x.dtype not in reference.SUPPORTED_DTYPES:
        raise TypeError(
            f"x must be float32, bfloat16 or float16, got {x.dtype}; convert it with x.float()"
        )
    if x.device != device:
        raise ValueError(f"x is on {x.device} but the codebook is on {device}; move one of them with .to()")


class Codebook:
    """A codebook prepared once for repeated exact nearest-row search.

    Args:
        embeddings: ``[V, D]`` float32/bfloat16/float16 rows (e.g. a frozen word-embedding table).
        metric: ``"cosine"`` (the paper's l2-normalised search), ``"l2"`` (squared Euclidean) or
            ``"dot"`` (largest inner product).
        allowed_ids: optional 1-D int64 ids in ``[0, V)``, unique; the search only returns these.

    Example:
        >>> book = Codebook(torch.randn(100, 8), metric="cosine", allowed_ids=torch.arange(10, 60))
        >>> ids = book.search(torch.randn(5, 8))  # LongTensor[5], values in [10, 60)
    """

    def __init__(
        self, embeddings: torch.Tensor, metric: str = "cosine", allowed_ids: torch.Tensor | None = None
    ) -> None:
        _validate_metric(metric)
        if not isinstance(embeddings, torch.Tensor) or embeddings.dim() != 2 or embeddings.shape[0] == 0:
            got = list(embeddings.shape) if isinstance(embeddings, torch.Tensor) else type(embeddings).__name__
            raise ValueError(f"embeddings must be a non-empty [V, D] tensor, got {got}")
        if embeddings.dtype not in reference.SUPPORTED_DTYPES:
            raise TypeError(f"embeddings must be float32, bfloat16 or float16, got {embeddings.dtype}")
        self.metric = metric
        self.vocab_size, self.dim = embeddings.shape
        self.allowed_ids = self._check_allowed(allowed_ids, embeddings.device)
        rows = embeddings.detach() if self.allowed_ids is None else embeddings.detach()[self.allowed_ids]
        self._book = reference.prepare_codebook(rows, metric)

    def _check_allowed(self, allowed_ids: torch.Tensor | None, device: torch.device) -> torch.Tensor | None:
        if allowed_ids is None:
            return None
        ids = torch.as_tensor(allowed_ids, device=device)
        if ids.dim() != 1 or ids.numel() == 0 or ids.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"allowed_ids must be a non-empty 1-D integer tensor, got {ids.dtype} {list(ids.shape)}")
        ids = ids.long()
        if int(ids.min()) < 0 or int(ids.max()) >= self.vocab_size:
            raise ValueError(f"allowed_ids must lie in [0, {self.vocab_size}), got range [{int(ids.min())}, {int(ids.max())}]")
        # Sorted ids keep "lowest id wins" equal to "lowest position wins" in the restricted table.
        sorted_ids = torch.unique(ids)
        if sorted_ids.numel() != ids.numel():
            raise ValueError("allowed_ids contains duplicates; pass each id once")
        return sorted_ids

    @property
    def size(self) -> int:
        """Number of rows the search can return."""
        return self._book.rows.shape[0]

    @property
    def device(self) -> torch.device:
        return self._book.rows.device

    def to(self, device: torch.device | str) -> "Codebook":
        """This codebook on ``device`` (self when already there)."""
        device = torch.device(device)
        if device == self.device:
            return self
        moved = Codebook.__new__(Codebook)
        moved.metric, moved.vocab_size, moved.dim = self.metric, self.vocab_size, self.dim
        moved.allowed_ids = None if self.allowed_ids is None else self.allowed_ids.to(device)
        moved._book = reference.prepare_codebook(self._book.rows.to(device), self.metric)
        return moved

    def search(
        self, x: torch.Tensor, *, backend: str = "auto", memory_budget: int = reference.DEFAULT_MEMORY_BUDGET
    ) -> torch.Tensor:
        """Exact nearest ids for ``x`` ``[N, D]`` -> ``LongTensor[N]`` in ``[0, V)``.

        Non-contiguous ``x`` is fine. ``memory_budget`` bounds the fp32 score tile in bytes.
        """
        _check_queries(x, self.dim, self.device)
        _select_backend(backend)
        with torch.no_grad():
            positions = reference.nearest_code_torch(x.detach(), self._book, memory_budget=memory_budget)
        return positions if self.allowed_ids is None else self.allowed_ids[positions]


def nearest_code(
    x: torch.Tensor,
    codebook: torch.Tensor,
    *,
    metric: str = "cosine",
    backend: str = "auto",
    allowed_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """Exact nearest codebook row for each query.

    Args:
        x: ``[N, D]`` float32/bfloat16/float16 queries.
        codebook: ``[V, D]`` rows of a supported float dtype, on the same device as ``x``.
        metric: ``"cosine"`` | ``"l2"`` | ``"dot"``.
        backend: ``"auto"`` (env ``LQAE_BACKEND`` overrides) | ``"torch"``.
        allowed_ids: optional subset of ids to search; returned ids are in the full ``[0, V)`` range.

    Returns:
        ``LongTensor[N]``: the argmin of the float64 distance, ties to the lowest id.

    Example:
        >>> nearest_code(torch.eye(3), torch.eye(3), metric="l2").tolist()
        [0, 1, 2]

    For repeated searches against the same table build a :class:`Codebook` once instead.
    """
    return Codebook(codebook, metric=metric, allowed_ids=allowed_ids).search(x, backend=backend)
