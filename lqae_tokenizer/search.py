"""Exact nearest-codebook search: one public op, a prepared codebook, and backend dispatch.

``nearest_code(x, codebook)`` returns, for every row of ``x``, the id of the codebook row at the
smallest float64 distance (ties: lowest id), on every backend and batch size:

- ``"torch"``: the plain-PyTorch path of ``lqae_tokenizer.kernels.reference``: a bf16 (CPU) or
  fp32 filter matmul, then an exact float64 re-rank of every code within the proven rounding bound
  (``kernels/bounds.py``) of the best;
- ``"triton"``: the fused Triton kernel (``kernels/nearest_code_triton.py``) proposes the best id and
  the runner-up score per row; a row is accepted when the gap exceeds twice the proven rounding bound
  of the kernel's arithmetic (``kernels/kernel_layout.py``), and every other row goes to the torch path.

The bounds are computed from the global precision settings in force at each call (TF32, oneDNN bf16,
``set_float32_matmul_precision``), and autocast is switched off inside the op, so no setting of the
caller's can change an id; the caller's settings are never modified.

The op is registered with ``torch.library`` as ``lqae::nearest_code`` so that ``torch.compile``
treats it as one opaque call (no graph break).
"""

from __future__ import annotations

import collections
import functools
import logging
import os
import weakref

import torch

from .kernels import kernel_layout, reference

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "triton")
FP32_PRECISIONS = ("tf32", "ieee")


def _validate_metric(metric: str) -> None:
    if metric not in reference.METRICS:
        raise ValueError(f"metric must be one of {reference.METRICS}, got {metric!r}")


@functools.lru_cache(maxsize=None)
def _triton_import_problem() -> str | None:
    try:
        from .kernels import nearest_code_triton  # noqa: F401  (imports triton)
    except ImportError as err:
        return f"triton is not importable ({err}); install it with `pip install triton` (Linux x86_64)"
    return None


def triton_problem(device: torch.device) -> str | None:
    """Why the Triton kernel cannot run on ``device`` (``None`` when it can)."""
    if device.type == "cpu":
        if os.environ.get("TRITON_INTERPRET") != "1":
            return "tensors are on the CPU; the Triton kernel runs on CUDA (or on the CPU with TRITON_INTERPRET=1)"
    elif device.type != "cuda":
        return f"tensors are on {device}; the Triton kernel runs on CUDA devices"
    problem = _triton_import_problem()
    if problem is None and device.type == "cpu":
        from .kernels import nearest_code_triton

        if not nearest_code_triton.INTERPRETED:
            return "the kernel module was imported before TRITON_INTERPRET=1 was set; set it before importing"
    return problem


@functools.lru_cache(maxsize=None)
def _log_fallback_once(reason: str) -> None:
    logger.info("nearest_code: using the torch backend because %s", reason)


def resolve_backend(backend: str, device: torch.device) -> str:
    """``"torch"`` or ``"triton"`` for ``backend`` on ``device``.

    ``"auto"`` honours ``LQAE_BACKEND`` and picks Triton on CUDA when it can run, otherwise torch
    (logged once). An explicit ``"triton"`` that cannot run raises ``RuntimeError`` saying why.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        backend = os.environ.get("LQAE_BACKEND", "auto").strip().lower() or "auto"
        if backend not in BACKENDS:
            raise ValueError(f"LQAE_BACKEND must be one of {BACKENDS}, got {backend!r}; unset it or fix the value")
    if backend == "torch":
        return "torch"
    problem = triton_problem(device)
    if backend == "triton":
        if problem:
            raise RuntimeError(f"backend='triton' cannot run: {problem}")
        return "triton"
    if device.type == "cuda" and problem is None:
        return "triton"
    if device.type == "cuda":
        _log_fallback_once(problem)
    return "torch"


def _check_queries(x: torch.Tensor, dim: int, device: torch.device) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor of shape [N, {dim}], got {type(x).__name__}")
    if x.dim() != 2 or x.shape[1] != dim:
        raise ValueError(f"x must have shape [N, {dim}] (the codebook's width), got {list(x.shape)}")
    if x.dtype not in reference.SUPPORTED_DTYPES:
        raise TypeError(f"x must be float32, bfloat16 or float16, got {x.dtype}; convert it with x.float()")
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

    def __init__(self, embeddings: torch.Tensor, metric: str = "cosine",
                 allowed_ids: torch.Tensor | None = None) -> None:
        _validate_metric(metric)
        if not isinstance(embeddings, torch.Tensor) or embeddings.dim() != 2 or embeddings.shape[0] == 0:
            got = list(embeddings.shape) if isinstance(embeddings, torch.Tensor) else type(embeddings).__name__
            raise ValueError(f"embeddings must be a non-empty [V, D] tensor, got {got}")
        if embeddings.dtype not in reference.SUPPORTED_DTYPES:
            raise TypeError(f"embeddings must be float32, bfloat16 or float16, got {embeddings.dtype}")
        if not bool(torch.isfinite(embeddings).all()):
            raise ValueError("embeddings contain NaN or infinity; every codebook row must be finite")
        self.metric = metric
        self.vocab_size, self.dim = embeddings.shape
        self.allowed_ids = self._check_allowed(allowed_ids, embeddings.device)
        rows = embeddings.detach() if self.allowed_ids is None else embeddings.detach()[self.allowed_ids]
        self._prepare(rows)

    def _prepare(self, rows: torch.Tensor) -> None:
        self._book = reference.prepare_codebook(rows, self.metric)
        self._kernel_layouts: dict[torch.dtype, kernel_layout.KernelLayout] = {}

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

    @property
    def dtype(self) -> torch.dtype:
        return self._book.rows.dtype

    def to(self, device: torch.device | str) -> "Codebook":
        """This codebook on ``device`` (self when already there)."""
        device = torch.device(device)
        if device == self.device:
            return self
        moved = Codebook.__new__(Codebook)
        moved.metric, moved.vocab_size, moved.dim = self.metric, self.vocab_size, self.dim
        moved.allowed_ids = None if self.allowed_ids is None else self.allowed_ids.to(device)
        moved._prepare(self._book.rows.to(device))
        return moved

    def _kernel_layout(self, dtype: torch.dtype) -> kernel_layout.KernelLayout:
        """The Triton kernel's rows in its compute dtype (prepared on first use, cached)."""
        if dtype not in self._kernel_layouts:
            self._kernel_layouts[dtype] = kernel_layout.prepare_kernel_layout(self._book.rows, self.metric, dtype)
        return self._kernel_layouts[dtype]

    def search(self, x: torch.Tensor, *, backend: str = "auto", precision: str = "tf32",
               memory_budget: int = reference.DEFAULT_MEMORY_BUDGET) -> torch.Tensor:
        """Exact nearest ids for ``x`` ``[N, D]`` -> ``LongTensor[N]`` in ``[0, V)``.

        Args:
            x: float32/bfloat16/float16 queries on the codebook's device; any strides.
            backend: ``"auto"`` | ``"torch"`` | ``"triton"`` (see :func:`resolve_backend`).
            precision: how the Triton kernel multiplies fp32 inputs: ``"tf32"`` (tensor cores, more
                rows re-ranked) or ``"ieee"``. Ids are exact either way.
            memory_budget: bytes for the torch path's score tile.
        """
        _check_queries(x, self.dim, self.device)
        if precision not in FP32_PRECISIONS:
            raise ValueError(f"precision must be one of {FP32_PRECISIONS}, got {precision!r}")
        chosen = resolve_backend(backend, x.device)
        book = self._book
        if chosen == "triton":
            layout = self._kernel_layout(torch.promote_types(x.dtype, self.dtype))
            kernel_rows, aux, knorm, kerror = layout.rows, layout.aux, layout.row_norm, layout.row_error
        else:  # the op's kernel slots are unused on the torch path
            kernel_rows, aux, knorm, kerror = book.filter_rows, book.filter_rows.new_empty(0, dtype=torch.float32), 0.0, 0.0
        positions = torch.ops.lqae.nearest_code(
            x.detach(), book.rows, book.filter_rows, kernel_rows, aux, book.exponent, book.shift, book.row_norm,
            book.row_error, knorm, kerror, self.metric, chosen, precision, memory_budget)
        return positions if self.allowed_ids is None else self.allowed_ids[positions]


@torch.library.custom_op("lqae::nearest_code", mutates_args=())
def _nearest_code_op(x: torch.Tensor, rows: torch.Tensor, filter_rows: torch.Tensor, kernel_rows: torch.Tensor,
                     aux: torch.Tensor, exponent: int, shift: float, row_norm: float, row_error: float,
                     kernel_row_norm: float,
                     kernel_row_error: float, metric: str, backend: str, precision: str,
                     memory_budget: int) -> torch.Tensor:
    """Positions ``[N]`` into ``rows``; see :meth:`Codebook.search`. Inputs are the prepared layouts."""
    if not bool(torch.isfinite(x).all()):
        raise ValueError("x contains NaN or infinity; nearest-code search needs finite queries")
    book = reference.PreparedCodebook(rows, metric, exponent, shift, filter_rows, row_norm, row_error)
    # The error bounds assume the arithmetic asked for: an enclosing autocast (mixed-precision
    # training, bf16 inference) would silently turn the fp32/fp64 matmuls into bf16 ones.
    with torch.autocast(x.device.type, enabled=False):
        if backend == "triton":
            layout = kernel_layout.KernelLayout(kernel_rows, aux, metric, exponent, shift, kernel_row_norm,
                                                kernel_row_error)
            return _search_triton(x, book, layout, precision, memory_budget)
        return reference.nearest_code_torch(x, book, memory_budget=memory_budget)


@_nearest_code_op.register_fake
def _(x, rows, filter_rows, kernel_rows, aux, exponent, shift, row_norm, row_error, kernel_row_norm,
      kernel_row_error, metric, backend, precision, memory_budget):
    return x.new_empty((x.shape[0],), dtype=torch.long)


def _search_triton(x: torch.Tensor, book: reference.PreparedCodebook, layout: kernel_layout.KernelLayout,
                   precision: str, memory_budget: int) -> torch.Tensor:
    from .kernels import nearest_code_triton as kernel

    if x.shape[0] == 0:
        return torch.empty(0, dtype=torch.long, device=x.device)
    fed, exact = kernel_layout.kernel_queries(x, layout)
    best, ids, second = kernel.merge_splits(*kernel.launch(fed, layout.rows, layout.aux, layout.metric, precision))
    margin = kernel_layout.kernel_margin(fed, exact, layout, best, precision)
    # Accept a row only when no other code can overtake the kernel's best within the rounding bound.
    ambiguous = ~torch.isfinite(best) | ~((best.double() - second.double()) > margin)
    if bool(ambiguous.any()):
        rows = ambiguous.nonzero().squeeze(1)
        ids[rows] = reference.nearest_code_torch(x[rows], book, memory_budget=memory_budget)
    return ids


# One-shot calls reuse the layout of a table they have already prepared (keyed on the tensor's
# identity and version counter, so an in-place change or a new tensor prepares it again).
_PREPARED: "collections.OrderedDict[tuple, tuple]" = collections.OrderedDict()
_PREPARED_LIMIT = 4


def _tensor_key(t: torch.Tensor | None) -> tuple | None:
    if t is None:
        return None
    return (id(t), t._version, t.data_ptr(), tuple(t.shape), tuple(t.stride()), t.dtype, t.device)


def _cached_codebook(codebook: torch.Tensor, metric: str, allowed_ids: torch.Tensor | None) -> Codebook:
    cacheable = (isinstance(codebook, torch.Tensor) and not codebook.is_inference()
                 and not torch.compiler.is_compiling()
                 and (allowed_ids is None or (isinstance(allowed_ids, torch.Tensor) and not allowed_ids.is_inference())))
    if not cacheable:
        return Codebook(codebook, metric=metric, allowed_ids=allowed_ids)
    key = (_tensor_key(codebook), metric, _tensor_key(allowed_ids))
    hit = _PREPARED.get(key)
    # The weak references guard against an id reused by a new tensor after the old one died.
    if hit is not None and hit[0]() is codebook and (allowed_ids is None or hit[1]() is allowed_ids):
        _PREPARED.move_to_end(key)
        return hit[2]
    book = Codebook(codebook, metric=metric, allowed_ids=allowed_ids)
    _PREPARED[key] = (weakref.ref(codebook), None if allowed_ids is None else weakref.ref(allowed_ids), book)
    while len(_PREPARED) > _PREPARED_LIMIT:
        _PREPARED.popitem(last=False)
    return book


def nearest_code(x: torch.Tensor, codebook: torch.Tensor, *, metric: str = "cosine", backend: str = "auto",
                 allowed_ids: torch.Tensor | None = None) -> torch.Tensor:
    """Exact nearest codebook row for each query.

    Args:
        x: ``[N, D]`` float32/bfloat16/float16 queries.
        codebook: ``[V, D]`` rows of a supported float dtype, on the same device as ``x``.
        metric: ``"cosine"`` | ``"l2"`` | ``"dot"``.
        backend: ``"auto"`` (env ``LQAE_BACKEND`` overrides) | ``"torch"`` | ``"triton"``.
        allowed_ids: optional subset of ids to search; returned ids are in the full ``[0, V)`` range.

    Returns:
        ``LongTensor[N]``: the argmin of the float64 distance, ties to the lowest id.

    Example:
        >>> nearest_code(torch.eye(3), torch.eye(3), metric="l2").tolist()
        [0, 1, 2]

    The prepared layout of ``codebook`` is cached for the next call with the same tensor (a few
    tables at most; an in-place change of the tensor is detected). :class:`Codebook` holds one
    explicitly.
    """
    _validate_metric(metric)
    return _cached_codebook(codebook, metric, allowed_ids).search(x, backend=backend)
